"""The ``capture`` suite of ``nfr bench``: performance capture speed on a 10 s, 30 fps clip.

The clip is the astronaut portrait (scikit-image's, a real face) moving by a known 2D
similarity per frame on a 1280x720 canvas, encoded as an MJPG video, so decoding is part of
the measurement. The face model is the synthetic one with the BFM-front mesh size and the
action expression basis. Reported as frames per second and as multiples of real time (the
clip's own duration is the reference, measured in the same run):

- capture_landmarks_fps: decode + dlib tracking (detector on the first frame / when lost)
- capture_fit_fps: identity once + per-frame fits + smoothing + projection + key reduction
- capture_end_to_end_fps and capture_end_to_end_x_realtime (wall / clip duration; target
  <= 2 with dlib), capture_fit_speed_x_realtime (clip duration / fit time; target > 1)
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..rig.control_basis import derive_controls
from ..rig.geometry import TorchFaceModel
from ..rig.synthetic import make_synthetic_face_model
from .capture.clip_fit import fit_clip
from .capture.pipeline import CaptureOptions, capture_video, curves_from_fit
from .capture.tracking import track_landmarks
from .capture.video import FrameSource
from .cli_bench import BenchReport
from .landmarks import make_detector

FPS = 30.0
SECONDS = 10
SIZE = (1280, 720)


def write_clip(path: Path) -> None:
    """The moving astronaut as an MJPG .avi, SECONDS at FPS."""
    import cv2
    import skimage.data

    photo = skimage.data.astronaut()
    photo[260:] = 0  # the suit's mission patch can pass for a second face
    fourcc = cv2.VideoWriter.fourcc(*"MJPG")
    writer = cv2.VideoWriter(str(path), fourcc, FPS, SIZE)
    try:
        for i in range(int(SECONDS * FPS)):
            matrix = np.asarray(
                cv2.getRotationMatrix2D((220.0, 130.0), 6.0 * np.sin(i / 15), 1.0), np.float64
            )
            matrix[:, 2] += [384 + 40 * np.sin(i / 25), 100 + 20 * np.cos(i / 20)]
            frame = cv2.warpAffine(photo, matrix, SIZE, flags=cv2.INTER_LINEAR)
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
    finally:
        writer.release()


def run(report: BenchReport) -> None:
    model = make_synthetic_face_model("full", expressions="actions")
    tm = TorchFaceModel.from_face_model(model)
    basis = derive_controls(model)
    frames = int(SECONDS * FPS)
    with tempfile.TemporaryDirectory(prefix="nfr-bench-capture-") as folder:
        clip = Path(folder) / "clip.avi"
        write_clip(clip)
        detector = make_detector("dlib")

        start = time.perf_counter()
        track = track_landmarks(FrameSource(clip), detector)
        landmarks_s = time.perf_counter() - start

        start = time.perf_counter()
        fit = fit_clip(tm, track.landmarks, track.confidence, SIZE)
        curves = curves_from_fit(fit, basis, track.seconds, fps=FPS, weights=track.confidence)
        fit_s = time.perf_counter() - start

        start = time.perf_counter()
        result = capture_video(clip, model, CaptureOptions(), basis=basis)
        end_to_end_s = time.perf_counter() - start

    report.add("capture_landmarks_fps", frames / landmarks_s, "frames/s")
    report.add("capture_fit_fps", frames / fit_s, "frames/s")
    report.add("capture_fit_speed_x_realtime", SECONDS / fit_s, "x")
    report.add("capture_end_to_end_fps", frames / end_to_end_s, "frames/s")
    report.add("capture_end_to_end_x_realtime", end_to_end_s / SECONDS, "x")
    report.notes["capture"] = {
        "load_average_1min": round(os.getloadavg()[0], 2),  # a shared machine skews the rest
        "frames": frames,
        "size": list(SIZE),
        "detector_runs": track.detector_runs,
        "keys": sum(len(c.frames) for c in curves.channels.values()),
        "channels": len(curves.channels),
        "end_to_end_detector_runs": result.track.detector_runs,
        "landmarks_s": round(landmarks_s, 2),
        "fit_s": round(fit_s, 2),
        "end_to_end_s": round(end_to_end_s, 2),
    }
