"""Named expression controls: the artist's vocabulary on top of the 64 expression coefficients.

The one home of the control definitions. Each control carries an ARKit blendshape name (the
vocabulary capture apps and artists share), a group, a side, and a documented displacement
pattern of the 68 iBUG landmarks of the face model: which landmarks move, in which direction
and by how much; every landmark the pattern does not name is held still. The patterns are
the specification; `rig.control_basis` turns them into directions of the expression space of
a loaded face model by least squares (no hand-tuned coefficients).

Frames and units: the face model's frame, x towards the subject's left (the image's right
in the frontal view), y up, z towards the camera; distances in the model's units
(decimetres; 0.1 = 1 cm). "Left" and "Right" are the subject's own sides, as in ARKit: a
Left control moves the iBUG landmarks on the image's right (left eye 42-47, left brow 22-26,
left mouth corner 54/64). Right controls are mirror images of the Left ones (x negated,
landmarks through `MIRROR`), so the two sides cannot drift apart.

Two kinds of move:
- `Shift(landmarks, direction, distance)`: each landmark moves by `distance` along the unit
  `direction`.
- `Toward(landmarks, references, fraction)`: landmark i moves by `fraction` of the vector
  from it to references[i] on the neutral face of the model (blink: the upper lid onto the
  lower lid). Negative fractions move away (eyeWide).

Slider values are 0..1 (ARKit's range); the expression is the sum of the active controls plus
any raw coefficient offsets (`rig.control_basis.expression_from_controls`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

ARKIT_BLENDSHAPES: tuple[str, ...] = tuple(
    [f"eye{a}{s}" for s in ("Left", "Right")
     for a in ("Blink", "LookDown", "LookIn", "LookOut", "LookUp", "Squint", "Wide")]
    + ["jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel",
       "mouthPucker", "mouthLeft", "mouthRight"]
    + [f"mouth{a}{s}" for a in ("Smile", "Frown", "Dimple", "Stretch") for s in ("Left", "Right")]
    + ["mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper"]
    + [f"mouth{a}{s}" for a in ("Press", "LowerDown", "UpperUp") for s in ("Left", "Right")]
    + ["browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
       "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight",
       "tongueOut"]
)
"""The 52 ARKit blendshape names (Apple's ARFaceAnchor order): CONTROL_NAMES + UNDEFINABLE."""

GROUPS: tuple[str, ...] = ("mouth", "eyes", "brows", "cheeks_nose", "jaw")
"""Control groups, in display order."""

GROUP_LABELS: dict[str, str] = {
    "mouth": "Mouth",
    "eyes": "Eyes",
    "brows": "Brows",
    "cheeks_nose": "Cheeks & Nose",
    "jaw": "Jaw",
}

# iBUG-68 left/right correspondence (self-symmetric landmarks map to themselves).
_PAIRS = (
    [(i, 16 - i) for i in range(8)]  # jaw contour
    + [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22)]  # brows
    + [(31, 35), (32, 34)]  # nose base
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
    + [(60, 64), (61, 63), (65, 67)]  # inner lips
)
MIRROR: tuple[int, ...] = tuple(
    dict([*((i, i) for i in range(68)), *_PAIRS, *((b, a) for a, b in _PAIRS)])[i]
    for i in range(68)
)
"""MIRROR[i]: the landmark at the mirror position of landmark i (left <-> right)."""

# Landmark sets of the subject's left side (mirror them for the right).
L_UPPER_LID = (43, 44)
L_LOWER_LID = (47, 46)  # below 43, 44 respectively
L_EYE_OUTER = 45
L_BROW_INNER = (22, 23)
L_BROW_MID = 24
L_BROW_OUTER = (25, 26)
L_CORNER = (54, 64)  # outer and inner mouth corner
L_UPPER_LIP = (52, 53)  # outer upper lip between the centre and the corner
L_UPPER_LIP_INNER = 63
L_LOWER_LIP = (55, 56)
L_LOWER_LIP_INNER = 65
L_NOSTRIL = (34, 35)
UPPER_LIP_CENTRE = (50, 51, 52, 61, 62, 63)
LOWER_LIP = (55, 56, 57, 58, 59, 65, 66, 67)
UPPER_LIP = (49, 50, 51, 52, 53, 61, 62, 63)
MOUTH = tuple(range(48, 68))
CHIN = (7, 8, 9)


@dataclass(frozen=True)
class Shift:
    """Landmarks move by `distance` (decimetres) along the unit `direction` (x, y, z)."""

    landmarks: tuple[int, ...]
    direction: tuple[float, float, float]
    distance: float


@dataclass(frozen=True)
class Toward:
    """Landmark i moves by `fraction` of (references[i] - landmark i) on the neutral face."""

    landmarks: tuple[int, ...]
    references: tuple[int, ...]
    fraction: float


Move = Shift | Toward


@dataclass(frozen=True)
class Control:
    """One named control. `side` is "left", "right" or "" (both / centre); `mirror` names the
    other side's control ("" for centre controls). `one_sided`: the control acts on its side
    of the face only (False for jawLeft/mouthLeft..., whose side is a direction of motion)."""

    name: str
    group: str
    side: str
    mirror: str
    moves: tuple[Move, ...]
    description: str
    one_sided: bool = False

    @property
    def moved_landmarks(self) -> tuple[int, ...]:
        """The landmarks the pattern moves, sorted; all others are held still."""
        return tuple(sorted({i for move in self.moves for i in move.landmarks}))


def _unit(x: float, y: float, z: float) -> tuple[float, float, float]:
    norm = math.sqrt(x * x + y * y + z * z)
    return (x / norm, y / norm, z / norm)


DOWN, UP = (0.0, -1.0, 0.0), (0.0, 1.0, 0.0)
FORWARD, BACK = (0.0, 0.0, 1.0), (0.0, 0.0, -1.0)
TO_LEFT, TO_RIGHT = (1.0, 0.0, 0.0), (-1.0, 0.0, 0.0)  # the subject's left / right (x)

JAW_DROP = 0.2
"""jawOpen: the chin drops 2 cm (decimetres)."""

# Left-side and centre definitions; (name, group, moves, description). Right = mirror(Left).
_LEFT_AND_CENTRE: tuple[tuple[str, str, tuple[Move, ...], str], ...] = (
    # --- jaw ---
    ("jawOpen", "jaw", (
        Shift(CHIN, DOWN, JAW_DROP),
        Shift((6, 10), DOWN, 0.75 * JAW_DROP),
        Shift((5, 11), DOWN, 0.5 * JAW_DROP),
        Shift((4, 12), DOWN, 0.25 * JAW_DROP),
        Shift(LOWER_LIP, DOWN, 0.85 * JAW_DROP),
        Shift((48, 54, 60, 64), DOWN, 0.35 * JAW_DROP),
    ), "Open the jaw: chin and lower lip drop 2 cm, the upper face stays"),
    ("jawForward", "jaw", (
        Shift((5, 6, 7, 8, 9, 10, 11), FORWARD, 0.06),
        Shift(LOWER_LIP, FORWARD, 0.06),
    ), "Push the jaw forward: chin and lower lip 6 mm towards the camera"),
    ("jawLeft", "jaw", (
        Shift((6, 7, 8, 9, 10), TO_LEFT, 0.06),
        Shift(LOWER_LIP, TO_LEFT, 0.06),
    ), "Slide the jaw to the subject's left: chin and lower lip 6 mm sideways"),
    # --- mouth ---
    ("mouthClose", "mouth", (
        Shift(LOWER_LIP, UP, 0.85 * JAW_DROP),
    ), "Close the lips over an open jaw: lower lip up as far as jawOpen drops it"),
    ("mouthFunnel", "mouth", (
        Shift(MOUTH, FORWARD, 0.05),
        Shift((61, 62, 63), UP, 0.03),
        Shift((65, 66, 67), DOWN, 0.03),
        Shift((48, 60), TO_LEFT, 0.04),
        Shift((54, 64), TO_RIGHT, 0.04),
    ), "Funnel the lips into an open O: lips forward and apart, corners in"),
    ("mouthPucker", "mouth", (
        Shift(MOUTH, FORWARD, 0.06),
        Shift((48, 60), TO_LEFT, 0.06),
        Shift((54, 64), TO_RIGHT, 0.06),
    ), "Pucker the closed lips: lips forward, both corners 6 mm towards the centre"),
    ("mouthLeft", "mouth", (
        Shift(MOUTH, TO_LEFT, 0.06),
    ), "Shift the whole mouth 6 mm to the subject's left"),
    ("mouthSmileLeft", "mouth", (
        Shift(L_CORNER, _unit(0.6, 0.8, -0.2), 0.08),
    ), "Smile on the left: left mouth corner up and out by 8 mm"),
    ("mouthFrownLeft", "mouth", (
        Shift(L_CORNER, DOWN, 0.05),
    ), "Frown on the left: left mouth corner down by 5 mm"),
    ("mouthDimpleLeft", "mouth", (
        Shift(L_CORNER, _unit(0.4, 0.0, -1.0), 0.04),
    ), "Dimple on the left: left mouth corner pulled back by 4 mm"),
    ("mouthStretchLeft", "mouth", (
        Shift(L_CORNER, _unit(1.0, -0.3, 0.0), 0.07),
    ), "Stretch the left lip corner 7 mm out and slightly down"),
    ("mouthPressLeft", "mouth", (
        Shift(L_UPPER_LIP, DOWN, 0.02),
        Shift(L_LOWER_LIP, UP, 0.02),
    ), "Press the lips on the left: outer lip lines 2 mm towards each other"),
    ("mouthUpperUpLeft", "mouth", (
        Shift((*L_UPPER_LIP, L_UPPER_LIP_INNER), UP, 0.04),
    ), "Raise the upper lip on the left by 4 mm"),
    ("mouthLowerDownLeft", "mouth", (
        Shift((*L_LOWER_LIP, L_LOWER_LIP_INNER), DOWN, 0.04),
    ), "Lower the lower lip on the left by 4 mm"),
    ("mouthShrugUpper", "mouth", (
        Shift(UPPER_LIP, UP, 0.03),
    ), "Shrug the upper lip: the whole upper lip up by 3 mm"),
    ("mouthShrugLower", "mouth", (
        Shift(LOWER_LIP, UP, 0.03),
        Shift(CHIN, UP, 0.015),
    ), "Shrug the lower lip: lower lip up 3 mm, chin up 1.5 mm"),
    # --- eyes ---
    ("eyeBlinkLeft", "eyes", (
        Toward(L_UPPER_LID, L_LOWER_LID, 1.0),
    ), "Close the left eye: upper lid onto the lower lid"),
    ("eyeWideLeft", "eyes", (
        Toward(L_UPPER_LID, L_LOWER_LID, -0.4),
    ), "Widen the left eye: upper lid up by 40 % of the eye opening"),
    ("eyeSquintLeft", "eyes", (
        Toward(L_UPPER_LID, L_LOWER_LID, 0.2),
        Toward(L_LOWER_LID, L_UPPER_LID, 0.2),
    ), "Squint the left eye: both lids close in by 20 % of the opening"),
    # --- brows ---
    ("browInnerUp", "brows", (
        Shift((21, 22), UP, 0.05),
        Shift((20, 23), UP, 0.025),
    ), "Raise the inner ends of both brows by 5 mm"),
    ("browDownLeft", "brows", (
        Shift((*L_BROW_INNER, L_BROW_MID, *L_BROW_OUTER), DOWN, 0.04),
    ), "Lower the left brow by 4 mm"),
    ("browOuterUpLeft", "brows", (
        Shift(L_BROW_OUTER, UP, 0.05),
        Shift((L_BROW_MID,), UP, 0.025),
    ), "Raise the outer end of the left brow by 5 mm"),
    # --- cheeks and nose ---
    ("cheekSquintLeft", "cheeks_nose", (
        Toward(L_LOWER_LID, L_UPPER_LID, 0.25),
        Shift((L_EYE_OUTER,), UP, 0.015),
    ), "Raise the left cheek: lower lid and outer eye corner pushed up"),
    ("noseSneerLeft", "cheeks_nose", (
        Shift(L_NOSTRIL, _unit(0.2, 1.0, 0.0), 0.03),
    ), "Sneer on the left: left nostril wing up by 3 mm"),
)

_ROLL = "rolling a lip in hides its red; the lip landmarks trace that border, not lip flesh"
UNDEFINABLE: dict[str, str] = {
    **{
        f"eyeLook{way}{side}": "gaze moves the eyeball; the 68 landmarks trace lids, not irises"
        for way in ("Down", "In", "Out", "Up")
        for side in ("Left", "Right")
    },
    "tongueOut": "neither the face model nor the 68 landmarks have a tongue",
    "cheekPuff": "no landmark lies on the cheeks; the jaw contour is a silhouette line",
    "mouthRollLower": _ROLL,
    "mouthRollUpper": _ROLL,
}
"""ARKit blendshapes the 68 landmarks cannot define, with the reason (one line each)."""


def _mirror_direction(direction: tuple[float, float, float]) -> tuple[float, float, float]:
    return (-direction[0], direction[1], direction[2])


def _mirror_move(move: Move) -> Move:
    landmarks = tuple(MIRROR[i] for i in move.landmarks)
    if isinstance(move, Shift):
        return Shift(landmarks, _mirror_direction(move.direction), move.distance)
    return Toward(landmarks, tuple(MIRROR[i] for i in move.references), move.fraction)


_DIRECTIONS = ("jawLeft", "mouthLeft")  # "Left" names where they move, not a side of the face


def _build() -> tuple[Control, ...]:
    controls: list[Control] = []
    for name, group, moves, description in _LEFT_AND_CENTRE:
        if name.endswith("Left"):
            right = name[: -len("Left")] + "Right"
            one_sided = name not in _DIRECTIONS
            controls.append(Control(name, group, "left", right, moves, description, one_sided))
            controls.append(Control(
                right, group, "right", name, tuple(_mirror_move(m) for m in moves),
                description.replace("left", "right"), one_sided,
            ))
        else:
            controls.append(Control(name, group, "", "", moves, description))
    return tuple(controls)


CONTROLS: tuple[Control, ...] = _build()
"""Every implemented control, Left before Right, in definition order."""

CONTROL_NAMES: tuple[str, ...] = tuple(c.name for c in CONTROLS)
CONTROL_INDEX: dict[str, int] = {name: i for i, name in enumerate(CONTROL_NAMES)}
N_CONTROLS = len(CONTROLS)


def control(name: str) -> Control:
    """The control called `name`; a clear error for an unknown or undefinable name."""
    if name in CONTROL_INDEX:
        return CONTROLS[CONTROL_INDEX[name]]
    if name in UNDEFINABLE:
        raise KeyError(f"control {name!r} is not implemented: {UNDEFINABLE[name]}")
    raise KeyError(f"unknown control {name!r}; known: {', '.join(CONTROL_NAMES)}")


def controls_in_group(group: str) -> tuple[Control, ...]:
    """The controls of `group` (one of GROUPS), in definition order."""
    if group not in GROUPS:
        raise KeyError(f"unknown control group {group!r}; known: {', '.join(GROUPS)}")
    return tuple(c for c in CONTROLS if c.group == group)


def definitions_digest() -> str:
    """sha256 hex of the definitions (names, sides, moves): part of every cache key, so a
    changed pattern never reuses directions derived from the old one."""
    doc = [
        [c.name, c.group, c.side, [[type(m).__name__, *map(_plain, vars(m).values())]
                                   for m in c.moves]]
        for c in CONTROLS
    ]
    return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()


def _plain(value: object) -> object:
    return [float(v) for v in value] if isinstance(value, tuple) else float(value)  # type: ignore[arg-type]
