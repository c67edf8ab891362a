"""The face rig's properties, operators and panels in real Blender (the bpy module).

Uses the editable package enabled as an add-on (the modules the extension zip ships);
tests/conftest.py isolates Blender's user folders.
"""

from __future__ import annotations

import contextlib
import importlib
import types
from pathlib import Path

import bpy
import numpy as np
import pytest
from bpy_extras import anim_utils
from neural_face_rig import live, portrait, properties, rig_props
from neural_face_rig.contract.state import RigState, SefaSlider
from neural_face_rig.panels import coefficients, model, output, sefa, services
from neural_face_rig.rig.errors import RigParamsError
from neural_face_rig.rig.params import GROUP_NAMES, GROUP_SLICES, GROUPS, SOFT_RANGES, RigParams

addon_utils = importlib.import_module("addon_utils")  # on sys.path once bpy is imported

MODULE = "neural_face_rig"


@pytest.fixture(scope="module", autouse=True)
def addon():
    addon_utils.enable(MODULE, default_set=True)
    yield
    addon_utils.disable(MODULE, default_set=True)


def _new_rig(name: str = "FaceRig") -> bpy.types.Object:
    ob = bpy.data.objects.new(name, None)
    bpy.context.scene.collection.objects.link(ob)
    ob.face_rig.is_rig = True
    bpy.context.view_layer.objects.active = ob
    return ob


@pytest.fixture()
def rig() -> bpy.types.Object:
    bpy.ops.wm.read_homefile(use_empty=True)
    return _new_rig()


def _values(ob: bpy.types.Object, group: str) -> np.ndarray:
    """A group's values read property by property (independent of rig_props' reader)."""
    values = getattr(ob.face_rig, group)
    return np.array([getattr(values, f"c{i:03d}") for i in range(dict(GROUPS)[group])],
                    np.float32)


def _sliders(ob: bpy.types.Object) -> list[tuple]:
    return [(s.label, s.direction, s.layer_start, s.layer_end, s.value)
            for s in ob.face_rig.sefa_sliders]


def _random_params(seed: int) -> RigParams:
    """Values spread over each coefficient's soft range (all distinct, float32-exact)."""
    rng = np.random.default_rng(seed)
    return RigParams(**{name: rng.uniform(-1, 1, size) * SOFT_RANGES[name]
                        for name, size in GROUPS})


def _channelbag_fcurves(ob: bpy.types.Object):
    """F-curves through Blender's own API (not through rig_props): the layered action's
    channelbag for the object's slot (4.4+; the only kind in 5.0+), else 4.2's
    ``Action.fcurves``."""
    animation = ob.animation_data
    if not hasattr(anim_utils, "action_get_channelbag_for_slot"):
        return animation.action.fcurves
    channelbag = anim_utils.action_get_channelbag_for_slot(animation.action, animation.action_slot)
    return channelbag.fcurves


# -- the properties ------------------------------------------------------------------------------


def test_every_coefficient_is_its_own_animatable_float_with_schema_ranges(rig) -> None:
    for group, size in GROUPS:
        rna = getattr(rig.face_rig, group).bl_rna.properties
        keys = [key for key in rna.keys() if key not in ("rna_type", "name")]
        assert keys == [f"c{i:03d}" for i in range(size)], group
        for index, key in enumerate(keys):
            prop = rna[key]
            soft = float(SOFT_RANGES[group][index])
            assert prop.type == "FLOAT" and prop.is_animatable and not prop.is_array
            assert (prop.soft_min, prop.soft_max) == pytest.approx((-soft, soft))
            assert prop.hard_min < -soft and prop.hard_max > soft  # room beyond "plausible"
            assert prop.subtype == ("ANGLE" if group == "rotation" else "NONE")
            assert prop.description
    names = {group: getattr(rig.face_rig, group).bl_rna.properties for group in GROUP_NAMES}
    assert names["identity"]["c012"].name == "Identity 12"
    assert names["expression"]["c063"].name == "Expression 63"
    assert [names["rotation"][f"c00{i}"].name for i in range(3)] == ["Pitch", "Yaw", "Roll"]
    assert names["illumination"]["c012"].name == "SH G 3"
    assert names["translation"]["c002"].name == "Translation Z"
    assert "decimetres" in names["translation"]["c000"].description
    slider = properties.NFR_SefaSlider.bl_rna.properties
    assert slider["value"].is_animatable
    assert {"label", "direction", "layer_start", "layer_end"} <= set(slider.keys())


def test_keyframes_interpolate_and_the_depsgraph_gives_the_animated_values(rig) -> None:
    scene = bpy.context.scene
    slider = rig.face_rig.sefa_sliders.add()
    keyed = [("expression", "c003", -1.5, 2.0), ("rotation", "c001", -0.4, 0.6),
             ("illumination", "c020", 0.0, 0.9)]
    for end, frame in enumerate((1, 10)):
        for group, key, *values in keyed:
            setattr(getattr(rig.face_rig, group), key, values[end])
            rig.keyframe_insert(f"face_rig.{group}.{key}", frame=frame)
        slider.value = (-3.0, 5.0)[end]
        slider.keyframe_insert("value", frame=frame)
    scene.frame_set(5)
    curves = {fc.data_path: fc for fc in _channelbag_fcurves(rig)}
    depsgraph = bpy.context.evaluated_depsgraph_get()
    state = rig_props.rig_state(rig, depsgraph=depsgraph)
    for group, key, first, last in keyed:
        expected = curves[f"face_rig.{group}.{key}"].evaluate(5)
        assert min(first, last) < expected < max(first, last)
        assert getattr(getattr(rig.face_rig, group), key) == pytest.approx(expected, abs=1e-6)
        index = GROUP_SLICES[group].start + int(key[1:])
        assert state.rig[index] == pytest.approx(expected, abs=1e-6)
    assert state.sefa[0].value == pytest.approx(curves["face_rig.sefa_sliders[0].value"]
                                                .evaluate(5), abs=1e-6)

    # During an animation render the original datablock is stale: emulate it by editing the
    # original only. The evaluated copy keeps the animated value and rig_state reads it.
    rig.face_rig.expression.c003 = 2.9
    index = GROUP_SLICES["expression"].start + 3
    assert rig_props.rig_state(rig).rig[index] == pytest.approx(2.9)
    animated = rig_props.rig_state(rig, depsgraph=depsgraph).rig[index]
    assert animated == pytest.approx(curves["face_rig.expression.c003"].evaluate(5), abs=1e-6)


def test_rig_state_is_the_properties_in_canonical_order(rig, tmp_path: Path) -> None:
    params = _random_params(1)
    written = {}
    for group, size in GROUPS:  # through Blender's own data API, not rig_props
        values = getattr(params, group)
        for index in range(size):
            setattr(getattr(rig.face_rig, group), f"c{index:03d}", float(values[index]))
        written[group] = _values(rig, group)
    face_rig = rig.face_rig
    face_rig.seed, face_rig.psi, face_rig.backend = 1234, 0.5, "discofacegan"
    face_rig.preview_resolution, face_rig.render_resolution = "128", "FULL"
    for direction, start, end, value in ((4, 2, 5, 1.5), (0, 7, 7, -2.0)):
        slider = face_rig.sefa_sliders.add()
        slider.direction, slider.layer_end, slider.layer_start = direction, end, start
        slider.value = value

    state = rig_props.rig_state(rig)
    assert isinstance(state, RigState)
    expected = np.concatenate([written[group] for group in GROUP_NAMES])
    assert state.rig.dtype == np.float32 and state.rig.shape == (257,)
    np.testing.assert_array_equal(state.rig, expected)
    np.testing.assert_array_equal(state.rig, params.to_vector())  # float32-exact storage
    np.testing.assert_array_equal(RigParams.from_vector(state.rig).to_vector(), state.rig)
    assert (state.backend, state.seed, state.psi) == ("discofacegan", 1234, 0.5)
    assert state.sefa == (SefaSlider(4, 1.5, (2, 3, 4, 5)), SefaSlider(0, -2.0, (7,)))
    assert state.resolution == 128
    assert rig_props.rig_state(rig, final=True).resolution is None
    assert rig_props.model_path(rig) == ""  # the preferences' default

    # Blend-relative model paths become absolute: the worker does not know the .blend folder.
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    rig = bpy.data.objects["FaceRig"]
    rig.face_rig.model_path = "//models/face.pkl"
    assert rig_props.model_path(rig) == str(tmp_path / "models" / "face.pkl")

    # RigParams round trip through the properties.
    other = _new_rig("Other")
    rig_props.set_rig_params(other, RigParams.from_vector(state.rig))
    np.testing.assert_array_equal(rig_props.read_rig_params(other).to_vector(), state.rig)


def test_set_rig_params_writes_only_the_given_groups_and_refuses_out_of_range_values(rig):
    before = _random_params(2)
    rig_props.set_rig_params(rig, before)
    new = _random_params(3)
    rig_props.set_rig_params(rig, new, ["expression", "rotation"])
    for group in GROUP_NAMES:
        source = new if group in ("expression", "rotation") else before
        np.testing.assert_array_equal(_values(rig, group), getattr(source, group), group)

    bad = _random_params(4)
    bad.identity[7] = 6.0  # beyond the ±5 σ the properties hold
    with pytest.raises(RigParamsError, match=r"'identity' index 7 \(Identity 7\).*±5.*found 6"):
        rig_props.set_rig_params(rig, bad)
    np.testing.assert_array_equal(_values(rig, "identity"), before.identity)  # nothing written
    np.testing.assert_array_equal(_values(rig, "reflectance"), before.reflectance)


def test_rig_changes_notify_the_listeners_once_per_edit_or_group_write(rig) -> None:
    heard: list[str] = []

    def listener(ob):
        heard.append(ob.name)

    properties.RIG_CHANGE_LISTENERS.append(listener)
    try:
        rig.face_rig.expression.c010 = 1.0
        rig.face_rig.rotation.c000 = 0.2
        rig.face_rig.seed = 9
        slider = rig.face_rig.sefa_sliders.add()
        slider.value = 2.0
        assert heard == ["FaceRig"] * 4
        heard.clear()
        rig_props.set_rig_params(rig, _random_params(5))  # 257 values, one live update
        assert heard == ["FaceRig"]
    finally:
        properties.RIG_CHANGE_LISTENERS.remove(listener)
    rig.face_rig.expression.c010 = 2.0
    assert heard == ["FaceRig"]


def test_a_failing_listener_neither_blocks_the_others_nor_the_edit(rig, capsys) -> None:
    heard: list[str] = []

    def broken(_ob):
        raise ValueError("simulated listener bug")

    properties.RIG_CHANGE_LISTENERS.extend([broken, lambda ob: heard.append(ob.name)])
    try:
        rig.face_rig.expression.c001 = 0.75
    finally:
        del properties.RIG_CHANGE_LISTENERS[-2:]
    assert rig.face_rig.expression.c001 == 0.75 and heard == ["FaceRig"]
    assert "simulated listener bug" in capsys.readouterr().err


def test_keyframe_group_creates_exactly_the_groups_fcurves(rig) -> None:
    bpy.context.scene.frame_set(7)
    rig_props.set_rig_params(rig, _random_params(6))
    assert bpy.ops.nfr.keyframe_group(group="expression") == {"FINISHED"}
    fcurves = list(_channelbag_fcurves(rig))
    expected = {f"face_rig.expression.c{i:03d}" for i in range(64)}
    assert {fc.data_path for fc in fcurves} == expected and len(fcurves) == 64
    for fc in fcurves:
        assert fc.array_index == 0 and fc.group.name == "Expression"
        (key,) = fc.keyframe_points
        assert key.co[0] == 7
        assert key.co[1] == getattr(rig.face_rig.expression, fc.data_path[-4:])
    assert set(rig_props.group_fcurves(rig, "expression")) == set(fcurves)
    assert rig_props.group_fcurves(rig, "identity") == []

    rig.face_rig.sefa_sliders.add()
    rig.face_rig.sefa_sliders.add()
    assert rig_props.keyframe_group(rig, "rotation", 7) == 3
    assert rig_props.keyframe_group(rig, "sefa", 7) == 2
    paths = {fc.data_path for fc in _channelbag_fcurves(rig)}
    assert paths == expected | {f"face_rig.rotation.c00{i}" for i in range(3)} | {
        "face_rig.sefa_sliders[0].value", "face_rig.sefa_sliders[1].value"}
    assert {fc.data_path for fc in rig_props.group_fcurves(rig, "sefa")} == {
        "face_rig.sefa_sliders[0].value", "face_rig.sefa_sliders[1].value"}


def test_save_and_reopen_restores_every_value_and_slider_exactly(rig, tmp_path: Path) -> None:
    params = _random_params(7)
    rig_props.set_rig_params(rig, params)
    face_rig = rig.face_rig
    face_rig.seed, face_rig.psi, face_rig.backend = 77, 0.625, "stylerig"
    face_rig.model_path, face_rig.image_name = "//ffhq.pkl", "FaceRig Face"
    face_rig.preview_resolution, face_rig.render_resolution = "64", "512"
    face_rig.show_all_expression = True
    for i, (label, value) in enumerate((("Smile", 1.25), ("Age", -3.5), ("", 0.0))):
        rig_props.add_sefa_slider(rig, i * 3, i, i + 2, label)
        face_rig.sefa_sliders[i].value = value
    face_rig.sefa_active_index = 1
    scalars = ("seed", "psi", "backend", "model_path", "image_name", "preview_resolution",
               "render_resolution", "show_all_expression", "sefa_active_index", "is_rig")
    before = ({name: getattr(face_rig, name) for name in scalars}, _sliders(rig))

    path = tmp_path / "face.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.read_homefile(use_empty=True)
    assert "FaceRig" not in bpy.data.objects
    bpy.ops.wm.open_mainfile(filepath=str(path))

    reopened = bpy.data.objects["FaceRig"]
    for group in GROUP_NAMES:
        np.testing.assert_array_equal(_values(reopened, group), getattr(params, group), group)
    after = ({name: getattr(reopened.face_rig, name) for name in scalars}, _sliders(reopened))
    assert after == before
    assert [s.label for s in reopened.face_rig.sefa_sliders] == ["Smile", "Age", "Direction 6"]


def test_undo_after_a_slider_change_restores_the_value(rig) -> None:
    """The bpy module runs Blender's real undo stack: ed.undo_push is what the UI does after a
    slider drag, ed.undo what Ctrl+Z does."""
    bpy.ops.ed.undo_push(message="Original")
    rig.face_rig.expression.c003 = 1.25
    bpy.ops.ed.undo_push(message="Expression 3")
    rig.face_rig.expression.c003 = 2.5
    bpy.ops.ed.undo_push(message="Expression 3")
    assert bpy.ops.ed.undo() == {"FINISHED"}
    rig = bpy.data.objects["FaceRig"]  # undo replaced the datablocks: fetch them again
    assert rig.face_rig.expression.c003 == 1.25
    bpy.ops.ed.undo()
    assert bpy.data.objects["FaceRig"].face_rig.expression.c003 == 0.0
    bpy.ops.ed.redo()
    assert bpy.data.objects["FaceRig"].face_rig.expression.c003 == 1.25


def test_each_operator_is_one_undo_step(rig) -> None:
    bpy.ops.ed.undo_push(message="Original")
    rig_props.set_rig_params(rig, _random_params(8))
    slider = rig_props.add_sefa_slider(rig, 0, 0, 3)
    slider.value = 4.0
    bpy.ops.ed.undo_push(message="Posed")
    before = (rig_props.read_rig_params(rig).to_vector(), _sliders(rig))
    # Positional arguments: execution context, then undo=True (what a button click does).
    for op, kwargs in ((bpy.ops.nfr.randomise_group, {"group": "identity", "seed": 3}),
                       (bpy.ops.nfr.reset_group, {"group": "expression"}),
                       (bpy.ops.nfr.reset_group, {"group": "sefa"}),
                       (bpy.ops.nfr.add_sefa_slider, {}),
                       (bpy.ops.nfr.remove_sefa_slider, {})):
        assert op("EXEC_DEFAULT", True, **kwargs) == {"FINISHED"}
        changed = bpy.data.objects["FaceRig"]
        assert (not np.array_equal(rig_props.read_rig_params(changed).to_vector(), before[0])
                or _sliders(changed) != before[1]), op
        bpy.ops.ed.undo()
        restored = bpy.data.objects["FaceRig"]
        np.testing.assert_array_equal(rig_props.read_rig_params(restored).to_vector(), before[0])
        assert _sliders(restored) == before[1], op


# -- operators -----------------------------------------------------------------------------------


def test_randomise_is_reproducible_plausible_and_touches_its_group_only(rig) -> None:
    base = _random_params(9)
    rig_props.set_rig_params(rig, base)
    assert bpy.ops.nfr.randomise_group(group="identity", seed=42) == {"FINISHED"}
    first = _values(rig, "identity")
    bpy.ops.nfr.randomise_group(group="identity", seed=43)
    assert not np.array_equal(_values(rig, "identity"), first)
    bpy.ops.nfr.randomise_group(group="identity", seed=42)
    np.testing.assert_array_equal(_values(rig, "identity"), first)
    # The draw is the rig prior's (rig.params) for this seed, kept inside the soft range.
    prior = RigParams.sample(np.random.default_rng(42), groups=["identity"]).identity
    np.testing.assert_array_equal(first, np.clip(prior, -3, 3))
    for group in GROUP_NAMES:
        if group != "identity":
            np.testing.assert_array_equal(_values(rig, group), getattr(base, group), group)

    draws = {group: [] for group in GROUP_NAMES}
    for seed in range(12):
        for group in GROUP_NAMES:
            bpy.ops.nfr.randomise_group(group=group, seed=seed)
            draws[group].append(_values(rig, group))
    for group in GROUP_NAMES:
        values = np.stack(draws[group])
        assert np.all(np.abs(values) <= SOFT_RANGES[group]), group
    identity = np.stack(draws["identity"])
    assert 0.8 < identity.std() < 1.1  # the model's own N(0, 1) prior, barely clipped
    assert len({v.tobytes() for v in identity}) == 12
    yaw = np.stack(draws["rotation"])[:, 1]
    assert 0.05 < np.abs(yaw).max() <= 1.0  # heads turn, within ±57°
    np.testing.assert_array_equal(np.stack(draws["translation"]), 0.0)  # faces stay centred


def test_each_unseeded_randomise_draws_a_new_seed(rig, monkeypatch) -> None:
    import secrets

    bpy.ops.nfr.randomise_group(group="expression")
    first = _values(rig, "expression")
    bpy.ops.nfr.randomise_group(group="expression")
    assert not np.array_equal(_values(rig, "expression"), first)
    # The seed drawn for a click is the one reported and shown in the redo panel: it repeats.
    monkeypatch.setattr(secrets, "randbelow", lambda bound: 1234)
    bpy.ops.nfr.randomise_group(group="expression")
    drawn = _values(rig, "expression")
    bpy.ops.nfr.reset_group(group="expression")
    bpy.ops.nfr.randomise_group(group="expression", seed=1234)
    np.testing.assert_array_equal(_values(rig, "expression"), drawn)


def test_reset_zeroes_the_group_only(rig) -> None:
    base = _random_params(10)
    rig_props.set_rig_params(rig, base)
    for value in (1.5, -2.0):
        rig_props.add_sefa_slider(rig, 1, 0, 3).value = value
    assert bpy.ops.nfr.reset_group(group="expression") == {"FINISHED"}
    for group in GROUP_NAMES:
        expected = np.zeros_like(base.expression) if group == "expression" else getattr(base, group)
        np.testing.assert_array_equal(_values(rig, group), expected, group)
    assert [s.value for s in rig.face_rig.sefa_sliders] == [1.5, -2.0]
    assert bpy.ops.nfr.reset_group(group="sefa") == {"FINISHED"}
    assert [s.value for s in rig.face_rig.sefa_sliders] == [0.0, 0.0]
    np.testing.assert_array_equal(_values(rig, "identity"), base.identity)


def test_sefa_slider_operators_keep_animation_on_the_right_slider(rig) -> None:
    scene = bpy.context.scene
    for label in ("A", "B", "C"):
        assert bpy.ops.nfr.add_sefa_slider(label=label) == {"FINISHED"}
    sliders = rig.face_rig.sefa_sliders
    assert [(s.label, s.direction, s.layer_start, s.layer_end) for s in sliders] == [
        ("A", 0, 0, 3), ("B", 1, 0, 3), ("C", 2, 0, 3)]
    assert rig.face_rig.sefa_active_index == 2
    animated = {"A": (1.0, 2.0), "B": (-1.0, -3.0), "C": (0.5, 4.0)}
    for frame in (1, 11):
        for slider in sliders:
            slider.value = animated[slider.label][frame > 1]
        rig_props.keyframe_group(rig, "sefa", frame)

    def values_at(frame):
        scene.frame_set(frame)
        return {s.label: s.value for s in rig.face_rig.sefa_sliders}

    assert values_at(11) == {"A": 2.0, "B": -3.0, "C": 4.0}
    rig.face_rig.sefa_active_index = 0
    assert bpy.ops.nfr.move_sefa_slider(direction="DOWN") == {"FINISHED"}
    assert [s.label for s in sliders] == ["B", "A", "C"] and rig.face_rig.sefa_active_index == 1
    assert values_at(1) == {"A": 1.0, "B": -1.0, "C": 0.5}
    assert values_at(11) == {"A": 2.0, "B": -3.0, "C": 4.0}
    assert bpy.ops.nfr.move_sefa_slider(direction="UP") == {"FINISHED"}
    assert bpy.ops.nfr.move_sefa_slider(direction="UP") == {"CANCELLED"}  # already first
    assert [s.label for s in sliders] == ["A", "B", "C"]

    rig.face_rig.sefa_active_index = 1
    assert bpy.ops.nfr.remove_sefa_slider() == {"FINISHED"}
    assert [s.label for s in sliders] == ["A", "C"]
    assert values_at(1) == {"A": 1.0, "C": 0.5}
    assert values_at(11) == {"A": 2.0, "C": 4.0}
    assert len(rig_props.group_fcurves(rig, "sefa")) == 2  # B's curve went with it

    with pytest.raises(RuntimeError, match=r"expected 0 <= first <= last, found 5\.\.2"):
        bpy.ops.nfr.add_sefa_slider(layer_start=5, layer_end=2)
    assert len(sliders) == 2


def test_slider_index_bookkeeping() -> None:
    assert rig_props.slider_index_map(4, move=(0, 2)) == [2, 0, 1, 3]
    assert rig_props.slider_index_map(4, move=(3, 1)) == [0, 2, 3, 1]
    assert rig_props.slider_index_map(4, remove=1) == [0, None, 1, 2]
    moved = rig_props.slider_index_map(3, move=(2, 0))
    assert rig_props.remap_slider_path("face_rig.sefa_sliders[2].value", moved) == (
        "face_rig.sefa_sliders[0].value")
    assert rig_props.remap_slider_path("face_rig.expression.c002", moved) == (
        "face_rig.expression.c002")
    assert rig_props.remap_slider_path("face_rig.sefa_sliders[1].value", [0, None]) is None


def test_operators_need_a_face_rig(rig) -> None:
    plain = bpy.data.objects.new("Plain", None)
    bpy.context.scene.collection.objects.link(plain)
    bpy.context.view_layer.objects.active = plain
    for op in (bpy.ops.nfr.randomise_group, bpy.ops.nfr.reset_group, bpy.ops.nfr.keyframe_group,
               bpy.ops.nfr.save_preset, bpy.ops.nfr.load_preset, bpy.ops.nfr.add_sefa_slider):
        assert not op.poll(), op
    with pytest.raises(RuntimeError, match="The active object is not a face rig"):
        bpy.ops.nfr.reset_group(group="identity")
    bpy.context.view_layer.objects.active = rig
    assert bpy.ops.nfr.reset_group.poll()
    assert not bpy.ops.nfr.remove_sefa_slider.poll()  # no slider to remove
    assert bpy.ops.nfr.keyframe_group(group="sefa") == {"CANCELLED"}  # nothing to key


# -- panels --------------------------------------------------------------------------------------

_ICONS = frozenset(bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"]
                   .enum_items.keys())


class _OperatorButton:
    """The operator properties a button sets; unknown names or enum values fail loudly."""

    def __init__(self, idname: str, log: list) -> None:
        group, name = idname.split(".")
        rna = getattr(getattr(bpy.ops, group), name).get_rna_type().properties
        object.__setattr__(self, "_rna", rna)
        object.__setattr__(self, "values", {})
        log.append(("operator", idname, self.values))

    def __setattr__(self, name: str, value) -> None:
        prop = self._rna[name]  # KeyError: the operator has no such property
        if prop.type == "ENUM":
            assert value in prop.enum_items.keys(), (name, value)
        self.values[name] = value


class _RecordingLayout:
    """Stands in for bpy's UILayout (it exists only while Blender draws a region): records
    labels, properties (by data path) and operator buttons in drawing order, and checks each
    against Blender's RNA as the real layout would (property names, operators, icons)."""

    def __init__(self, log: list) -> None:
        self.log = log

    def _sub(self, **_kwargs) -> _RecordingLayout:
        return _RecordingLayout(self.log)

    row = column = box = split = grid_flow = _sub

    def separator(self, **_kwargs) -> None:
        pass

    def _icon(self, icon: str) -> None:
        assert icon in _ICONS, icon

    def label(self, *, text: str = "", icon: str = "NONE", **_kwargs) -> None:
        self._icon(icon)
        self.log.append(("label", text))

    def prop(self, data, name: str, *, icon: str = "NONE", **_kwargs) -> None:
        self._icon(icon)
        assert name in data.bl_rna.properties, name
        self.log.append(("prop", data.path_from_id(name)))

    def operator(self, idname: str, *, icon: str = "NONE", **_kwargs) -> _OperatorButton:
        self._icon(icon)
        return _OperatorButton(idname, self.log)

    def template_list(self, list_type, list_id, data, propname, active_data, active_propname,
                      **_kwargs) -> None:
        assert hasattr(bpy.types, list_type), list_type
        assert data.bl_rna.properties[propname].type == "COLLECTION"
        assert active_data.bl_rna.properties[active_propname].type == "INT"
        self.log.append(("list", data.path_from_id(propname)))


class _PanelInstance:
    """``self`` of a panel's draw: the recording layout plus the panel class's attributes."""

    def __init__(self, panel: type, layout: _RecordingLayout) -> None:
        self.panel, self.layout = panel, layout

    def __getattr__(self, name: str):
        return getattr(self.panel, name)


@contextlib.contextmanager
def _stand_in_operators(idnames: list[str]):
    """Register do-nothing operators for those of ``idnames`` other helpers have not
    registered (yet), for the duration of the block."""
    stand_ins = [
        type(f"StandIn{i}", (bpy.types.Operator,), {
            "bl_idname": idname, "bl_label": idname, "execute": lambda self, context: {"FINISHED"}
        })
        for i, idname in enumerate(idnames) if not services.operator_available(idname)
    ]
    for cls in stand_ins:
        bpy.utils.register_class(cls)
    try:
        yield
    finally:
        for cls in stand_ins:
            bpy.utils.unregister_class(cls)


def _draw(panel: type) -> list:
    log: list = []
    panel.draw(_PanelInstance(panel, _RecordingLayout(log)), bpy.context)
    return log


def _props(log: list) -> list[str]:
    return [entry[1] for entry in log if entry[0] == "prop"]


def _buttons(log: list) -> list[tuple[str, dict]]:
    return [(entry[1], entry[2]) for entry in log if entry[0] == "operator"]


_RIG_PANELS = (*coefficients.CLASSES, sefa.NFR_PT_sefa, *output.CLASSES)


def test_rig_panels_hide_without_a_face_rig(rig) -> None:
    plain = bpy.data.objects.new("Plain", None)
    bpy.context.scene.collection.objects.link(plain)
    for panel in _RIG_PANELS:
        assert panel.poll(types.SimpleNamespace(object=rig)), panel
        assert not panel.poll(types.SimpleNamespace(object=plain)), panel
        assert not panel.poll(types.SimpleNamespace(object=None)), panel


def test_model_panel_without_and_with_a_face_rig(rig) -> None:
    plain = bpy.data.objects.new("Plain", None)
    bpy.context.scene.collection.objects.link(plain)
    bpy.context.view_layer.objects.active = plain
    log = _draw(model.NFR_PT_model)
    assert log[0] == ("label", "The active object is not a face rig.")
    starters = ["nfr.add_rig", "nfr.face_rig_from_photo"]
    assert [idname for idname, _ in _buttons(log)] == [
        idname for idname in starters if services.operator_available(idname)]
    with _stand_in_operators(starters):
        assert _draw(model.NFR_PT_model) == [
            ("label", "The active object is not a face rig."), ("operator", "nfr.add_rig", {}),
            ("operator", "nfr.face_rig_from_photo", {})]

    bpy.context.view_layer.objects.active = rig
    rig.face_rig.model_path = "/models/ffhq.pkl"
    log = _draw(model.NFR_PT_model)
    assert _props(log) == [f"face_rig.{name}" for name in (
        "backend", "model_path", "seed", "psi", "preview_resolution", "render_resolution")]
    assert log[-2] == ("label", live.status_text(rig))
    assert "/models/ffhq.pkl" in live.status_text(rig)  # says which file is missing
    # The empty file's colour settings tone-map renders: the panel says so (and stops saying
    # it once the portrait colours are set up).
    assert log[-1] == ("label", portrait.colour_problem(bpy.context.scene))
    assert "'AgX'" in log[-1][1]
    portrait.setup_colour(bpy.context.scene)
    assert _draw(model.NFR_PT_model)[-1] == ("label", live.status_text(rig))


def test_group_panels_show_leading_coefficients_until_show_all(rig) -> None:
    for panel, group in ((coefficients.NFR_PT_identity, "identity"),
                         (coefficients.NFR_PT_reflectance, "reflectance"),
                         (coefficients.NFR_PT_expression, "expression")):
        log = _draw(panel)
        assert _props(log) == [f"face_rig.{group}.c{i:03d}" for i in range(10)] + [
            f"face_rig.show_all_{group}"]
        assert _buttons(log) == [
            ("nfr.randomise_group", {"group": group}), ("nfr.reset_group", {"group": group}),
            ("nfr.load_preset", {"group": group}), ("nfr.save_preset", {"group": group})]
        setattr(rig.face_rig, f"show_all_{group}", True)
        size = dict(GROUPS)[group]
        assert _props(_draw(panel))[:-1] == [f"face_rig.{group}.c{i:03d}" for i in range(size)]

    log = _draw(coefficients.NFR_PT_illumination)
    shown = sorted(int(path[-3:]) for path in _props(log)[:-1])
    assert shown == sorted(c * 9 + sh for c in range(3) for sh in range(4))  # bands 0-1, RGB
    assert _buttons(log) == [("nfr.randomise_group", {"group": "illumination"}),
                             ("nfr.reset_group", {"group": "illumination"})]
    rig.face_rig.show_all_illumination = True
    assert sorted(int(p[-3:]) for p in _props(_draw(coefficients.NFR_PT_illumination))[:-1]
                  ) == list(range(27))

    log = _draw(coefficients.NFR_PT_pose)
    assert _props(log) == [f"face_rig.{g}.c00{i}" for g in ("rotation", "translation")
                           for i in range(3)]
    assert _buttons(log) == [("nfr.randomise_group", {"group": "rotation"}),
                             ("nfr.reset_group", {"group": "rotation"}),
                             ("nfr.reset_group", {"group": "translation"})]


def test_sefa_panel_and_list(rig) -> None:
    log = _draw(sefa.NFR_PT_sefa)
    assert ("list", "face_rig.sefa_sliders") in log and _props(log) == []
    assert [idname for idname, _ in _buttons(log)] == [
        "nfr.add_sefa_slider", "nfr.remove_sefa_slider", "nfr.move_sefa_slider",
        "nfr.move_sefa_slider", "nfr.compute_sefa_directions"]

    rig_props.add_sefa_slider(rig, 5, 2, 6, "Smile")
    rig_props.add_sefa_slider(rig, 1, 0, 3, "Age")
    rig.face_rig.sefa_active_index = 0
    log = _draw(sefa.NFR_PT_sefa)
    assert _props(log) == [f"face_rig.sefa_sliders[0].{name}" for name in (
        "label", "direction", "layer_start", "layer_end", "value")]
    assert _buttons(log)[-1] == ("nfr.reset_group", {"group": "sefa"})

    item_log: list = []
    slider = rig.face_rig.sefa_sliders[0]
    sefa.NFR_UL_sefa_sliders.draw_item(None, bpy.context, _RecordingLayout(item_log), rig.face_rig,
                                       slider, 0, rig.face_rig, "sefa_active_index", 0)
    assert item_log == [("prop", "face_rig.sefa_sliders[0].label"), ("label", "#5 · 2-6"),
                        ("prop", "face_rig.sefa_sliders[0].value")]


def test_animation_and_output_panels(rig) -> None:
    bpy.context.scene.frame_set(12)
    log = _draw(output.NFR_PT_animation)
    assert log[0] == ("label", "Keyframe at frame 12:")
    assert _buttons(log) == [("nfr.keyframe_group", {"group": group})
                             for group in (*GROUP_NAMES, "sefa")]

    # Render and bake buttons appear exactly when their operators are registered.
    idnames = [idname for idname, _, _ in output.OUTPUT_OPERATORS]
    if not any(services.operator_available(idname) for idname in idnames):
        assert _draw(output.NFR_PT_output)[0] == ("label", "No render operators in this build.")
    with _stand_in_operators(idnames):
        log = _draw(output.NFR_PT_output)
        assert [idname for idname, _ in _buttons(log)] == idnames
        assert _props(log) == ["face_rig.failure_placeholder"]  # the farm-failure opt-out
        assert [entry for entry in log if entry[0] == "label"] == [
            ("label", portrait.colour_problem(bpy.context.scene))]  # AgX in an empty file
        portrait.setup_colour(bpy.context.scene)
        assert not [entry for entry in _draw(output.NFR_PT_output) if entry[0] == "label"]
