"""Face landmark detectors behind one interface: 68 iBUG points per image.

Coordinates everywhere in this package: image pixels, x right, y down, pixel centres at
integers (pixel (0, 0) covers [-0.5, 0.5]^2). Points use the 0-based iBUG-68 order (jaw 0-16,
brows 17-26, nose 27-35, eyes 36-47, mouth 48-67).

Images go in as a batch and come out as a list, one ``Detection | None`` per image:
- a list of uint8 RGB arrays [H, W, 3] (sizes may differ), or a uint8 array [B, H, W, 3];
- a float torch tensor [B, 3, H, W] in the generator's sRGB range [-1, 1], on any device.
When an image holds several faces the largest box wins (portraits: false positives are small).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from ..errors import NeuralError

DETECTOR_NAMES = ("dlib", "fan")
NUM_LANDMARKS = 68
# Generator images may overshoot [-1, 1] a little; far outside means another convention.
_FLOAT_RANGE_SLACK = 0.5


class LandmarkError(NeuralError):
    """Input to a landmark detector or to a landmark function is malformed."""


class DetectorUnavailableError(LandmarkError):
    """A detector's Python package or weight file is missing or unreadable."""


@dataclass(frozen=True)
class Detection:
    """One face: ``landmarks`` [68, 2] float32, ``box`` [4] float32 (x0, y0, x1, y1) in image
    pixels, ``score`` the face detector's confidence (detector-specific scale; higher is
    surer), or None when the caller supplied the box."""

    landmarks: np.ndarray
    box: np.ndarray
    score: float | None


class LandmarkDetector(ABC):
    """Finds the 68 landmarks of the main face of each image of a batch."""

    name: str

    def detect(
        self, images: Any, boxes: Sequence[Any | None] | None = None
    ) -> list[Detection | None]:
        """One entry per image; None where no face was found. ``boxes`` (optional, one per
        image, each [4] x0, y0, x1, y1 or None) skips face detection for those images; a box
        is read in this detector's own box convention (dlib HOG boxes are tighter than sfd's)."""
        batch = as_uint8_images(images)
        return self._detect(batch, check_boxes(boxes, len(batch)))

    @abstractmethod
    def _detect(
        self, images: list[np.ndarray], boxes: list[np.ndarray | None]
    ) -> list[Detection | None]:
        """``images``: validated C-contiguous uint8 [H, W, 3]; ``boxes``: validated [4] float64."""


def make_detector(
    name: str = "dlib", device: torch.device | str | None = None, **options: Any
) -> LandmarkDetector:
    """``'dlib'`` (HOG + 68-point predictor; offline, CPU; ``device`` is ignored and tensors
    from any device are accepted) or ``'fan'`` (face-alignment 2DFAN4 + sfd; ``device``
    defaults to CUDA when available). ``options`` go to the detector's constructor."""
    if name == "dlib":
        from .dlib_detector import DlibDetector

        return DlibDetector(**options)
    if name == "fan":
        from .fan_detector import FanDetector

        return FanDetector(device, **options)
    raise LandmarkError(f"landmark detector {name!r}: expected one of {', '.join(DETECTOR_NAMES)}")


# ------------------------------------------------------- five points (docs/REFERENCE.md §4.5)

# Rows: left eye = mean(36, 39), right eye = mean(42, 45), nose tip 30, mouth corners 48, 54
# (0-based iBUG; "left" is the image-left eye, Deep3DFaceRecon's order).
_FIVE_POINT_WEIGHTS = np.zeros((5, NUM_LANDMARKS), np.float32)
for _row, _points in enumerate(((36, 39), (42, 45), (30,), (48,), (54,))):
    _FIVE_POINT_WEIGHTS[_row, list(_points)] = 1.0 / len(_points)

_Points = TypeVar("_Points", np.ndarray, torch.Tensor)


def five_points(landmarks68: _Points) -> _Points:
    """[..., 68, 2] -> [..., 5, 2]: left eye, right eye, nose tip, left and right mouth corner
    (numpy or torch; torch stays on its device and keeps gradients)."""
    if tuple(landmarks68.shape[-2:]) != (NUM_LANDMARKS, 2):
        raise LandmarkError(
            f"five_points: expected landmarks [..., {NUM_LANDMARKS}, 2], "
            f"found shape {tuple(landmarks68.shape)}"
        )
    if isinstance(landmarks68, torch.Tensor):
        points = landmarks68 if landmarks68.is_floating_point() else landmarks68.float()
        return torch.from_numpy(_FIVE_POINT_WEIGHTS).to(points) @ points
    return _FIVE_POINT_WEIGHTS @ landmarks68


# ------------------------------------------------------------------ input validation


def as_uint8_images(images: Any) -> list[np.ndarray]:
    """Validate a batch (see the module docstring) -> list of C-contiguous uint8 [H, W, 3]."""
    if isinstance(images, torch.Tensor):
        return _tensor_to_uint8(images)
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            raise LandmarkError(
                f"images: found one image {images.shape}; pass a list [image] or a batch "
                "[B, H, W, 3]"
            )
        if images.ndim != 4:
            raise LandmarkError(
                f"images: expected a batch [B, H, W, 3], found shape {images.shape}"
            )
        images = list(images)
    if not isinstance(images, list | tuple):
        raise LandmarkError(
            "images: expected a list of uint8 [H, W, 3] arrays, a uint8 array [B, H, W, 3] or "
            f"a float tensor [B, 3, H, W]; found {type(images).__name__}"
        )
    return [_check_uint8_image(image, index) for index, image in enumerate(images)]


def _check_uint8_image(image: Any, index: int) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise LandmarkError(
            f"images[{index}]: expected a numpy array, found {type(image).__name__}"
        )
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise LandmarkError(f"images[{index}]: expected RGB [H, W, 3], found shape {image.shape}")
    if image.dtype != np.uint8:
        raise LandmarkError(
            f"images[{index}]: expected dtype uint8 (0..255), found {image.dtype}; float images "
            "go in as a torch tensor [B, 3, H, W] in [-1, 1]"
        )
    return np.ascontiguousarray(image)


def _tensor_to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    if not images.is_floating_point():
        raise LandmarkError(
            f"images: a tensor batch must be float [B, 3, H, W] in [-1, 1], found {images.dtype}; "
            "uint8 images go in as numpy arrays [H, W, 3]"
        )
    if images.ndim != 4 or images.shape[1] != 3:
        raise LandmarkError(
            f"images: expected a float tensor [B, 3, H, W], found shape {tuple(images.shape)}"
        )
    if images.shape[0] == 0:
        return []
    if min(images.shape[2:]) < 1:
        raise LandmarkError(f"images: found an empty image size {tuple(images.shape)}")
    low, high = images.min().item(), images.max().item()
    limit = 1.0 + _FLOAT_RANGE_SLACK
    if not (-limit <= low and high <= limit):
        raise LandmarkError(
            "images: expected the generator's sRGB range [-1, 1], "
            f"found values {low:.3g}..{high:.3g}"
        )
    pixels = ((images.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return list(pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy())


def check_boxes(boxes: Sequence[Any | None] | None, count: int) -> list[np.ndarray | None]:
    """None or one entry per image (None or [4] x0, y0, x1, y1 with x1 > x0, y1 > y0)."""
    if boxes is None:
        return [None] * count
    if len(boxes) != count:
        raise LandmarkError(f"boxes: expected one entry per image ({count}), found {len(boxes)}")
    checked: list[np.ndarray | None] = []
    for index, box in enumerate(boxes):
        if box is None:
            checked.append(None)
            continue
        values = np.asarray(box, np.float64)
        if values.shape != (4,) or not np.isfinite(values).all():
            raise LandmarkError(
                f"boxes[{index}]: expected 4 finite numbers x0, y0, x1, y1, found {box!r}"
            )
        if values[2] <= values[0] or values[3] <= values[1]:
            raise LandmarkError(f"boxes[{index}]: expected x1 > x0 and y1 > y0, found {box!r}")
        checked.append(values)
    return checked


def largest_box(boxes: np.ndarray) -> int:
    """Index of the largest-area box of [N, >=4] (x0, y0, x1, y1, ...)."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return int(np.argmax(areas))
