"""Blender mesh arrays: frame conversion, shape keys equal to the torch rig, albedo, no torch."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from neural_face_rig.rig.blender_mesh import blender_face_mesh, to_blender_frame, vertex_albedo
from neural_face_rig.rig.geometry import TorchFaceModel, albedo, shape_vertices
from neural_face_rig.rig.params import RigParams
from neural_face_rig.rig.synthetic import make_synthetic_face_model

NOSE_TIP = 30  # iBUG-68, 0-based


@pytest.fixture(scope="module")
def face_model():
    return make_synthetic_face_model("tiny")


@pytest.fixture(scope="module")
def mesh(face_model):
    return blender_face_mesh(face_model)


def test_frame_is_z_up_metres_facing_minus_y():
    # Model (x right, y up, +z to camera, dm) -> Blender (x, -z, y) · 0.1.
    np.testing.assert_allclose(to_blender_frame(np.array([1.0, 2.0, 3.0])), [0.1, -0.3, 0.2])
    np.testing.assert_allclose(to_blender_frame(np.array([[0.0, 0.0, 1.0]])), [[0.0, -0.1, 0.0]])


def test_mesh_arrays_and_orientation(face_model, mesh):
    n = face_model.n_vertices
    assert mesh.vertices.shape == (n, 3) and mesh.vertices.dtype == np.float32
    np.testing.assert_array_equal(mesh.triangles, face_model.triangles)
    assert mesh.shape_keys["identity"].shape == (80, n, 3)
    assert mesh.shape_keys["expression"].shape == (64, n, 3)
    # The nose tip is the point nearest Blender's front-view camera (most negative y) among
    # the landmarks, and the brows are above the chin in Blender's z.
    nose = mesh.vertices[face_model.keypoints[NOSE_TIP]]
    assert nose[1] == mesh.vertices[face_model.keypoints, 1].min()
    chin, brow = mesh.vertices[face_model.keypoints[[8, 19]]]
    assert brow[2] > chin[2]
    # Face normals (right-hand rule, as Blender computes them) face the viewer at -y.
    around_nose = (mesh.triangles == face_model.keypoints[NOSE_TIP]).any(axis=1)
    corners = mesh.vertices[mesh.triangles[around_nose]]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    assert (normals[:, 1] < 0).all()


def test_shape_keys_reproduce_the_torch_shape(face_model, mesh):
    tm = TorchFaceModel.from_face_model(face_model, dtype=torch.float64)
    params = RigParams.sample(np.random.default_rng(12), groups=["identity", "expression"])
    shaped = mesh.shaped_vertices(params.identity, params.expression)
    reference = shape_vertices(
        tm,
        torch.from_numpy(params.identity[None]).double(),
        torch.from_numpy(params.expression[None]).double(),
    )[0].numpy()
    np.testing.assert_allclose(shaped, to_blender_frame(reference), atol=2e-6)  # metres
    # Each key is the offset of its coefficient at 1.0.
    one = np.zeros(64, np.float32)
    one[5] = 1.0
    offset = mesh.shaped_vertices(np.zeros(80), one) - mesh.vertices
    np.testing.assert_allclose(offset, mesh.shape_keys["expression"][5], atol=1e-7)
    np.testing.assert_allclose(
        offset, to_blender_frame(face_model.exp_base[:, 5].reshape(-1, 3)), atol=1e-7
    )


def test_vertex_albedo_matches_torch_and_is_clipped(face_model):
    tm = TorchFaceModel.from_face_model(face_model, dtype=torch.float64)
    reflectance = RigParams.sample(np.random.default_rng(1), groups=["reflectance"]).reflectance
    colours = vertex_albedo(face_model, reflectance)
    reference = albedo(tm, torch.from_numpy(reflectance[None]).double())[0].numpy()
    np.testing.assert_allclose(colours, np.clip(reference, 0, 1), atol=1e-5)

    extreme = vertex_albedo(face_model, np.full(80, 10.0))
    assert extreme.min() >= 0.0 and extreme.max() <= 1.0
    assert (extreme == 1.0).any()  # something was clipped


def test_blender_side_modules_do_not_import_torch():
    code = (
        "import sys\n"
        "import neural_face_rig.rig.blender_mesh, neural_face_rig.rig.params\n"
        "import neural_face_rig.rig.camera\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
