"""Live Link Face CSV -> curves on the named controls and head rotation (no video needed).

Epic's Live Link Face app (iPhone, ARKit) exports one row per captured frame:
``Timecode, BlendShapeCount``, the 52 ARKit blendshapes in the app's order and PascalCase
spelling (``EyeBlinkLeft`` … ``TongueOut``), then ``HeadYaw, HeadPitch, HeadRoll`` and the
six eye rotations (``LeftEyeYaw`` … ``RightEyeRoll``). ``LIVE_LINK_FACE_COLUMNS`` is that
header. Timecodes are ``HH:MM:SS:FF.fff`` at the capture rate (the app's 60 fps by default).

Mapping, with nothing guessed:
- a blendshape column ``JawOpen`` drives the control ``jawOpen`` (ARKit's own camelCase name,
  the rig's control names), values clamped to 0..1 (the number of clamped samples is
  reported); the blendshapes the rig has no control for (gaze, tongue, cheek puff, lip roll:
  the 68 landmarks cannot define them) are reported as ignored;
- ``HeadPitch``/``HeadYaw``/``HeadRoll`` drive ``rotation.x``/``.y``/``.z`` times ``head_scale``
  and ``head_signs`` (defaults: radians as exported, signs +1; the rig's rotation is
  R = Rz·Ry·Rx, positive yaw turns the nose to the image right);
- the eye rotations have no rig target: reported as ignored;
- any other column is reported as unknown (a near-miss spelling gets a hint) and skipped.
Rows are placed on the scene timeline by their timecode: ``frame = frame_start + (t - t0) *
scene_fps``, then (default) resampled linearly onto every whole scene frame.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .controls import CONTROL_NAMES, UNDEFINABLE
from .curves_file import CaptureCurves, CaptureError, Channel
from .file_limits import read_regular_file
from .timecode import timecode_seconds

ARKIT_BLENDSHAPE_COLUMNS = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft",
    "EyeSquintLeft", "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight",
    "EyeLookOutRight", "EyeLookUpRight", "EyeSquintRight", "EyeWideRight", "JawForward",
    "JawRight", "JawLeft", "JawOpen", "MouthClose", "MouthFunnel", "MouthPucker", "MouthRight",
    "MouthLeft", "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft", "MouthFrownRight",
    "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight",
    "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper", "MouthPressLeft",
    "MouthPressRight", "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft",
    "MouthUpperUpRight", "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft",
    "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft",
    "NoseSneerRight", "TongueOut",
)  # fmt: skip
HEAD_COLUMNS = ("HeadYaw", "HeadPitch", "HeadRoll")
EYE_COLUMNS = (
    "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll",
)  # fmt: skip
LIVE_LINK_FACE_COLUMNS = (
    ("Timecode", "BlendShapeCount") + ARKIT_BLENDSHAPE_COLUMNS + HEAD_COLUMNS + EYE_COLUMNS
)
# HeadYaw/Pitch/Roll -> rig rotation axis (0 x pitch, 1 y yaw, 2 z roll).
_HEAD_AXES = {"HeadPitch": 0, "HeadYaw": 1, "HeadRoll": 2}
MAX_CSV_BYTES = 256 << 20
DEFAULT_CAPTURE_FPS = 60.0


def control_name(column: str) -> str:
    """Live Link Face column -> ARKit control name: ``JawOpen`` -> ``jawOpen``."""
    return column[0].lower() + column[1:]


@dataclass
class ArkitImportReport:
    """What the import did with each column."""

    rows: int = 0
    duration_seconds: float = 0.0
    mapped_columns: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)  # known, but no rig target
    unknown_columns: list[str] = field(default_factory=list)  # not in the app's layout
    missing_columns: list[str] = field(default_factory=list)  # in the layout, not in the file
    ignored_reasons: dict[str, str] = field(default_factory=dict)  # ignored column -> why
    hints: dict[str, str] = field(default_factory=dict)  # unknown column -> near-miss name
    clamped_samples: int = 0

    def lines(self) -> list[str]:
        out = [f"{self.rows} rows, {self.duration_seconds:.3f} s, "
               f"{len(self.mapped_columns)} columns mapped"]
        if self.unknown_columns:
            named = [
                f"{c} (did you mean {self.hints[c]}?)" if c in self.hints else c
                for c in self.unknown_columns
            ]
            out.append("unknown columns skipped: " + ", ".join(named))
        if self.ignored_columns:
            out.append("no rig target, ignored: " + ", ".join(self.ignored_columns))
        if self.missing_columns:
            out.append("not in the file: " + ", ".join(self.missing_columns))
        if self.clamped_samples:
            out.append(f"{self.clamped_samples} blendshape samples clamped to 0..1")
        return out


def read_live_link_csv(
    path: str | os.PathLike[str],
    *,
    scene_fps: float = 30.0,
    frame_start: int = 1,
    capture_fps: float = DEFAULT_CAPTURE_FPS,
    head_scale: float = 1.0,
    head_signs: tuple[float, float, float] = (1.0, 1.0, 1.0),
    resample: bool = True,
    controls: tuple[str, ...] = CONTROL_NAMES,
) -> tuple[CaptureCurves, ArkitImportReport]:
    """Import a Live Link Face CSV (see the module docstring).

    scene_fps: the scene's frame rate; frame_start: the scene frame of the first row;
    capture_fps: the rate the timecode's FF field counts at; head_scale: radians per unit of
    the head columns (``math.pi / 180`` for a file in degrees); head_signs: factors for the
    rig's (pitch, yaw, roll); resample: keys on every whole scene frame (default) or at each
    row's own (fractional) frame; controls: the control names to drive (default: every named
    control of the rig) — a blendshape without a control is reported as ignored, with the
    reason in ``report.ignored_reasons``.
    """
    path = Path(path)
    if not (math.isfinite(scene_fps) and scene_fps > 0):
        raise CaptureError(f"scene fps: expected a positive number, found {scene_fps!r}")
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise CaptureError(f"{path}: empty file; expected a Live Link Face CSV header") from None
    header = [name.strip() for name in header]
    if not header or header[0] != "Timecode":
        raise CaptureError(
            f"{path}: expected a Live Link Face CSV starting with 'Timecode,BlendShapeCount,"
            f"EyeBlinkLeft,...', found header {','.join(header[:3])!r}"
        )
    if len(set(header)) != len(header):
        duplicated = sorted({n for n in header if header.count(n) > 1})
        raise CaptureError(f"{path}: duplicated column(s) {', '.join(duplicated)}")
    known_controls = set(controls)
    report = ArkitImportReport()
    lowered = {name.lower(): name for name in LIVE_LINK_FACE_COLUMNS}
    targets: dict[int, tuple[str, str]] = {}  # column index -> (channel, kind)
    for index, name in enumerate(header):
        if name in ("Timecode", "BlendShapeCount"):
            continue
        if name in ARKIT_BLENDSHAPE_COLUMNS:
            control = control_name(name)
            if control not in known_controls:
                report.ignored_columns.append(name)
                report.ignored_reasons[name] = UNDEFINABLE.get(control, "not selected")
                continue
            targets[index] = (control, "control")
        elif name in _HEAD_AXES:
            targets[index] = (f"rotation.{'xyz'[_HEAD_AXES[name]]}", "head")
        elif name in EYE_COLUMNS:
            report.ignored_columns.append(name)
            report.ignored_reasons[name] = "the rig has no eyeball rotation"
            continue
        else:
            if name == "":
                name = f"(unnamed column {index + 1})"
            report.unknown_columns.append(name)
            near = lowered.get(name.lower().replace("_", ""))
            if near:
                report.hints[name] = near
            continue
        report.mapped_columns.append(name)
    present = set(header)
    report.missing_columns = [c for c in LIVE_LINK_FACE_COLUMNS[1:] if c not in present]

    times: list[float] = []
    samples: list[list[float]] = []
    columns = sorted(targets)
    count_column = header.index("BlendShapeCount") if "BlendShapeCount" in present else None
    day = 0.0
    for line_number, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise CaptureError(
                f"{path}: line {line_number}: expected {len(header)} fields like the header, "
                f"found {len(row)}"
            )
        try:
            seconds = timecode_seconds(row[0], capture_fps)
        except CaptureError as exc:
            raise CaptureError(f"{path}: line {line_number}: {exc}") from None
        if times and seconds + day < times[-1] - 43200.0:
            day += 86400.0  # the capture ran past midnight
        seconds += day
        if times and seconds < times[-1]:
            raise CaptureError(
                f"{path}: line {line_number}: timecode {row[0]} goes back in time"
            )
        if count_column is not None and not row[count_column].strip().isdigit():
            raise CaptureError(
                f"{path}: line {line_number}: BlendShapeCount: expected an integer, found "
                f"{row[count_column]!r}"
            )
        values = []
        for index in columns:
            try:
                value = float(row[index])
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise CaptureError(
                    f"{path}: line {line_number}: {header[index]}: expected a finite number, "
                    f"found {row[index]!r}"
                )
            values.append(value)
        if times and seconds == times[-1]:
            samples[-1] = values  # a repeated timecode: the later row wins
            continue
        times.append(seconds)
        samples.append(values)
    if not times:
        raise CaptureError(f"{path}: no data rows after the header")

    clip_seconds = np.asarray(times) - times[0]
    data = np.asarray(samples, np.float64).reshape(len(times), len(columns))
    report.rows = len(times)
    report.duration_seconds = float(clip_seconds[-1])
    sample_frames = frame_start + clip_seconds * scene_fps
    frames = sample_frames
    if resample:
        last = int(math.floor(sample_frames[-1] + 1e-6))
        frames = np.arange(frame_start, last + 1, dtype=np.float64)
    channels: dict[str, Channel] = {}
    for slot, index in enumerate(columns):
        channel, kind = targets[index]
        column = data[:, slot]
        if kind == "control":
            outside = (column < 0.0) | (column > 1.0)
            report.clamped_samples += int(outside.sum())
            column = np.clip(column, 0.0, 1.0)
        else:
            axis = "xyz".index(channel[-1])
            column = column * head_scale * head_signs[axis]
        curve = np.interp(frames, sample_frames, column) if resample else column
        channels[channel] = Channel.linear(frames, curve)
    source = {
        "kind": "arkit-csv",
        "path": str(path),
        "capture_fps": float(capture_fps),
        "timecode_start": text_first_timecode(text),
        "rows": report.rows,
        "unknown_columns": ",".join(report.unknown_columns),
        "ignored_columns": ",".join(report.ignored_columns),
    }
    return CaptureCurves(float(scene_fps), int(frame_start), channels, source), report


def text_first_timecode(text: str) -> str:
    """The first data row's timecode (kept in the curves' source info)."""
    rows = csv.reader(io.StringIO(text))
    next(rows, None)
    for row in rows:
        if row and row[0].strip():
            return row[0].strip()
    return ""


def _read_text(path: Path) -> str:
    data = read_regular_file(path, "Live Link Face CSV", MAX_CSV_BYTES, CaptureError)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CaptureError(f"{path}: not UTF-8 text ({exc})") from None
