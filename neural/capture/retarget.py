"""Fitted expression -> the rig's named controls plus raw offsets, and retarget gains.

Projection: per frame, the control values v [C] in 0..1 minimising ||v · D - e||² for the
face model's control directions D [C, 64] (``rig.control_basis``), by projected coordinate
descent with a fixed sweep count, as ``rig.control_basis.controls_from_expression`` does,
vectorised over the frames of a clip (same sweeps, same order: the same values). What the
controls cannot express stays as raw offsets r = e - v · D (``expression.cNNN`` channels), so
controls + offsets give back the fitted expression.

Retarget gain per control group (``rig.controls.GROUPS``: mouth, eyes, brows, cheeks_nose,
jaw) scales that group's control values (clamped to 0..1 again); ``head`` scales the head
rotation's deviation from the clip's median pose; ``raw`` scales the raw offsets. A gain of
1 leaves a channel as fitted; above 1 exaggerates, below damps.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ...rig.control_basis import ControlBasis
from ...rig.controls import GROUPS, control
from . import CaptureError

GAIN_GROUPS = (*GROUPS, "head", "raw")
_SWEEPS = 200  # as rig.control_basis.controls_from_expression


def project_controls(
    basis: ControlBasis, expression: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """expression [N, 64] σ -> (control values [N, C] float64 in 0..1, raw [N, 64])."""
    target = np.asarray(expression, np.float64)
    if target.ndim != 2 or target.shape[1] != basis.directions.shape[1]:
        raise CaptureError(f"expression: expected [N, 64], found shape {target.shape}")
    d = basis.directions.astype(np.float64)
    gram = d @ d.T
    rhs = target @ d.T  # [N, C]
    values = np.zeros_like(rhs)
    diagonal = np.maximum(np.diag(gram), 1e-12)
    for _ in range(_SWEEPS):
        for i in range(len(d)):
            residual = rhs[:, i] - values @ gram[i] + gram[i, i] * values[:, i]
            values[:, i] = np.clip(residual / diagonal[i], 0.0, 1.0)
    return values, target - values @ d


def check_gains(gains: Mapping[str, float] | None) -> dict[str, float]:
    """Gains by group (missing groups: 1); unknown groups and non-finite or negative gains
    are refused by name."""
    out = {group: 1.0 for group in GAIN_GROUPS}
    for group, gain in (gains or {}).items():
        if group not in out:
            raise CaptureError(
                f"retarget gain for {group!r}: expected one of {', '.join(GAIN_GROUPS)}"
            )
        if not (isinstance(gain, int | float) and np.isfinite(gain) and gain >= 0):
            raise CaptureError(
                f"retarget gain for {group!r}: expected a number >= 0, found {gain!r}"
            )
        out[group] = float(gain)
    return out


def apply_gains(
    names: tuple[str, ...],
    values: np.ndarray,
    raw: np.ndarray,
    rotation: np.ndarray,
    gains: Mapping[str, float] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values [N, C], raw [N, 64], rotation [N, 3]) with the gains of the module docstring."""
    g = check_gains(gains)
    per_control = np.array([g[control(name).group] for name in names])
    values = np.clip(values * per_control, 0.0, 1.0)
    median = np.median(rotation, axis=0) if len(rotation) else np.zeros(3)
    rotation = median + g["head"] * (rotation - median)
    return values, raw * g["raw"], rotation
