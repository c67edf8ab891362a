"""Timecodes: ``HH:MM:SS:FF`` with an optional fraction of a frame (``HH:MM:SS:FF.fff``,
Live Link Face's form), counted at the capture's frame rate, and seconds -> scene frames.

A timecode names a frame of the capture clock: ``t = 3600 h + 60 m + s + (FF + .fff) / fps``
seconds. Drop-frame timecodes (``;`` before the frames) are refused by name: NTSC drop-frame
counting is not implemented.
"""

from __future__ import annotations

import math
import re

from .curves_file import CaptureError

_TIMECODE = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})([:;])(\d{2,3})(?:\.(\d+))?$")


def timecode_seconds(text: str, fps: float) -> float:
    """Seconds since midnight of a timecode at ``fps`` frames per second (see module doc)."""
    if not (math.isfinite(fps) and fps > 0):
        raise CaptureError(f"timecode frame rate: expected a positive number, found {fps!r}")
    match = _TIMECODE.match(text.strip())
    if match is None:
        raise CaptureError(
            f"timecode {text!r}: expected HH:MM:SS:FF or HH:MM:SS:FF.fff"
        )
    hours, minutes, seconds, separator, frames, fraction = match.groups()
    if separator == ";":
        raise CaptureError(f"timecode {text!r}: drop-frame timecodes are not supported")
    h, m, s, f = int(hours), int(minutes), int(seconds), int(frames)
    if m >= 60 or s >= 60 or h >= 24:
        raise CaptureError(f"timecode {text!r}: minutes/seconds must be < 60 and hours < 24")
    if f >= math.ceil(fps):
        raise CaptureError(
            f"timecode {text!r}: frame {f} does not exist at {fps:g} frames per second"
        )
    sub = float(f"0.{fraction}") if fraction else 0.0
    return 3600.0 * h + 60.0 * m + s + (f + sub) / fps


def format_timecode(seconds: float, fps: float) -> str:
    """Inverse of timecode_seconds for whole frames: ``HH:MM:SS:FF`` (rounded to a frame)."""
    total = int(round(seconds * fps))
    per_second = int(round(fps))
    s_total, frame = divmod(total, per_second)
    h, rest = divmod(s_total, 3600)
    m, s = divmod(rest, 60)
    return f"{h % 24:02d}:{m:02d}:{s:02d}:{frame:02d}"


def seconds_to_frames(seconds: float, scene_fps: float, frame_start: int) -> float:
    """Clip time (seconds from the clip's first sample) -> scene frame (float)."""
    return frame_start + seconds * scene_fps
