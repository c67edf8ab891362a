"""Named controls as directions of a face model's expression space, in closed form.

For a FaceModel, A [204, 64] is the expression basis at the 68 keypoints (x, y, z of each
landmark; decimetres per standard deviation). Each control of `rig.controls` gives a target
displacement D [68, 3] on the model's neutral keypoints: its documented moves on the moved
landmarks, zero on every other landmark (held still). The control's direction is the
prior-weighted minimum-norm least-squares solution

    c = argmin ||A c - D||^2 + lambda ||c||^2,   c = V diag(s / (s^2 + lambda)) U^T D

with coefficients in units of their standard deviation, so ||c||^2 is the Gaussian prior's
energy: among the expressions that produce the pattern, the most probable one. lambda is
RIDGE times the largest squared singular value of A, small enough not to bias a pattern the
model can make, large enough that directions the landmarks cannot see stay at zero.

The fit quality per control (largest relative error on the moved landmarks, largest motion of
a held landmark relative to the largest documented distance) is stored with the directions:
a face model whose expression basis cannot make a pattern says so instead of failing quietly.

Float64 throughout, one SVD, results rounded to float32: the same model gives the same bits.
Cached per (model digest, definitions digest) as safetensors + a JSON sidecar, read and
written with numpy alone (rig.tensor_file), so Blender's own Python uses the cache too.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_open
from .controls import CONTROL_INDEX, CONTROL_NAMES, CONTROLS, Control, Shift, definitions_digest
from .errors import RigError
from .face_model import N_EXPRESSION, FaceModel
from .tensor_file import TensorFileError, read_tensor_file, write_tensor_file

RIDGE = 1e-7
CACHE_FORMAT = "nfr-controls"
CACHE_VERSION = 1


class ControlsError(RigError):
    """A control cache file is damaged, or control values have the wrong shape or NaN."""


@dataclass(frozen=True, eq=False)
class ControlBasis:
    """Directions of the named controls for one face model. C = number of controls.

    names        the control names, order of `rig.controls.CONTROL_NAMES`
    directions   [C, 64] float32, expression coefficients (σ units) at slider value 1
    target_error [C] float32, largest |achieved - documented| / |documented| over the moved
                 landmarks
    leak         [C] float32, largest motion of a held landmark / largest documented distance
    model_digest sha256 hex of the model the directions were derived from
    """

    names: tuple[str, ...]
    directions: np.ndarray
    target_error: np.ndarray
    leak: np.ndarray
    model_digest: str

    def direction(self, name: str) -> np.ndarray:
        """The [64] float32 direction of control `name`."""
        return self.directions[self.names.index(name)]


def keypoint_basis(model: FaceModel) -> np.ndarray:
    """The expression basis at the keypoints [68, 3, 64] float64 (dm per σ)."""
    rows = (3 * model.keypoints[:, None] + np.arange(3)).reshape(-1)
    return model.exp_base[rows].astype(np.float64).reshape(len(model.keypoints), 3, N_EXPRESSION)


def neutral_keypoints(model: FaceModel) -> np.ndarray:
    """The keypoints of the mean face [68, 3] float64, decimetres."""
    return model.mean_shape.reshape(-1, 3)[model.keypoints].astype(np.float64)


def target_displacement(definition: Control, neutral: np.ndarray) -> np.ndarray:
    """The documented displacement [68, 3] dm of `definition` on keypoints `neutral` [68, 3];
    zero rows are the landmarks held still."""
    target = np.zeros_like(neutral)
    for move in definition.moves:
        ids = np.asarray(move.landmarks)
        if isinstance(move, Shift):
            target[ids] += move.distance * np.asarray(move.direction)
        else:
            target[ids] += move.fraction * (neutral[np.asarray(move.references)] - neutral[ids])
    return target


def model_digest(model: FaceModel) -> str:
    """sha256 hex of what the controls depend on: mean shape, expression basis, keypoints."""
    digest = hashlib.sha256()
    for array in (model.mean_shape, model.exp_base, model.keypoints):
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
        digest.update(contiguous.tobytes())
    return digest.hexdigest()


def derive_controls(model: FaceModel, digest: str | None = None) -> ControlBasis:
    """The ControlBasis of `model` (see the module docstring). `digest` identifies the model
    in caches (default: `model_digest(model)`)."""
    basis = keypoint_basis(model)
    neutral = neutral_keypoints(model)
    a = basis.reshape(-1, N_EXPRESSION)  # [204, 64]
    targets = np.stack([target_displacement(c, neutral) for c in CONTROLS])  # [C, 68, 3]
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    ridge = RIDGE * float(s[0]) ** 2
    gain = s / (s * s + ridge)
    coefficients = (targets.reshape(len(CONTROLS), -1) @ u) * gain @ vt  # [C, 64]
    directions = coefficients.astype(np.float32)
    error, leak = fit_quality(basis, targets, directions)
    return ControlBasis(
        names=CONTROL_NAMES,
        directions=directions,
        target_error=error.astype(np.float32),
        leak=leak.astype(np.float32),
        model_digest=digest or model_digest(model),
    )


def fit_quality(
    basis: np.ndarray, targets: np.ndarray, directions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per control: (largest relative error on moved landmarks, largest held-landmark motion /
    largest documented distance) for keypoint basis [68, 3, 64], targets [C, 68, 3] and
    directions [C, 64]."""
    achieved = np.einsum("lak,ck->cla", basis, directions.astype(np.float64))
    amount = np.linalg.norm(targets, axis=2)  # [C, 68]
    moved = amount > 0
    miss = np.linalg.norm(achieved - targets, axis=2)
    error = np.where(moved, miss / np.where(moved, amount, 1.0), 0.0).max(axis=1)
    leak = np.where(moved, 0.0, miss).max(axis=1) / amount.max(axis=1)
    return error, leak


# --- cache ---------------------------------------------------------------------------------


def cache_path(cache_dir: str | os.PathLike[str], digest: str) -> Path:
    """``<cache_dir>/controls-<model digest 16>-<definitions digest 8>.safetensors``."""
    return Path(cache_dir) / f"controls-{digest[:16]}-{definitions_digest()[:8]}.safetensors"


def load_or_derive_controls(
    model: FaceModel, cache_dir: str | os.PathLike[str], digest: str | None = None
) -> ControlBasis:
    """`derive_controls`, memoised in `cache_dir` (created if missing): a hit returns exactly
    the arrays of the first derivation. `digest` as in `derive_controls`."""
    digest = digest or model_digest(model)
    path = cache_path(cache_dir, digest)
    if path.is_file():
        cached = read_controls(path)
        if cached.model_digest == digest and cached.names == CONTROL_NAMES:
            return cached
    derived = derive_controls(model, digest)
    write_controls(derived, path)
    return derived


def write_controls(basis: ControlBasis, path: str | os.PathLike[str]) -> None:
    """Write `basis` as `path` (.safetensors) and its JSON sidecar, weights first, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = _metadata(basis)
    write_tensor_file(
        path,
        {"directions": basis.directions, "target_error": basis.target_error, "leak": basis.leak},
        {k: json.dumps(v) for k, v in meta.items()},
    )
    sidecar = {
        **meta,
        "quality": {
            name: {"target_error": float(e), "leak": float(k)}
            for name, e, k in zip(basis.names, basis.target_error, basis.leak, strict=True)
        },
    }
    with atomic_open(path.with_suffix(".json"), "w", encoding="utf-8") as out:
        json.dump(sidecar, out, indent=1)


def _metadata(basis: ControlBasis) -> dict[str, object]:
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "model_digest": basis.model_digest,
        "definitions_digest": definitions_digest(),
        "names": list(basis.names),
    }


def read_controls(path: str | os.PathLike[str]) -> ControlBasis:
    """Read a control cache written by `write_controls`; ControlsError names what is wrong."""
    try:
        arrays, raw = read_tensor_file(path)
    except TensorFileError as exc:
        raise ControlsError(f"damaged control cache, delete it: {exc}") from None
    try:
        meta = {k: json.loads(v) for k, v in raw.items()}
    except json.JSONDecodeError as exc:
        raise ControlsError(f"{path}: control cache metadata is not JSON ({exc})") from None
    if meta.get("format") != CACHE_FORMAT or meta.get("version") != CACHE_VERSION:
        raise ControlsError(
            f"{path}: expected format {CACHE_FORMAT!r} version {CACHE_VERSION}, found "
            f"{meta.get('format')!r} version {meta.get('version')!r}"
        )
    names = tuple(meta.get("names") or ())
    shapes = {"directions": (len(names), N_EXPRESSION), "target_error": (len(names),),
              "leak": (len(names),)}
    for key, shape in shapes.items():
        array = arrays.get(key)
        if array is None or array.shape != shape or array.dtype != np.float32:
            found = None if array is None else (array.dtype.name, array.shape)
            raise ControlsError(f"{path}: '{key}': expected float32 {shape}, found {found}")
        if not np.isfinite(array).all():
            raise ControlsError(f"{path}: '{key}' holds NaN or inf")
    return ControlBasis(
        names=names,
        directions=arrays["directions"],
        target_error=arrays["target_error"],
        leak=arrays["leak"],
        model_digest=str(meta.get("model_digest", "")),
    )


# --- evaluation ----------------------------------------------------------------------------


def control_vector(values: Mapping[str, float]) -> np.ndarray:
    """Slider values by name -> [C] float64 in CONTROL_NAMES order (missing names are 0)."""
    vector = np.zeros(len(CONTROL_NAMES))
    for name, value in values.items():
        if name not in CONTROL_INDEX:
            raise ControlsError(f"unknown control {name!r}; known: {', '.join(CONTROL_NAMES)}")
        vector[CONTROL_INDEX[name]] = float(value)
    return vector


def expression_from_controls(
    basis: ControlBasis,
    values: Mapping[str, float] | Sequence[float] | np.ndarray,
    raw: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """Expression coefficients [64] float32 = raw [64] (default 0) + sum of value_i ·
    direction_i, for slider values (0..1) by name or as a [C] vector in `basis.names` order.
    Pure: the same inputs give the same bits."""
    vector = control_vector(values) if isinstance(values, Mapping) else np.asarray(
        values, dtype=np.float64
    )
    if vector.shape != (len(basis.names),) or not np.isfinite(vector).all():
        raise ControlsError(
            f"control values: expected {len(basis.names)} finite numbers, found shape "
            f"{vector.shape}" + ("" if np.isfinite(vector).all() else " with NaN/inf")
        )
    offset = np.zeros(N_EXPRESSION) if raw is None else np.asarray(raw, dtype=np.float64)
    if offset.shape != (N_EXPRESSION,) or not np.isfinite(offset).all():
        raise ControlsError(f"raw expression: expected 64 finite numbers, found {offset.shape}")
    return (offset + vector @ basis.directions.astype(np.float64)).astype(np.float32)


def controls_from_expression(
    basis: ControlBasis, expression: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Read named-control values back from expression coefficients [64] (photo and capture
    results): least-squares values [C] float32 clipped to 0..1 by projected coordinate
    descent (non-negative, at most 1), and the raw remainder [64] float32 with
    expression_from_controls(basis, values, remainder) == expression (to float32 rounding)."""
    target = np.asarray(expression, dtype=np.float64)
    if target.shape != (N_EXPRESSION,) or not np.isfinite(target).all():
        raise ControlsError(f"expression: expected 64 finite numbers, found {target.shape}")
    d = basis.directions.astype(np.float64)  # [C, 64]
    gram = d @ d.T
    rhs = d @ target
    values = np.zeros(len(d))
    diagonal = np.maximum(np.diag(gram), 1e-12)
    for _ in range(200):  # box-constrained least squares, fixed sweep count: deterministic
        for i in range(len(d)):
            residual = rhs[i] - gram[i] @ values + gram[i, i] * values[i]
            values[i] = min(1.0, max(0.0, residual / diagonal[i]))
    remainder = target - values @ d
    return values.astype(np.float32), remainder.astype(np.float32)


# --- face-model files ----------------------------------------------------------------------

_INDEX_NAME = "index.json"
_INDEX_MAX_BYTES = 1 << 20


def controls_for_file(
    path: str | os.PathLike[str], cache_dir: str | os.PathLike[str],
    model: FaceModel | None = None,
) -> ControlBasis:
    """The controls of the face-model file `path`, without reading the file when `cache_dir`
    already holds them: an index maps (absolute path, size, mtime) to the model digest, so a
    known file costs one stat and one small safetensors read. Otherwise the model (`model`
    when the caller has already loaded that file) is derived once."""
    from .face_model import load_face_model

    source = Path(path).resolve()
    stat = source.stat()
    key = f"{source}|{stat.st_size}|{stat.st_mtime_ns}"
    folder = Path(cache_dir)
    index = _read_index(folder / _INDEX_NAME)
    digest = index.get(key)
    if isinstance(digest, str) and cache_path(folder, digest).is_file():
        cached = read_controls(cache_path(folder, digest))
        if cached.model_digest == digest and cached.names == CONTROL_NAMES:
            return cached
    basis = load_or_derive_controls(model if model is not None else load_face_model(source),
                                    folder)
    index[key] = basis.model_digest
    with atomic_open(folder / _INDEX_NAME, "w", encoding="utf-8") as out:
        json.dump(index, out, indent=1)
    return basis


def _read_index(path: Path) -> dict[str, object]:
    """The cache index, or {} when missing, too big or not a JSON object (it is rebuilt)."""
    try:
        if path.stat().st_size > _INDEX_MAX_BYTES:
            return {}
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
