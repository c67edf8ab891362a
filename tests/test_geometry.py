"""Torch face rig: SH shading, rotation, camera projection, normals, shape, gradients."""

import math

import numpy as np
import pytest
import torch
from neural_face_rig.rig.camera import CAMERA_224, CAMERA_256, Camera, project, to_image_xy
from neural_face_rig.rig.errors import FaceModelError
from neural_face_rig.rig.face_model import FaceModel
from neural_face_rig.rig.geometry import (
    TorchFaceModel,
    albedo,
    evaluate_rig,
    rigid_transform,
    rotation_matrix,
    shape_vertices,
    vertex_normals,
)
from neural_face_rig.rig.params import GROUP_SLICES, RigParams
from neural_face_rig.rig.sh import AMBIENT, sh_basis, sh_shade
from neural_face_rig.rig.synthetic import make_synthetic_face_model

NOSE_TIP = 30  # iBUG-68, 0-based


@pytest.fixture(scope="module")
def face_model() -> FaceModel:
    return make_synthetic_face_model("tiny")


@pytest.fixture(scope="module")
def tm(face_model) -> TorchFaceModel:
    return TorchFaceModel.from_face_model(face_model, dtype=torch.float64)


def rig_batch(*params: RigParams, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(np.stack([p.to_vector() for p in params]), dtype=dtype)


# -- spherical harmonics ----------------------------------------------------------------------

# docs/REFERENCE.md §4.4, written out independently of rig.sh.
A0, A1, A2 = math.pi, 2 * math.pi / math.sqrt(3), 2 * math.pi / math.sqrt(8)
C0, C1, C2 = 1 / math.sqrt(4 * math.pi), math.sqrt(3) / math.sqrt(4 * math.pi), (
    3 * math.sqrt(5) / math.sqrt(12 * math.pi)
)


def closed_form_basis(x: float, y: float, z: float) -> list[float]:
    return [
        A0 * C0,
        -A1 * C1 * y,
        A1 * C1 * z,
        -A1 * C1 * x,
        A2 * C2 * x * y,
        -A2 * C2 * y * z,
        A2 * C2 / (2 * math.sqrt(3)) * (3 * z * z - 1),
        -A2 * C2 * x * z,
        A2 * C2 / 2 * (x * x - y * y),
    ]


def test_sh_constants_match_the_reference_values():
    # The numbers quoted in docs/REFERENCE.md §4.4.
    assert A0 * C0 == pytest.approx(0.8862, abs=1e-4)
    assert A1 * C1 == pytest.approx(1.7725, abs=1e-4)
    assert A2 * C2 == pytest.approx(2.4270, abs=1e-4)
    basis = sh_basis(torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64))[0]
    assert basis[6].item() == pytest.approx(0.7006 * 2, abs=1e-3)  # a2c2/(2√3) · (3 - 1)


def test_sh_basis_matches_closed_form_on_arbitrary_normals():
    normals = torch.nn.functional.normalize(
        torch.randn(2, 7, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
        dim=-1,
    )
    expected = torch.tensor(
        [[closed_form_basis(*n.tolist()) for n in row] for row in normals], dtype=torch.float64
    )
    torch.testing.assert_close(sh_basis(normals), expected)


def test_sh_shading_of_axis_normals_against_closed_form():
    normals = torch.tensor([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    albedo_ = torch.tensor([[[0.5, 0.6, 0.7], [0.2, 0.4, 0.8], [1.0, 1.0, 1.0]]])
    gamma = torch.zeros(1, 27)
    gamma[0, 0:9] = torch.tensor([0.1, -0.2, 0.3, 0.05, 0.0, 0.0, 0.2, 0.0, -0.1])  # red
    gamma[0, 9 + 2] = 0.5  # green: a light from +z only
    colours = sh_shade(normals, albedo_, gamma)[0]

    light = gamma.reshape(3, 9).double().clone()
    light[:, 0] += 0.8  # the ambient offset
    for vertex, normal in enumerate(normals[0].tolist()):
        basis = torch.tensor(closed_form_basis(*normal), dtype=torch.float64)
        irradiance = light @ basis
        expected = irradiance * albedo_[0, vertex].double()
        torch.testing.assert_close(colours[vertex].double(), expected, rtol=1e-5, atol=1e-6)
    # Hand-checked single value: blue has ambient only, 0.8 · a0c0 · albedo.
    assert colours[0, 2].item() == pytest.approx(AMBIENT * 0.886227 * 0.7, rel=1e-5)
    # Green light from +z brightens the +z normal, not the +x one.
    assert colours[0, 1] / albedo_[0, 0, 1] > colours[1, 1] / albedo_[0, 1, 1]


# -- rotation and camera ----------------------------------------------------------------------


def standard_rotation(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def test_rotation_is_orthonormal_and_ordered_z_y_x():
    angles = torch.tensor([[0.3, -0.7, 0.5], [1.2, 0.4, -2.0]], dtype=torch.float64)
    rotation = rotation_matrix(angles)
    eye = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    torch.testing.assert_close(rotation @ rotation.transpose(1, 2), eye)
    torch.testing.assert_close(torch.linalg.det(rotation), torch.ones(2, dtype=torch.float64))
    for matrix, (x, y, z) in zip(rotation, angles.tolist(), strict=True):
        expected = standard_rotation("z", z) @ standard_rotation("y", y) @ standard_rotation("x", x)
        np.testing.assert_allclose(matrix.numpy(), expected, atol=1e-12)
        wrong_order = standard_rotation("x", x) @ standard_rotation("y", y) @ standard_rotation(
            "z", z
        )
        assert not np.allclose(matrix.numpy(), wrong_order)


def test_rotation_is_right_handed():
    quarter = torch.tensor([[math.pi / 2, 0.0, 0.0]], dtype=torch.float64)
    up = torch.tensor([[[0.0, 1.0, 0.0]]], dtype=torch.float64)
    # +90° about x takes +y to +z.
    torch.testing.assert_close(
        rigid_transform(up, quarter, torch.zeros(1, 3, dtype=torch.float64)),
        torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64),
    )


def test_known_point_lands_on_known_pixel():
    point = torch.tensor([[[0.1, 0.2, 0.5]]], dtype=torch.float64)
    screen = project(CAMERA_224, point)[0, 0]
    # Hand computation: z' = 10 - 0.5 = 9.5; u = 1015 · 0.1 / 9.5 + 112 = 122.6842105;
    # v = 1015 · 0.2 / 9.5 + 112 = 133.3684211; image row = 223 - v = 89.6315789.
    assert screen.tolist() == pytest.approx([122.6842105, 133.3684211, 9.5])
    image = to_image_xy(screen[None, :2], CAMERA_224)[0]
    assert image.tolist() == pytest.approx([122.6842105, 89.6315789])

    # The same through the rigid transform: yaw +90° takes (0, 0, 1) to (1, 0, 0); a
    # translation of (0.1, -0.2, 0) then gives (1.1, -0.2, 0), z' = 10:
    # u = 1015 · 0.11 + 112 = 223.65, v = -20.3 + 112 = 91.7, image row = 223 - 91.7 = 131.3.
    posed = rigid_transform(
        torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64),
        torch.tensor([[0.0, math.pi / 2, 0.0]], dtype=torch.float64),
        torch.tensor([[0.1, -0.2, 0.0]], dtype=torch.float64),
    )
    screen = project(CAMERA_224, posed)[0, 0]
    assert screen.tolist() == pytest.approx([223.65, 91.7, 10.0])
    assert to_image_xy(screen[:2], CAMERA_224).tolist() == pytest.approx([223.65, 131.3])


def test_camera_presets():
    assert math.degrees(CAMERA_224.fov) == pytest.approx(12.5936, abs=1e-4)
    assert math.degrees(CAMERA_256.fov) == pytest.approx(11.80, abs=0.01)
    assert (CAMERA_256.focal, CAMERA_256.center, CAMERA_256.size) == (1015 * 1.22, 128, 256)
    camera = Camera(focal=100.0, center=8.0, size=16, distance=5.0)
    screen = project(camera, torch.tensor([[[0.5, -0.5, 1.0]]]))
    assert screen[0, 0].tolist() == pytest.approx([8 + 12.5, 8 - 12.5, 4.0])


def test_positive_yaw_moves_the_nose_tip_to_the_image_right(tm):
    turned = RigParams.neutral()
    turned.rotation[1] = 0.3
    landmarks = evaluate_rig(tm, rig_batch(RigParams.neutral(), turned), CAMERA_224).landmarks
    frontal_x, turned_x = landmarks[:, NOSE_TIP, 0].tolist()
    assert turned_x > frontal_x + 5.0  # pixels
    # A negative angle about +x turns +z towards +y: the nose tip rises (image y decreases).
    pitched = RigParams.neutral()
    pitched.rotation[0] = -0.3
    landmarks = evaluate_rig(tm, rig_batch(RigParams.neutral(), pitched), CAMERA_224).landmarks
    assert landmarks[1, NOSE_TIP, 1] < landmarks[0, NOSE_TIP, 1] - 5.0


# -- normals ----------------------------------------------------------------------------------


def mesh_face_model(vertices: np.ndarray, triangles: np.ndarray) -> FaceModel:
    """A FaceModel around a hand-made mesh (zero bases), for geometry checks."""
    n = len(vertices)
    point_buf = np.full((n, 8), len(triangles))
    count = np.zeros(n, int)
    for face, triangle in enumerate(triangles):
        for vertex in triangle:
            point_buf[vertex, count[vertex]] = face
            count[vertex] += 1
    return FaceModel(
        mean_shape=np.asarray(vertices, np.float32).reshape(-1),
        id_base=np.zeros((3 * n, 80), np.float32),
        exp_base=np.zeros((3 * n, 64), np.float32),
        mean_tex=np.full(3 * n, 128.0, np.float32),
        tex_base=np.zeros((3 * n, 80), np.float32),
        triangles=np.asarray(triangles, np.int64),
        point_buf=point_buf,
        keypoints=np.zeros(68, np.int64),
        skin_mask=np.ones(n, bool),
        front_mask=np.arange(n),
        tri_mask=np.asarray(triangles, np.int64),
    )


def test_normals_of_a_cube_corner():
    # Three faces meeting at the origin, counter-clockwise seen from outside the first octant's
    # corner: normals +z, +x, +y. The +z face is 3x larger; face normals are unit before the
    # sum, so the corner normal stays the diagonal. Vertex 4 belongs to no face.
    vertices = np.array([[0, 0, 0], [3, 0, 0], [0, 3, 0], [0, 0, 1], [5, 5, 5]], np.float64)
    triangles = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1]])
    corner = mesh_face_model(vertices, triangles)
    model = TorchFaceModel.from_face_model(corner, dtype=torch.float64)
    normals = vertex_normals(model, torch.from_numpy(vertices)[None])[0]
    r2, r3 = 1 / math.sqrt(2), 1 / math.sqrt(3)
    expected = torch.tensor(
        [[r3, r3, r3], [0, r2, r2], [r2, 0, r2], [r2, r2, 0], [0, 0, 0]], dtype=torch.float64
    )
    torch.testing.assert_close(normals, expected)


def test_normals_follow_point_buf_on_the_synthetic_model(face_model, tm):
    params = RigParams.sample(np.random.default_rng(4), groups=["identity", "expression"])
    vertices = shape_vertices(
        tm,
        torch.from_numpy(params.identity[None]).double(),
        torch.from_numpy(params.expression[None]).double(),
    )
    normals = vertex_normals(tm, vertices)[0].numpy()

    points = vertices[0].numpy()
    corners = points[face_model.triangles]
    face_normals = np.cross(corners[:, 0] - corners[:, 1], corners[:, 1] - corners[:, 2])
    face_normals /= np.linalg.norm(face_normals, axis=1, keepdims=True)
    face_normals = np.vstack([face_normals, np.zeros(3)])  # the dummy face
    expected = face_normals[face_model.point_buf].sum(axis=1)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(normals, expected, atol=1e-9)
    # The synthetic face looks at the camera: the nose tip's normal points along +z.
    assert normals[face_model.keypoints[NOSE_TIP], 2] > 0.5


# -- shape, albedo, evaluation ----------------------------------------------------------------


def test_shape_and_albedo_match_the_numpy_formula(face_model, tm):
    params = RigParams.sample(np.random.default_rng(8))
    n = face_model.n_vertices
    expected = (
        face_model.mean_shape.astype(np.float64)
        + face_model.id_base.astype(np.float64) @ params.identity
        + face_model.exp_base.astype(np.float64) @ params.expression
    ).reshape(n, 3)
    expected -= face_model.mean_shape.reshape(n, 3).astype(np.float64).mean(axis=0)
    identity = torch.from_numpy(params.identity[None]).double()
    expression = torch.from_numpy(params.expression[None]).double()
    shape = shape_vertices(tm, identity, expression)[0]
    np.testing.assert_allclose(shape.numpy(), expected, atol=1e-6)

    subset = tm.keypoints[:5]
    torch.testing.assert_close(
        shape_vertices(tm, identity, expression, vertex_ids=subset)[0], shape[subset]
    )
    texture = (face_model.mean_tex + face_model.tex_base @ params.reflectance).reshape(n, 3)
    computed = albedo(tm, torch.from_numpy(params.reflectance[None]).double())[0]
    np.testing.assert_allclose(computed.numpy(), texture / 255.0, atol=1e-5)


def test_evaluate_rig_composes_the_parts(tm):
    rng = np.random.default_rng(9)
    first, second = RigParams.sample(rng), RigParams.sample(rng)
    second.translation[:] = [0.05, -0.1, 0.3]
    rig = rig_batch(first, second)
    result = evaluate_rig(tm, rig, CAMERA_224)
    groups = {name: rig[:, sl] for name, sl in GROUP_SLICES.items()}

    shape = shape_vertices(tm, groups["identity"], groups["expression"])
    rotation = rotation_matrix(groups["rotation"])
    expected_vertices = shape @ rotation.transpose(1, 2) + groups["translation"][:, None]
    torch.testing.assert_close(result.vertices, expected_vertices)
    # Normals are those of the posed mesh, i.e. the unposed normals rotated.
    torch.testing.assert_close(
        result.normals, vertex_normals(tm, shape) @ rotation.transpose(1, 2)
    )
    torch.testing.assert_close(
        result.colours,
        sh_shade(result.normals, albedo(tm, groups["reflectance"]), groups["illumination"]),
    )
    torch.testing.assert_close(result.screen, project(CAMERA_224, expected_vertices))
    torch.testing.assert_close(
        result.landmarks, to_image_xy(result.screen[:, tm.keypoints, :2], CAMERA_224)
    )
    # Batch rows are independent.
    alone = evaluate_rig(tm, rig[1:], CAMERA_224)
    torch.testing.assert_close(alone.colours[0], result.colours[1])
    torch.testing.assert_close(alone.landmarks[0], result.landmarks[1])


def test_float32_model_agrees_with_float64(face_model, tm):
    rig = rig_batch(RigParams.sample(np.random.default_rng(3)))
    single = TorchFaceModel.from_face_model(face_model)  # float32 default
    assert single.mean_shape.dtype == torch.float32 and single.triangles.dtype == torch.long
    fast = evaluate_rig(single, rig.float(), CAMERA_224)
    exact = evaluate_rig(tm, rig, CAMERA_224)
    torch.testing.assert_close(fast.landmarks.double(), exact.landmarks, atol=1e-3, rtol=0)
    torch.testing.assert_close(fast.colours.double(), exact.colours, atol=1e-5, rtol=0)


def test_gradients_reach_every_group(tm):
    params = RigParams.sample(np.random.default_rng(6))
    rig = rig_batch(params).requires_grad_(True)
    result = evaluate_rig(tm, rig, CAMERA_224)
    weights = torch.linspace(0.5, 1.5, result.colours.numel(), dtype=torch.float64)
    loss = (result.colours.reshape(-1) * weights).sum() + result.landmarks.square().sum()
    loss.backward()
    for name, sl in GROUP_SLICES.items():
        grad = rig.grad[0, sl]
        assert torch.isfinite(grad).all(), name
        assert grad.abs().max() > 1e-6, f"no gradient reaches {name}"
    # Colours alone must depend on identity, expression and angles through the normals.
    rig.grad = None
    colours = evaluate_rig(tm, rig, CAMERA_224).colours
    (colours.reshape(-1) * weights).sum().backward()
    for name in ("identity", "expression", "rotation", "illumination", "reflectance"):
        assert rig.grad[0, GROUP_SLICES[name]].abs().max() > 1e-6, name


def test_torch_model_refuses_wrong_basis_sizes(face_model):
    n = face_model.n_vertices
    broken = FaceModel(**{**vars(face_model), "exp_base": np.zeros((3 * n, 63), np.float32)})
    with pytest.raises(FaceModelError, match=r"'exp_base': expected shape \(\d+, 64\), found"):
        TorchFaceModel.from_face_model(broken)
