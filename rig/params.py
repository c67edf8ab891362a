"""Rig parameters: the 257 numbers that pose a face, their JSON schema, ranges and priors.

Pure numpy (no torch, no bpy): Blender's own process reads and writes these.

Canonical order (Deep3DFaceRecon), 257 values:

| group        | size | unit                                   | soft range              |
|--------------|------|----------------------------------------|-------------------------|
| identity     | 80   | standard deviations (bases pre-scaled) | -3 .. 3                 |
| expression   | 64   | standard deviations                    | -3 .. 3                 |
| reflectance  | 80   | standard deviations                    | -3 .. 3                 |
| rotation     | 3    | radians: pitch (x), yaw (y), roll (z)  | ±0.6, ±1.0, ±0.6        |
| illumination | 27   | SH gamma, [R 9, G 9, B 9]              | -1 .. 1                 |
| translation  | 3    | decimetres (x right, y up, z to camera)| ±0.5, ±0.5, ±2.0        |

Soft ranges mark where the model leaves its data (shape coefficients beyond 3 σ, a head turned
past ~57°, a face partly out of frame); values outside them are legal, only reported by
`RigParams.soft_range_violations`. Hard errors (wrong length, NaN/inf) raise `RigParamsError`;
a JSON document (`from_dict`, `from_json`, `read_json`) must also keep every value within
`HARD_RANGES` (±5 σ for the statistical groups, ±π radians, SH ±3, translation ±2/±2/±8 dm):
beyond them the face model extrapolates into broken or empty renders.

Priors used by `RigParams.sample` (independent Gaussians, mean ± σ):

| group        | mean                                          | σ                             |
|--------------|-----------------------------------------------|-------------------------------|
| identity     | 0                                             | 1 (the model's own prior)     |
| expression   | 0                                             | 1                             |
| reflectance  | 0                                             | 1                             |
| rotation     | 0                                             | pitch 0.1, yaw 0.3, roll 0.05 |
| illumination | soft frontal light from slightly above:       | white part: band 0-1 0.1,     |
|              | per colour SH[1] = -0.05, SH[2] = +0.1,       | band 2 0.05; per-colour tint  |
|              | the rest 0 (ambient 0.8 is added by rig.sh)   | 0.02 on every coefficient     |
| translation  | 0                                             | 0 (faces stay centred)        |

Illumination is drawn as one white SH draw shared by R, G and B plus a small per-channel
tint, so random lights stay plausible instead of saturated colours.

DiscoFaceGAN order (254 values, no translation): [identity | reflectance | expression |
rotation | illumination]; convert only at its adapter (`to_dfg_vector`, `from_dfg_vector`,
`DFG_INDEX`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .atomic import atomic_open
from .errors import RigParamsError
from .file_limits import JSON_MAX_BYTES, parse_json, read_json_file

SCHEMA_NAME = "neural_face_rig/rig_params"
SCHEMA_VERSION = 1

GROUPS: tuple[tuple[str, int], ...] = (
    ("identity", 80),
    ("expression", 64),
    ("reflectance", 80),
    ("rotation", 3),
    ("illumination", 27),
    ("translation", 3),
)
GROUP_NAMES: tuple[str, ...] = tuple(name for name, _ in GROUPS)
GROUP_SIZES: dict[str, int] = dict(GROUPS)
RIG_SIZE = sum(GROUP_SIZES.values())


def _group_slices(groups: Iterable[tuple[str, int]]) -> dict[str, slice]:
    slices, start = {}, 0
    for name, size in groups:
        slices[name] = slice(start, start + size)
        start += size
    return slices


GROUP_SLICES: dict[str, slice] = _group_slices(GROUPS)

DFG_GROUP_ORDER: tuple[str, ...] = (
    "identity",
    "reflectance",
    "expression",
    "rotation",
    "illumination",
)
DFG_SIZE = sum(GROUP_SIZES[name] for name in DFG_GROUP_ORDER)
# Canonical positions in DiscoFaceGAN order: dfg = canonical[..., DFG_INDEX] (numpy or torch).
DFG_INDEX: np.ndarray = np.concatenate(
    [np.arange(GROUP_SLICES[name].start, GROUP_SLICES[name].stop) for name in DFG_GROUP_ORDER]
)

SOFT_RANGES: dict[str, np.ndarray] = {
    "identity": np.full(80, 3.0, np.float32),
    "expression": np.full(64, 3.0, np.float32),
    "reflectance": np.full(80, 3.0, np.float32),
    "rotation": np.array([0.6, 1.0, 0.6], np.float32),
    "illumination": np.full(27, 1.0, np.float32),
    "translation": np.array([0.5, 0.5, 2.0], np.float32),
}
"""Symmetric soft limits per coefficient: |value| <= SOFT_RANGES[group][i]."""

HARD_RANGES: dict[str, np.ndarray] = {
    "identity": np.full(80, 5.0, np.float32),
    "expression": np.full(64, 5.0, np.float32),
    "reflectance": np.full(80, 5.0, np.float32),
    "rotation": np.full(3, math.pi, np.float32),
    "illumination": np.full(27, 3.0, np.float32),
    "translation": np.array([2.0, 2.0, 8.0], np.float32),
}
"""Symmetric hard limits of values read from JSON: |value| <= HARD_RANGES[group][i]. The
statistical groups stop at ±5 σ (the face model extrapolates into broken faces beyond), a
rotation at ±π, SH gamma at ±3 (a saturated light), translation where the face leaves the
camera's view. The same limits as the add-on's properties."""

_COEFFICIENT_NAMES = {
    "rotation": ("Pitch", "Yaw", "Roll"),
    "illumination": tuple(f"SH {c} {i}" for c in "RGB" for i in range(9)),
    "translation": ("Translation X", "Translation Y", "Translation Z"),
}


def coefficient_name(group: str, index: int) -> str:
    """Human name of one coefficient, e.g. "Identity 12", "Yaw", "SH G 3", "Translation Z"."""
    names = _COEFFICIENT_NAMES.get(group)
    return names[index] if names else f"{group.capitalize()} {index}"


RIG_PARAMS_MAX_BYTES = 1 << 20
"""A rig params document is ~6 KB (257 numbers); 1 MiB allows any formatting."""
assert RIG_PARAMS_MAX_BYTES <= JSON_MAX_BYTES

_SH_BAND = np.array([0, 1, 1, 1, 2, 2, 2, 2, 2])
_WHITE_LIGHT_MEAN = np.array([0.0, -0.05, 0.1, 0, 0, 0, 0, 0, 0], np.float32)
_WHITE_LIGHT_SIGMA = np.where(_SH_BAND < 2, 0.1, 0.05).astype(np.float32)
_TINT_SIGMA = 0.02

PRIOR_SIGMAS: dict[str, np.ndarray] = {
    "identity": np.ones(80, np.float32),
    "expression": np.ones(64, np.float32),
    "reflectance": np.ones(80, np.float32),
    "rotation": np.array([0.1, 0.3, 0.05], np.float32),
    "translation": np.zeros(3, np.float32),
}
"""σ of the Gaussian priors of the groups drawn independently per coefficient (mean 0)."""


def split_rig_vector(vectors: Any) -> dict[str, Any]:
    """Group views of rig vectors `[..., 257]` (numpy array or torch tensor), no copies."""
    if vectors.shape[-1] != RIG_SIZE:
        raise RigParamsError(
            f"rig vector: expected last dimension {RIG_SIZE}, found shape {tuple(vectors.shape)}"
        )
    return {name: vectors[..., sl] for name, sl in GROUP_SLICES.items()}


@dataclass(frozen=True)
class RangeViolation:
    """One coefficient outside its soft range [low, high]."""

    group: str
    index: int
    value: float
    low: float
    high: float


@dataclass(eq=False)
class RigParams:
    """One face's rig values, each group a float32 vector (sizes and units: module docstring).

    Construction converts to float32 and validates; `validate()` re-checks after in-place edits.
    """

    identity: np.ndarray
    expression: np.ndarray
    reflectance: np.ndarray
    rotation: np.ndarray
    illumination: np.ndarray
    translation: np.ndarray

    def __post_init__(self) -> None:
        for name in GROUP_NAMES:
            value = getattr(self, name)
            try:
                with np.errstate(over="ignore"):  # overflow becomes inf, refused by validate()
                    array = np.array(value, dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise RigParamsError(
                    f"rig params field '{name}': expected {GROUP_SIZES[name]} numbers, "
                    f"found {type(value).__name__} ({exc})"
                ) from None
            setattr(self, name, array)
        self.validate()

    @classmethod
    def neutral(cls) -> RigParams:
        """All zeros: mean face, neutral expression, frontal pose, ambient light only."""
        return cls(**{name: np.zeros(size, np.float32) for name, size in GROUPS})

    def validate(self) -> None:
        """Raise RigParamsError naming the field if a group has the wrong shape or NaN/inf."""
        for name, size in GROUPS:
            value = getattr(self, name)
            shape = getattr(value, "shape", None)
            if shape != (size,):
                raise RigParamsError(
                    f"rig params field '{name}': expected {size} values, found shape {shape}"
                )
            bad = np.flatnonzero(~np.isfinite(value))
            if bad.size:
                raise RigParamsError(
                    f"rig params field '{name}': expected finite numbers, found {value[bad[0]]} "
                    f"at index {bad[0]}"
                )

    def soft_range_violations(self) -> list[RangeViolation]:
        """Coefficients outside SOFT_RANGES, in canonical order (never raises for range)."""
        violations = []
        for name in GROUP_NAMES:
            value, limit = getattr(self, name), SOFT_RANGES[name]
            for index in np.flatnonzero(np.abs(value) > limit):
                high = float(limit[index])
                violations.append(
                    RangeViolation(name, int(index), float(value[index]), -high, high)
                )
        return violations

    def copy(self) -> RigParams:
        return RigParams(**{name: getattr(self, name).copy() for name in GROUP_NAMES})

    # -- vectors ------------------------------------------------------------------------------

    def to_vector(self) -> np.ndarray:
        """Canonical vector [257] float32."""
        return np.concatenate([getattr(self, name) for name in GROUP_NAMES])

    @classmethod
    def from_vector(cls, vector: Any) -> RigParams:
        """From a canonical vector [257] (any float array-like)."""
        array = _as_vector(vector, RIG_SIZE, "rig vector")
        return cls(**{name: array[sl] for name, sl in GROUP_SLICES.items()})

    def to_dfg_vector(self) -> np.ndarray:
        """DiscoFaceGAN vector [254] float32: [id | tex | exp | rot | gamma] (no translation)."""
        return self.to_vector()[DFG_INDEX]

    @classmethod
    def from_dfg_vector(cls, vector: Any, translation: Any = None) -> RigParams:
        """From a DiscoFaceGAN vector [254]; translation [3] decimetres defaults to zeros."""
        array = _as_vector(vector, DFG_SIZE, "DiscoFaceGAN vector")
        canonical = np.zeros(RIG_SIZE, np.float32)
        canonical[DFG_INDEX] = array
        if translation is not None:
            canonical[GROUP_SLICES["translation"]] = _as_vector(translation, 3, "translation")
        return cls.from_vector(canonical)

    # -- priors -------------------------------------------------------------------------------

    @classmethod
    def sample(
        cls,
        rng: np.random.Generator,
        groups: Iterable[str] | None = None,
        base: RigParams | None = None,
    ) -> RigParams:
        """Draw `groups` (default: all) from the priors of the module docstring; every other
        group keeps its value from `base` (default neutral). Deterministic for a seeded rng."""
        names = GROUP_NAMES if groups is None else tuple(groups)
        unknown = [name for name in names if name not in GROUP_SIZES]
        if unknown:
            raise RigParamsError(
                f"sample groups: expected names from {list(GROUP_NAMES)}, found {unknown}"
            )
        params = (base or cls.neutral()).copy()
        for name in GROUP_NAMES:  # canonical order keeps the draws independent of `groups` order
            if name not in names:
                continue
            if name == "illumination":
                white = _WHITE_LIGHT_MEAN + _WHITE_LIGHT_SIGMA * rng.standard_normal(9)
                tint = _TINT_SIGMA * rng.standard_normal((3, 9))
                draw = (white[None, :] + tint).reshape(27)
            else:
                sigma = PRIOR_SIGMAS[name]
                draw = sigma * rng.standard_normal(sigma.shape[0])
            setattr(params, name, draw.astype(np.float32))
        return params

    # -- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        self.validate()
        document: dict[str, Any] = {"schema": SCHEMA_NAME, "version": SCHEMA_VERSION}
        document.update({name: getattr(self, name).tolist() for name in GROUP_NAMES})
        return document

    @classmethod
    def from_dict(cls, document: Any, source: str = "rig params") -> RigParams:
        """Parse a schema document; groups left out are neutral (zeros). `source` names the
        file or string in error messages."""
        if not isinstance(document, Mapping):
            raise RigParamsError(
                f"{source}: expected a JSON object, found {type(document).__name__}"
            )
        schema = document.get("schema")
        if schema != SCHEMA_NAME:
            raise RigParamsError(
                f"{source}: field 'schema': expected {SCHEMA_NAME!r}, found {schema!r}"
            )
        version = document.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise RigParamsError(
                f"{source}: field 'version': expected an integer >= 1, found {version!r}"
            )
        if version > SCHEMA_VERSION:
            raise RigParamsError(
                f"{source}: field 'version': expected {SCHEMA_VERSION} or older, found {version} "
                "(written by a newer Neural Face Rig; update the add-on)"
            )
        unknown = sorted(set(document) - {"schema", "version", *GROUP_NAMES})
        if unknown:
            raise RigParamsError(
                f"{source}: unknown field(s) {unknown}; expected only 'schema', 'version' and "
                f"{list(GROUP_NAMES)}"
            )
        groups = {}
        for name, size in GROUPS:
            if name not in document:
                groups[name] = np.zeros(size, np.float32)
                continue
            value = document[name]
            if not isinstance(value, list) or not all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in value
            ):
                raise RigParamsError(
                    f"{source}: field '{name}': expected a list of {size} numbers, "
                    f"found {_describe(value)}"
                )
            if len(value) != size:
                raise RigParamsError(
                    f"{source}: field '{name}': expected {size} numbers, found {len(value)}"
                )
            non_finite = [i for i, x in enumerate(value) if not math.isfinite(x)]
            if non_finite:
                raise RigParamsError(
                    f"{source}: field '{name}': expected finite numbers, found "
                    f"{value[non_finite[0]]} at index {non_finite[0]}"
                )
            limits = HARD_RANGES[name]
            bad = [i for i, x in enumerate(value) if not abs(x) <= limits[i]]
            if bad:
                raise RigParamsError(
                    f"{source}: field '{name}' index {bad[0]} ({coefficient_name(name, bad[0])}): "
                    "expected a value within "
                    f"±{float(limits[bad[0]]):g}, found {value[bad[0]]!r}"
                )
            groups[name] = np.array(value, np.float64)
        return cls(**groups)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "rig params JSON") -> RigParams:
        """Parse a document (size, depth, duplicate keys, huge integers, NaN refused by
        ``rig.file_limits.parse_json``), then ``from_dict``."""
        document = parse_json(text, source, RigParamsError, RIG_PARAMS_MAX_BYTES,
                              non_finite_as_floats=True)
        return cls.from_dict(document, source)

    def write_json(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON document atomically (never a half-written file)."""
        text = self.to_json()
        with atomic_open(path, "w", encoding="utf-8") as handle:
            handle.write(text)

    @classmethod
    def read_json(cls, path: str | os.PathLike[str]) -> RigParams:
        """A rig params file: a regular file (no FIFO, device or folder) of at most
        RIG_PARAMS_MAX_BYTES, parsed as ``from_json``."""
        document = read_json_file(path, "rig params", RigParamsError, RIG_PARAMS_MAX_BYTES,
                                  non_finite_as_floats=True)
        return cls.from_dict(document, os.fspath(path))


def _as_vector(value: Any, size: int, what: str) -> np.ndarray:
    try:
        with np.errstate(over="ignore"):  # overflow becomes inf, refused by validate()
            array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise RigParamsError(
            f"{what}: expected {size} numbers, found {_describe(value)} ({exc})"
        ) from None
    if array.shape != (size,):
        raise RigParamsError(f"{what}: expected shape ({size},), found {array.shape}")
    return array


def _describe(value: Any) -> str:
    if isinstance(value, list):
        kinds = sorted({type(x).__name__ for x in value})
        return f"a list of {len(value)} items of type {', '.join(kinds) or 'nothing'}"
    return type(value).__name__
