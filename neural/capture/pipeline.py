"""Video (or image sequence) -> rig curves, end to end; and fitted tracks -> curves.

    frames ─ tracking ─> landmarks [N, 68, 2] + confidence
           ─ clip_fit ─> identity + camera once; rotation, translation, expression per frame
           ─ smoothing ─> zero-lag quadratic smoother, weighted by confidence
           ─ retarget ─> named controls (0..1) + raw expression offsets, gains per group
           ─ keyframes ─> editable LINEAR keys within the stated error (or every frame)
           ─> CaptureCurves (curves.json)

Frames land on the scene timeline at ``frame_start + t · scene_fps`` (t seconds from the
clip's first frame; ``scene_fps`` defaults to the clip's rate); with another rate the tracks
are resampled linearly onto whole scene frames.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...rig.camera import CAMERA_224
from ...rig.control_basis import ControlBasis, derive_controls
from ...rig.curves_file import (
    CaptureCurves,
    Channel,
    channel_kind,
    expression_channel,
    rotation_channel,
    translation_channel,
)
from ...rig.face_model import FaceModel
from ...rig.geometry import TorchFaceModel
from ..landmarks import make_detector
from . import CaptureError
from .clip_fit import ClipFit, fit_clip
from .keyframes import DEFAULT_TOLERANCES, reduce_keys
from .retarget import apply_gains, check_gains, project_controls
from .smoothing import DEFAULT_SMOOTHING, smooth_tracks
from .tracking import LandmarkTrack, track_landmarks
from .video import FrameSource

Progress = Callable[[str, int, int], None]  # (stage, done, total); stages "landmarks", "fit"


@dataclass
class CurveOptions:
    """How fitted tracks become curves.

    smoothing: λ of the zero-lag smoother (0: off); gains: retarget gain per group
    (retarget.GAIN_GROUPS); every_frame: one key per frame ("raw") instead of keyframe
    reduction; tolerances: the stated error per channel kind (keyframes.DEFAULT_TOLERANCES);
    translation: also write translation.x/y/z; raw_offsets: write expression.cNNN channels
    whose offset exceeds the expression tolerance somewhere in the clip."""

    smoothing: float = DEFAULT_SMOOTHING
    gains: Mapping[str, float] = field(default_factory=dict)
    every_frame: bool = False
    tolerances: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    translation: bool = False
    raw_offsets: bool = True


def curves_from_fit(
    fit: ClipFit,
    basis: ControlBasis,
    seconds: np.ndarray,
    *,
    fps: float,
    frame_start: int = 1,
    weights: np.ndarray | None = None,
    options: CurveOptions | None = None,
    source: Mapping[str, Any] | None = None,
) -> CaptureCurves:
    """Curves from a ClipFit (see the module docstring); ``seconds`` [N] frame times,
    ``weights`` [N] the smoother's per-frame weights (default: 1 on fitted frames)."""
    opts = options or CurveOptions()
    check_gains(opts.gains)
    if not (math.isfinite(fps) and fps > 0):
        raise CaptureError(f"scene fps: expected a positive number, found {fps!r}")
    n = len(seconds)
    w = fit.fitted.astype(np.float64) if weights is None else np.asarray(weights, np.float64)
    w = np.where(fit.fitted, w, 0.0)
    tracks = np.concatenate([fit.rotation, fit.translation, fit.expression], axis=1)
    smoothed = smooth_tracks(tracks, w, opts.smoothing)
    sample_frames = frame_start + (np.asarray(seconds, np.float64) - seconds[0]) * fps
    frames = np.arange(frame_start, math.floor(sample_frames[-1] + 1e-6) + 1, dtype=np.float64)
    if n != len(frames) or np.abs(frames - sample_frames).max() > 1e-6:
        smoothed = np.stack(
            [np.interp(frames, sample_frames, column) for column in smoothed.T], axis=1
        )
    rotation, translation, expression = smoothed[:, :3], smoothed[:, 3:6], smoothed[:, 6:]
    values, raw = project_controls(basis, expression)
    values, raw, rotation = apply_gains(basis.names, values, raw, rotation, opts.gains)
    columns: dict[str, np.ndarray] = {name: values[:, i] for i, name in enumerate(basis.names)}
    for axis in range(3):
        columns[rotation_channel(axis)] = rotation[:, axis]
        if opts.translation:
            columns[translation_channel(axis)] = translation[:, axis]
    if opts.raw_offsets:
        limit = opts.tolerances.get("expression", DEFAULT_TOLERANCES["expression"])
        for index in range(raw.shape[1]):
            if np.abs(raw[:, index]).max() > limit:
                columns[expression_channel(index)] = raw[:, index]
    channels = {}
    for name, column in columns.items():
        if opts.every_frame:
            keep = np.arange(len(frames))
        else:
            kind = channel_kind(name)
            keep = reduce_keys(frames, column, opts.tolerances.get(kind, DEFAULT_TOLERANCES[kind]))
        channels[name] = Channel.linear(frames[keep], column[keep])
    info = dict(source or {})
    info.update(
        {
            "smoothing": float(opts.smoothing),
            "every_frame": bool(opts.every_frame),
            "gains": ",".join(f"{k}={v:g}" for k, v in sorted(check_gains(opts.gains).items())),
        }
    )
    return CaptureCurves(float(fps), int(frame_start), channels, info)


@dataclass
class CaptureOptions:
    """Video capture settings: detector ("dlib" default, "fan" when its weights are present);
    fps / timecode override the source's; focal the lens in video px (default: solved
    once over the clip); scene_fps (default: the clip's rate) and frame_start place the
    curves on the timeline; landmark_sigma (video px) weighs landmarks against the priors."""

    detector: str = "dlib"
    fps: float | None = None
    timecode: str | None = None
    focal: float | None = None
    scene_fps: float | None = None
    frame_start: int = 1
    landmark_sigma: float = 2.0
    batch_size: int = 16
    min_confidence: float = 0.3
    key_frames: int = 12
    curves: CurveOptions = field(default_factory=CurveOptions)


@dataclass
class CaptureResult:
    curves: CaptureCurves
    track: LandmarkTrack
    fit: ClipFit


def capture_video(
    path: str | os.PathLike[str],
    model: FaceModel,
    options: CaptureOptions | None = None,
    *,
    basis: ControlBasis | None = None,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> CaptureResult:
    """A video file or image sequence -> curves (module docstring). ``basis``: the model's
    control directions (derived from ``model`` when not given). Raises CaptureCancelled when
    ``cancel()`` turns True; nothing is written here (the caller writes the curves)."""
    opts = options or CaptureOptions()
    source = FrameSource(path, fps=opts.fps, timecode=opts.timecode)
    detector = make_detector(opts.detector)
    track = track_landmarks(
        source, detector, batch_size=opts.batch_size, min_confidence=opts.min_confidence,
        progress=None if progress is None else lambda d, t: progress("landmarks", d, t),
        cancel=cancel,
    )
    tm = TorchFaceModel.from_face_model(model)
    fit = fit_clip(
        tm, track.landmarks, track.confidence, source.info.size, focal=opts.focal,
        rig_camera=CAMERA_224, landmark_sigma=opts.landmark_sigma,
        min_confidence=opts.min_confidence, key_frames=opts.key_frames,
        progress=None if progress is None else lambda d, t: progress("fit", d, t),
        cancel=cancel,
    )
    info = source.info
    curves = curves_from_fit(
        fit, basis or derive_controls(model), track.seconds, fps=opts.scene_fps or info.fps,
        frame_start=opts.frame_start, weights=track.confidence, options=opts.curves,
        source={
            "kind": info.kind, "path": info.path, "fps": info.fps, "timecode": info.timecode,
            "first_frame_number": info.first_frame_number, "frames": len(track.seconds),
            "detector": opts.detector, "detector_runs": track.detector_runs,
            "focal_px": fit.camera.camera.focal / fit.camera.scale,
        },
    )
    return CaptureResult(curves, track, fit)
