"""The artist's controls (controls_props) evaluated into the rig's 257 values.

``apply_artist_controls`` is the one call the rig-vector builder (rig_props.rig_state) makes:
expression = raw coefficients + the named controls' directions (rig.control_basis) at the
effective slider values; illumination = raw SH + the key light's SH (rig.key_light), from a
followed Blender light when one is set; rotation = the grabbed head's rotation
(head_control); identity = the blend of the two stored identities when enabled. With a
depsgraph every value is the evaluated one (animation, drivers, constraints), as renders
and farm nodes need.

The controls of a face model are derived once and cached in the extension's user folder
(``controls/``), indexed by the face-model file, so later sessions read a small file.
"""

from __future__ import annotations

import base64
import json
import math
import os
import traceback

import bpy
import numpy as np
from bpy.types import Depsgraph, Object

from .rig.control_basis import ControlBasis, controls_for_file, expression_from_controls
from .rig.controls import CONTROL_NAMES
from .rig.errors import RigError
from .rig.face_model import FaceModel
from .rig.key_light import DEFAULT_AMBIENT, KeyLight, direction_angles, key_light_to_sh
from .rig.params import RigParams

_BASES: dict[str, ControlBasis | None] = {}
_PROBLEMS: dict[str, str] = {}
_STORED: dict[str, ControlBasis] = {}


# -- the face model's controls --------------------------------------------------------------


def head_of(card: Object) -> Object | None:
    """The 3DMM head of a rig (its child built by Add Face Rig), or None."""
    for child in card.children:
        if getattr(child, "face_rig_source", "") and child.type == "MESH":
            return child
    return None


def face_model_path(card: Object) -> str:
    """The face-model file of a rig: its head's source, else the preferences' face model."""
    head = head_of(card)
    if head is not None:
        return os.path.normpath(bpy.path.abspath(head.face_rig_source))
    from .preferences import addon_preferences, resolved_face_model_path

    try:
        return resolved_face_model_path(addon_preferences(bpy.context))
    except (KeyError, AttributeError):  # the add-on's preferences are not registered
        return ""


def cache_folder() -> str:
    from .dependencies import extension_user_folder

    return extension_user_folder("controls", create=True)


def control_basis(card: Object, model: FaceModel | None = None) -> ControlBasis | None:
    """The named controls of the rig's face model, else the copy the .blend stores (a farm
    node without the face model still renders the controls); None without either (the
    reason is in ``basis_problem``). Memoised per file for the session; ``model``: that file
    already loaded (Add Face Rig), so it is not read twice."""
    basis = _file_basis(card, model)
    return basis if basis is not None else stored_basis(card)


def _file_basis(card: Object, model: FaceModel | None = None) -> ControlBasis | None:
    path = face_model_path(card)
    if not path:
        _PROBLEMS[""] = "Named controls need a face model (add-on preferences)"
        return None
    try:
        stat = os.stat(path)
    except OSError as exc:
        _PROBLEMS[path] = f"Face model {path}: {exc.strerror}"
        return None
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    if key not in _BASES:
        try:
            _BASES[key] = controls_for_file(path, cache_folder(), model)
            _PROBLEMS.pop(path, None)
        except (RigError, OSError) as exc:
            _BASES[key] = None
            _PROBLEMS[path] = str(exc)
    return _BASES[key]


def basis_problem(card: Object) -> str | None:
    """Why the face model's controls are unavailable (for the panels), or None."""
    problem = _PROBLEMS.get(face_model_path(card))
    if problem and stored_basis(card) is not None:
        return f"{problem}; using the controls stored in this file"
    return problem


def encode_basis(basis: ControlBasis) -> str:
    """A ControlBasis as text for the .blend: names, model digest and the float32 bytes."""
    return json.dumps({"model_digest": basis.model_digest, "names": list(basis.names),
                       "directions": base64.b64encode(basis.directions.tobytes()).decode()})


def store_basis(card: Object) -> None:
    """Keep the face model's controls in the .blend (``face_controls.basis_store``), for
    machines without the face model. Interactive contexts only (it writes a property)."""
    basis = _file_basis(card)
    if basis is not None:
        text = encode_basis(basis)
        if card.face_controls.basis_store != text:
            card.face_controls.basis_store = text


def stored_basis(card: Object) -> ControlBasis | None:
    """The ControlBasis kept in the .blend, or None (none stored, or not this version's
    controls)."""
    text = card.face_controls.basis_store
    if not text:
        return None
    cached = _STORED.get(text)
    if cached is not None:
        return cached
    try:
        doc = json.loads(text)
        raw = base64.b64decode(doc["directions"], validate=True)
        names = tuple(doc["names"])
    except (ValueError, KeyError, TypeError):
        return None
    if names != CONTROL_NAMES or len(raw) != 4 * len(names) * 64:
        return None
    directions = np.frombuffer(raw, dtype="<f4").reshape(len(names), 64).astype(np.float32)
    if not np.isfinite(directions).all():
        return None
    zeros = np.zeros(len(names), np.float32)
    basis = ControlBasis(names, directions, zeros, zeros, str(doc.get("model_digest", "")))
    _STORED.clear()  # one file's copy at a time is plenty
    _STORED[text] = basis
    return basis


# -- values ---------------------------------------------------------------------------------


def effective_controls(controls) -> np.ndarray:
    """Slider values [C] float64 with the preset mixed in: v + w · (preset - v)."""
    named, target = controls.named, controls.preset_values
    values = np.array([getattr(named, name) for name in CONTROL_NAMES], np.float64)
    weight = float(controls.preset_weight)
    if weight > 0.0:
        preset = np.array([getattr(target, name) for name in CONTROL_NAMES], np.float64)
        values = values + weight * (preset - values)
    return values


def key_light(controls, depsgraph: Depsgraph | None = None, card: Object | None = None,
              scene: bpy.types.Scene | None = None) -> KeyLight:
    """The rig's key light: its own properties, or the followed light seen from the rig's
    portrait camera (evaluated with ``depsgraph``)."""
    props = controls.key_light
    lamp = props.follow
    if lamp is None or card is None:
        return KeyLight(props.azimuth, props.elevation, props.intensity,
                        tuple(props.colour), tuple(props.ambient))
    return followed_light(props, lamp, card, depsgraph, scene or bpy.context.scene)


def set_key_light(props, light: KeyLight) -> None:
    """Write ``light`` (e.g. read back from SH coefficients) into the key-light properties
    ``props``, which stop following a lamp: intensity within the property's range, ambient
    non-negative."""
    props.follow = None
    props.azimuth, props.elevation = light.azimuth, light.elevation
    props.intensity = min(light.intensity, props.bl_rna.properties["intensity"].hard_max)
    props.colour = light.colour
    props.ambient = tuple(max(0.0, v) for v in light.ambient)


def portrait_camera(card: Object) -> Object | None:
    """The rig's portrait camera (its camera child), or None."""
    for child in card.children:
        if child.type == "CAMERA":
            return child
    return None


def followed_light(props, lamp: Object, card: Object, depsgraph: Depsgraph | None,
                   scene: bpy.types.Scene | None) -> KeyLight:
    """The key light of a Blender light: its direction from the face in the portrait
    camera's frame (camera x right, y up, z back = the rig's light frame), its colour, its
    power times ``power_scale`` (sun: strength; others: watts / (4π distance²)), and the
    world colour as ambient when ``world_ambient``."""
    from mathutils import Vector

    def evaluated(ob: Object) -> Object:
        return ob.evaluated_get(depsgraph) if depsgraph is not None else ob

    light = evaluated(lamp)
    camera = portrait_camera(card)
    view = evaluated(camera) if camera is not None else evaluated(card)
    head = head_of(card)
    face = evaluated(head if head is not None else card).matrix_world.translation
    data = light.data
    if data.type == "SUN":
        towards = light.matrix_world.to_3x3().normalized() @ Vector((0.0, 0.0, 1.0))
        power = float(data.energy)
    else:
        towards = light.matrix_world.translation - face
        distance = max(towards.length, 1e-6)
        power = float(data.energy) / (4.0 * math.pi * distance * distance)
    local = view.matrix_world.to_3x3().normalized().transposed() @ towards
    azimuth, elevation = direction_angles(np.array(local))
    ambient = tuple(props.ambient)
    if props.world_ambient and scene is not None and scene.world is not None:
        ambient = world_colour(scene.world)
    return KeyLight(azimuth, elevation, power * float(props.power_scale), tuple(data.color),
                    ambient)


def world_colour(world: bpy.types.World) -> tuple[float, float, float]:
    """The world's background colour times its strength (node tree), else ``world.color``."""
    # Blender 5 always renders the world's node tree (use_nodes is deprecated there).
    uses_nodes = bpy.app.version >= (5, 0, 0) or getattr(world, "use_nodes", False)
    tree = world.node_tree if uses_nodes else None
    if tree is not None:
        for node in tree.nodes:
            if node.type == "BACKGROUND":
                colour = node.inputs["Color"].default_value
                strength = float(node.inputs["Strength"].default_value)
                return (colour[0] * strength, colour[1] * strength, colour[2] * strength)
    return (float(world.color[0]), float(world.color[1]), float(world.color[2]))


def apply_artist_controls(ob: Object, params: RigParams,
                          depsgraph: Depsgraph | None = None) -> RigParams:
    """``params`` (the rig's raw coefficients) with the artist's controls of ``ob`` added; a
    new RigParams (the input is not changed). A failure prints a traceback and sends the
    raw values: a broken control must not stop the face."""
    source = ob.evaluated_get(depsgraph) if depsgraph is not None else ob
    controls = getattr(source, "face_controls", None)
    if controls is None:
        return params
    groups = {name: getattr(params, name).copy() for name in (
        "identity", "expression", "reflectance", "rotation", "illumination", "translation")}
    try:
        values = effective_controls(controls)
        if values.any():
            basis = control_basis(ob)
            if basis is not None:
                groups["expression"] = expression_from_controls(
                    basis, values, groups["expression"])
        if _lit(controls):
            light = key_light(controls, depsgraph, ob)
            groups["illumination"] = groups["illumination"] + key_light_to_sh(light)
        if controls.grab_head:
            from .head_control import head_angles

            angles = head_angles(ob, depsgraph)
            if angles is not None:
                groups["rotation"] = angles.astype(np.float32)
        if controls.use_identity_blend:
            t = float(controls.identity_blend)
            a = _identity(controls.identity_a)
            b = _identity(controls.identity_b)
            groups["identity"] = ((1.0 - t) * a + t * b).astype(np.float32)
    except Exception:
        traceback.print_exc()
        return params
    return RigParams(**groups)


_DEFAULT_AMBIENT_STORED = float(np.float32(DEFAULT_AMBIENT))  # what Blender's float holds


def _lit(controls) -> bool:
    """False while the key light is at its defaults (no key, the rig's own ambient, nothing
    followed): the raw SH then goes out bit for bit."""
    props = controls.key_light
    return (props.follow is not None or props.intensity != 0.0
            or any(v != _DEFAULT_AMBIENT_STORED for v in props.ambient))


def _identity(group) -> np.ndarray:
    return np.array([getattr(group, f"c{i:03d}") for i in range(80)], np.float64)
