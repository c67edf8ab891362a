"""Frames of a video file or an image sequence, in batches, with frame rate and timecode.

Sources:
- a video file (anything the installed OpenCV can decode: mp4, mov, avi, mkv, ...): the
  container's frame rate; each frame's presentation time in seconds;
- an image sequence: a folder of numbered images, or one of its files (``shot.0101.png``:
  the other files with the same prefix, suffix and digit count belong to it). The trailing
  number is kept as the source frame number; the frame rate is the caller's (``fps``, default
  24) since image files carry none.

Timecode: OpenCV does not read a container's timecode track, so the start timecode is the
caller's (``timecode``, ``HH:MM:SS:FF``) or, for an image sequence, the first frame number
counted at ``fps``; it is kept in the clip's info and written to the curves' source info.
Frames come out as uint8 RGB [H, W, 3] (every frame of one source has one size).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...rig.timecode import format_timecode, timecode_seconds
from . import CaptureError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".exr")
DEFAULT_SEQUENCE_FPS = 24.0
MAX_FRAME_PIXELS = 8192 * 8192  # refuse absurd frame sizes before allocating a batch
_NUMBERED = re.compile(r"^(.*?)(\d+)(\.[^.]+)$")


@dataclass(frozen=True)
class ClipInfo:
    """What a source is: ``fps`` frames per second, ``frame_count`` frames (a video's count is
    the container's estimate until read), ``size`` (width, height) px, the source frame number
    of the first frame, the start ``timecode`` (HH:MM:SS:FF) and the ``kind``."""

    path: str
    kind: str  # "video" or "images"
    fps: float
    frame_count: int
    size: tuple[int, int]
    first_frame_number: int
    timecode: str


@dataclass(frozen=True)
class FrameBatch:
    """Consecutive frames: ``images`` list of uint8 RGB [H, W, 3]; ``indices`` [B] their
    0-based position in the clip; ``seconds`` [B] their time from the clip's first frame."""

    images: list[np.ndarray]
    indices: np.ndarray
    seconds: np.ndarray


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # opencv-python is a pinned dependency; say so if it is gone
        raise CaptureError(
            f"reading video needs the package 'opencv-python' (importing cv2 failed: {exc})"
        ) from exc
    return cv2


class FrameSource:
    """A video file or image sequence (see the module docstring); iterate with ``batches``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fps: float | None = None,
        timecode: str | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CaptureError(f"{self.path}: no such video file, image or folder")
        if fps is not None and not fps > 0:
            raise CaptureError(f"fps: expected a positive number, found {fps!r}")
        self._files: list[Path] = []
        if self.path.is_dir() or self.path.suffix.lower() in IMAGE_SUFFIXES:
            self._files, numbers = _sequence_files(self.path)
            rate = fps or DEFAULT_SEQUENCE_FPS
            first = _read_image(self._files[0])
            height, width = first.shape[:2]
            start_tc = timecode or format_timecode(numbers[0] / rate, rate)
            self.info = ClipInfo(
                str(self.path), "images", rate, len(self._files), (width, height), numbers[0],
                start_tc,
            )
        else:
            cv2 = _cv2()
            capture = cv2.VideoCapture(str(self.path))
            try:
                if not capture.isOpened():
                    raise CaptureError(
                        f"{self.path}: not a video OpenCV can decode (nor an image sequence "
                        f"of {', '.join(IMAGE_SUFFIXES)})"
                    )
                rate = float(capture.get(cv2.CAP_PROP_FPS))
                count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
                width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
                height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            finally:
                capture.release()
            if fps is not None:
                rate = float(fps)  # the caller knows better (variable-rate phone videos)
            if not rate > 0:
                raise CaptureError(f"{self.path}: the video states no frame rate; pass fps")
            self.info = ClipInfo(
                str(self.path), "video", rate, max(count, 0), (width, height), 0,
                timecode or "00:00:00:00",
            )
        if timecode is not None:
            timecode_seconds(timecode, self.info.fps)  # validates the caller's timecode
        width, height = self.info.size
        if width < 1 or height < 1 or width * height > MAX_FRAME_PIXELS:
            raise CaptureError(f"{self.path}: frame size {width}x{height} is not supported")

    def batches(self, batch_size: int = 16) -> Iterator[FrameBatch]:
        """Frames in order, ``batch_size`` at a time."""
        if batch_size < 1:
            raise CaptureError(f"batch_size: expected >= 1, found {batch_size}")
        frames = self._image_frames() if self._files else self._video_frames()
        images: list[np.ndarray] = []
        indices: list[int] = []
        seconds: list[float] = []
        for index, (image, time) in enumerate(frames):
            if image.shape[:2] != (self.info.size[1], self.info.size[0]):
                raise CaptureError(
                    f"{self.path}: frame {index} is {image.shape[1]}x{image.shape[0]}, the clip "
                    f"is {self.info.size[0]}x{self.info.size[1]}"
                )
            images.append(image)
            indices.append(index)
            seconds.append(time)
            if len(images) == batch_size:
                yield FrameBatch(images, np.array(indices), np.array(seconds))
                images, indices, seconds = [], [], []
        if images:
            yield FrameBatch(images, np.array(indices), np.array(seconds))

    def _image_frames(self) -> Iterator[tuple[np.ndarray, float]]:
        for index, file in enumerate(self._files):
            yield _read_image(file), index / self.info.fps

    def _video_frames(self) -> Iterator[tuple[np.ndarray, float]]:
        cv2 = _cv2()
        capture = cv2.VideoCapture(str(self.path))
        try:
            index = 0
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                # Frame index / rate, not CAP_PROP_POS_MSEC: container timestamps of phone
                # videos jitter; the scene samples at a fixed rate anyway.
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), index / self.info.fps
                index += 1
        finally:
            capture.release()
        if index == 0:
            raise CaptureError(f"{self.path}: the video has no decodable frame")


def _sequence_files(path: Path) -> tuple[list[Path], list[int]]:
    """The numbered files of a sequence, sorted by number, and their numbers."""
    if path.is_dir():
        candidates = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not candidates:
            raise CaptureError(f"{path}: the folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
        anchor = candidates[0]
    else:
        anchor = path
        candidates = sorted(path.parent.iterdir())
    match = _NUMBERED.match(anchor.name)
    if match is None:
        if path.is_dir():
            raise CaptureError(f"{path}: image names carry no frame number ({anchor.name})")
        return [anchor], [0]  # a single still
    prefix, digits, suffix = match.groups()
    pattern = re.compile(
        rf"^{re.escape(prefix)}(\d{{{len(digits)}}}){re.escape(suffix)}$"
    )
    numbered = sorted(
        (int(m.group(1)), p) for p in candidates if (m := pattern.match(p.name)) is not None
    )
    return [p for _, p in numbered], [n for n, _ in numbered]


def _read_image(path: Path) -> np.ndarray:
    cv2 = _cv2()
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CaptureError(f"{path}: not an image OpenCV can read")
    if image.dtype != np.uint8:
        image = np.clip(image.astype(np.float64) / np.iinfo(image.dtype).max * 255, 0, 255)
        image = image.round().astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
