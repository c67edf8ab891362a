"""Keyframe reduction: every-frame samples -> a few editable keys within a stated error.

A Ramer-Douglas-Peucker split on the value axis: a run of samples between two keys is kept as
one straight (LINEAR) segment while every sample in it lies within ``tolerance`` of the line;
otherwise a key goes on the sample farthest from the line and both halves are checked again.
The keys are a subset of the samples, so the reduced curve, evaluated at every sampled frame,
differs from the samples by at most ``tolerance`` (the stated error), and exactly 0 at keys.
``tolerance = 0`` keeps every sample that is not on a straight line with its neighbours.
"""

from __future__ import annotations

import numpy as np

from . import CaptureError

# Stated errors per channel kind (units of the channel): what an artist cannot see.
DEFAULT_TOLERANCES = {
    "control": 0.01,  # 1 % of a slider's range
    "rotation": 1e-3,  # radians (0.057°)
    "translation": 1e-3,  # decimetres (0.1 mm)
    "expression": 0.01,  # σ
}


def reduce_keys(frames: np.ndarray, values: np.ndarray, tolerance: float) -> np.ndarray:
    """Indices [K] (sorted, first and last included) of the samples kept as keys."""
    x = np.asarray(frames, np.float64)
    y = np.asarray(values, np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) == 0:
        raise CaptureError(f"keys: frames and values must be 1-d of one length, found {x.shape}")
    if not (tolerance >= 0 and np.isfinite(tolerance)):
        raise CaptureError(f"keyframe tolerance: expected >= 0, found {tolerance!r}")
    if len(x) <= 2:
        return np.arange(len(x))
    keep = np.zeros(len(x), bool)
    keep[[0, -1]] = True
    stack = [(0, len(x) - 1)]
    while stack:
        first, last = stack.pop()
        if last - first < 2:
            continue
        inner = slice(first + 1, last)
        t = (x[inner] - x[first]) / (x[last] - x[first])
        error = np.abs(y[inner] - (y[first] + t * (y[last] - y[first])))
        worst = int(np.argmax(error))
        # A hair of slack: a sample exactly at the tolerance must not split on rounding.
        if error[worst] > tolerance + 1e-12 * max(1.0, abs(tolerance)):
            split = first + 1 + worst
            keep[split] = True
            stack.extend([(first, split), (split, last)])
    return np.flatnonzero(keep)
