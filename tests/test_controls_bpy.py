"""Artist controls in real Blender (bpy): named controls, key light, grabbed head, shape keys,
identity blend and expression presets feed the 257 values the live bridge sends; everything
keyframes, saves, reopens and is read from evaluated values.

No scipy or torch in this process: the face model's .mat and DiscoFaceGAN's TF VAE checkpoints
are written in the worker's Python (fixtures.worker_python), so the file runs on every
Blender version of the matrix."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import bpy
import numpy as np
import pytest
from fixtures import worker_python
from mathutils import Matrix
from neural_face_rig import controls_eval, head_control, portrait, registration, rig_props
from neural_face_rig.contract import protocol
from neural_face_rig.head_mesh import build_head
from neural_face_rig.rig.blender_mesh import to_blender_frame
from neural_face_rig.rig.control_basis import derive_controls, expression_from_controls
from neural_face_rig.rig.controls import CONTROLS
from neural_face_rig.rig.expressions import preset
from neural_face_rig.rig.face_model import load_face_model
from neural_face_rig.rig.head_pose import MODEL_TO_BLENDER_AXES, rig_rotation_matrix
from neural_face_rig.rig.key_light import KeyLight, key_light_to_sh
from neural_face_rig.rig.params import GROUP_SLICES, RigParams
from neural_face_rig.rig.sh_basis import sh_basis_np

addon_utils = importlib.import_module("addon_utils")
MODULE = "neural_face_rig"
EXPRESSION, LIGHT, ROTATION = (GROUP_SLICES[g] for g in ("expression", "illumination",
                                                          "rotation"))


@pytest.fixture(scope="module")
def face_model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "BFM_model_front.mat"
    return worker_python.write_face_model(path, seed=0, expressions="actions")


@pytest.fixture(scope="module")
def basis(face_model_file):
    return derive_controls(load_face_model(face_model_file))


@pytest.fixture(scope="module", autouse=True)
def addon():
    addon_utils.enable(MODULE, default_set=True)
    yield
    addon_utils.disable(MODULE, default_set=True)


@pytest.fixture()
def rig(face_model_file) -> bpy.types.Object:
    """A rig like Add Face Rig's: card (the rig), portrait camera and driven 3DMM head."""
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    card = bpy.data.objects.new("FaceRig", None)
    scene.collection.objects.link(card)
    card.face_rig.is_rig = True
    card.face_rig.backend = "discofacegan"
    layout = portrait.portrait_layout()
    portrait.build_camera("FaceRig Camera", scene.collection, layout, card)
    head = build_head(load_face_model(face_model_file), scene.collection, name="FaceRig Head")
    head.face_rig_source = str(face_model_file)
    portrait.place_head(head, card, layout)
    portrait.drive_head(head, card)
    bpy.context.view_layer.objects.active = card
    bpy.context.view_layer.update()
    return card


def sent(card, depsgraph=None) -> np.ndarray:
    """The 257 values the live bridge would send for ``card``."""
    return np.asarray(rig_props.rig_state(card, depsgraph=depsgraph).rig)


def test_named_controls_are_one_line_keyframable_floats(rig) -> None:
    named = rig.face_controls.named
    for c in CONTROLS:
        prop = named.bl_rna.properties[c.name]
        assert (prop.hard_min, prop.hard_max, prop.default) == (0.0, 1.0, 0.0)
        assert prop.is_animatable and "\n" not in prop.description and c.name in prop.description
    assert rig.keyframe_insert("face_controls.named.jawOpen", frame=1)
    for cls in registration.CLASSES:
        description = getattr(cls, "bl_description", "")
        assert "\n" not in description and "  " not in description, cls.__name__


def test_named_controls_add_to_the_raw_expression(rig, basis) -> None:
    rig.face_rig.expression.c003 = 0.5
    rig.face_controls.named.jawOpen = 0.6
    rig.face_controls.named.eyeBlinkLeft = 1.0
    raw = np.zeros(64)
    raw[3] = 0.5
    named = rig.face_controls.named  # float32 storage: the values Blender holds
    expected = expression_from_controls(
        basis, {"jawOpen": named.jawOpen, "eyeBlinkLeft": named.eyeBlinkLeft}, raw)
    np.testing.assert_array_equal(sent(rig)[EXPRESSION], expected)
    assert list(Path(controls_eval.cache_folder()).glob("controls-*.safetensors"))


def test_preset_weight_mixes_the_library_expression(rig, basis) -> None:
    controls = rig.face_controls
    controls.named.mouthSmileLeft = 0.2
    controls.preset = "SURPRISE"
    controls.preset_weight = 0.5
    surprise = preset("surprise").values
    values = {c.name: (0.2 if c.name == "mouthSmileLeft" else 0.0) for c in CONTROLS}
    mixed = {n: v + 0.5 * (surprise.get(n, 0.0) - v) for n, v in values.items()}
    np.testing.assert_allclose(sent(rig)[EXPRESSION], expression_from_controls(basis, mixed),
                               atol=1e-6)
    bpy.ops.nfr.apply_preset()
    assert controls.preset_weight == 0.0
    assert controls.named.browInnerUp == pytest.approx(0.5)


def test_key_light_sets_the_sh_lighting(rig) -> None:
    light = rig.face_controls.key_light
    light.azimuth, light.elevation, light.intensity = 40.0, 20.0, 0.8
    light.colour = (1.0, 0.9, 0.7)
    light.ambient = (0.1, 0.2, 0.3)
    expected = key_light_to_sh(KeyLight(40.0, 20.0, 0.8, (1.0, 0.9, 0.7), (0.1, 0.2, 0.3)))
    np.testing.assert_allclose(sent(rig)[LIGHT], expected, atol=1e-6)


def _shading(gamma: np.ndarray) -> np.ndarray:
    """Irradiance [M, 3] of SH gamma [27] on a spread of normals (the 3DMM's shading)."""
    rng = np.random.default_rng(0)
    normals = rng.normal(size=(200, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    coefficients = gamma.reshape(3, 9).astype(np.float64).copy()
    coefficients[:, 0] += 0.8
    return sh_basis_np(normals) @ coefficients.T


def test_following_a_blender_light_matches_setting_the_angles(rig) -> None:
    data = bpy.data.lights.new("Key", "SUN")
    data.energy = 2.0
    data.color = (1.0, 0.8, 0.6)
    lamp = bpy.data.objects.new("Key", data)
    bpy.context.scene.collection.objects.link(lamp)
    lamp.rotation_euler = (0.5 * math.pi, 0.0, 0.0)  # shining from the camera at the face
    world = bpy.data.worlds.new("World")
    world.color = (0.05, 0.1, 0.15)
    if bpy.app.version < (5, 0, 0):
        world.use_nodes = True
    background = next(n for n in world.node_tree.nodes if n.type == "BACKGROUND")
    background.inputs["Color"].default_value = (0.1, 0.2, 0.3, 1.0)
    background.inputs["Strength"].default_value = 0.5  # the ambient: colour x strength
    bpy.context.scene.world = world
    light = rig.face_controls.key_light
    light.follow = lamp
    light.power_scale = 0.5
    bpy.context.view_layer.update()
    frontal = sent(rig)[LIGHT]
    lamp.matrix_world = Matrix.Rotation(0.5 * math.pi, 4, "Z") @ lamp.matrix_world
    bpy.context.view_layer.update()
    turned = sent(rig)[LIGHT]

    light.follow = None
    light.intensity, light.colour, light.ambient = 1.0, (1.0, 0.8, 0.6), (0.05, 0.1, 0.15)
    light.elevation = 0.0
    by_angles = {}
    for azimuth in (0.0, 90.0):
        light.azimuth = azimuth
        by_angles[azimuth] = sent(rig)[LIGHT]
    np.testing.assert_allclose(frontal, by_angles[0.0], atol=2e-5)
    np.testing.assert_allclose(turned, by_angles[90.0], atol=2e-5)
    change_lamp = _shading(turned) - _shading(frontal)
    change_angles = _shading(by_angles[90.0]) - _shading(by_angles[0.0])
    assert np.abs(change_lamp).max() > 0.3
    np.testing.assert_allclose(change_lamp, change_angles, atol=1e-4)


def test_grabbed_head_sets_the_rig_rotation_and_sliders_turn_the_head(rig) -> None:
    head = controls_eval.head_of(rig)
    rig.face_controls.grab_head = True
    assert not (head.animation_data and any(
        d.data_path == "rotation_euler" for d in head.animation_data.drivers))
    head.rotation_mode = "XYZ"  # any mode: the matrix is what counts
    head.rotation_euler = (0.21, -0.34, 0.47)
    bpy.context.view_layer.update()
    blender = np.array(head.matrix_basis.to_3x3(), np.float64)
    m = MODEL_TO_BLENDER_AXES
    angles = sent(rig)[ROTATION].astype(np.float64)
    np.testing.assert_allclose(rig_rotation_matrix(angles), m.T @ blender @ m, atol=1e-6)
    # What the worker reads: the job's state through the protocol's JSON, in DiscoFaceGAN order.
    wire = json.loads(json.dumps(protocol.state_to_json(rig_props.rig_state(rig))))
    at_worker = RigParams.from_vector(protocol.state_from_json(wire).rig)
    np.testing.assert_array_equal(at_worker.to_dfg_vector()[224:227], angles.astype(np.float32))
    # The Pose sliders followed the head (depsgraph handler).
    shown = [getattr(rig.face_rig.rotation, f"c{i:03d}") for i in range(3)]
    np.testing.assert_allclose(shown, angles, atol=1e-6)
    # And a slider turns the head.
    rig.face_rig.rotation.c001 = 0.4
    bpy.context.view_layer.update()
    now = np.array(head.matrix_basis.to_3x3(), np.float64)
    target = rig_rotation_matrix(np.array([shown[0], 0.4, shown[2]]))
    np.testing.assert_allclose(m.T @ now @ m, target, atol=1e-6)


def test_control_shape_keys_follow_the_controls(rig, basis, face_model_file) -> None:
    assert bpy.ops.nfr.control_shape_keys() == {"FINISHED"}
    head = controls_eval.head_of(rig)
    keys = head.data.shape_keys.key_blocks
    assert all(c.name in keys for c in CONTROLS)
    rig.face_controls.named.mouthSmileRight = 1.0
    bpy.context.view_layer.update()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = head.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    got = np.empty(3 * len(mesh.vertices), np.float32)
    mesh.vertices.foreach_get("co", got)
    evaluated.to_mesh_clear()
    model = load_face_model(face_model_file)
    offset = (model.exp_base @ basis.direction("mouthSmileRight")).reshape(-1, 3)
    rest = np.empty_like(got)
    keys["Basis"].data.foreach_get("co", rest)
    np.testing.assert_allclose(got.reshape(-1, 3) - rest.reshape(-1, 3),
                               to_blender_frame(offset), atol=1e-6)


def test_identity_blend_and_lock(rig) -> None:
    controls = rig.face_controls
    controls.identity_a.c000, controls.identity_b.c000 = -1.0, 3.0
    controls.use_identity_blend = True
    controls.identity_blend = 0.25
    assert sent(rig)[0] == pytest.approx(0.0)
    rig.face_rig.identity.c005 = 1.5
    controls.use_identity_blend = False
    bpy.ops.nfr.randomise_all(seed=5)
    assert rig.face_rig.identity.c005 == 1.5  # locked
    assert any(getattr(rig.face_rig.expression, f"c{i:03d}") != 0.0 for i in range(64))
    bpy.ops.nfr.new_identity(seed=3)
    assert rig.face_rig.identity.c005 != 1.5


def test_animation_saves_reopens_and_renders_from_evaluated_values(rig, basis, tmp_path) -> None:
    controls = rig.face_controls
    for frame, value, azimuth in ((1, 0.0, -60.0), (11, 1.0, 60.0)):
        controls.named.jawOpen = value
        controls.key_light.azimuth = azimuth
        controls.key_light.intensity = 1.0
        rig.keyframe_insert("face_controls.named.jawOpen", frame=frame)
        rig.keyframe_insert("face_controls.key_light.azimuth", frame=frame)
        rig.keyframe_insert("face_controls.key_light.intensity", frame=frame)
    path = tmp_path / "controls.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.open_mainfile(filepath=str(path))
    card = bpy.data.objects["FaceRig"]
    scene = bpy.context.scene
    scene.frame_set(6)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    values = sent(card, depsgraph)
    evaluated = card.evaluated_get(depsgraph).face_controls
    assert 0.0 < evaluated.named.jawOpen < 1.0
    np.testing.assert_allclose(
        values[EXPRESSION], expression_from_controls(basis, {"jawOpen": evaluated.named.jawOpen}),
        atol=1e-6)
    np.testing.assert_allclose(values[LIGHT], key_light_to_sh(KeyLight(
        evaluated.key_light.azimuth, 0.0, 1.0)), atol=1e-6)
    scene.frame_set(11)
    assert card.face_controls.named.jawOpen == 1.0
    assert head_control is not None


class _Layout:
    """Records what a panel draws (labels, property paths, operators), checked against RNA."""

    def __init__(self, log: list) -> None:
        self.log, self.active, self.enabled = log, True, True

    def _sub(self, *_args, **_kwargs) -> _Layout:
        return _Layout(self.log)

    row = column = box = split = _sub

    def label(self, *, text: str = "", icon: str = "NONE", **_kwargs) -> None:
        assert icon in bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items
        self.log.append(("label", text))

    def prop(self, data, name: str, **_kwargs) -> None:
        assert name in data.bl_rna.properties, name
        self.log.append(("prop", data.path_from_id(name)))

    def operator(self, idname: str, **_kwargs):
        module, _, name = idname.partition(".")
        assert hasattr(getattr(bpy.ops, module), name), idname
        self.log.append(("operator", idname))
        return type("Button", (), {})()


def _draw(panel) -> list:
    log: list = []
    instance = type("Instance", (), {"layout": _Layout(log)})()
    panel.draw(instance, bpy.context)
    return log


def test_panels_group_the_controls_and_grey_what_the_backend_ignores(rig) -> None:
    from neural_face_rig.panels import coefficients
    from neural_face_rig.panels import controls as panels

    log = _draw(panels.NFR_PT_named_controls)
    props = [entry[1] for entry in log if entry[0] == "prop"]
    assert props[:2] == ["face_controls.preset", "face_controls.preset_weight"]
    assert {f"face_controls.named.{c.name}" for c in CONTROLS} <= set(props)
    # Left and right side by side: each Right slider right after its Left one.
    for c in CONTROLS:
        if c.side == "left":
            i = props.index(f"face_controls.named.{c.name}")
            assert props[i + 1] == f"face_controls.named.{c.mirror}"
    assert ("label", "Mouth") in log and ("label", "Cheeks & Nose") in log
    assert ("operator", "nfr.control_shape_keys") in log
    for panel in (panels.NFR_PT_key_light, panels.NFR_PT_head_identity, panels.NFR_PT_advanced):
        assert _draw(panel)
    for panel in (coefficients.NFR_PT_expression, coefficients.NFR_PT_identity,
                  coefficients.NFR_PT_illumination, coefficients.NFR_PT_reflectance):
        assert panel.bl_parent_id == "NFR_PT_advanced"
    assert not any("ignores" in e[1] for e in log if e[0] == "label")  # DiscoFaceGAN uses it
    rig.face_rig.backend = "stylegan2"
    assert any("StyleGAN2 ignores the expression" in e[1] for e in
               _draw(panels.NFR_PT_named_controls) if e[0] == "label")
    pose = _draw(coefficients.NFR_PT_pose)
    assert ("prop", "face_rig.translation.c000") in pose
    assert any("ignores the translation" in e[1] for e in pose if e[0] == "label")


def test_full_presets_keep_seed_truncation_sefa_and_named_controls(rig, tmp_path) -> None:
    from neural_face_rig import preset_extras
    from neural_face_rig.rig.errors import RigParamsError
    from neural_face_rig.rig.params import GROUP_NAMES

    face_rig = rig.face_rig
    face_rig.seed, face_rig.psi = 4321, 0.55
    rig_props.add_sefa_slider(rig, 3, 2, 5, "Age").value = 1.25
    rig.face_controls.named.mouthSmileLeft = 0.75
    path = tmp_path / "face.json"
    rig_props.save_preset(rig, path, GROUP_NAMES)
    assert preset_extras.sidecar_path(path).is_file()
    RigParams.from_json(path.read_text())  # still a plain rig.params document

    face_rig.seed, face_rig.psi = 1, 1.0
    rig_props.remove_sefa_slider(rig, 0)
    rig.face_controls.named.mouthSmileLeft = 0.0
    rig_props.load_preset(rig, path)
    assert (face_rig.seed, face_rig.psi) == (4321, pytest.approx(0.55))
    assert [(s.label, s.direction, s.layer_start, s.layer_end, s.value)
            for s in face_rig.sefa_sliders] == [("Age", 3, 2, 5, 1.25)]
    assert rig.face_controls.named.mouthSmileLeft == 0.75

    # One group: no sidecar is read; a bad sidecar refuses the whole load, changing nothing.
    face_rig.seed = 7
    rig_props.load_preset(rig, path, ["identity"])
    assert face_rig.seed == 7
    sidecar = preset_extras.sidecar_path(path)
    doc = json.loads(sidecar.read_text())
    doc["psi"] = "high"
    sidecar.write_text(json.dumps(doc))
    face_rig.expression.c000 = 2.0
    with pytest.raises(RigParamsError, match="field 'psi'"):
        rig_props.load_preset(rig, path)
    assert face_rig.expression.c000 == 2.0 and face_rig.seed == 7


def test_new_identity_uses_discofacegans_vae_when_set(rig, tmp_path) -> None:
    from neural_face_rig.rig.dfg_vae import DFGVae
    from neural_face_rig.rig.params import GROUP_SLICES as SLICES

    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.dfg_vae_dir = ""
    rig.face_rig.expression.c002 = 1.25
    assert bpy.ops.nfr.new_identity(seed=9) == {"FINISHED"}  # the prior
    folder = worker_python.write_vae_weights(tmp_path / "vae")
    prefs.dfg_vae_dir = str(folder)
    assert bpy.ops.nfr.new_identity(seed=9) == {"FINISHED"}
    expected = DFGVae.load(folder).sample(np.random.default_rng(9), factors=("id",))
    got = sent(rig)
    np.testing.assert_allclose(got[SLICES["identity"]], expected.identity, atol=1e-6)
    np.testing.assert_allclose(got[SLICES["reflectance"]], expected.reflectance, atol=1e-6)
    assert rig.face_rig.expression.c002 == 1.25  # expression untouched
    prefs.dfg_vae_dir = ""


def test_a_machine_without_the_face_model_renders_the_stored_controls(rig, tmp_path,
                                                                       basis) -> None:
    import shutil

    moved = tmp_path / "BFM_model_front.mat"
    shutil.copy(controls_eval.head_of(rig).face_rig_source, moved)
    controls_eval.head_of(rig).face_rig_source = str(moved)
    rig.face_controls.named.jawOpen = 0.5  # an artist's edit: the controls go into the file
    before = sent(rig)
    path = tmp_path / "farm.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    moved.unlink()  # the farm node has no face model
    bpy.ops.wm.open_mainfile(filepath=str(path))
    card = bpy.data.objects["FaceRig"]
    np.testing.assert_array_equal(sent(card, bpy.context.evaluated_depsgraph_get()), before)
    assert "stored in this file" in controls_eval.basis_problem(card)
    np.testing.assert_array_equal(controls_eval.stored_basis(card).directions, basis.directions)


def test_every_new_property_saves_and_reopens_exactly(rig, tmp_path) -> None:
    controls = rig.face_controls
    rng = np.random.default_rng(4)
    written = {}
    for group, owner in (("named", controls.named), ("key_light", controls.key_light),
                         ("", controls)):
        for prop in owner.bl_rna.properties:
            if prop.identifier == "rna_type" or prop.is_readonly or prop.type not in (
                    "FLOAT", "BOOLEAN"):
                continue
            path = f"face_controls.{group + '.' if group else ''}{prop.identifier}"
            if prop.type == "BOOLEAN":
                value = not prop.default
            elif prop.is_array:
                value = tuple(float(v) for v in rng.uniform(0.1, 0.9, prop.array_length))
            else:
                value = float(rng.uniform(max(prop.hard_min, -90.0), min(prop.hard_max, 90.0)))
            if prop.identifier == "grab_head":
                continue  # turns the head: covered by its own test
            setattr(owner, prop.identifier, value)
            written[path] = owner.path_resolve(prop.identifier)
            if prop.is_array:
                written[path] = tuple(written[path])
    controls.key_light.follow = None
    assert len(written) > 50
    path = tmp_path / "props.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.open_mainfile(filepath=str(path))
    card = bpy.data.objects["FaceRig"]
    for data_path, value in written.items():
        got = card.path_resolve(data_path)
        assert (tuple(got) if isinstance(value, tuple) else got) == value, data_path


def test_photo_results_become_a_key_light_and_named_controls(rig, basis) -> None:
    light = KeyLight(-35.0, 25.0, 0.9, (1.0, 0.9, 0.8), (0.3, 0.3, 0.35))
    for i, value in enumerate(key_light_to_sh(light).tolist()):
        setattr(rig.face_rig.illumination, f"c{i:03d}", value)
    before = sent(rig)[LIGHT]
    assert bpy.ops.nfr.key_light_from_sh() == {"FINISHED"}
    props = rig.face_controls.key_light
    assert (props.azimuth, props.elevation) == (pytest.approx(-35.0, abs=0.5),
                                                pytest.approx(25.0, abs=0.5))
    np.testing.assert_allclose(sent(rig)[LIGHT], before, atol=2e-3)  # same light, now named
    assert all(getattr(rig.face_rig.illumination, f"c{i:03d}") == 0.0 for i in range(27))

    fitted = expression_from_controls(basis, {"jawOpen": 0.4, "eyeBlinkRight": 0.8})
    for i, value in enumerate(fitted.tolist()):
        setattr(rig.face_rig.expression, f"c{i:03d}", value)
    assert bpy.ops.nfr.controls_from_expression() == {"FINISHED"}
    named = rig.face_controls.named
    assert (named.jawOpen, named.eyeBlinkRight) == (pytest.approx(0.4, abs=5e-3),
                                                    pytest.approx(0.8, abs=5e-3))
    np.testing.assert_allclose(sent(rig)[EXPRESSION], fitted, atol=1e-4)


def test_add_face_rig_gives_the_head_its_control_shape_keys(face_model_file, tmp_path) -> None:
    bpy.ops.wm.read_homefile(use_empty=True)
    prefs = bpy.context.preferences.addons[MODULE].preferences
    saved = (prefs.face_model_path, prefs.models_dir)
    prefs.face_model_path, prefs.models_dir = str(face_model_file), str(tmp_path)
    try:
        assert bpy.ops.nfr.add_rig(backend="discofacegan") == {"FINISHED"}
    finally:
        prefs.face_model_path, prefs.models_dir = saved
    card = bpy.context.object
    keys = controls_eval.head_of(card).data.shape_keys.key_blocks
    assert all(c.name in keys for c in CONTROLS)
    card.face_controls.named.jawOpen = 1.0
    bpy.context.view_layer.update()
    assert keys["jawOpen"].value == 1.0  # driven


def test_moving_a_followed_light_or_blending_identities_updates_the_rig(rig) -> None:
    from neural_face_rig import properties

    heard = []
    properties.RIG_CHANGE_LISTENERS.append(heard.append)
    try:
        lamp = bpy.data.objects.new("Lamp", bpy.data.lights.new("Lamp", "POINT"))
        bpy.context.scene.collection.objects.link(lamp)
        rig.face_controls.key_light.follow = lamp
        bpy.context.view_layer.update()
        heard.clear()
        lamp.location = (1.0, -2.0, 0.5)
        bpy.context.view_layer.update()
        assert rig in heard  # the live preview is asked again
        controls = rig.face_controls
        controls.identity_a.c004, controls.identity_b.c004 = 1.0, 2.0
        controls.use_identity_blend = True
        controls.identity_blend = 0.5
        bpy.context.view_layer.update()
        assert rig.face_rig.identity.c004 == pytest.approx(1.5)  # the head's sliders follow
    finally:
        properties.RIG_CHANGE_LISTENERS.remove(heard.append)
