"""The expression library: named presets of control values, applied with a blend weight.

A preset is pure data on the named controls of `rig.controls` (slider values 0..1; controls
it does not list are 0), so it means the same on every face model and every backend. The
values follow the FACS descriptions of the basic emotions (Ekman & Friesen) in ARKit's
vocabulary: happiness = cheek raiser + lip corner puller, surprise = brow raisers + upper
lid raiser + jaw drop, and so on.

`blend_preset(current, preset, weight)`: weight 0 keeps the current values, weight 1 gives
exactly the preset, in between a straight mix of every control (neutral at weight 1
resets the face).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .controls import CONTROL_INDEX, CONTROL_NAMES


@dataclass(frozen=True)
class ExpressionPreset:
    """A named expression: control values (0..1) by control name; one-line description."""

    name: str
    label: str
    description: str
    values: Mapping[str, float]


def _both(stem: str, value: float) -> dict[str, float]:
    return {f"{stem}Left": value, f"{stem}Right": value}


def _preset(name: str, label: str, description: str, *parts: dict[str, float]) -> ExpressionPreset:
    values: dict[str, float] = {}
    for part in parts:
        values.update(part)
    return ExpressionPreset(name, label, description, MappingProxyType(values))


PRESETS: tuple[ExpressionPreset, ...] = (
    _preset("neutral", "Neutral", "Every control at 0: the model's mean expression"),
    _preset("smile", "Smile", "Closed-mouth smile with raised cheeks",
            _both("mouthSmile", 0.8), _both("cheekSquint", 0.4), _both("eyeSquint", 0.15)),
    _preset("laugh", "Laugh", "Open-mouth laugh: broad smile, jaw open, eyes narrowed",
            _both("mouthSmile", 1.0), _both("cheekSquint", 0.7), _both("eyeSquint", 0.4),
            _both("mouthUpperUp", 0.3), {"jawOpen": 0.45}),
    _preset("surprise", "Surprise", "Brows up, eyes wide, jaw dropped",
            {"browInnerUp": 1.0}, _both("browOuterUp", 0.9), _both("eyeWide", 0.8),
            {"jawOpen": 0.5, "mouthFunnel": 0.2}),
    _preset("anger", "Anger", "Brows down and together, lids tight, lips pressed",
            _both("browDown", 1.0), _both("eyeSquint", 0.4), _both("noseSneer", 0.3),
            _both("mouthPress", 0.6), _both("mouthFrown", 0.3), {"jawForward": 0.2}),
    _preset("disgust", "Disgust", "Nose wrinkled, upper lip raised, brows lowered",
            _both("noseSneer", 0.9), _both("mouthUpperUp", 0.7), _both("browDown", 0.4),
            _both("cheekSquint", 0.5), _both("mouthFrown", 0.3), {"mouthShrugLower": 0.3}),
    _preset("sadness", "Sadness", "Inner brows up, mouth corners down, lower lip pushed up",
            {"browInnerUp": 0.8, "mouthShrugLower": 0.4}, _both("mouthFrown", 0.7),
            _both("eyeBlink", 0.15)),
    _preset("fear", "Fear", "Brows raised and drawn, eyes wide, lips stretched",
            {"browInnerUp": 1.0, "jawOpen": 0.2}, _both("browOuterUp", 0.4),
            _both("eyeWide", 1.0), _both("mouthStretch", 0.7)),
    _preset("blink", "Blink", "Both eyes closed", _both("eyeBlink", 1.0)),
    _preset("wink_left", "Wink Left", "Left eye closed with a half smile on that side",
            {"eyeBlinkLeft": 1.0, "cheekSquintLeft": 0.4, "mouthSmileLeft": 0.3}),
    _preset("wink_right", "Wink Right", "Right eye closed with a half smile on that side",
            {"eyeBlinkRight": 1.0, "cheekSquintRight": 0.4, "mouthSmileRight": 0.3}),
    _preset("pout", "Pout", "Lips pushed forward, lower lip up",
            {"mouthPucker": 0.8, "mouthShrugLower": 0.4}, _both("mouthFrown", 0.2)),
    _preset("kiss", "Kiss", "Lips puckered fully", {"mouthPucker": 1.0}),
    _preset("oh", "Oh", "Lips rounded open as in 'oh'", {"mouthFunnel": 0.9, "jawOpen": 0.3}),
)
"""The library, in display order."""

PRESET_NAMES: tuple[str, ...] = tuple(p.name for p in PRESETS)


def preset(name: str) -> ExpressionPreset:
    """The preset called `name`; KeyError listing the known names otherwise."""
    for candidate in PRESETS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"unknown expression preset {name!r}; known: {', '.join(PRESET_NAMES)}")


def preset_vector(p: ExpressionPreset) -> list[float]:
    """The preset's values as a list in CONTROL_NAMES order (missing controls 0)."""
    vector = [0.0] * len(CONTROL_NAMES)
    for name, value in p.values.items():
        vector[CONTROL_INDEX[name]] = float(value)
    return vector


def blend_preset(
    current: Mapping[str, float], p: ExpressionPreset, weight: float
) -> dict[str, float]:
    """Every control's value: current + weight · (preset - current), weight clamped to 0..1
    (controls missing from `current` count as 0)."""
    w = min(1.0, max(0.0, float(weight)))
    target = p.values
    return {
        name: float(current.get(name, 0.0)) + w * (
            float(target.get(name, 0.0)) - float(current.get(name, 0.0))
        )
        for name in CONTROL_NAMES
    }
