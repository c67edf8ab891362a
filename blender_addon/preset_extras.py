"""What a full preset holds besides the rig coefficients: the generator's seed and truncation,
the SeFa sliders and the named-control values, in a sidecar ``<preset>.generator.json``.

The preset itself stays a rig.params document (``nfr rig`` reads it; that schema refuses
unknown fields), so these live next to it. Written when a preset of every group is saved,
read when one is loaded with every group; a preset without the sidecar loads as before. The
sidecar is checked completely before anything is written (bounded size, types, ranges), so a
bad file changes nothing.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bpy.types import Object

from .properties import deferred_rig_changes
from .rig.atomic import atomic_open
from .rig.controls import CONTROL_NAMES
from .rig.errors import RigParamsError
from .rig.params import GROUP_NAMES

SCHEMA = "neural_face_rig/generator_state"
VERSION = 1
MAX_BYTES = 1 << 20
MAX_SLIDERS = 512
_SEED_MAX = 2**31 - 1


class PresetExtrasError(RigParamsError):
    """A generator-state sidecar is malformed (the message names the file and the field)."""


def sidecar_path(preset: str | os.PathLike[str]) -> Path:
    """``face.json`` -> ``face.generator.json``."""
    path = Path(preset)
    return path.with_name(f"{path.stem}.generator.json")


def state_document(ob: Object) -> dict[str, Any]:
    face_rig, named = ob.face_rig, ob.face_controls.named
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "seed": int(face_rig.seed),
        "psi": float(face_rig.psi),
        "sefa_sliders": [
            {"label": s.label, "direction": int(s.direction), "layer_start": int(s.layer_start),
             "layer_end": int(s.layer_end), "value": float(s.value)}
            for s in face_rig.sefa_sliders
        ],
        "named_controls": {name: float(getattr(named, name)) for name in CONTROL_NAMES},
    }


def save_preset_extras(ob: Object, preset: str | os.PathLike[str], groups: Iterable[str]) -> None:
    """After a preset was saved: write its generator-state sidecar when it holds every group
    (``groups``: the group names, or the preset document's keys)."""
    if not set(GROUP_NAMES) <= set(groups):
        return
    with atomic_open(sidecar_path(preset), "w", encoding="utf-8") as handle:
        json.dump(state_document(ob), handle, indent=1, allow_nan=False)
        handle.write("\n")


def load_preset_extras(ob: Object, preset: str | os.PathLike[str],
                       groups: Iterable[str] | None) -> bool:
    """After a preset was loaded with every group (``groups`` None): apply its sidecar if
    there is one. Returns whether one was applied."""
    path = sidecar_path(preset)
    if groups is not None or not path.is_file():
        return False
    state = parse_state(path)
    from .rig_props import add_sefa_slider, remove_sefa_slider

    with deferred_rig_changes():
        ob.face_rig.seed, ob.face_rig.psi = state["seed"], state["psi"]
        for index in reversed(range(len(ob.face_rig.sefa_sliders))):
            remove_sefa_slider(ob, index)
        for s in state["sefa_sliders"]:
            slider = add_sefa_slider(ob, s["direction"], s["layer_start"], s["layer_end"],
                                     s["label"])
            slider.value = s["value"]
        for name, value in state["named_controls"].items():
            setattr(ob.face_controls.named, name, value)
    return True


def parse_preset_extras(preset: str | os.PathLike[str], groups: Iterable[str] | None) -> None:
    """Check the sidecar ``load_preset_extras`` would apply (raises before anything is
    written)."""
    path = sidecar_path(preset)
    if groups is None and path.is_file():
        parse_state(path)


def parse_state(path: Path) -> dict[str, Any]:
    """The checked sidecar document; PresetExtrasError naming the field otherwise."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise PresetExtrasError(f"{path}: expected at most {MAX_BYTES} bytes, found {size}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PresetExtrasError(f"{path}: cannot read the generator state ({exc})") from None

    def fail(field: str, expected: str, found: object) -> PresetExtrasError:
        return PresetExtrasError(f"{path}: field '{field}': expected {expected}, found "
                                 f"{str(found)[:60]!r}")

    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or doc.get("version") != VERSION:
        raise fail("schema", f"{SCHEMA!r} version {VERSION}", doc if not isinstance(doc, dict)
                   else doc.get("schema"))
    seed, psi = doc.get("seed"), doc.get("psi")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= _SEED_MAX:
        raise fail("seed", f"an integer 0..{_SEED_MAX}", seed)
    if not _number(psi) or not -1.0 <= psi <= 2.0:
        raise fail("psi", "a number -1..2", psi)
    sliders = doc.get("sefa_sliders")
    if not isinstance(sliders, list) or len(sliders) > MAX_SLIDERS:
        raise fail("sefa_sliders", f"a list of at most {MAX_SLIDERS} sliders", sliders)
    for i, s in enumerate(sliders):
        where = f"sefa_sliders[{i}]"
        if not isinstance(s, dict) or not isinstance(s.get("label"), str):
            raise fail(where, "an object with a string 'label'", s)
        ints = [s.get(k) for k in ("direction", "layer_start", "layer_end")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints) or (
                ints[1] > ints[2]):
            raise fail(where, "direction >= 0 and 0 <= layer_start <= layer_end", s)
        if not _number(s.get("value")) or abs(s["value"]) > 100.0:
            raise fail(f"{where}.value", "a number within ±100", s.get("value"))
    named = doc.get("named_controls")
    if not isinstance(named, dict) or not set(named) <= set(CONTROL_NAMES):
        raise fail("named_controls", "values of the named controls", named)
    for name, value in named.items():
        if not _number(value) or not 0.0 <= value <= 1.0:
            raise fail(f"named_controls.{name}", "a number 0..1", value)
    return doc


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)
