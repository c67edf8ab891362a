"""An action-based expression basis for the synthetic face model (``expressions="actions"``).

Real expression models are built from local facial actions: FaceWarehouse, behind the BFM's
Exp_Pca, captured FACS-like blendshapes (brow raiser, lid closer, lip corner puller, jaw
drop, ...) and kept their principal components. The default synthetic basis ("blobs") is
broad random motion around the features, which no local pattern lies in (the named controls
fit it with 10-99 % error). This basis is the analogue of the real construction: one smooth
vertex field per named control of `rig.controls` (its documented landmark pattern, with a
random strength), the remaining columns random local motions, all mixed by a random rotation
so no single coefficient is one action. Deterministic in the generator passed in.

Each landmark pattern becomes a vertex field by Gaussian radial-basis interpolation over the
68 keypoints: exactly the pattern at the keypoints (held landmarks stay at zero), decaying
to zero a few centimetres away from them.
"""

from __future__ import annotations

import numpy as np

from .control_basis import target_displacement
from .controls import CONTROLS
from .face_model import N_EXPRESSION

_RBF_WIDTH = 0.07  # dm: about the spacing of jaw and lip landmarks, so fields stay local and smooth
_RANDOM_PEAK = 0.02  # dm: the extra random motions are small next to the actions


def action_expression_base(
    vertices: np.ndarray, keypoints: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Expression basis [3N, 64] float32 for vertices [N, 3] (dm) with keypoint ids [68]."""
    neutral = vertices[keypoints].astype(np.float64)
    patterns = np.stack([target_displacement(c, neutral) for c in CONTROLS])  # [A, 68, 3]
    patterns *= rng.uniform(0.5, 1.5, size=(len(CONTROLS), 1, 1))
    n_random = N_EXPRESSION - len(CONTROLS)
    random = rng.normal(size=(n_random, len(keypoints), 3)) * _RANDOM_PEAK
    random *= rng.uniform(size=(n_random, len(keypoints), 1)) < 0.15  # a few landmarks each
    fields = _interpolate(vertices, neutral, np.concatenate([patterns, random]))  # [64, N, 3]
    mixing, _ = np.linalg.qr(rng.normal(size=(N_EXPRESSION, N_EXPRESSION)))
    mixed = np.einsum("knd,kj->jnd", fields, mixing)
    return np.ascontiguousarray(mixed.reshape(N_EXPRESSION, -1).T).astype(np.float32)


def _interpolate(vertices: np.ndarray, centres: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Gaussian-RBF fields [K, N, 3] through values [K, 68, 3] at centres [68, 3]."""

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        squared = np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None] - 2.0 * a @ b.T
        return np.exp(-0.5 * np.maximum(squared, 0.0) / _RBF_WIDTH**2)

    weights = np.linalg.solve(kernel(centres, centres), values.transpose(1, 0, 2).reshape(
        len(centres), -1
    ))  # [68, K*3]
    fields = kernel(vertices.astype(np.float64), centres) @ weights  # [N, K*3]
    return fields.reshape(len(vertices), len(values), 3).transpose(1, 0, 2)
