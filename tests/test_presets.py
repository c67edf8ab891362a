"""Rig presets: rig.params JSON documents holding some of the groups, saved and loaded by the
add-on's operators in real Blender (the bpy module). Loading touches only the groups asked
for; a bad file changes nothing and says what is wrong."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import bpy
import numpy as np
import pytest
from neural_face_rig import rig_props
from neural_face_rig.rig.errors import RigParamsError
from neural_face_rig.rig.params import GROUP_NAMES, GROUPS, SCHEMA_NAME, SOFT_RANGES, RigParams

addon_utils = importlib.import_module("addon_utils")  # on sys.path once bpy is imported


@pytest.fixture(scope="module", autouse=True)
def addon():
    addon_utils.enable("neural_face_rig", default_set=True)
    yield
    addon_utils.disable("neural_face_rig", default_set=True)


def _params(seed: int) -> RigParams:
    rng = np.random.default_rng(seed)
    return RigParams(**{name: rng.uniform(-1, 1, size) * SOFT_RANGES[name]
                        for name, size in GROUPS})


@pytest.fixture()
def rig() -> bpy.types.Object:
    """The active face rig, posed with distinct values in every group and one SeFa slider."""
    bpy.ops.wm.read_homefile(use_empty=True)
    ob = bpy.data.objects.new("FaceRig", None)
    bpy.context.scene.collection.objects.link(ob)
    ob.face_rig.is_rig = True
    bpy.context.view_layer.objects.active = ob
    rig_props.set_rig_params(ob, _params(0))
    rig_props.add_sefa_slider(ob, 3, 1, 4, "Smile").value = 1.5
    return ob


def _snapshot(ob: bpy.types.Object) -> tuple:
    """Every value a preset load could touch, in comparable form."""
    face_rig = ob.face_rig
    return (
        {group: [getattr(getattr(face_rig, group), f"c{i:03d}") for i in range(size)]
         for group, size in GROUPS},
        [(s.label, s.direction, s.layer_start, s.layer_end, s.value)
         for s in face_rig.sefa_sliders],
        face_rig.seed, face_rig.psi, face_rig.backend,
    )


def test_preset_document_holds_only_the_chosen_groups() -> None:
    params = _params(1)
    document = rig_props.preset_document(params, ["expression", "identity"])
    assert list(document) == ["schema", "version", "identity", "expression"]
    assert document["schema"] == SCHEMA_NAME
    assert document["expression"] == params.expression.tolist()
    with pytest.raises(RigParamsError, match=r"expected names from .*found \['pose'\]"):
        rig_props.preset_document(params, ["pose"])
    with pytest.raises(RigParamsError, match="at least one rig group"):
        rig_props.preset_document(params, [])


def test_save_and_load_an_identity_preset_touches_identity_only(rig, tmp_path: Path) -> None:
    path = tmp_path / "actor.json"
    assert bpy.ops.nfr.save_preset(filepath=str(path), group="identity") == {"FINISHED"}
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert set(saved) == {"schema", "version", "identity"}
    np.testing.assert_array_equal(np.float32(saved["identity"]), _params(0).identity)
    assert not [p for p in tmp_path.iterdir() if p != path]  # no temporary file left behind
    # The file is an ordinary rig.params document (the nfr CLI reads it).
    np.testing.assert_array_equal(RigParams.read_json(path).identity, _params(0).identity)

    other = _params(2)
    rig_props.set_rig_params(rig, other)
    rig.face_rig.sefa_sliders[0].value = -2.0
    before = _snapshot(rig)
    assert bpy.ops.nfr.load_preset(filepath=str(path), group="identity") == {"FINISHED"}
    after = _snapshot(rig)
    np.testing.assert_array_equal(np.float32(after[0]["identity"]), _params(0).identity)
    assert {g: v for g, v in after[0].items() if g != "identity"} == {
        g: v for g, v in before[0].items() if g != "identity"}
    assert after[1:] == before[1:]


def test_loading_all_groups_loads_every_group_the_file_holds(rig, tmp_path: Path) -> None:
    path = tmp_path / "look.json"
    rig_props.save_preset(rig, path, ["expression", "rotation"])
    expected = _snapshot(rig)[0]
    rig_props.set_rig_params(rig, _params(3))
    before = _snapshot(rig)
    assert bpy.ops.nfr.load_preset(filepath=str(path)) == {"FINISHED"}  # group="ALL"
    after = _snapshot(rig)
    for group in GROUP_NAMES:
        source = expected if group in ("expression", "rotation") else before[0]
        assert after[0][group] == source[group], group
    assert after[1:] == before[1:]

    # A whole-rig round trip through a preset restores all 257 values exactly.
    everything = tmp_path / "everything.json"
    assert bpy.ops.nfr.save_preset(filepath=str(everything)) == {"FINISHED"}
    saved = _snapshot(rig)
    rig_props.set_rig_params(rig, RigParams.neutral())
    assert rig_props.load_preset(rig, everything) == GROUP_NAMES
    assert _snapshot(rig) == saved


def _write(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _document(**groups) -> dict:
    return {"schema": SCHEMA_NAME, "version": 1, **groups}


_BAD_PRESETS = {
    "missing file": (None, r"missing\.json: cannot read the rig preset: no such file"),
    "not json": ("{identity: [1, 2", r"not_json\.json: expected JSON, found a syntax error"),
    "not utf-8": (b"\xff\xfe{", r"not_utf_8\.json: expected a UTF-8 rig preset, found invalid "
                                 r"start byte at byte 0"),
    "wrong schema": ({"schema": "other/thing", "version": 1, "identity": [0.0] * 80},
                     r"field 'schema': expected 'neural_face_rig/rig_params', found 'other/thing'"),
    "newer version": (_document(identity=[0.0] * 80) | {"version": 99},
                      r"field 'version': expected 1 or older, found 99"),
    "wrong length": (_document(identity=[0.5] * 79), r"field 'identity': expected 80 numbers, "
                                                     r"found 79"),
    "not numbers": (_document(identity=[0.5] * 79 + ["big"]),
                    r"field 'identity': expected a list of 80 numbers"),
    "unknown field": (_document(identity=[0.0] * 80, mood="happy"),
                      r"unknown field\(s\) \['mood'\]"),
    "no groups": (_document(), r"no_groups\.json: expected at least one rig group"),
    "group not in file": (_document(expression=[0.0] * 64),
                          r"expected group\(s\) identity, found only expression"),
    "beyond the limits": (_document(identity=[0.0] * 40 + [7.5] + [0.0] * 39),
                          r"field 'identity' index 40 \(Identity 40\): expected a value within "
                          r"±5, found 7\.5"),
    "too big": ("[" + "0, " * 400_000 + "0]", r"too_big\.json: expected the rig preset to be at "
                                               r"most 1048576 bytes, found \d+ bytes"),
}


def test_a_fifo_chosen_as_preset_is_refused_without_blocking(rig, tmp_path: Path) -> None:
    fifo = tmp_path / "preset.json"
    os.mkfifo(fifo)  # reading it would block Blender's main thread forever
    before = _snapshot(rig)
    with pytest.raises(RigParamsError, match=r"preset\.json: expected the rig preset as a "
                                             r"regular file, found a FIFO"):
        rig_props.load_preset(rig, fifo, ["identity"])
    assert _snapshot(rig) == before


@pytest.mark.parametrize("case", list(_BAD_PRESETS), ids=list(_BAD_PRESETS))
def test_a_bad_preset_changes_nothing_and_says_why(rig, tmp_path: Path, case: str) -> None:
    content, message = _BAD_PRESETS[case]
    name = case.replace(" ", "_").replace("-", "_") + ".json"
    path = tmp_path / "missing.json" if content is None else _write(tmp_path, name, content)
    before = _snapshot(rig)
    with pytest.raises(RigParamsError, match=message):
        rig_props.load_preset(rig, path, ["identity"])
    # Through the operator: Blender turns its ERROR report into RuntimeError for Python
    # callers; the operator returned CANCELLED instead of raising (no traceback).
    with pytest.raises(RuntimeError, match=message) as raised:
        bpy.ops.nfr.load_preset(filepath=str(path), group="identity")
    assert "Traceback" not in str(raised.value)
    assert _snapshot(rig) == before


def test_a_valid_group_next_to_a_bad_one_is_not_loaded(rig, tmp_path: Path) -> None:
    """The whole file is checked before anything is written."""
    path = _write(tmp_path, "half.json", _document(identity=[1.0] * 80,
                                                   expression=[0.0] * 63 + [9.0]))
    before = _snapshot(rig)
    with pytest.raises(RuntimeError, match=r"'expression' index 63 .*found 9"):
        bpy.ops.nfr.load_preset(filepath=str(path))
    assert _snapshot(rig) == before


def test_saving_into_a_missing_folder_reports_and_writes_nothing(rig, tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "folder" / "actor.json"
    with pytest.raises(RuntimeError, match=r"actor\.json: cannot write the preset"):
        bpy.ops.nfr.save_preset(filepath=str(path), group="identity")
    assert not (tmp_path / "no").exists()


def test_saving_over_a_preset_replaces_it_whole(rig, tmp_path: Path) -> None:
    path = tmp_path / "actor.json"
    path.write_text("old content that is longer than nothing " * 1000)
    rig_props.save_preset(rig, path, ["expression"])
    assert set(json.loads(path.read_text())) == {"schema", "version", "expression"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["actor.json"]
