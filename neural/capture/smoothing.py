"""Temporal smoothing of fitted tracks: a zero-lag quadratic (Whittaker-Henderson) smoother.

For one track y [N] with per-frame weights w [N] (the landmark confidence; 0 for a frame
without a face) the smoothed track z minimises

    Σ_i w_i (z_i - y_i)²  +  λ Σ_i (z_{i-1} - 2 z_i + z_{i+1})²

(a quadratic smoothness term on the second difference: it penalises acceleration, not motion,
so a head turning at constant speed is kept). The minimiser solves the banded system
(W + λ DᵀD) z = W y; frames of weight 0 are filled by the smooth curve through their
neighbours. The filter is symmetric in time, hence zero-phase: smoothing adds no lag.

Away from the clip's ends its frequency response is H(ω) = 1 / (1 + λ (2 - 2 cos ω)²)
(ω radians per frame). With the default λ = 1 at 30 fps: motion at 1 Hz keeps 99.8 % of its
amplitude and at 3 Hz 87 %; frame-independent noise loses a factor 1.9 in RMS and a factor
4.4 in frame-to-frame jitter (RMS of the first difference). λ = 4: 99.2 % / 63 %, jitter
/ 7.7. ``jitter_reduction(λ)`` computes the factor for any λ.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solveh_banded

from . import CaptureError

DEFAULT_SMOOTHING = 1.0


def jitter_reduction(strength: float) -> float:
    """Factor by which the smoother divides the RMS frame-to-frame difference of white noise
    (from H(ω) of the module docstring, away from the ends)."""
    omega = np.linspace(0.0, np.pi, 20001)
    d = 2.0 - 2.0 * np.cos(omega)
    response = 1.0 / (1.0 + strength * d * d)
    return float(np.sqrt(np.trapz(d, omega) / np.trapz(response**2 * d, omega)))


def smooth_tracks(
    values: np.ndarray, weights: np.ndarray | None = None, strength: float = DEFAULT_SMOOTHING
) -> np.ndarray:
    """Smooth every column of ``values`` [N, D] (module docstring); ``weights`` [N] >= 0
    (default 1); ``strength`` λ >= 0 (0 returns the input, except that frames of weight 0 are
    still filled). Returns float64 [N, D]."""
    y = np.asarray(values, np.float64)
    if y.ndim != 2:
        raise CaptureError(f"tracks: expected [frames, channels], found shape {y.shape}")
    n = len(y)
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any():
        raise CaptureError(f"weights: expected {n} finite numbers >= 0, found shape {w.shape}")
    if not np.isfinite(y[w > 0]).all():
        raise CaptureError("tracks: NaN or inf on a frame with weight > 0")
    if not (strength >= 0 and np.isfinite(strength)):
        raise CaptureError(f"smoothing strength: expected >= 0, found {strength!r}")
    if not (w > 0).any():
        raise CaptureError("tracks: no frame has a weight > 0 (no face found in the clip)")
    y = np.where((w > 0)[:, None], y, 0.0)
    if n < 3 or (strength == 0 and (w > 0).all()):
        if n < 3 and not (w > 0).all():
            return np.broadcast_to(np.average(y, axis=0, weights=w), y.shape).copy()
        return y.copy()
    lam = max(strength, 1e-6)  # a gap needs some smoothness term to be bridged
    # Upper banded form of W + λ DᵀD (DᵀD of the second difference is pentadiagonal).
    main = np.full(n, 6.0)
    main[[0, -1]] = 1.0
    main[[1, -2]] = 5.0
    first = np.full(n - 1, -4.0)
    first[[0, -1]] = -2.0
    second = np.ones(n - 2)
    bands = np.zeros((3, n))
    bands[2] = w + lam * main
    bands[1, 1:] = lam * first
    bands[0, 2:] = lam * second
    return solveh_banded(bands, w[:, None] * y)
