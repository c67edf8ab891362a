"""The face rig evaluated in torch: shape, rigid pose, normals, albedo, shading, projection.

Conventions (Deep3DFaceRecon, docs/REFERENCE.md §4.3): positions in decimetres, x right, y up, +z
towards the camera. Shape = mean + identity basis · id + expression basis · exp, recentred on
the centroid of the mean shape. Rotation angles (x, y, z) = (pitch, yaw, roll) radians with
standard right-handed Rx, Ry, Rz and R = Rz·Ry·Rx, applied as v' = R v + t. Positive yaw turns
the nose tip (+z) towards +x, which the camera shows on the image's right.

Every function is batched over the leading dimension B, differentiable, and runs on the
device and dtype of its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .camera import Camera, project, to_image_xy
from .errors import FaceModelError
from .face_model import FaceModel
from .params import GROUP_SIZES, split_rig_vector
from .sh import sh_shade


@dataclass(frozen=True, repr=False)
class TorchFaceModel:
    """A FaceModel as tensors on one device. N = vertices, F = triangles.

    mean_shape    [N, 3] decimetres, already recentred on its centroid
    shape_basis   [144, N, 3] identity (80) then expression (64) basis, dm per σ
    mean_albedo   [N, 3] 0..1
    albedo_basis  [80, N, 3] reflectance basis, 0..1 units per σ
    triangles     [F, 3] long, 0-based
    point_buf     [N, 8] long, faces around each vertex; F = the zero-normal dummy face
    vertex_faces, vertex_face_offsets  point_buf without the dummy entries, as flat face ids
                  [M] long and the start [N] long of each vertex's run (embedding_bag bags)
    keypoints     [68] long, vertex ids of the iBUG-68 landmarks
    skin_mask     [N] bool;  front_mask [K] long;  tri_mask [F2, 3] long
    """

    mean_shape: torch.Tensor
    shape_basis: torch.Tensor
    mean_albedo: torch.Tensor
    albedo_basis: torch.Tensor
    triangles: torch.Tensor
    point_buf: torch.Tensor
    vertex_faces: torch.Tensor
    vertex_face_offsets: torch.Tensor
    keypoints: torch.Tensor
    skin_mask: torch.Tensor
    front_mask: torch.Tensor
    tri_mask: torch.Tensor

    @classmethod
    def from_face_model(
        cls,
        face_model: FaceModel,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> TorchFaceModel:
        n = face_model.n_vertices
        expected = {
            "id_base": (3 * n, GROUP_SIZES["identity"]),
            "exp_base": (3 * n, GROUP_SIZES["expression"]),
            "tex_base": (3 * n, GROUP_SIZES["reflectance"]),
        }
        for name, shape in expected.items():
            found = getattr(face_model, name).shape
            if found != shape:
                raise FaceModelError(
                    f"face model '{name}': expected shape {shape}, found {found}"
                )

        def basis(array: np.ndarray) -> torch.Tensor:
            # [3N, K] -> [K, N, 3] contiguous, so a batch of coefficients is one matmul.
            return floats(np.ascontiguousarray(array.T).reshape(array.shape[1], n, 3))

        def floats(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(array), dtype=dtype, device=device).contiguous()

        def longs(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(array), dtype=torch.long, device=device)

        mean_shape = face_model.mean_shape.reshape(n, 3).astype(np.float64)
        point_buf = np.asarray(face_model.point_buf)
        listed = point_buf != face_model.n_triangles  # row-major order keeps each vertex's run
        offsets = np.concatenate([[0], np.cumsum(listed.sum(axis=1))[:-1]])
        return cls(
            mean_shape=floats(mean_shape - mean_shape.mean(axis=0)),
            shape_basis=torch.cat([basis(face_model.id_base), basis(face_model.exp_base)]),
            mean_albedo=floats(face_model.mean_tex.reshape(n, 3) / 255.0),
            albedo_basis=basis(face_model.tex_base / 255.0),
            triangles=longs(face_model.triangles),
            point_buf=longs(point_buf),
            vertex_faces=longs(point_buf[listed]),
            vertex_face_offsets=longs(offsets),
            keypoints=longs(face_model.keypoints),
            skin_mask=torch.as_tensor(np.asarray(face_model.skin_mask, bool), device=device),
            front_mask=longs(face_model.front_mask),
            tri_mask=longs(face_model.tri_mask),
        )

    @property
    def n_vertices(self) -> int:
        return int(self.mean_shape.shape[0])

    @property
    def n_triangles(self) -> int:
        return int(self.triangles.shape[0])

    def __repr__(self) -> str:
        return (
            f"TorchFaceModel(vertices={self.n_vertices}, triangles={self.n_triangles}, "
            f"dtype={self.mean_shape.dtype}, device={self.mean_shape.device})"
        )


@dataclass(frozen=True)
class RigEvaluation:
    """The rig evaluated for a batch. B = batch, N = vertices.

    vertices   [B, N, 3] camera-frame positions after rotation and translation, dm
    normals    [B, N, 3] unit vertex normals, rotated
    colours    [B, N, 3] SH-shaded albedo, 0..1 nominal, unclipped
    screen     [B, N, 3] (u px right, v px up, depth dm), see rig.camera.project
    landmarks  [B, 68, 2] image (x right, y down) px of the keypoints
    """

    vertices: torch.Tensor
    normals: torch.Tensor
    colours: torch.Tensor
    screen: torch.Tensor
    landmarks: torch.Tensor


def _combine(mean: torch.Tensor, basis: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """mean [M, 3] + coefficients [B, K] · basis [K, M, 3] -> [B, M, 3] as one matmul."""
    k, m, _ = basis.shape
    flat = coefficients @ basis.reshape(k, 3 * m) + mean.reshape(1, 3 * m)
    return flat.reshape(-1, m, 3)


def shape_vertices(
    tm: TorchFaceModel,
    identity: torch.Tensor,
    expression: torch.Tensor,
    vertex_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Recentred shape [B, N, 3] dm for identity [B, 80] and expression [B, 64] (σ units);
    with `vertex_ids` [K], only those vertices [B, K, 3] (cheap: e.g. the 68 keypoints)."""
    mean, basis = tm.mean_shape, tm.shape_basis
    if vertex_ids is not None:
        mean, basis = mean.index_select(0, vertex_ids), basis.index_select(1, vertex_ids)
    return _combine(mean, basis, torch.cat([identity, expression], dim=-1))


def axis_rotations(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Angles [B, 3] (x, y, z) radians -> the standard right-handed Rx, Ry, Rz [B, 3, 3]."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])

    def matrix(*rows: torch.Tensor) -> torch.Tensor:
        return torch.stack(rows, dim=-1).reshape(-1, 3, 3)

    cx, cy, cz = cos.unbind(-1)
    sx, sy, sz = sin.unbind(-1)
    rx = matrix(one, zero, zero, zero, cx, -sx, zero, sx, cx)
    ry = matrix(cy, zero, sy, zero, one, zero, -sy, zero, cy)
    rz = matrix(cz, -sz, zero, sz, cz, zero, zero, zero, one)
    return rx, ry, rz


def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Angles [B, 3] (x, y, z) radians -> R = Rz·Ry·Rx [B, 3, 3]."""
    rx, ry, rz = axis_rotations(angles)
    return rz @ ry @ rx


def rigid_transform(
    vertices: torch.Tensor, angles: torch.Tensor, translation: torch.Tensor
) -> torch.Tensor:
    """v' = R(angles) v + translation: vertices [B, N, 3], angles [B, 3] rad, translation
    [B, 3] dm -> [B, N, 3]."""
    return vertices @ rotation_matrix(angles).transpose(1, 2) + translation.unsqueeze(1)


def vertex_normals(tm: TorchFaceModel, vertices: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals [B, N, 3]: each face's normal normalize(cross(v0 - v1, v1 - v2))
    (counter-clockwise faces point at the viewer), summed over the faces in point_buf."""
    batch = vertices.shape[0]
    # Batch last, [N, 3B]: a gathered row is one contiguous run, and embedding_bag fuses
    # gather + (weighted) sum without materialising [F, 3, 3, B] or [N, 8, 3, B]. Components
    # are handled as separate [M, B] planes: ops over a trailing size-3 axis are slow on CPU.
    points = vertices.permute(1, 2, 0).reshape(tm.n_vertices, 3 * batch)
    difference = vertices.new_tensor([1.0, -1.0]).repeat(tm.n_triangles, 1)

    def edge(first: int) -> tuple[torch.Tensor, ...]:
        pairs = tm.triangles[:, first : first + 2]  # v[first] - v[first + 1]
        edges = F.embedding_bag(pairs, points, per_sample_weights=difference, mode="sum")
        return edges.view(-1, 3, batch).unbind(1)

    (ax, ay, az), (bx, by, bz) = edge(0), edge(1)
    face_normals = _unit_planes(ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx)
    summed = F.embedding_bag(
        tm.vertex_faces, face_normals.view(-1, 3 * batch), tm.vertex_face_offsets, mode="sum"
    )
    return _unit_planes(*summed.view(-1, 3, batch).unbind(1)).permute(2, 0, 1).contiguous()


def _unit_planes(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Components [M, B] each -> unit vectors [M, 3, B] (zero vectors stay zero)."""
    inverse = torch.rsqrt((x * x + y * y + z * z).clamp_min(1e-24))
    return torch.stack([x * inverse, y * inverse, z * inverse], dim=1)


def albedo(tm: TorchFaceModel, reflectance: torch.Tensor) -> torch.Tensor:
    """Per-vertex albedo [B, N, 3] (0..1 nominal, unclipped) for reflectance [B, 80] (σ)."""
    return _combine(tm.mean_albedo, tm.albedo_basis, reflectance)


def evaluate_rig(tm: TorchFaceModel, rig: torch.Tensor, camera: Camera) -> RigEvaluation:
    """Evaluate canonical rig vectors [B, 257] (see rig.params) with `camera`."""
    groups = split_rig_vector(rig)
    shape = shape_vertices(tm, groups["identity"], groups["expression"])
    vertices = rigid_transform(shape, groups["rotation"], groups["translation"])
    normals = vertex_normals(tm, vertices)  # of the posed mesh: already rotated
    colours = sh_shade(normals, albedo(tm, groups["reflectance"]), groups["illumination"])
    screen = project(camera, vertices)
    landmarks = to_image_xy(screen.index_select(1, tm.keypoints)[..., :2], camera)
    return RigEvaluation(vertices, normals, colours, screen, landmarks)
