"""dlib's HOG frontal-face detector + 68-point shape predictor: the offline default.

The predictor ships in the ``face-recognition-models`` package. Importing that package fails
without setuptools' ``pkg_resources``, so its folder is located with ``find_spec`` instead.
dlib runs on the CPU, one image at a time (about 30 ms per 512 px image, see the report).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from . import (
    NUM_LANDMARKS,
    Detection,
    DetectorUnavailableError,
    LandmarkDetector,
    LandmarkError,
    largest_box,
)

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
MODELS_PACKAGE = "face_recognition_models"


def packaged_model_path(file_name: str) -> Path:
    """Path of a model file shipped by ``face-recognition-models`` (checked to exist)."""
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or spec.origin is None:
        raise DetectorUnavailableError(
            f"the dlib landmark detector needs the package 'face-recognition-models' "
            f"(pip install face-recognition-models==0.3.0) for {file_name}; it is not installed"
        )
    path = Path(spec.origin).parent / "models" / file_name
    if not path.is_file():
        raise DetectorUnavailableError(
            f"{path}: not found; reinstall 'face-recognition-models', which ships {file_name}"
        )
    return path


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as exc:
        raise DetectorUnavailableError(
            "the dlib landmark detector needs the package 'dlib-bin' "
            f"(pip install dlib-bin==20.0.1.post1); importing dlib failed: {exc}"
        ) from exc
    return dlib


class DlibDetector(LandmarkDetector):
    """``upsample``: how many times the HOG detector doubles the image first (0 finds faces
    of about 80 px and up; each step finds smaller faces at ~4x the time and more false
    positives). ``predictor_path`` overrides the packaged 68-point model."""

    name = "dlib"

    def __init__(self, upsample: int = 0, predictor_path: str | Path | None = None) -> None:
        if not isinstance(upsample, int) or upsample < 0:
            raise LandmarkError(f"upsample: expected an int >= 0, found {upsample!r}")
        dlib = _import_dlib()
        path = Path(predictor_path) if predictor_path else packaged_model_path(PREDICTOR_FILE)
        if not path.is_file():
            raise DetectorUnavailableError(f"{path}: dlib shape predictor file not found")
        try:
            self._predictor = dlib.shape_predictor(str(path))
        except RuntimeError as exc:
            raise DetectorUnavailableError(
                f"{path}: not a readable dlib 68-point shape predictor ({exc})"
            ) from exc
        self._dlib = dlib
        self._predictor_path = path
        self._face_detector = dlib.get_frontal_face_detector()
        self.upsample = upsample

    def _detect(
        self, images: list[np.ndarray], boxes: list[np.ndarray | None]
    ) -> list[Detection | None]:
        return [self._detect_one(image, box) for image, box in zip(images, boxes, strict=True)]

    def _detect_one(self, image: np.ndarray, box: np.ndarray | None) -> Detection | None:
        score: float | None = None
        if box is None:
            # Threshold 0 is dlib's own default decision boundary; run() also gives scores.
            rects, scores, _ = self._face_detector.run(image, self.upsample, 0.0)
            if not rects:
                return None
            found = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], float)
            best = largest_box(found)
            box, score = found[best], float(scores[best])
        left, top, right, bottom = (int(round(v)) for v in box)
        shape = self._predictor(image, self._dlib.rectangle(left, top, right, bottom))
        if shape.num_parts != NUM_LANDMARKS:
            raise DetectorUnavailableError(
                f"{self._predictor_path}: predicts {shape.num_parts} points, expected the "
                f"{NUM_LANDMARKS}-point model {PREDICTOR_FILE}"
            )
        points = np.array([(p.x, p.y) for p in shape.parts()], np.float32)
        return Detection(points, box.astype(np.float32), score)
