"""curves.json: capture results as channels of keys on the rig's named controls and head pose.

The document (full schema with an example in docs/CAPTURE.md)::

    {"format": "nfr-curves", "version": 1, "fps": 30.0, "frame_start": 1,
     "source": {"kind": "arkit-csv", "path": "take.csv", ...},
     "channels": {"jawOpen": {"keys": [[1, 0.0, "LINEAR"], [12, 0.8, "LINEAR"]]},
                  "rotation.y": {"keys": [[1, 0.05, "LINEAR"], ...]}}}

Channel names say what they drive and in which unit:
- a named control (ARKit name, e.g. ``jawOpen``): 0..1
- ``rotation.x`` / ``.y`` / ``.z``: head pitch / yaw / roll, radians (R = Rz·Ry·Rx)
- ``translation.x`` / ``.y`` / ``.z``: head translation, decimetres (rig camera frame)
- ``expression.c000`` … ``expression.c063``: raw expression offsets, σ units, added to what
  the named controls give (the part of a fitted expression the controls cannot express)

A key is ``[frame, value, interpolation]``: frame a scene frame (float; strictly increasing
within a channel), value finite, interpolation ``"LINEAR"`` or ``"CONSTANT"`` (the segment
from this key to the next). Only these two are written and read: they reproduce the sampled
values exactly, which is what keyframe reduction's error bound is stated against.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .atomic import atomic_open
from .errors import RigError
from .file_limits import parse_json, read_json_file

FORMAT = "nfr-curves"
VERSION = 1
INTERPOLATIONS = ("LINEAR", "CONSTANT")
MAX_FILE_BYTES = 64 << 20  # ~1 M keys of 40 bytes: hours of every-frame capture
AXES = ("x", "y", "z")


class CaptureError(RigError):
    """A capture input (Live Link Face CSV, timecode, curves.json, video, image sequence) is
    malformed or unusable. Defined here, beside the curves document, so the add-on (numpy only)
    and the capture pipeline share one error type."""

_CONTROL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_EXPRESSION_NAME = re.compile(r"^expression\.c(\d{3})$")
_N_EXPRESSION = 64
_SOURCE_VALUE_TYPES = (str, int, float, bool, type(None))


def rotation_channel(axis: int) -> str:
    """Channel name of rig rotation coefficient ``axis`` (0 x pitch, 1 y yaw, 2 z roll)."""
    return f"rotation.{AXES[axis]}"


def translation_channel(axis: int) -> str:
    return f"translation.{AXES[axis]}"


def expression_channel(index: int) -> str:
    return f"expression.c{index:03d}"


def channel_kind(name: str) -> str:
    """``'control'``, ``'rotation'``, ``'translation'`` or ``'expression'``; CaptureError for a
    name that fits none of the forms of the module docstring."""
    for group in ("rotation", "translation"):
        if name.startswith(group + "."):
            if name[len(group) + 1 :] in AXES:
                return group
            raise CaptureError(f"channel {name!r}: expected {group}.x, .y or .z")
    match = _EXPRESSION_NAME.match(name)
    if match:
        if int(match.group(1)) >= _N_EXPRESSION:
            raise CaptureError(f"channel {name!r}: expression coefficients are c000..c063")
        return "expression"
    if _CONTROL_NAME.match(name):
        return "control"
    raise CaptureError(
        f"channel {name!r}: expected a control name, rotation.x/y/z, translation.x/y/z or "
        "expression.cNNN"
    )


@dataclass(frozen=True)
class Channel:
    """One curve: frames [K] float64 strictly increasing, values [K] float64 finite,
    interpolation per key (the segment to the next key)."""

    frames: np.ndarray
    values: np.ndarray
    interpolation: tuple[str, ...]

    @classmethod
    def linear(cls, frames: Any, values: Any) -> Channel:
        frames = np.asarray(frames, np.float64)
        return cls(frames, np.asarray(values, np.float64), ("LINEAR",) * len(frames))

    def __post_init__(self) -> None:
        if self.frames.ndim != 1 or self.frames.shape != self.values.shape:
            raise CaptureError(
                f"channel keys: frames {self.frames.shape} and values {self.values.shape} must "
                "be 1-d of one length"
            )
        if len(self.interpolation) != len(self.frames):
            raise CaptureError("channel keys: one interpolation per key expected")
        if len(self.frames) == 0:
            raise CaptureError("channel keys: a channel needs at least one key")

    def evaluate(self, frames: Any) -> np.ndarray:
        """Values at ``frames`` [N] (held constant before the first and after the last key)."""
        frames = np.asarray(frames, np.float64)
        linear = np.interp(frames, self.frames, self.values)
        index = np.clip(np.searchsorted(self.frames, frames, side="right") - 1, 0, None)
        constant = np.array([s == "CONSTANT" for s in self.interpolation])[index]
        return np.where(constant, self.values[index], linear)


@dataclass
class CaptureCurves:
    """A capture: scene ``fps``, the scene frame of the clip's first sample, channels by name
    (see module doc for names and units) and free-form ``source`` info (flat str/number)."""

    fps: float
    frame_start: int
    channels: dict[str, Channel] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (isinstance(self.fps, int | float) and math.isfinite(self.fps) and self.fps > 0):
            raise CaptureError(f"fps: expected a positive number, found {self.fps!r}")
        for name in self.channels:
            channel_kind(name)

    @property
    def frame_range(self) -> tuple[float, float]:
        """First and last key frame over all channels."""
        if not self.channels:
            return (float(self.frame_start), float(self.frame_start))
        return (
            min(float(c.frames[0]) for c in self.channels.values()),
            max(float(c.frames[-1]) for c in self.channels.values()),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "fps": float(self.fps),
            "frame_start": int(self.frame_start),
            "source": dict(self.source),
            "channels": {
                name: {
                    "keys": [
                        [_number(f), float(v), s]
                        for f, v, s in zip(
                            channel.frames, channel.values, channel.interpolation, strict=True
                        )
                    ]
                }
                for name, channel in sorted(self.channels.items())
            },
        }

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write curves.json atomically (old content kept on any error)."""
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        with atomic_open(path, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


def _number(frame: float) -> float | int:
    return int(frame) if float(frame).is_integer() else float(frame)


# ------------------------------------------------------------------ reading


def read_curves(path: str | os.PathLike[str]) -> CaptureCurves:
    """Read and validate a curves.json: a regular file of at most MAX_FILE_BYTES, parsed by
    the project's bounded JSON reader (duplicate keys, NaN/Infinity, deep nesting refused)."""
    document = read_json_file(path, "capture curves", CaptureError, MAX_FILE_BYTES)
    return curves_from_dict(document, os.fspath(path))


def curves_from_json(text: str, source: str = "curves.json") -> CaptureCurves:
    return curves_from_dict(parse_json(text, source, CaptureError, MAX_FILE_BYTES), source)


def curves_from_dict(document: Any, source: str = "curves") -> CaptureCurves:
    """Validate a parsed document (see the module docstring) -> CaptureCurves."""
    if not isinstance(document, dict):
        raise CaptureError(f"{source}: expected a JSON object, found {type(document).__name__}")
    expected = {"format", "version", "fps", "frame_start", "source", "channels"}
    unknown = sorted(set(document) - expected)
    missing = sorted(expected - set(document) - {"source"})
    if unknown or missing:
        raise CaptureError(
            f"{source}: unknown field(s) {unknown} / missing field(s) {missing}; expected "
            f"{sorted(expected)}"
        )
    if document["format"] != FORMAT:
        raise CaptureError(f"{source}: format: expected {FORMAT!r}, found {document['format']!r}")
    if document["version"] != VERSION:
        raise CaptureError(
            f"{source}: version: this build reads version {VERSION}, found {document['version']!r}"
        )
    fps, frame_start = document["fps"], document["frame_start"]
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not fps > 0:
        raise CaptureError(f"{source}: fps: expected a positive number, found {fps!r}")
    if isinstance(frame_start, bool) or not isinstance(frame_start, int):
        raise CaptureError(f"{source}: frame_start: expected an integer, found {frame_start!r}")
    info = document.get("source", {})
    if not isinstance(info, dict) or not all(
        isinstance(v, _SOURCE_VALUE_TYPES) for v in info.values()
    ):
        raise CaptureError(f"{source}: source: expected an object of strings and numbers")
    channels_in = document["channels"]
    if not isinstance(channels_in, dict):
        raise CaptureError(f"{source}: channels: expected an object of channels by name")
    channels = {
        name: _channel_from_dict(value, f"{source}: channels[{name!r}]")
        for name, value in channels_in.items()
    }
    for name in channels:
        try:
            channel_kind(name)
        except CaptureError as exc:
            raise CaptureError(f"{source}: {exc}") from None
    return CaptureCurves(float(fps), frame_start, channels, dict(info))


def _channel_from_dict(value: Any, where: str) -> Channel:
    if not isinstance(value, dict) or set(value) != {"keys"}:
        raise CaptureError(f"{where}: expected an object with exactly the field 'keys'")
    keys = value["keys"]
    if not isinstance(keys, list) or not keys:
        raise CaptureError(f"{where}: keys: expected a non-empty list of [frame, value, interp]")
    frames: list[float] = []
    values: list[float] = []
    modes: list[str] = []
    for index, key in enumerate(keys):
        if (
            not isinstance(key, list)
            or len(key) != 3
            or any(isinstance(x, bool) or not isinstance(x, int | float) for x in key[:2])
        ):
            raise CaptureError(
                f"{where}: keys[{index}]: expected [frame, value, interpolation], found {key!r}"
            )
        if key[2] not in INTERPOLATIONS:
            raise CaptureError(
                f"{where}: keys[{index}]: interpolation {key[2]!r} is not supported; expected "
                f"one of {', '.join(INTERPOLATIONS)}"
            )
        if not (math.isfinite(key[0]) and math.isfinite(key[1])):
            raise CaptureError(f"{where}: keys[{index}]: frame and value must be finite")
        if frames and key[0] <= frames[-1]:
            raise CaptureError(
                f"{where}: keys[{index}]: frame {key[0]} does not follow frame {frames[-1]}; "
                "frames must strictly increase"
            )
        frames.append(float(key[0]))
        values.append(float(key[1]))
        modes.append(key[2])
    return Channel(np.array(frames), np.array(values), tuple(modes))
