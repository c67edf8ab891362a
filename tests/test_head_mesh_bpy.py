"""The face-rig head in real Blender: mesh, shape keys, albedo, and the Add Head operator.

Uses the editable package enabled as an add-on (the same modules the extension zip ships) and
a tiny synthetic face model; tests/conftest.py isolates Blender's user folders.
"""

from __future__ import annotations

import importlib
import types
from pathlib import Path

import bpy
import numpy as np
import pytest
from fixtures import worker_python
from neural_face_rig import head_mesh
from neural_face_rig.rig.blender_mesh import blender_face_mesh, vertex_albedo
from neural_face_rig.rig.face_model import FaceModel, load_face_model
from neural_face_rig.rig.synthetic import make_synthetic_face_model

addon_utils = importlib.import_module("addon_utils")  # on sys.path once bpy is imported

MODULE = "neural_face_rig"


@pytest.fixture(scope="module")
def face_model() -> FaceModel:
    return make_synthetic_face_model("tiny", seed=3)


@pytest.fixture(scope="module")
def face_model_file(face_model: FaceModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "BFM_model_front.mat"
    worker_python.write_face_model(path, seed=3)  # the face_model fixture's model
    np.testing.assert_array_equal(load_face_model(path).mean_shape, face_model.mean_shape)
    return path


@pytest.fixture(scope="module")
def prefs():
    addon_utils.enable(MODULE, default_set=True)
    yield bpy.context.preferences.addons[MODULE].preferences
    addon_utils.disable(MODULE, default_set=True)


@pytest.fixture()
def scene():
    bpy.ops.wm.read_homefile(use_empty=True)
    return bpy.context.scene


def _data_state() -> dict[str, tuple[str, ...]]:
    """Names of every datablock the head could create, and what the scene links."""
    return {
        "objects": tuple(bpy.data.objects.keys()),
        "meshes": tuple(bpy.data.meshes.keys()),
        "materials": tuple(bpy.data.materials.keys()),
        "shape_keys": tuple(bpy.data.shape_keys.keys()),
        "scene_objects": tuple(bpy.context.scene.objects.keys()),
    }


def _evaluated_vertices(obj: bpy.types.Object) -> np.ndarray:
    """World-independent vertex positions [N, 3] after shape keys (the evaluated mesh)."""
    bpy.context.view_layer.update()
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    mesh = evaluated.to_mesh()
    coords = np.empty(3 * len(mesh.vertices), np.float32)
    mesh.vertices.foreach_get("co", coords)
    evaluated.to_mesh_clear()
    return coords.reshape(-1, 3)


def test_head_mesh_matches_the_face_model(scene, face_model: FaceModel) -> None:
    head = head_mesh.build_head(face_model, scene.collection)
    mesh = head.data
    assert head.name == "FaceRigHead" and head.name in scene.objects
    assert len(mesh.vertices) == face_model.n_vertices
    assert len(mesh.polygons) == face_model.n_triangles
    corners = np.empty(3 * face_model.n_triangles, np.int32)
    mesh.polygons.foreach_get("vertices", corners)
    np.testing.assert_array_equal(corners.reshape(-1, 3), face_model.triangles)
    assert mesh.validate() is False  # False: nothing needed fixing
    # Basis = the recentred mean shape, Blender frame (Z up, metres, face looking down -Y).
    coords = np.empty(3 * face_model.n_vertices, np.float32)
    mesh.vertices.foreach_get("co", coords)
    mean = face_model.mean_shape.reshape(-1, 3).astype(np.float64)
    mean -= mean.mean(axis=0)
    expected = 0.1 * np.stack([mean[:, 0], -mean[:, 2], mean[:, 1]], axis=1)
    np.testing.assert_allclose(coords.reshape(-1, 3), expected, atol=1e-6)


def test_one_shape_key_per_identity_and_expression_coefficient(scene, face_model) -> None:
    head = head_mesh.build_head(face_model, scene.collection)
    keys = head.data.shape_keys.key_blocks
    names = [key.name for key in keys]
    assert names == (
        ["Basis"]
        + [f"identity_{i:03d}" for i in range(80)]
        + [f"expression_{i:03d}" for i in range(64)]
    )
    assert head.data.shape_keys.use_relative
    for key in keys[1:]:
        assert (key.slider_min, key.slider_max, key.value) == (-5.0, 5.0, 0.0)
        assert key.relative_key == keys["Basis"]


def test_shape_key_values_move_vertices_by_the_rig_deltas(scene, face_model) -> None:
    head = head_mesh.build_head(face_model, scene.collection)
    arrays = blender_face_mesh(face_model)
    np.testing.assert_allclose(_evaluated_vertices(head), arrays.vertices, atol=1e-7)

    rng = np.random.default_rng(0)
    identity = np.zeros(80, np.float32)
    expression = np.zeros(64, np.float32)
    identity[[0, 7, 79]] = rng.uniform(-3, 3, 3)
    expression[[12, 63]] = rng.uniform(-3, 3, 2)
    head_mesh.set_shape_key_values(head, "identity", identity)
    head_mesh.set_shape_key_values(head, "expression", expression)
    keys = head.data.shape_keys.key_blocks
    assert keys["identity_007"].value == pytest.approx(identity[7])
    assert keys["expression_063"].value == pytest.approx(expression[63])

    moved = _evaluated_vertices(head)
    expected = arrays.shaped_vertices(identity, expression)
    assert np.abs(expected - arrays.vertices).max() > 1e-3  # the keys do move the face
    np.testing.assert_allclose(moved, expected, atol=1e-6)


def test_albedo_colour_attribute_and_material(scene, face_model) -> None:
    head = head_mesh.build_head(face_model, scene.collection)
    attribute = head.data.color_attributes["albedo"]
    assert (attribute.domain, attribute.data_type) == ("POINT", "FLOAT_COLOR")
    assert head.data.color_attributes.active_color.name == "albedo"
    srgb = np.empty(4 * face_model.n_vertices, np.float32)
    attribute.data.foreach_get("color_srgb", srgb)
    srgb = srgb.reshape(-1, 4)
    np.testing.assert_allclose(srgb[:, :3], vertex_albedo(face_model, np.zeros(80)), atol=2e-3)
    np.testing.assert_array_equal(srgb[:, 3], 1.0)

    (material,) = head.data.materials
    links = {(link.from_node.bl_idname, link.to_node.bl_idname, link.to_socket.name)
             for link in material.node_tree.links}
    assert ("ShaderNodeVertexColor", "ShaderNodeBsdfPrincipled", "Base Color") in links
    assert ("ShaderNodeBsdfPrincipled", "ShaderNodeOutputMaterial", "Surface") in links
    (colour_node,) = [n for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeVertexColor"]
    assert colour_node.layer_name == "albedo"


def test_a_failed_build_leaves_no_datablocks(scene, face_model, monkeypatch) -> None:
    before = _data_state()

    def fail(*_args):
        raise MemoryError("simulated failure while adding shape keys")

    monkeypatch.setattr(head_mesh, "_add_shape_keys", fail)
    with pytest.raises(MemoryError):
        head_mesh.build_head(face_model, scene.collection)
    assert _data_state() == before


def test_add_head_operator_builds_the_head_at_the_cursor(scene, prefs, face_model_file) -> None:
    prefs.face_model_path = str(face_model_file)
    scene.cursor.location = (0.1, -0.2, 0.3)
    assert bpy.ops.nfr.add_head() == {"FINISHED"}
    head = bpy.context.active_object
    assert head.name == "FaceRigHead" and head.select_get()
    assert head.face_rig_source == str(face_model_file)
    assert tuple(head.location) == pytest.approx((0.1, -0.2, 0.3))
    assert len(head.data.shape_keys.key_blocks) == 1 + 80 + 64


@pytest.mark.parametrize(
    ("make_path", "message"),
    [
        (lambda tmp: "", "No face model set: choose BFM_model_front.mat"),
        (lambda tmp: str(tmp / "no" / "BFM_model_front.mat"), "face model not found: .*no/BFM"),
        (lambda tmp: str(tmp / "garbage.mat"), "garbage.mat is truncated or corrupt"),
    ],
    ids=["unset", "missing", "corrupt"],
)
def test_add_head_reports_a_bad_face_model_and_changes_nothing(
    scene, prefs, tmp_path: Path, make_path, message: str
) -> None:
    (tmp_path / "garbage.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(range(256)))
    prefs.face_model_path = make_path(tmp_path)
    before = _data_state()
    # Blender turns an operator's ERROR report into RuntimeError for Python callers; the
    # operator itself returned CANCELLED (an escaping exception would show a traceback here).
    with pytest.raises(RuntimeError, match=message) as raised:
        bpy.ops.nfr.add_head()
    assert "Traceback" not in str(raised.value)
    assert _data_state() == before


def test_add_head_reports_an_unexpected_failure_instead_of_raising(
    scene, prefs, face_model_file, monkeypatch
) -> None:
    from neural_face_rig.operators import add_head

    def broken_build(*_args, **_kwargs):
        raise ValueError("simulated bug")

    monkeypatch.setattr(add_head, "build_head", broken_build)
    prefs.face_model_path = str(face_model_file)
    before = _data_state()
    with pytest.raises(RuntimeError, match="Add Face Rig Head failed: ValueError: simulated bug"
                       ) as raised:
        bpy.ops.nfr.add_head()
    assert "Traceback" not in str(raised.value)
    assert _data_state() == before


def test_add_head_is_only_available_in_object_mode(scene, prefs) -> None:
    assert bpy.ops.nfr.add_head.poll()
    bpy.ops.mesh.primitive_cube_add()
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        assert not bpy.ops.nfr.add_head.poll()
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")


class _RecordingLayout:
    """Stands in for bpy's UILayout (which only exists while Blender draws a region): records
    labels and operator buttons, in drawing order."""

    def __init__(self, log: list[tuple[str, str]] | None = None) -> None:
        self.log = [] if log is None else log

    def column(self, **_kwargs) -> _RecordingLayout:
        return _RecordingLayout(self.log)

    box = column

    def separator(self, **_kwargs) -> None:
        pass

    def label(self, *, text: str = "", **_kwargs) -> None:
        self.log.append(("label", text))

    def prop(self, data, name: str, **_kwargs) -> None:
        self.log.append(("prop", name))

    def operator(self, idname: str, **_kwargs):
        self.log.append(("operator", idname))
        return types.SimpleNamespace()


def _draw(draw, **attributes) -> list[tuple[str, str]]:
    layout = _RecordingLayout()
    draw(types.SimpleNamespace(layout=layout, **attributes), bpy.context)
    return layout.log


def test_panel_shows_model_status_and_the_add_head_button(prefs, face_model_file) -> None:
    from neural_face_rig.panels.face_rig import NFR_PT_face_rig

    prefs.face_model_path = ""
    log = _draw(NFR_PT_face_rig.draw)
    assert ("label", "No face model set.") in log
    assert ("operator", "preferences.addon_show") in log
    assert log[-1] == ("operator", "nfr.add_head")

    prefs.face_model_path = str(face_model_file)
    assert _draw(NFR_PT_face_rig.draw) == [
        ("label", "Face model: BFM_model_front.mat"),
        ("operator", "nfr.add_head"),
    ]

    # An empty path with the file in the models folder: found, as Add Head finds it.
    prefs.face_model_path = ""
    prefs.models_dir = str(face_model_file.parent)
    try:
        assert _draw(NFR_PT_face_rig.draw) == [
            ("label", "Face model: BFM_model_front.mat"),
            ("operator", "nfr.add_head"),
        ]
    finally:
        prefs.models_dir = ""


def test_preferences_explain_how_to_get_the_face_model(prefs, face_model_file, tmp_path) -> None:
    from neural_face_rig.preferences import draw_face_model_section

    def draw(self, _context) -> None:
        draw_face_model_section(self.layout, self)

    missing = str(tmp_path / "BFM_model_front.mat")
    text = "\n".join(line for _, line in _draw(draw, face_model_path=missing, models_dir=""))
    assert f"Face model not found: {missing}" in text
    for needed in ("BFM_model_front.mat", "nfr rig convert-bfm", "01_MorphableModel.mat",
                   "University of Basel", "Exp_Pca.bin", "CoarseData", "Deep3DFaceRecon_pytorch",
                   "set its file path in"):
        assert needed in text, needed
    assert "Face model path is not a file" in str(
        _draw(draw, face_model_path=str(tmp_path), models_dir=""))
    # A usable path: just the path field, no help box.
    assert _draw(draw, face_model_path=str(face_model_file), models_dir="") == [
        ("prop", "face_model_path")]
