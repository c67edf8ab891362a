"""Faces of a photo and their 68 landmarks, largest face first.

The detector is dlib (offline default) or FAN when its official weight files are present
(``neural.landmarks``). Every face the detector's face finder reports is listed, sorted by box
area (largest first); the caller picks one by index (0 = the largest, what a portrait wants).
Landmarks are then predicted inside the chosen box.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..landmarks import Detection, DetectorUnavailableError, LandmarkDetector, make_detector
from . import PhotoError

MAX_PIXELS = 100_000_000  # a 100 MP photo decodes to 300 MB of RGB; larger is refused


class NoFaceError(PhotoError):
    """The photo holds no face the detector can find, or not as many as the index asks."""


def read_photo(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file -> uint8 RGB [H, W, 3] (alpha dropped, greyscale expanded, EXIF
    orientation applied, as a phone photo is meant to be seen)."""
    from PIL import ImageOps

    label = os.fspath(path)
    if not Path(path).is_file():
        raise PhotoError(f"{label}: no such image file")
    try:
        with Image.open(path) as opened:
            width, height = opened.size  # from the header: checked before any pixel is read
            if width * height > MAX_PIXELS:
                raise PhotoError(f"{label}: image of {width}x{height} px is larger than "
                                 f"{MAX_PIXELS // 1_000_000} megapixels; scale it down first")
            rgb = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise PhotoError(f"{label}: not a readable image ({exc})") from None
    if min(rgb.shape[:2]) < 16:
        raise PhotoError(f"{label}: image of {rgb.shape[1]}x{rgb.shape[0]} px is too small "
                         "for a face (expected at least 16 px each way)")
    return np.ascontiguousarray(rgb)


def default_detector(name: str | None = None) -> LandmarkDetector:
    """``name`` 'dlib' or 'fan', or None: FAN when its official weight files are present in
    ``$TORCH_HOME/hub/checkpoints``, else dlib."""
    if name is not None:
        return make_detector(name)
    from ..landmarks.fan_detector import check_weights, weights_dir

    try:
        check_weights(weights_dir())
    except DetectorUnavailableError:
        return make_detector("dlib")
    return make_detector("fan")  # weights present: a damaged file is an error, not a fallback


def face_boxes(detector: LandmarkDetector, image: np.ndarray) -> np.ndarray:
    """Every face box [N, 4] (x0, y0, x1, y1) the detector's face finder reports for ``image``
    (uint8 RGB [H, W, 3]), largest area first; [0, 4] when there is none."""
    boxes = _raw_boxes(detector, image)
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float64)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[np.argsort(-areas, kind="stable")]


def _raw_boxes(detector: LandmarkDetector, image: np.ndarray) -> np.ndarray:
    # The detectors keep only the largest face; their face finders are asked directly here so
    # the user can choose another face of a group photo.
    finder: Any = getattr(detector, "_face_detector", None)
    if detector.name == "dlib" and finder is not None:
        rects, _, _ = finder.run(image, getattr(detector, "upsample", 0), 0.0)
        return np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float64)
    if detector.name == "fan" and finder is not None:
        import torch

        batch = torch.from_numpy(image[None]).permute(0, 3, 1, 2).float()
        batch = batch.to(getattr(detector, "device", "cpu"))
        (found,) = finder.detect_from_batch(batch)
        return np.asarray(found, np.float64).reshape(-1, 5)[:, :4]
    found = detector.detect([image])[0]  # any other detector: its one face
    return np.zeros((0, 4)) if found is None else found.box[None].astype(np.float64)


def detect_face(
    image: np.ndarray,
    detector: LandmarkDetector,
    index: int = 0,
    label: str = "photo",
) -> tuple[Detection, int]:
    """(landmarks of face ``index``, number of faces found); faces are sorted largest first.
    Raises NoFaceError with a message the user can act on."""
    found, boxes = choose_face(image, detector, index, label)
    return found, len(boxes)


def choose_face(
    image: np.ndarray,
    detector: LandmarkDetector,
    index: int = 0,
    label: str = "photo",
) -> tuple[Detection, np.ndarray]:
    """(landmarks of face ``index``, every face box [N, 4] largest first). A photo may hold
    face-like false positives (a printed face, a badge) larger than the face: the boxes let
    the caller show the choice."""
    boxes = face_boxes(detector, image)
    if len(boxes) == 0:
        raise NoFaceError(
            f"{label}: no face found by the {detector.name} detector (expected a photo with a "
            "face of at least about 80 px, eyes visible, roughly frontal)"
        )
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(boxes):
        raise NoFaceError(
            f"{label}: face index {index!r} is out of range: found {len(boxes)} face(s), "
            f"expected 0..{len(boxes) - 1} (0 = the largest)"
        )
    (found,) = detector.detect([image], boxes=[boxes[index]])
    if found is None:  # the landmark stage refused the box
        raise NoFaceError(f"{label}: no landmarks found in face box {boxes[index].tolist()}")
    return found, boxes
