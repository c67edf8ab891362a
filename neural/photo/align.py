"""The two crops a photo needs, each with the transform that maps results back to the photo.

- FFHQ (the StyleGAN generators' crop): ``neural.landmarks.align.align_face``, NVIDIA's
  ``recreate_aligned_images`` from the 68 landmarks, to the generator's resolution.
- Deep3DFaceRecon (the R-Net's and the rig camera's 224 px crop), its ``align_img``:
  five points (eye centres, nose tip, mouth corners) with y flipped up (y' = H - 1 - y) are
  fitted by least squares to five standard 3D points under a scaled orthographic camera
  (``POS``: translation t, scale s, px per dm); the photo is resized by s' = 102 / s
  (bicubic, size truncated to whole pixels) and a 224 px square is cut at
  left = int(w/2 - 112 + (t_x - W/2) s'), up = int(h/2 - 112 + (H/2 - t_y) s').
  ``trans_params`` = [W, H, s', t_x, t_y] as Deep3DFaceRecon stores them; ``matrix`` is the
  exact pixel map of those operations (pixel centres at integers).

The five standard 3D points are the face model's mean-shape keypoints (the rig's own
face, in dm, recentred as its geometry is), or those of a ``similarity_Lm3D_all.mat`` the
user gives (Deep3DFaceRecon's 68 standard points, reduced to five the same way).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ...rig.face_model import FaceModel
from ..landmarks import NUM_LANDMARKS, five_points
from ..landmarks.align import AlignedFace, align_face, apply_affine, invert_affine
from . import PhotoError

D3D_SIZE = 224
D3D_RESCALE = 102.0

__all__ = [
    "D3D_RESCALE",
    "D3D_SIZE",
    "AlignedFace",
    "D3DCrop",
    "align_d3d",
    "align_ffhq",
    "apply_affine",
    "invert_affine",
    "load_lm3d_mat",
    "pos",
    "standard_points",
]


@dataclass(frozen=True)
class D3DCrop:
    """``image`` [224, 224, 3] uint8; ``matrix`` [2, 3] photo px -> crop px; ``trans_params``
    [5] (W, H, s', t_x, t_y) in Deep3DFaceRecon's convention; ``landmarks`` [68, 2] the photo's
    landmarks in crop pixels (y down)."""

    image: np.ndarray
    matrix: np.ndarray
    trans_params: np.ndarray
    landmarks: np.ndarray


def align_ffhq(image: np.ndarray, landmarks: np.ndarray, size: int) -> AlignedFace:
    """FFHQ crop of ``size`` px (the generator's resolution); supersampled at 4 x size."""
    return align_face(image, landmarks, output_size=size)


def standard_points(model: FaceModel) -> np.ndarray:
    """[5, 3] float64 dm: the five points of the face model's recentred mean shape."""
    shape = model.mean_shape.reshape(-1, 3).astype(np.float64)
    shape = shape - shape.mean(axis=0)
    return _five_3d(shape[model.keypoints])


def _five_3d(points68: np.ndarray) -> np.ndarray:
    """[68, 3] -> [5, 3] with the weights of ``five_points`` (applied to x, y, z)."""
    xy = five_points(points68[:, :2])
    yz = five_points(points68[:, 1:])
    return np.concatenate([xy, yz[:, 1:]], axis=1)


def load_lm3d_mat(path: str | os.PathLike[str]) -> np.ndarray:
    """Deep3DFaceRecon's ``similarity_Lm3D_all.mat`` (key ``lm`` [68, 3]) -> [5, 3]."""
    from ...rig.matfile import read_mat

    contents = read_mat(path, what="standard landmarks", keys=["lm"],
                        hint="It ships in Deep3DFaceRecon's BFM folder.")
    lm = np.asarray(contents.array("lm"), np.float64)
    if lm.shape != (NUM_LANDMARKS, 3) or not np.isfinite(lm).all():
        raise PhotoError(f"{os.fspath(path)}: field lm: expected finite [68, 3], "
                         f"found {list(lm.shape)}")
    return _five_3d(lm)


def pos(points2d: np.ndarray, points3d: np.ndarray) -> tuple[np.ndarray, float]:
    """Scaled orthographic fit p ≈ s R[:2] X + t of [N, 2] image points (y up) to [N, 3]
    model points by linear least squares on the 8 unknowns (s R rows, t): returns t [2] and
    s = mean norm of the two scaled rows (px per model unit)."""
    n = len(points2d)
    a = np.zeros((2 * n, 8))
    a[0::2, 0:3] = points3d
    a[0::2, 3] = 1.0
    a[1::2, 4:7] = points3d
    a[1::2, 7] = 1.0
    b = np.asarray(points2d, np.float64).reshape(2 * n)
    k = np.linalg.lstsq(a, b, rcond=None)[0]
    scale = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    return np.array([k[3], k[7]]), float(scale)


def align_d3d(
    image: np.ndarray,
    landmarks: np.ndarray,
    lm3d: np.ndarray,
    target_size: int = D3D_SIZE,
    rescale: float = D3D_RESCALE,
) -> D3DCrop:
    """Deep3DFaceRecon's ``align_img`` of uint8 RGB ``image`` [H, W, 3] by its ``landmarks``
    [68, 2] (y down) against the five standard points ``lm3d`` [5, 3]."""
    points = np.asarray(landmarks, np.float64)
    if points.shape != (NUM_LANDMARKS, 2) or not np.isfinite(points).all():
        raise PhotoError(f"landmarks: expected finite [68, 2], found {list(points.shape)}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise PhotoError(f"image: expected uint8 RGB [H, W, 3], found {image.dtype} "
                         f"{list(image.shape)}")
    h0, w0 = image.shape[:2]
    flipped = points.copy()
    flipped[:, 1] = h0 - 1 - flipped[:, 1]
    t, s = pos(five_points(flipped), np.asarray(lm3d, np.float64))
    if not s > 0:
        raise PhotoError("landmarks: degenerate five points (zero scale)")
    s = rescale / s
    w, h = int(w0 * s), int(h0 * s)
    left = int(w / 2 - target_size / 2 + (t[0] - w0 / 2) * s)
    up = int(h / 2 - target_size / 2 + (h0 / 2 - t[1]) * s)
    if w < 1 or h < 1 or max(w, h) > 16 * 4096:
        raise PhotoError(f"landmarks: the face would be resized to {w}x{h} px; expected a face "
                         "that fills a reasonable part of the photo")
    resized = Image.fromarray(image).resize((w, h), Image.Resampling.BICUBIC)
    crop = np.asarray(resized.crop((left, up, left + target_size, up + target_size)))
    # PIL's resize maps pixel centres as (x + 0.5) * w / W - 0.5.
    sx, sy = w / w0, h / h0
    matrix = np.array([[sx, 0.0, 0.5 * sx - 0.5 - left], [0.0, sy, 0.5 * sy - 0.5 - up]])
    return D3DCrop(
        image=np.ascontiguousarray(crop),
        matrix=matrix,
        trans_params=np.array([w0, h0, s, t[0], t[1]]),
        landmarks=apply_affine(matrix, points),
    )
