"""FFHQ alignment of a photo from its 68 landmarks (NVIDIA ffhq-dataset recreate_aligned_images).

The oriented square of the FFHQ recipe is cut out of the photo and resampled to
``output_size``: integer pre-shrink with antialiasing for large faces, crop to the square plus
a border, reflect-padding blended towards a blur and the median colour where the square leaves
the photo, a bilinear warp at ``transform_size`` and a Lanczos resize to ``output_size``.
The pixel operations are NVIDIA's ``recreate_aligned_images`` step for step (including its
``quad /= shrink`` after the pre-shrink, which moves the square by under half a shrunk pixel),
and the geometry is tracked exactly: ``AlignedFace.matrix`` maps photo pixels to output pixels
(both with pixel centres at integers) as those operations move them; ``to_photo`` maps points
of the aligned image back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from . import NUM_LANDMARKS, LandmarkError


@dataclass(frozen=True)
class AlignedFace:
    """``image`` [S, S, 3] uint8; ``quad`` [4, 2] float64 photo points that become the output's
    top-left, bottom-left, bottom-right and top-right corners; ``matrix`` [2, 3] float64 affine
    photo (x, y, 1) -> output (x, y)."""

    image: np.ndarray
    quad: np.ndarray
    matrix: np.ndarray


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """[68, 2] iBUG landmarks -> [4, 2] oriented square (top-left, bottom-left, bottom-right,
    top-right) of the FFHQ crop."""
    points = np.asarray(landmarks, np.float64)
    if points.shape != (NUM_LANDMARKS, 2) or not np.isfinite(points).all():
        raise LandmarkError(
            f"landmarks: expected finite [{NUM_LANDMARKS}, 2], found shape {points.shape}"
        )
    eye_left, eye_right = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (points[48] + points[54]) / 2 - eye_avg

    def perpendicular(v: np.ndarray) -> np.ndarray:
        return np.array([-v[1], v[0]])

    x = eye_to_eye - perpendicular(eye_to_mouth)
    x *= max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth)) / np.hypot(*x)
    y = perpendicular(x)
    centre = eye_avg + 0.1 * eye_to_mouth
    return np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])


def quad_to_output_matrix(quad: np.ndarray, output_size: int) -> np.ndarray:
    """[2, 3] affine taking photo pixels to output pixels: the quad's corners go to the
    output's outer pixel corners, e.g. quad[0] -> (-0.5, -0.5)."""
    axes = np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1) / output_size  # columns
    inverse = np.linalg.inv(axes)
    return np.concatenate([inverse, (-inverse @ quad[0] - 0.5)[:, None]], axis=1)


def align_face(
    image: np.ndarray,
    landmarks: np.ndarray,
    output_size: int = 1024,
    transform_size: int | None = None,
) -> AlignedFace:
    """Align ``image`` (uint8 RGB [H, W, 3]) by its ``landmarks`` [68, 2]. ``transform_size``
    (default 4 * output_size: FFHQ's 4096 for 1024) is the supersampled warp size."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise LandmarkError(
            f"image: expected uint8 RGB [H, W, 3], found {image.dtype} {image.shape}"
        )
    if output_size < 1:
        raise LandmarkError(f"output_size: expected >= 1, found {output_size}")
    transform_size = transform_size or 4 * output_size
    if transform_size < output_size:
        raise LandmarkError(
            f"transform_size: expected >= output_size ({output_size}), found {transform_size}"
        )
    quad = ffhq_quad(landmarks)
    work, work_quad, photo_to_work = _prepare(image, quad, output_size)
    warped = Image.fromarray(work).transform(
        (transform_size, transform_size),
        Image.Transform.QUAD,
        tuple((work_quad + 0.5).ravel()),  # PIL puts pixel corners at integers
        Image.Resampling.BILINEAR,
    )
    if transform_size != output_size:
        warped = warped.resize((output_size, output_size), Image.Resampling.LANCZOS)
    matrix = compose_affine(quad_to_output_matrix(work_quad, output_size), photo_to_work)
    return AlignedFace(np.asarray(warped), quad, matrix)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """[2, 3] affines: the map x -> outer(inner(x))."""
    return np.concatenate(
        [outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]], axis=1
    )


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a [2, 3] affine."""
    inverse = np.linalg.inv(matrix[:, :2])
    return np.concatenate([inverse, (-inverse @ matrix[:, 2])[:, None]], axis=1)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[2, 3] affine applied to points [..., 2] (float64)."""
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def to_photo(aligned: AlignedFace, points: np.ndarray) -> np.ndarray:
    """Points [..., 2] in the aligned image's pixels -> the photo's pixels."""
    return apply_affine(invert_affine(aligned.matrix), points)


def _prepare(
    image: np.ndarray, quad: np.ndarray, output_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shrink, crop and pad ``image`` around ``quad``; returns it, the quad in its pixels and
    the [2, 3] affine from photo pixels to its pixels."""
    qsize = float(np.hypot(*(quad[3] - quad[0])))  # side length of the square
    shrink = int(np.floor(qsize / output_size * 0.5))
    photo_to_work = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    if shrink > 1:
        height, width = image.shape[:2]
        size = (int(np.rint(width / shrink)), int(np.rint(height / shrink)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
        # PIL maps pixel centres (x + 0.5) * size / width - 0.5; NVIDIA divides the quad by
        # shrink, which differs from that by under half a shrunk pixel: track what happens.
        scale = np.array(size, np.float64) / (width, height)
        photo_to_work = np.array([[scale[0], 0.0, 0.5 * scale[0] - 0.5],
                                  [0.0, scale[1], 0.5 * scale[1] - 0.5]])
        quad = quad / shrink
        qsize /= shrink
    border = max(round(0.1 * qsize), 3)
    height, width = image.shape[:2]
    low = np.floor(quad.min(axis=0)).astype(int) - border
    high = np.ceil(quad.max(axis=0)).astype(int) + border
    x0, y0 = np.maximum(low, 0)
    x1, y1 = np.minimum(high, (width, height))
    image, quad = image[y0:y1, x0:x1], quad - (x0, y0)
    photo_to_work[:, 2] -= (x0, y0)
    # Padding: left, top, right, bottom, only when the square leaves the photo noticeably.
    pad = np.maximum(np.concatenate([-(low - (x0, y0)), high - (x1, y1)]), 0)
    if pad.max() <= border - 4:
        return image, quad, photo_to_work
    pad = np.maximum(pad, max(round(0.3 * qsize), 1))
    padded = np.pad(
        image.astype(np.float32), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), mode="reflect"
    )
    padded_height, padded_width = padded.shape[:2]
    ys, xs = np.ogrid[:padded_height, :padded_width]
    # 0 at the photo's edge, rising to 1 at the padded edge (negative inside the photo).
    to_x_edge = np.minimum(xs / pad[0], (padded_width - 1 - xs) / pad[2])
    to_y_edge = np.minimum(ys / pad[1], (padded_height - 1 - ys) / pad[3])
    mask = np.maximum(1 - to_x_edge, 1 - to_y_edge)[:, :, None].astype(np.float32)
    blur_sigma = 0.02 * qsize
    blurred = gaussian_filter(padded, (blur_sigma, blur_sigma, 0))
    padded += (blurred - padded) * np.clip(3 * mask + 1, 0, 1)
    padded += (np.median(padded, axis=(0, 1)) - padded) * np.clip(mask, 0, 1)
    result = np.clip(np.rint(padded), 0, 255).astype(np.uint8)
    photo_to_work[:, 2] += pad[:2]
    return result, quad + pad[:2], photo_to_work
