"""The 3D Morphable Face Model in Deep3DFaceRecon's ``BFM_model_front.mat`` layout.

Pure numpy (no torch, no bpy): Blender's own process reads it to build the head mesh.
Units: positions in decimetres (BFM micrometres / 1e5), albedo 0..255 as stored in the file.
All index arrays are held 0-based here; the file stores them 1-based.
load_face_model validates every field (shape, index range, NaN) with messages naming the field;
write_face_model_mat writes the official layout atomically; only writing needs scipy (imported
there), reading is numpy only (rig.matfile).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .atomic import atomic_open
from .errors import FaceModelError
from .matfile import MatContents, read_mat

N_IDENTITY = 80
N_EXPRESSION = 64
N_REFLECTANCE = 80
N_LANDMARKS = 68
FACES_PER_VERTEX = 8  # point_buf width: faces listed around each vertex


@dataclass(frozen=True)
class FaceModel:
    """A loaded face model. N = vertices, F = triangles.

    mean_shape   [3N] float32, decimetres, x0 y0 z0 x1 ... (Y up, +Z towards the camera)
    id_base      [3N, 80] float32, identity basis scaled by its standard deviations
    exp_base     [3N, 64] float32, expression basis scaled by its standard deviations
    mean_tex     [3N] float32, albedo 0..255 (r0 g0 b0 r1 ...)
    tex_base     [3N, 80] float32, reflectance basis, 0..255 units
    triangles    [F, 3] int64, 0-based vertex ids
    point_buf    [N, 8] int64, 0-based ids of faces around each vertex; value F = "no face"
    keypoints    [68] int64, 0-based vertex ids of the 68 iBUG landmarks
    skin_mask    [N] bool, vertices used for skin-albedo statistics
    front_mask   [K] int64, 0-based vertex ids of the photometric-loss region
    tri_mask     [F2, 3] int64, 0-based triangles of the photometric-loss region
    """

    mean_shape: np.ndarray
    id_base: np.ndarray
    exp_base: np.ndarray
    mean_tex: np.ndarray
    tex_base: np.ndarray
    triangles: np.ndarray
    point_buf: np.ndarray
    keypoints: np.ndarray
    skin_mask: np.ndarray
    front_mask: np.ndarray
    tri_mask: np.ndarray

    @property
    def n_vertices(self) -> int:
        return int(self.mean_shape.shape[0] // 3)

    @property
    def n_triangles(self) -> int:
        return int(self.triangles.shape[0])


# The keys of BFM_model_front.mat, in the order Deep3DFaceRecon writes them.
TOPOLOGY_KEYS = ("tri", "point_buf", "tri_mask2", "keypoints", "frontmask2_idx", "skinmask")
FILE_KEYS = ("meanshape", "meantex", "idBase", "exBase", "texBase", *TOPOLOGY_KEYS)

_HOW_TO_MAKE = (
    "Build it from your Basel Face Model 2009 download with `nfr rig convert-bfm` "
    "(`nfr rig convert-bfm --help` lists the input files and where to get them)."
)


def load_face_model(path: str | os.PathLike[str]) -> FaceModel:
    """Read a ``BFM_model_front.mat`` (Deep3DFaceRecon layout); raises FaceModelError."""
    return face_model_from_mat(read_mat(path, what="face model", hint=_HOW_TO_MAKE, keys=FILE_KEYS))


def face_model_from_mat(mat: MatContents) -> FaceModel:
    """Validate the arrays of the file layout (every key, shape, index range, NaN) and build
    the FaceModel (0-based indices, float32 bases)."""
    mean_shape = mat.vector("meanshape", meaning="x y z per vertex")
    if mean_shape.size % 3:
        raise FaceModelError(
            f"{mat.source}: field 'meanshape' has {mean_shape.size} values, expected a multiple "
            "of 3 (x y z per vertex)"
        )
    n = mean_shape.size // 3
    per_vertex = f"N = {n} vertices from 'meanshape'"
    mean_tex = mat.vector("meantex", 3 * n, meaning=f"r g b per vertex, {per_vertex}")

    def basis(key: str, size: int) -> np.ndarray:
        values = mat.matrix(key, (3 * n, size), meaning=f"3N x {size}, {per_vertex}")
        return mat.finite(key, values.astype(np.float32))

    return FaceModel(
        mean_shape=mat.finite("meanshape", mean_shape.astype(np.float32)),
        id_base=basis("idBase", N_IDENTITY),
        exp_base=basis("exBase", N_EXPRESSION),
        mean_tex=mat.finite("meantex", mean_tex.astype(np.float32)),
        tex_base=basis("texBase", N_REFLECTANCE),
        **topology_from_mat(mat, n, per_vertex),
    )


def topology_from_mat(mat: MatContents, n: int, per_vertex: str) -> dict[str, np.ndarray]:
    """The mesh and region fields (tri, point_buf, keypoints, masks) for ``n`` vertices, checked
    and 0-based, keyed by FaceModel field name. ``per_vertex`` tells messages where ``n``
    comes from, e.g. "N = 35709 vertices from 'meanshape'"."""
    triangles = mat.matrix("tri", (None, 3), meaning="one row of 3 vertex ids per triangle")
    point_buf = mat.matrix(
        "point_buf", (n, FACES_PER_VERTEX), meaning=f"faces around each vertex, {per_vertex}"
    )
    skin = mat.vector("skinmask", n, meaning=f"one 0/1 flag per vertex, {per_vertex}")
    not_flags = ~np.isin(skin, (0, 1))
    if not_flags.any():
        raise FaceModelError(
            f"{mat.source}: field 'skinmask' must hold 0/1 flags, found "
            f"{np.unique(skin[not_flags])[:5].tolist()}"
        )
    keypoints = mat.vector("keypoints", N_LANDMARKS, meaning="the 68 iBUG landmarks")
    tri_mask = mat.matrix("tri_mask2", (None, 3), meaning="one row of 3 vertex ids per triangle")
    return {
        "triangles": mat.one_based_ids("tri", triangles, n, "vertex"),
        # Face id F+1 (1-based) is the dummy "no face" entry padding each row to 8.
        "point_buf": mat.one_based_ids("point_buf", point_buf, len(triangles) + 1, "face"),
        "keypoints": mat.one_based_ids("keypoints", keypoints, n, "vertex"),
        "skin_mask": skin.astype(bool),
        "front_mask": mat.one_based_ids(
            "frontmask2_idx", mat.vector("frontmask2_idx"), n, "vertex"
        ),
        "tri_mask": mat.one_based_ids("tri_mask2", tri_mask, n, "vertex"),
    }


def face_model_to_mat(model: FaceModel) -> dict[str, np.ndarray]:
    """The official file layout: row-vector means, float32 bases, 1-based int32 indices."""

    def one_based(ids: np.ndarray) -> np.ndarray:
        return (ids + 1).astype(np.int32)

    return {
        "meanshape": model.mean_shape.astype(np.float32).reshape(1, -1),
        "meantex": model.mean_tex.astype(np.float32).reshape(1, -1),
        "idBase": model.id_base.astype(np.float32),
        "exBase": model.exp_base.astype(np.float32),
        "texBase": model.tex_base.astype(np.float32),
        "tri": one_based(model.triangles),
        "point_buf": one_based(model.point_buf),
        "tri_mask2": one_based(model.tri_mask),
        "keypoints": one_based(model.keypoints).reshape(1, -1),
        "frontmask2_idx": one_based(model.front_mask).reshape(-1, 1),
        "skinmask": model.skin_mask.astype(np.uint8).reshape(1, -1),
    }


def write_face_model_mat(model: FaceModel, path: str | os.PathLike[str]) -> None:
    """Write ``model`` as a ``BFM_model_front.mat`` (uncompressed MATLAB v5), atomically."""
    from scipy.io import savemat

    with atomic_open(path, "wb") as handle:
        savemat(handle, face_model_to_mat(model), do_compression=False)
