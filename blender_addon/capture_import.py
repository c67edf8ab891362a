"""Capture curves onto a face rig: a Live Link Face CSV or a curves.json becomes F-curves of
one action on the rig (docs/CAPTURE.md has both formats).

Channels and the properties they key (units as in curves.json):

- a named control ``jawOpen``      -> ``face_controls.named.jawOpen`` (0..1)
- ``rotation.x`` / ``.y`` / ``.z``  -> ``face_rig.rotation.c000`` / ``c001`` / ``c002``
  (pitch, yaw, roll; radians)
- ``translation.x`` / ``.y`` / ``.z`` -> ``face_rig.translation.c000`` ... (decimetres)
- ``expression.cNNN``              -> ``face_rig.expression.cNNN`` (σ)

Timing: a CSV row t seconds after the first lands on ``scene start + offset + t · scene fps``
(resampled onto every scene frame, or one key per row at its own fractional frame with the
native rate). A curves.json is retimed from its fps to the scene's (its first frame kept), or
kept frame for frame with the native rate; the offset is added to every key.

The action is ``"<rig> capture"``: importing again replaces its curves (other users of the
action see the new capture), or makes a new action when asked. The rig's previous action, if
it was another one, gets a fake user so saving does not drop it. Everything is read and
checked before the rig is touched: a bad file raises CaptureError and changes nothing. No
undo step of its own: the operators' UNDO option makes each import one step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from bpy.types import Action, Object, Scene

from .properties import coefficient_key
from .rig.arkit_csv import DEFAULT_CAPTURE_FPS, read_live_link_csv
from .rig.controls import CONTROL_NAMES
from .rig.curves_file import AXES, CaptureCurves, CaptureError, Channel, channel_kind, read_curves

ACTION_SUFFIX = " capture"
FCURVE_GROUPS = {
    "control": "Capture Controls",
    "rotation": "Capture Rotation",
    "translation": "Capture Translation",
    "expression": "Capture Raw Expression",
}


@dataclass
class CaptureImport:
    """What an import wrote: the action, channel and key counts, the frame range, and the
    lines to tell the user (skipped columns or channels, warnings)."""

    action: str
    channels: int
    keys: int
    frame_range: tuple[float, float]
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the operator's report."""
        first, last = self.frame_range
        head = (f"{self.channels} channels, {self.keys} keys on frames {first:g}-{last:g} "
                f"in action '{self.action}'")
        return "; ".join([head, *self.notes])


# -- pure: channel -> property, timing ---------------------------------------------------------


def channel_target(name: str) -> tuple[str, str] | None:
    """(data path, channel kind) of a curves channel on a face rig, or None for a named
    control the rig does not have (e.g. ``tongueOut``)."""
    kind = channel_kind(name)
    if kind == "control":
        return (f"face_controls.named.{name}", kind) if name in CONTROL_NAMES else None
    if kind in ("rotation", "translation"):
        axis = AXES.index(name.split(".", 1)[1])
        return f"face_rig.{kind}.{coefficient_key(axis)}", kind
    index = int(name.rsplit(".c", 1)[1])
    return f"face_rig.expression.{coefficient_key(index)}", kind


def retime(curves: CaptureCurves, scene_fps: float, native_rate: bool,
           frame_offset: float) -> CaptureCurves:
    """curves.json frames -> scene frames: ``start + (f - start) · scene_fps / fps + offset``
    (scene rate: the same seconds), or ``f + offset`` (native rate: the same frames)."""
    scale = 1.0 if native_rate else scene_fps / curves.fps
    start = curves.frame_start
    channels = {
        name: Channel(start + (c.frames - start) * scale + frame_offset, c.values,
                      c.interpolation)
        for name, c in curves.channels.items()
    }
    return CaptureCurves(scene_fps if not native_rate else curves.fps,
                         int(round(start + frame_offset)), channels, dict(curves.source))


def scene_fps(scene: Scene) -> float:
    return scene.render.fps / scene.render.fps_base


# -- bpy: the action ---------------------------------------------------------------------------


def capture_action_name(ob: Object) -> str:
    return ob.name + ACTION_SUFFIX


def _writable_fcurves(ob: Object, action: Action) -> tuple[Any, Any]:
    """Assign ``action`` to ``ob`` and return (F-curve collection, group owner) for ``ob``:
    4.2/4.3 ``Action.fcurves``; 4.4+ the channelbag of ``ob``'s slot in the first keyframe
    strip (slot, layer, strip and channelbag made when missing)."""
    animation = ob.animation_data or ob.animation_data_create()
    animation.action = action
    if not hasattr(action, "slots"):
        return action.fcurves, action
    slot = animation.action_slot
    if slot is None:
        slot = action.slots.new(id_type="OBJECT", name=ob.name)
        animation.action_slot = slot
    layer = action.layers[0] if len(action.layers) else action.layers.new("Layer")
    strip = layer.strips[0] if len(layer.strips) else layer.strips.new(type="KEYFRAME")
    channelbag = strip.channelbag(slot, ensure=True)
    return channelbag.fcurves, channelbag


def _clear(fcurves: Any) -> None:
    for fcurve in list(fcurves):
        fcurves.remove(fcurve)


def _target_action(ob: Object, replace: bool) -> Action:
    import bpy

    name = capture_action_name(ob)
    existing = bpy.data.actions.get(name)
    if replace and existing is not None and existing.library is None:
        return existing
    action = bpy.data.actions.new(name)
    if hasattr(action, "id_root"):
        action.id_root = "OBJECT"
    return action


def apply_curves(ob: Object, curves: CaptureCurves, *, replace: bool = True,
                 notes: list[str] | None = None) -> CaptureImport:
    """Write ``curves`` (already on scene frames) as the F-curves of ``ob``'s capture action.
    Channels without a target on the rig are skipped and named in the result's notes."""
    notes = list(notes or [])
    targets = [(name, channel_target(name)) for name in sorted(curves.channels)]
    skipped = [name for name, target in targets if target is None]
    if skipped:
        notes.append("channels without a rig control, skipped: " + ", ".join(skipped))
    planned = [(name, target) for name, target in targets if target is not None]
    if not planned:
        raise CaptureError("capture: no channel drives this rig (nothing imported)")
    if getattr(ob.face_controls, "grab_head", False) and any(
        kind == "rotation" for _, (_, kind) in planned
    ):
        notes.append("Grab Head is on: the head object's rotation overrides the imported "
                     "rotation keys")
    previous = ob.animation_data.action if ob.animation_data else None
    action = _target_action(ob, replace)
    if previous is not None and previous != action and not previous.use_fake_user:
        previous.use_fake_user = True
        notes.append(f"previous action '{previous.name}' kept with a fake user")
    fcurves, group_owner = _writable_fcurves(ob, action)
    _clear(fcurves)
    groups: dict[str, Any] = {}
    keys = 0
    for name, (path, kind) in planned:
        channel = curves.channels[name]
        fcurve = fcurves.new(path, index=0)
        label = FCURVE_GROUPS[kind]
        if label not in groups:
            groups[label] = group_owner.groups.get(label) or group_owner.groups.new(label)
        fcurve.group = groups[label]
        _write_keys(fcurve, channel)
        keys += len(channel.frames)
    first, last = curves.frame_range
    return CaptureImport(action.name, len(planned), keys, (first, last), notes)


def _write_keys(fcurve: Any, channel: Channel) -> None:
    count = len(channel.frames)
    points = fcurve.keyframe_points
    points.add(count)
    co = np.empty((count, 2), np.float32)
    co[:, 0], co[:, 1] = channel.frames, channel.values
    points.foreach_set("co", co.ravel())
    codes = _interpolation_codes()
    points.foreach_set("interpolation",
                       np.array([codes[mode] for mode in channel.interpolation], np.int32))
    fcurve.update()


def _interpolation_codes() -> dict[str, int]:
    """Keyframe.interpolation identifiers -> the integers foreach_set takes (from Blender's
    own enum, not hard-coded)."""
    from bpy.types import Keyframe

    items = Keyframe.bl_rna.properties["interpolation"].enum_items
    return {item.identifier: item.value for item in items}


# -- the two imports ---------------------------------------------------------------------------


def import_live_link_csv(
    ob: Object, scene: Scene, path: str | os.PathLike[str], *, frame_offset: int = 0,
    native_rate: bool = False, replace: bool = True,
    capture_fps: float = DEFAULT_CAPTURE_FPS, head_degrees: bool = False,
) -> CaptureImport:
    """A Live Link Face CSV onto ``ob``: its first row on ``scene.frame_start +
    frame_offset``, timecodes counted at ``capture_fps``, head angles in radians (or degrees
    with ``head_degrees``)."""
    curves, report = read_live_link_csv(
        path, scene_fps=scene_fps(scene), frame_start=scene.frame_start + frame_offset,
        capture_fps=capture_fps, head_scale=np.pi / 180 if head_degrees else 1.0,
        resample=not native_rate,
    )
    return apply_curves(ob, curves, replace=replace, notes=report.lines()[1:])


def import_curves_file(
    ob: Object, scene: Scene, path: str | os.PathLike[str], *, frame_offset: int = 0,
    native_rate: bool = False, replace: bool = True,
) -> CaptureImport:
    """A curves.json onto ``ob`` (timing in the module docstring)."""
    curves = read_curves(path)
    notes = []
    fps = scene_fps(scene)
    if native_rate and abs(curves.fps - fps) > 1e-6:
        notes.append(f"native rate: keys as written at {curves.fps:g} fps, the scene runs at "
                     f"{fps:g}")
    return apply_curves(ob, retime(curves, fps, native_rate, frame_offset), replace=replace,
                        notes=notes)
