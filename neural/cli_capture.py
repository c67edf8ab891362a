"""``nfr capture`` and ``nfr capture-arkit``: performances -> curves.json (docs/CAPTURE.md).

``nfr capture VIDEO --model BFM_model_front.mat --out curves.json`` tracks the face of a video
file or image sequence, fits the rig and writes editable keys on the named controls and head
rotation; ``nfr capture-arkit TAKE.csv --out curves.json`` imports a Live Link Face CSV. The
output is written atomically, and only when the whole capture succeeded.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .capture import CaptureError


def add_commands(sub: argparse._SubParsersAction) -> None:
    _add_capture(sub)
    _add_capture_arkit(sub)


def _add_capture(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "capture", help="video or image sequence -> rig curves (curves.json)",
        description="Track the face, fit the rig (identity and camera once per clip), smooth, "
        "project onto the named controls and write editable keys.",
    )
    p.add_argument("video", type=Path, metavar="VIDEO",
                   help="a video file, a folder of numbered images, or one image of a sequence")
    p.add_argument("--model", type=Path, required=True, help="a BFM_model_front.mat face model")
    p.add_argument("--out", type=Path, required=True, help="curves.json to write")
    p.add_argument("--detector", choices=("dlib", "fan"), default="dlib",
                   help="landmark detector (default dlib; fan needs its weight files)")
    p.add_argument("--fps", type=float, help="the source's frame rate (image sequences: 24)")
    p.add_argument("--timecode", help="start timecode HH:MM:SS:FF of the source")
    p.add_argument("--focal", type=float,
                   help="lens focal length in video pixels (default: solved once over the clip)")
    p.add_argument("--scene-fps", type=float, help="scene frame rate (default: the source's)")
    p.add_argument("--frame-start", type=int, default=1, help="scene frame of the first frame")
    p.add_argument("--smoothing", type=float, default=1.0,
                   help="strength λ of the zero-lag smoother (0: off; default 1)")
    p.add_argument("--every-frame", action="store_true",
                   help="one key per frame (raw) instead of keyframe reduction")
    p.add_argument("--gain", action="append", default=[], metavar="GROUP=VALUE",
                   help="retarget gain per group (mouth, eyes, brows, cheeks_nose, jaw, head, "
                   "raw); repeatable")
    p.add_argument("--translation", action="store_true", help="also write head translation")
    p.add_argument("--no-raw", action="store_true",
                   help="drop the raw expression offsets (named controls only)")
    p.set_defaults(handler=_run_capture)


def _add_capture_arkit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "capture-arkit", help="Live Link Face CSV -> rig curves (curves.json)",
        description="Import an ARKit capture (Epic's Live Link Face CSV) onto the named "
        "controls and head rotation; unknown columns are reported, not guessed.",
    )
    p.add_argument("csv", type=Path, metavar="CSV", help="a Live Link Face CSV take")
    p.add_argument("--out", type=Path, required=True, help="curves.json to write")
    p.add_argument("--scene-fps", type=float, default=30.0, help="scene frame rate (30)")
    p.add_argument("--frame-start", type=int, default=1, help="scene frame of the first row")
    p.add_argument("--capture-fps", type=float, default=60.0,
                   help="the rate the timecode's frame field counts at (the app's 60)")
    p.add_argument("--head-degrees", action="store_true",
                   help="the head columns are in degrees (default: radians)")
    p.add_argument("--head-signs", default="1,1,1", metavar="P,Y,R",
                   help="factors for pitch, yaw, roll (default 1,1,1)")
    p.add_argument("--native-rate", action="store_true",
                   help="keep one key per CSV row (fractional frames) instead of resampling")
    p.set_defaults(handler=_run_capture_arkit)


def _gains(items: list[str]) -> dict[str, float]:
    gains: dict[str, float] = {}
    for item in items:
        group, _, value = item.partition("=")
        try:
            gains[group.strip()] = float(value)
        except ValueError:
            raise CaptureError(f"--gain {item!r}: expected GROUP=NUMBER, e.g. mouth=1.5") from None
    return gains


def _run_capture(args: argparse.Namespace) -> int:
    from ..rig.face_model import load_face_model
    from .capture.pipeline import CaptureOptions, CurveOptions, capture_video
    from .capture.retarget import check_gains

    gains = check_gains(_gains(args.gain))  # refuse a bad gain before minutes of tracking
    model = load_face_model(args.model)
    options = CaptureOptions(
        detector=args.detector, fps=args.fps, timecode=args.timecode, focal=args.focal,
        scene_fps=args.scene_fps, frame_start=args.frame_start,
        curves=CurveOptions(smoothing=args.smoothing, gains=gains, every_frame=args.every_frame,
                            translation=args.translation, raw_offsets=not args.no_raw),
    )
    last = {"stage": ""}

    def progress(stage: str, done: int, total: int) -> None:
        if stage != last["stage"] or done == total or done % 64 < 16:
            print(f"  {stage}: {done}/{total}", file=sys.stderr, flush=True)
            last["stage"] = stage

    result = capture_video(args.video, model, options, progress=progress)
    result.curves.write(args.out)
    track = result.track
    keys = sum(len(c.frames) for c in result.curves.channels.values())
    first, end = result.curves.frame_range
    print(
        f"wrote {args.out}: {len(result.curves.channels)} channels, {keys} keys, frames "
        f"{first:g}-{end:g} at {result.curves.fps:g} fps; {len(track.seconds)} frames tracked, "
        f"detector run {track.detector_runs}x, {int((~result.fit.fitted).sum())} frames without "
        "a face bridged"
    )
    return 0


def _run_capture_arkit(args: argparse.Namespace) -> int:
    from ..rig.arkit_csv import read_live_link_csv

    try:
        signs = tuple(float(v) for v in args.head_signs.split(","))
    except ValueError:
        signs = ()
    if len(signs) != 3:
        raise CaptureError(f"--head-signs {args.head_signs!r}: expected three numbers P,Y,R")
    curves, report = read_live_link_csv(
        args.csv, scene_fps=args.scene_fps, frame_start=args.frame_start,
        capture_fps=args.capture_fps, head_scale=math.pi / 180 if args.head_degrees else 1.0,
        head_signs=(signs[0], signs[1], signs[2]), resample=not args.native_rate,
    )
    curves.write(args.out)
    for line in report.lines():
        print(f"  {line}")
    first, end = curves.frame_range
    print(f"wrote {args.out}: {len(curves.channels)} channels, frames {first:g}-{end:g} at "
          f"{curves.fps:g} fps")
    return 0
