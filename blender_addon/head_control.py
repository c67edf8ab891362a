"""The 3DMM head as a control: grab it to turn the face, and one shape key per named control.

Grab: with ``face_controls.grab_head`` on, the head object's rotation drivers are removed and
its rotation relative to the rig (the card, its parent) *is* the rig rotation: renders read
it from the evaluated head (keyframes, constraints, drivers included), and the Pose sliders
follow it in the UI. Moving a rotation slider turns the head. The conversion between the
head's Blender rotation and the rig's R = Rz·Ry·Rx is rig.head_pose (exact, any angle).

Shape keys: each named control gets a key on the head (its ARKit name), built from the
head's own expression keys and the control's direction, driven by the same effective value
the rig sends (slider mixed with the preset), so the head shows what the face does.
"""

from __future__ import annotations

import bpy
import numpy as np
from bpy.app.handlers import persistent
from bpy.types import Depsgraph, Object

from . import portrait
from .controls_eval import control_basis, effective_controls, head_of, store_basis
from .head_mesh import BASIS_KEY_NAME, shape_key_name
from .properties import coefficient_key, deferred_rig_changes, is_face_rig, notify_rig_changed
from .rig.face_model import FaceModel
from .rig.head_pose import angles_from_head, head_matrix

_TOLERANCE = 1e-7  # radians: float32 storage of Euler angles
_syncing = False


def head_angles(card: Object, depsgraph: Depsgraph | None = None) -> np.ndarray | None:
    """Rig angles [3] float64 of the head's rotation relative to the card (evaluated with
    ``depsgraph``), or None without a head."""
    head = head_of(card)
    if head is None:
        return None
    if depsgraph is not None:
        head, card = head.evaluated_get(depsgraph), card.evaluated_get(depsgraph)
    relative = card.matrix_world.inverted() @ head.matrix_world
    return angles_from_head(np.array(relative.to_3x3().normalized(), dtype=np.float64))


def rig_angles_of(card: Object) -> np.ndarray:
    rotation = card.face_rig.rotation
    return np.array([getattr(rotation, coefficient_key(i)) for i in range(3)], np.float64)


def turn_head(card: Object) -> None:
    """Set the head's rotation from the rig's rotation sliders."""
    from mathutils import Matrix

    head = head_of(card)
    if head is None:
        return
    head.rotation_mode = portrait.HEAD_ROTATION_MODE
    matrix = Matrix(head_matrix(rig_angles_of(card)).tolist())
    head.rotation_euler = matrix.to_euler(portrait.HEAD_ROTATION_MODE)


def set_grab(card: Object, enabled: bool) -> None:
    """Make the head the rig's rotation control (or driven by the sliders again)."""
    card.face_controls.grab_head = enabled  # its update calls apply_grab


def apply_grab(card: Object) -> None:
    """Give the head's rotation to the grab (drivers off, head set from the sliders) or back
    to the rotation sliders' drivers, after ``grab_head`` changed."""
    head = head_of(card)
    if head is None:
        return
    head.driver_remove("rotation_euler")
    if card.face_controls.grab_head:
        turn_head(card)
        return
    head.rotation_mode = portrait.HEAD_ROTATION_MODE
    for axis, coefficient, expression in portrait._ROTATION_DRIVERS:
        portrait._drive(head, "rotation_euler", axis, card,
                        f"face_rig.rotation.{coefficient_key(coefficient)}", expression)


def on_rig_changed(card: Object) -> None:
    """Rig-change listener: a rotation slider moved on a grabbed rig turns the head; a used
    control keeps the face model's controls in the .blend (for farm nodes)."""
    if effective_controls(card.face_controls).any():
        store_basis(card)
    if _syncing or not card.face_controls.grab_head:
        return
    angles = head_angles(card)
    if angles is not None and np.abs(angles - rig_angles_of(card)).max() > 1e-6:
        turn_head(card)


@persistent
def sync_sliders(scene, depsgraph: Depsgraph | None = None) -> None:
    """depsgraph_update_post: what the rig follows moved, so the rig's own values follow.

    - a grabbed head that turned writes its angles into the rotation sliders (the Pose panel);
    - a blended identity writes the mix into the Identity sliders (the head's shape keys);
    - a followed light, its data or the world changed: the live preview is asked again."""
    global _syncing
    if _syncing:
        return
    moved = _updated_ids(depsgraph)
    for card in scene.objects:
        if not is_face_rig(card):
            continue
        controls = card.face_controls
        _syncing = True
        try:
            if controls.grab_head:
                _sync_rotation(card)
            if controls.use_identity_blend:
                _sync_identity(card)
        finally:
            _syncing = False
        lamp = controls.key_light.follow
        if lamp is not None and moved & {lamp.name_full, lamp.data.name_full, "__world__"}:
            notify_rig_changed(card)


def _updated_ids(depsgraph: Depsgraph | None) -> set[str]:
    if depsgraph is None:
        return set()
    names = set()
    for update in depsgraph.updates:
        ident = update.id.original if update.id is not None else None
        if ident is None:
            continue
        names.add("__world__" if isinstance(ident, bpy.types.World) else ident.name_full)
    return names


def _sync_rotation(card: Object) -> None:
    angles = head_angles(card)
    if angles is None or np.abs(angles - rig_angles_of(card)).max() <= _TOLERANCE:
        return
    rotation = card.face_rig.rotation
    for index, value in enumerate(angles.tolist()):
        setattr(rotation, coefficient_key(index), value)


def _sync_identity(card: Object) -> None:
    controls = card.face_controls
    t = float(controls.identity_blend)
    identity = card.face_rig.identity
    with deferred_rig_changes():  # one live update for the whole group
        for index in range(80):
            key = coefficient_key(index)
            value = (1.0 - t) * getattr(controls.identity_a, key) + t * getattr(
                controls.identity_b, key)
            if abs(getattr(identity, key) - value) > 1e-6:
                setattr(identity, key, value)


# -- shape keys -----------------------------------------------------------------------------


def add_control_shape_keys(card: Object, model: FaceModel | None = None) -> int:
    """One shape key per named control on the rig's head (replacing earlier ones), driven by
    the effective control value; returns how many were made (0 without head or controls).
    ``model``: the head's face model when the caller has it loaded."""
    head = head_of(card)
    basis = control_basis(card, model)
    if head is None or basis is None or head.data.shape_keys is None:
        return 0
    keys = head.data.shape_keys.key_blocks
    count = len(head.data.vertices)

    def coordinates(name: str) -> np.ndarray:
        values = np.empty(3 * count, np.float32)
        keys[name].data.foreach_get("co", values)
        return values.reshape(count, 3).astype(np.float64)

    rest = coordinates(BASIS_KEY_NAME)
    expression = np.stack([
        coordinates(shape_key_name("expression", k)) - rest
        for k in range(basis.directions.shape[1])
    ])  # [64, N, 3] metres per σ, Blender frame
    for index, name in enumerate(basis.names):
        if name in keys:
            key = keys[name]
            key.driver_remove("value")
        else:
            key = head.shape_key_add(name=name, from_mix=False)
        key.slider_min, key.slider_max = 0.0, 1.0
        key.value = 0.0
        offsets = np.tensordot(basis.directions[index].astype(np.float64), expression, 1)
        key.data.foreach_set("co", (rest + offsets).astype(np.float32).ravel())
        _drive_control(key, card, name)
    return len(basis.names)


def add_shape_keys_to_new_head(card: Object, model: FaceModel) -> str:
    """Add Face Rig's hook: the control shape keys on its new head; a note for its report
    (a failure is reported, never raised: the rig is still usable without them)."""
    try:
        count = add_control_shape_keys(card, model)
    except Exception as exc:  # noqa: BLE001 - Add Face Rig must finish; the console has it
        import traceback

        traceback.print_exc()
        return f"no control shape keys ({type(exc).__name__}: {exc})"
    return f"{count} named-control shape keys" if count else "no control shape keys"


def _drive_control(key, card: Object, name: str) -> None:
    """value = v + w · (p - v): slider, preset value, preset weight (a simple expression:
    Blender evaluates it without Python, also on farms)."""
    driver = key.driver_add("value").driver
    driver.type = "SCRIPTED"
    for variable_name, path in (("v", f"face_controls.named.{name}"),
                                ("p", f"face_controls.preset_values.{name}"),
                                ("w", "face_controls.preset_weight")):
        variable = driver.variables.new()
        variable.name = variable_name
        variable.type = "SINGLE_PROP"
        variable.targets[0].id_type = "OBJECT"
        variable.targets[0].id = card
        variable.targets[0].data_path = path
    driver.expression = "v + w * (p - v)"

