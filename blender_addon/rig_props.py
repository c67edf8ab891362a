"""Between the face rig's properties (properties.py) and plain data: RigState snapshots for the
live bridge, group writes, randomise/reset, keyframes, SeFa slider bookkeeping and presets.

The maths and documents are pure functions of RigParams (``random_group``, ``check_limits``,
``preset_document``, ``parse_preset``, ``slider_index_map``); the rest reads or writes one
object's ``face_rig``. Writes notify the live bridge once per call (deferred_rig_changes) and
push no undo step of their own: operators with the UNDO option make each call one step.

Presets are rig.params JSON documents holding a subset of the groups, so ``nfr rig`` reads
them too. Loading one writes only the groups asked for, and only after the whole file has
been checked: a bad file raises and changes nothing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import bpy
import numpy as np
from bpy.types import Depsgraph, FCurve, Object

from .contract.state import RigState, SefaSlider
from .controls_eval import apply_artist_controls
from .preset_extras import load_preset_extras, parse_preset_extras, save_preset_extras
from .properties import (
    GROUP_LABELS,
    HARD_LIMITS,
    NFR_SefaSlider,
    coefficient_key,
    coefficient_label,
    deferred_rig_changes,
    resolution_pixels,
)
from .rig.atomic import atomic_open
from .rig.errors import RigParamsError
from .rig.file_limits import read_regular_file
from .rig.params import GROUP_NAMES, GROUP_SIZES, SOFT_RANGES, RigParams

SEFA = "sefa"
"""Pseudo-group of the SeFa slider values (keyframe and reset work on it too)."""
KEYFRAME_GROUPS: tuple[str, ...] = (*GROUP_NAMES, SEFA)
FCURVE_GROUP_LABELS: dict[str, str] = {**GROUP_LABELS, SEFA: "SeFa"}
PRESET_MAX_BYTES = 1 << 20  # a full preset is ~10 KB; refuse to read a wrongly chosen big file

_SLIDER_PATH = re.compile(r"^face_rig\.sefa_sliders\[(\d+)\](.*)$")


class PresetError(RigParamsError):
    """A preset file cannot be read or written, or does not hold the groups asked for."""


# -- pure: values, presets, slider indices -------------------------------------------------------


def check_groups(groups: Iterable[str], allowed: Sequence[str] = GROUP_NAMES) -> tuple[str, ...]:
    """``groups`` as a tuple, after checking every name is in ``allowed``."""
    names = tuple(groups)
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise RigParamsError(f"rig groups: expected names from {list(allowed)}, found {unknown}")
    return names


def check_limits(params: RigParams, groups: Iterable[str], source: str = "rig params") -> None:
    """Raise RigParamsError naming the first coefficient of ``groups`` outside the properties'
    hard limits (Blender would clamp it silently)."""
    for group in groups:
        limits = np.asarray(HARD_LIMITS[group], np.float32)
        values = getattr(params, group)
        outside = np.flatnonzero(np.abs(values) > limits)
        if outside.size:
            index = int(outside[0])
            raise RigParamsError(
                f"{source}: field '{group}' index {index} ({coefficient_label(group, index)}): "
                f"expected a value within ±{limits[index]:g}, found {values[index]:g}"
            )


def random_group(group: str, seed: int) -> RigParams:
    """Neutral params whose ``group`` is drawn from the rig prior with ``seed`` and clipped to
    the soft ranges (a random face stays plausible). Same seed, same values."""
    (group,) = check_groups([group])
    params = RigParams.sample(np.random.default_rng(seed), groups=[group])
    limit = SOFT_RANGES[group]
    setattr(params, group, np.clip(getattr(params, group), -limit, limit))
    return params


def preset_document(params: RigParams, groups: Iterable[str]) -> dict[str, Any]:
    """The rig.params JSON document of ``params`` holding only ``groups`` (in canonical order)."""
    wanted = set(check_groups(groups))
    if not wanted:
        raise PresetError("preset: expected at least one rig group to save, found none")
    return {  # schema and version first, then the groups
        key: value
        for key, value in params.to_dict().items()
        if key in wanted or key not in GROUP_SIZES
    }


def parse_preset(
    text: str, source: str, groups: Iterable[str] | None = None
) -> tuple[RigParams, tuple[str, ...]]:
    """Params and the groups to load from a preset's JSON ``text``: ``groups`` (each must be in
    the file) or, when None, every group the file holds. Raises RigParamsError naming
    ``source`` and the field for any malformed, missing or out-of-limits value."""
    params = RigParams.from_json(text, source=source)  # schema, version, fields, sizes
    present = tuple(name for name in GROUP_NAMES if name in json.loads(text))
    if not present:
        raise PresetError(
            f"{source}: expected at least one rig group ({', '.join(GROUP_NAMES)}), found none"
        )
    wanted = present if groups is None else check_groups(groups)
    missing = [name for name in wanted if name not in present]
    if missing:
        raise PresetError(
            f"{source}: expected group(s) {', '.join(missing)}, found only {', '.join(present)}"
        )
    check_limits(params, wanted, source)
    return params, wanted


def slider_index_map(count: int, *, move: tuple[int, int] | None = None,
                     remove: int | None = None) -> list[int | None]:
    """New index of each of ``count`` sliders after moving one (``move=(from, to)``) or
    removing one (``remove=index``; that slider maps to None)."""
    if (move is None) == (remove is None):
        raise ValueError("slider_index_map: give exactly one of move and remove")
    if move is not None:
        order = list(range(count))
        order.insert(move[1], order.pop(move[0]))
        new_index = {old: new for new, old in enumerate(order)}
        return [new_index[old] for old in range(count)]
    assert remove is not None
    return [old if old < remove else None if old == remove else old - 1 for old in range(count)]


def remap_slider_path(path: str, new_index: Sequence[int | None]) -> str | None:
    """``path`` with its slider index replaced through ``new_index`` (None: the slider is gone);
    paths that are not slider paths come back unchanged."""
    match = _SLIDER_PATH.match(path)
    if match is None:
        return path
    old = int(match.group(1))
    new = new_index[old] if old < len(new_index) else old
    return None if new is None else f"face_rig.sefa_sliders[{new}]{match.group(2)}"


def group_data_paths(group: str, slider_count: int = 0) -> list[str]:
    """Data paths (from the object) of the animatable values of ``group`` (KEYFRAME_GROUPS)."""
    (group,) = check_groups([group], KEYFRAME_GROUPS)
    if group == SEFA:
        return [f"face_rig.sefa_sliders[{i}].value" for i in range(slider_count)]
    return [f"face_rig.{group}.{coefficient_key(i)}" for i in range(GROUP_SIZES[group])]


# -- reading ------------------------------------------------------------------------------------


def read_rig_params(ob: Object, depsgraph: Depsgraph | None = None) -> RigParams:
    """The rig values of ``ob`` (of its evaluated copy when ``depsgraph`` is given)."""
    face_rig = (ob.evaluated_get(depsgraph) if depsgraph is not None else ob).face_rig
    return RigParams(
        **{
            group: [getattr(getattr(face_rig, group), coefficient_key(i)) for i in range(size)]
            for group, size in GROUP_SIZES.items()
        }
    )


def rig_state(ob: Object, *, depsgraph: Depsgraph | None = None, final: bool = False) -> RigState:
    """Snapshot of everything that determines ``ob``'s face (plain data for the worker).

    With ``depsgraph`` the evaluated object is read: during animation renders the original
    datablock still holds stale values. Resolution: render_resolution when ``final``, else
    preview_resolution (None = the model's full size). The model file: ``model_path(ob)``."""
    face_rig = (ob.evaluated_get(depsgraph) if depsgraph is not None else ob).face_rig
    sliders = tuple(
        SefaSlider(
            direction=slider.direction,
            value=slider.value,
            layers=tuple(range(slider.layer_start, slider.layer_end + 1)),
        )
        for slider in face_rig.sefa_sliders
    )
    resolution = face_rig.render_resolution if final else face_rig.preview_resolution
    state = RigState(
        backend=face_rig.backend,
        rig=apply_artist_controls(ob, read_rig_params(ob, depsgraph), depsgraph).to_vector(),
        seed=face_rig.seed,
        psi=face_rig.psi,
        sefa=sliders,
        resolution=resolution_pixels(resolution, face_rig.model_resolution),
    )
    from .photo_import import with_stored_latent  # photo: an inverted photo's latent

    return with_stored_latent(ob, state)


def model_path(ob: Object, *, farm: bool = True) -> str:
    """``ob``'s model file as an absolute path (the worker does not know the .blend's folder:
    "//" paths resolve against the .blend or library that owns ``ob``); "" means the
    preferences' default model. With ``farm``, a path that does not exist on this machine is
    looked up in its models folder by the file name and digest the .blend recorded."""
    path = ob.face_rig.model_path
    if not path:
        return ""
    resolved = os.path.normpath(bpy.path.abspath(path, library=ob.library))
    if not farm or os.path.exists(resolved):
        return resolved
    from .model_files import models_folder
    from .preferences import addon_preferences
    from .rig_models import find_recorded

    found = find_recorded(ob, "generator", models_folder(addon_preferences(bpy.context)))
    return found or resolved


# -- writing ------------------------------------------------------------------------------------


def set_rig_params(ob: Object, params: RigParams, groups: Iterable[str] | None = None) -> None:
    """Write ``groups`` (default: all) of ``params`` into ``ob``'s rig; other groups keep
    their values. Checks everything first (RigParamsError, nothing written); the live bridge
    hears about it once."""
    names = GROUP_NAMES if groups is None else check_groups(groups)
    params.validate()
    check_limits(params, names)
    with deferred_rig_changes():
        for group in names:
            properties = getattr(ob.face_rig, group)
            for index, value in enumerate(getattr(params, group).tolist()):
                setattr(properties, coefficient_key(index), value)


def reset_group(ob: Object, group: str) -> None:
    """Neutral values for ``group`` (KEYFRAME_GROUPS; "sefa" zeroes every slider value), or
    the backend's estimate of the base face for the groups it reads (rig_estimate)."""
    from .rig_estimate import reset_values

    (group,) = check_groups([group], KEYFRAME_GROUPS)
    if group != SEFA:
        set_rig_params(ob, reset_values(ob, group), [group])
        return
    with deferred_rig_changes():
        for slider in ob.face_rig.sefa_sliders:
            slider.value = 0.0


def randomise_group(ob: Object, group: str, seed: int) -> None:
    """Draw ``group`` from the rig prior (``random_group``) and write only that group."""
    set_rig_params(ob, random_group(group, seed), [group])


# -- animation ----------------------------------------------------------------------------------


def object_fcurves(ob: Object) -> Any:
    """The F-curve collection of ``ob``'s action for its slot (Blender 4.4+: layered actions,
    the only kind in 5.0), or ``Action.fcurves`` (4.2, 4.3); an empty tuple without one."""
    animation = ob.animation_data
    action = animation.action if animation is not None else None
    if action is None:
        return ()
    slot = getattr(animation, "action_slot", None)
    if slot is None:
        return getattr(action, "fcurves", ())
    from bpy_extras.anim_utils import action_get_channelbag_for_slot

    channelbag = action_get_channelbag_for_slot(action, slot)
    return channelbag.fcurves if channelbag is not None else ()


def group_fcurves(ob: Object, group: str) -> list[FCurve]:
    """F-curves of ``ob`` animating ``group`` (KEYFRAME_GROUPS)."""
    (group,) = check_groups([group], KEYFRAME_GROUPS)
    prefix = "face_rig.sefa_sliders[" if group == SEFA else f"face_rig.{group}."
    return [fcurve for fcurve in object_fcurves(ob) if fcurve.data_path.startswith(prefix)]


def keyframe_group(ob: Object, group: str, frame: float) -> int:
    """Key every value of ``group`` at ``frame`` (F-curve group named after the rig group);
    returns how many keys were inserted."""
    paths = group_data_paths(group, len(ob.face_rig.sefa_sliders))
    label = FCURVE_GROUP_LABELS[group]
    return sum(bool(ob.keyframe_insert(path, frame=frame, group=label)) for path in paths)


# -- SeFa sliders -------------------------------------------------------------------------------


def add_sefa_slider(
    ob: Object, direction: int, layer_start: int, layer_end: int, label: str = ""
) -> NFR_SefaSlider:
    """Append a slider (value 0) and make it the active one."""
    if not 0 <= layer_start <= layer_end:
        raise RigParamsError(
            f"SeFa slider layers: expected 0 <= first <= last, found {layer_start}..{layer_end}"
        )
    face_rig = ob.face_rig
    with deferred_rig_changes():
        slider = face_rig.sefa_sliders.add()
        slider.label = label or f"Direction {direction}"
        slider.direction = direction
        slider.layer_end = layer_end
        slider.layer_start = layer_start
    face_rig.sefa_active_index = len(face_rig.sefa_sliders) - 1
    return slider


def move_sefa_slider(ob: Object, index: int, to: int) -> None:
    """Move slider ``index`` to position ``to``; its F-curves follow it (slider data paths
    hold indices, D7511)."""
    sliders = ob.face_rig.sefa_sliders
    _check_slider_index(sliders, index)
    _check_slider_index(sliders, to)
    _remap_slider_fcurves(ob, slider_index_map(len(sliders), move=(index, to)))
    with deferred_rig_changes():
        sliders.move(index, to)
    ob.face_rig.sefa_active_index = to


def remove_sefa_slider(ob: Object, index: int) -> None:
    """Remove slider ``index`` and its F-curves; later sliders keep their animation."""
    sliders = ob.face_rig.sefa_sliders
    _check_slider_index(sliders, index)
    _remap_slider_fcurves(ob, slider_index_map(len(sliders), remove=index))
    with deferred_rig_changes():
        sliders.remove(index)
    ob.face_rig.sefa_active_index = min(index, len(sliders) - 1) if len(sliders) else 0


def _check_slider_index(sliders: Any, index: int) -> None:
    if not 0 <= index < len(sliders):
        raise IndexError(f"SeFa slider {index}: expected an index in 0..{len(sliders) - 1}")


def _remap_slider_fcurves(ob: Object, new_index: Sequence[int | None]) -> None:
    fcurves = object_fcurves(ob)
    renamed = []
    for fcurve in list(fcurves):
        path = remap_slider_path(fcurve.data_path, new_index)
        if path is None:
            fcurves.remove(fcurve)
        elif path != fcurve.data_path:
            renamed.append((fcurve, path))
    for fcurve, path in renamed:
        fcurve.data_path = path


# -- preset files -------------------------------------------------------------------------------


def save_preset(ob: Object, path: str | os.PathLike[str], groups: Iterable[str]) -> None:
    """Write ``groups`` of ``ob``'s rig as a preset file (atomically: never half-written)."""
    document = preset_document(read_rig_params(ob), groups)
    try:
        with atomic_open(path, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1, allow_nan=False)
            handle.write("\n")
    except OSError as exc:
        raise PresetError(f"{path}: cannot write the preset ({exc})") from None
    save_preset_extras(ob, path, document)  # controls: seed, truncation, SeFa, named controls


def read_preset(
    path: str | os.PathLike[str], groups: Iterable[str] | None = None
) -> tuple[RigParams, tuple[str, ...]]:
    """Params and groups of a preset file (see ``parse_preset``)."""
    # A regular file only: a FIFO or device chosen by mistake must not hang Blender.
    data = read_regular_file(path, "rig preset", PRESET_MAX_BYTES, PresetError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PresetError(f"{path}: expected a UTF-8 rig preset, found {exc.reason} at byte "
                          f"{exc.start}") from None
    return parse_preset(text, str(path), groups)


def load_preset(
    ob: Object, path: str | os.PathLike[str], groups: Iterable[str] | None = None
) -> tuple[str, ...]:
    """Write the preset's ``groups`` (default: all it holds) into ``ob``; returns them."""
    params, loaded = read_preset(path, groups)
    parse_preset_extras(path, groups)  # controls: a bad sidecar changes nothing
    set_rig_params(ob, params, loaded)
    load_preset_extras(ob, path, groups)  # controls
    return loaded
