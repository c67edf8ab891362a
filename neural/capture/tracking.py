"""68 landmarks per frame with a confidence, tracking the face from frame to frame.

The face detector (dlib HOG or sfd) is the slow part; it runs on the first frame and again only
when tracking is lost. Every other frame gets the landmark predictor with a box predicted from
the previous frames' landmarks: their bounding box, mapped into the detector's own box
convention by the offsets learnt at the last detection (dlib and sfd frame a face
differently), moved by the box centre's last velocity for each frame ahead in the batch.

Confidence (0..1) of a frame's landmarks is the smaller of two checks against the last
confident frame, so it exists for every detector:
- geometry: ``exp(-(r / rigid_tolerance)² / 2)`` with r the RMS distance, in interocular
  distances, of the rigid landmarks (upper jaw contour, nose, eye corners: what expressions do
  not move) from the reference's after the best 2D similarity alignment;
- appearance: the normalised cross-correlation c of the face patch under the landmarks with
  the reference's (both resampled into the landmarks' own frame), as
  ``clip((c - min_correlation) / (1 - min_correlation), 0, 1)``. A landmark predictor always
  returns a face-shaped answer, even on an empty box; the patch shows whether a face is there.
Below ``min_confidence`` the frame is retried with a box from its own neighbour, then with the
face detector; a frame where even that finds no face gets confidence 0 (the fitter bridges
it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..landmarks import NUM_LANDMARKS, Detection, LandmarkDetector
from . import CaptureCancelled, CaptureError
from .video import ClipInfo, FrameSource

RIGID_LANDMARKS = np.array(
    [0, 1, 2, 14, 15, 16, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45]
)
Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


@dataclass
class LandmarkTrack:
    """A clip's landmarks. N frames: ``landmarks`` [N, 68, 2] float32 image px (zeros where
    no face), ``confidence`` [N] float32 0..1, ``detected`` [N] bool (the face detector ran),
    ``seconds`` [N] float64 from the first frame; ``info`` the source clip."""

    landmarks: np.ndarray
    confidence: np.ndarray
    detected: np.ndarray
    seconds: np.ndarray
    info: ClipInfo

    @property
    def detector_runs(self) -> int:
        return int(self.detected.sum())


def similarity_fit(source: np.ndarray, target: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Least-squares 2D similarity (Umeyama) taking points source [K, 2] onto target [K, 2]:
    (scale, rotation angle radians (counter-clockwise in x-right/y-down pixels is clockwise
    on screen), translation [2]) with target ≈ scale · R(angle) · source + translation."""
    mean_s, mean_t = source.mean(axis=0), target.mean(axis=0)
    s, t = source - mean_s, target - mean_t
    a = float((s * t).sum())
    b = float((s[:, 0] * t[:, 1] - s[:, 1] * t[:, 0]).sum())
    angle = float(np.arctan2(b, a))
    scale = float(np.hypot(a, b) / max((s * s).sum(), 1e-12))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    translation = mean_t - scale * rotation @ mean_s
    return scale, angle, translation


def interocular(points: np.ndarray) -> float:
    """Distance between the eye centres (mean of 36-41 and of 42-47), px."""
    return float(np.linalg.norm(points[36:42].mean(axis=0) - points[42:48].mean(axis=0)))


def rigid_residual(points: np.ndarray, reference: np.ndarray) -> float:
    """RMS of the rigid landmarks of ``points`` from ``reference`` after a similarity
    alignment, in interocular distances of ``reference``."""
    src, dst = points[RIGID_LANDMARKS].astype(np.float64), reference[RIGID_LANDMARKS]
    scale, angle, translation = similarity_fit(src, dst)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = scale * src @ rotation.T + translation
    rms = float(np.sqrt(((moved - dst) ** 2).sum(axis=1).mean()))
    return rms / max(interocular(reference), 1e-6)


def _landmark_frame(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre [2] and size of the rigid landmarks (centroid; RMS distance from it): both
    unchanged by in-plane rotation and by expressions, so a box derived from them does not
    creep when the head rolls or the mouth opens."""
    rigid = points[RIGID_LANDMARKS].astype(np.float64)
    centre = rigid.mean(axis=0)
    return centre, float(np.sqrt(((rigid - centre) ** 2).sum(axis=1).mean()))


PATCH_SIZE = 48


def _face_patch(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Grey patch [48, 48] float32 of the face, in the frame of its rigid landmarks (centre
    at the patch centre, their RMS radius = 12 px, upright by the eye line): the same face
    gives the same patch whatever its position, size and roll."""
    import cv2

    centre, size = _landmark_frame(points)
    eyes = points[42:48].mean(axis=0) - points[36:42].mean(axis=0)
    angle = float(np.arctan2(eyes[1], eyes[0]))
    scale = 12.0 / max(size, 1e-6)
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    # Image -> patch: rotate by -angle, scale, centre.
    matrix = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]])
    # Only the pixels under the patch are converted to grey (a 4K frame is 35x the work).
    reach = PATCH_SIZE / scale  # image px from the centre to beyond the patch's corners
    height, width = image.shape[:2]
    x0 = int(np.clip(np.floor(centre[0] - reach), 0, width - 1))
    y0 = int(np.clip(np.floor(centre[1] - reach), 0, height - 1))
    x1 = int(np.clip(np.ceil(centre[0] + reach), 0, width - 1)) + 1
    y1 = int(np.clip(np.ceil(centre[1] + reach), 0, height - 1)) + 1
    grey = image[y0:y1, x0:x1].astype(np.float32).mean(axis=2)
    matrix[:, 2] = PATCH_SIZE / 2 - matrix[:, :2] @ (centre - [x0, y0])
    return cv2.warpAffine(grey, matrix, (PATCH_SIZE, PATCH_SIZE), flags=cv2.INTER_LINEAR)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two patches (0 when either is flat)."""
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 1e-6 else 0.0


class FaceTracker:
    """Tracks one face through consecutive batches (see the module docstring)."""

    def __init__(
        self,
        detector: LandmarkDetector,
        *,
        min_confidence: float = 0.3,
        rigid_tolerance: float = 0.1,
        min_correlation: float = 0.4,
        batched: bool | None = None,
    ) -> None:
        """``batched``: predict a whole batch per detector call (default for detectors that
        run a network on a batch, such as FAN) or frame by frame from the previous frame
        (default for dlib, whose predictor takes one image at a time anyway)."""
        if not 0.0 <= min_confidence < 1.0:
            raise CaptureError(f"min_confidence: expected 0 <= c < 1, found {min_confidence}")
        if not rigid_tolerance > 0:
            raise CaptureError(f"rigid_tolerance: expected > 0, found {rigid_tolerance}")
        self.detector = detector
        self.min_confidence = min_confidence
        self.rigid_tolerance = rigid_tolerance
        self.min_correlation = min_correlation
        self.batched = detector.name != "dlib" if batched is None else batched
        self._reference: np.ndarray | None = None  # landmarks of the last confident frame
        self._patch: np.ndarray | None = None  # its face patch (see _face_patch)
        self._offsets: np.ndarray | None = None  # detector box - landmark centre, / size
        self._centres: list[np.ndarray] = []  # landmark box centres of the last two frames

    def reset(self) -> None:
        self._reference, self._patch, self._offsets, self._centres = None, None, None, []

    def confidence(self, points: np.ndarray, image: np.ndarray) -> float:
        """min(geometric, appearance) confidence of ``points`` found in ``image`` (see the
        module docstring); 1 while there is no reference yet."""
        if self._reference is None or self._patch is None:
            return 1.0
        residual = rigid_residual(points, self._reference)
        geometric = float(np.exp(-0.5 * (residual / self.rigid_tolerance) ** 2))
        ncc = _ncc(_face_patch(image, points), self._patch)
        appearance = float(np.clip((ncc - self.min_correlation) / (1 - self.min_correlation), 0, 1))
        return min(geometric, appearance)

    def _redetect(self, image: np.ndarray) -> Detection | None:
        """The face detector's answer, checked against the face being tracked: a detection
        whose patch does not correlate with the last confident frame's is masked out and the
        detector asked again (up to MAX_REDETECTIONS times; a false positive such as a
        patterned shirt can be larger than the face). With no match the first detection wins:
        a cut to another shot shows another face."""
        first = self.detector.detect([image])[0]
        if first is None or self._patch is None:
            return first
        found, searched = first, image
        for _ in range(MAX_REDETECTIONS):
            if _ncc(_face_patch(image, found.landmarks), self._patch) >= self.min_correlation:
                return found
            searched = _masked(searched, found.box)
            again = self.detector.detect([searched])[0]
            if again is None:
                break
            found = again
        return first

    def _predicted_box(self, points: np.ndarray, ahead: int) -> np.ndarray:
        assert self._offsets is not None
        centre, size = _landmark_frame(points)
        if ahead and len(self._centres) == 2:
            centre = centre + ahead * (self._centres[1] - self._centres[0])
        return np.concatenate([centre, centre]) + self._offsets * size

    def _accept(self, image: np.ndarray, points: np.ndarray, box: np.ndarray | None) -> None:
        if box is not None:  # a detection: learn how this detector frames these landmarks
            centre, size = _landmark_frame(points)
            self._offsets = (np.asarray(box, np.float64) - np.concatenate([centre, centre])) / size
        self._reference = points.astype(np.float64)
        self._patch = _face_patch(image, points)
        self._centres = (self._centres + [_landmark_frame(points)[0]])[-2:]

    def track(self, images: list[np.ndarray]) -> list[tuple[np.ndarray | None, float, bool]]:
        """Per image of a batch (consecutive frames): (landmarks [68, 2] or None, confidence,
        whether the face detector ran)."""
        results: list[tuple[np.ndarray | None, float, bool]] = []
        while images and (self._reference is None or self._offsets is None):
            results.append(self._one(images[0], None))  # no face yet: detect frame by frame
            images = images[1:]
        if not images:
            return results
        if not self.batched:
            for image in images:
                assert self._reference is not None
                guess = self.detector.detect([image], [self._predicted_box(self._reference, 1)])
                results.append(self._one(image, guess[0]))
            return results
        # Batched: boxes extrapolated k frames ahead are only a first guess; each frame's box
        # is then re-derived from its own first-guess landmarks (a box that no longer depends
        # on the extrapolation), and the predictor runs once more on all of them together.
        assert self._reference is not None
        boxes = [self._predicted_box(self._reference, k + 1) for k in range(len(images))]
        first = self.detector.detect(images, boxes)
        refined_boxes = [
            None if guess is None else self._predicted_box(guess.landmarks, 0) for guess in first
        ]
        refined = self.detector.detect(
            [im for im, b in zip(images, refined_boxes, strict=True) if b is not None],
            [b for b in refined_boxes if b is not None],
        )
        found = iter(refined)
        for image, box in zip(images, refined_boxes, strict=True):
            results.append(self._one(image, None if box is None else next(found)))
        return results

    def _one(self, image: np.ndarray, guess) -> tuple[np.ndarray | None, float, bool]:
        if guess is not None:
            confidence = self.confidence(guess.landmarks, image)
            if confidence >= self.min_confidence:
                self._accept(image, guess.landmarks, None)
                return guess.landmarks, confidence, False
            if self._reference is not None and self._offsets is not None:
                # Retry from this frame's own neighbour (the batch guess may have been stale).
                retry = self.detector.detect([image], [self._predicted_box(self._reference, 1)])[0]
                if retry is not None:
                    confidence = self.confidence(retry.landmarks, image)
                    if confidence >= self.min_confidence:
                        self._accept(image, retry.landmarks, None)
                        return retry.landmarks, confidence, False
        found = self._redetect(image)
        if found is None:
            return None, 0.0, True
        # A fresh detection restarts tracking: its shape is the new reference.
        self._reference, self._centres = None, []
        self._accept(image, found.landmarks, found.box)
        return found.landmarks, 1.0, True


MAX_REDETECTIONS = 3


def _masked(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``image`` with ``box`` (x0, y0, x1, y1) filled by the image's mean colour."""
    out = image.copy()
    height, width = image.shape[:2]
    x0, y0 = (max(int(np.floor(v)), 0) for v in box[:2])
    x1, y1 = min(int(np.ceil(box[2])) + 1, width), min(int(np.ceil(box[3])) + 1, height)
    out[y0:y1, x0:x1] = image.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    return out


def track_landmarks(
    source: FrameSource,
    detector: LandmarkDetector,
    *,
    batch_size: int = 16,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    min_confidence: float = 0.3,
    rigid_tolerance: float = 0.1,
    batched: bool | None = None,
) -> LandmarkTrack:
    """Landmarks of every frame of ``source``; ``progress(done, total)`` after each batch
    (total is the container's estimate for a video), ``cancel()`` checked before each batch
    (CaptureCancelled when it returns True); the other options are FaceTracker's."""
    tracker = FaceTracker(
        detector, min_confidence=min_confidence, rigid_tolerance=rigid_tolerance, batched=batched
    )
    landmarks, confidence, detected, seconds = [], [], [], []
    total = source.info.frame_count
    for batch in source.batches(batch_size):
        if cancel is not None and cancel():
            raise CaptureCancelled(f"{source.path}: landmark tracking cancelled")
        for points, conf, ran in tracker.track(batch.images):
            landmarks.append(
                np.zeros((NUM_LANDMARKS, 2), np.float32) if points is None else points
            )
            confidence.append(conf)
            detected.append(ran)
        seconds.extend(batch.seconds.tolist())
        if progress is not None:
            progress(len(landmarks), max(total, len(landmarks)))
    if not landmarks:
        raise CaptureError(f"{source.path}: no frames")
    return LandmarkTrack(
        np.asarray(landmarks, np.float32),
        np.asarray(confidence, np.float32),
        np.asarray(detected, bool),
        np.asarray(seconds, np.float64),
        source.info,
    )
