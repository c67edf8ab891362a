"""MATLAB ``.mat`` files as checked numpy arrays, with errors a user can act on.

Every failure raises FaceModelError naming the file, the field, what was expected and what was
found: a missing or unreadable file, a field that is absent, of the wrong shape, not numeric,
not finite, or an index field with out-of-range or 0-based values. scipy is imported inside
functions so that Blender's process can import this module cheaply.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FaceModelError


def read_mat(
    path: str | os.PathLike[str], *, what: str, hint: str, keys: Sequence[str]
) -> MatContents:
    """Load ``keys`` from a MATLAB v4-v7 ``.mat`` file; every key must be present.

    ``what`` names the file in messages ("face model", "BFM 2009 model"); ``hint`` says where
    the user gets or how they make the file, appended to missing/corrupt-file messages."""
    from scipy.io import loadmat, whosmat
    from scipy.io.matlab import MatReadError

    file = Path(path)
    source = f"{what} {file}"
    if not file.exists():
        raise FaceModelError(f"{what} not found: {file}. {hint}")
    if file.is_dir():
        raise FaceModelError(f"{source} is a folder; expected a .mat file. {hint}")
    size = file.stat().st_size
    if size == 0:
        raise FaceModelError(f"{source} is empty (0 bytes). {hint}")
    # scipy's parser reports damaged bytes with whatever error it hits first.
    parser_errors = (
        MatReadError, ValueError, TypeError, OSError, IndexError, KeyError, EOFError,
        OverflowError, struct.error, zlib.error,
    )  # fmt: skip
    try:
        arrays = loadmat(file, variable_names=list(keys), squeeze_me=False, mat_dtype=False)
        missing = [key for key in keys if key not in arrays]
        found = [name for name, _, _ in whosmat(file)] if missing else []
    except NotImplementedError as exc:  # scipy's answer to HDF5-based files
        raise FaceModelError(
            f"{source} is a MATLAB v7.3 (HDF5) file, which cannot be read here; re-save it in "
            f"MATLAB with save(..., '-v7') ({exc})"
        ) from exc
    except parser_errors as exc:
        raise FaceModelError(
            f"{source} is truncated or corrupt ({size} bytes; the .mat reader said: {exc}). {hint}"
        ) from exc
    if missing:
        raise FaceModelError(
            f"{source} lacks the field(s) {', '.join(map(repr, missing))} "
            f"(fields found: {', '.join(found) or 'none'}). {hint}"
        )
    return MatContents(source=source, arrays={key: arrays[key] for key in keys})


@dataclass(frozen=True)
class MatContents:
    """Named arrays from one file (``source`` names it in messages) with checked accessors."""

    source: str
    arrays: Mapping[str, np.ndarray]

    def array(self, key: str) -> np.ndarray:
        """The numeric (or boolean) array stored under ``key``."""
        if key not in self.arrays:
            raise FaceModelError(f"{self.source} lacks the field {key!r}")
        value = np.asarray(self.arrays[key])
        if value.dtype.kind not in "biuf":
            raise FaceModelError(
                f"{self.source}: field {key!r} holds {_describe_dtype(value)}; expected a "
                "numeric array"
            )
        return value

    def matrix(
        self, key: str, shape: tuple[int | None, int | None], meaning: str = ""
    ) -> np.ndarray:
        """A 2-D array of ``shape`` (None = any size, at least 1). ``meaning`` explains the
        expected shape in the message, e.g. "3N x 80 with N = 35709 vertices"."""
        value = self.array(key)
        ok = value.ndim == 2 and all(
            (want is None and got > 0) or got == want
            for want, got in zip(shape, value.shape, strict=True)
        )
        if not ok:
            expected = "[" + ", ".join("any" if s is None else str(s) for s in shape) + "]"
            raise FaceModelError(
                f"{self.source}: field {key!r} has shape {_shape(value)}, expected {expected}"
                + (f" ({meaning})" if meaning else "")
            )
        return value

    def vector(self, key: str, length: int | None = None, meaning: str = "") -> np.ndarray:
        """A vector stored as [n], [1, n] or [n, 1], returned 1-D; ``length`` None = any n >= 1."""
        value = self.array(key)
        is_vector = value.ndim == 1 or (value.ndim == 2 and min(value.shape) == 1)
        if not is_vector or value.size == 0 or (length is not None and value.size != length):
            expected = f"{length} values" if length is not None else "a non-empty vector"
            raise FaceModelError(
                f"{self.source}: field {key!r} has shape {_shape(value)}, expected {expected}"
                + (f" ({meaning})" if meaning else "")
            )
        return value.reshape(-1)

    def finite(self, key: str, values: np.ndarray) -> np.ndarray:
        """``values`` (read from ``key``) unchanged, after checking for NaN and infinity."""
        bad = ~np.isfinite(values)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise FaceModelError(
                f"{self.source}: field {key!r} contains {int(bad.sum())} NaN or infinite "
                f"value(s), the first at index {list(first)}; the file is damaged or was "
                "written from a failed computation"
            )
        return values

    def one_based_ids(
        self, key: str, values: np.ndarray, count: int, what: str, count_source: str = ""
    ) -> np.ndarray:
        """1-based ids in ``values`` (1..count) converted to 0-based int64, same shape.

        ``what`` names the id kind ("vertex", "face"); ``count_source`` says where ``count``
        comes from, for the message. A 0 among ids below ``count`` marks a 0-based file."""
        if values.dtype.kind == "f":
            fractional = values != np.round(values)
            if fractional.any():
                position = [int(i) for i in np.argwhere(fractional)[0]]
                raise FaceModelError(
                    f"{self.source}: field {key!r} must hold whole-number {what} ids, found "
                    f"{values[tuple(position)]} at index {position}"
                )
        ids = values.astype(np.int64)
        low, high = int(ids.min()), int(ids.max())
        expected = f"1-based {what} ids 1..{count}" + (f" ({count_source})" if count_source else "")
        if low == 0 and high < count:
            raise FaceModelError(
                f"{self.source}: field {key!r} should hold {expected} but contains 0 (values "
                f"span 0..{high}): the file looks 0-based; add 1 to {key!r}"
            )
        if low < 1 or high > count:
            raise FaceModelError(
                f"{self.source}: field {key!r} contains {what} id {low if low < 1 else high}, "
                f"expected {expected}"
            )
        return ids - 1


def _shape(value: np.ndarray) -> str:
    return "[" + ", ".join(str(s) for s in value.shape) + "]"


def _describe_dtype(value: np.ndarray) -> str:
    kinds = {
        "U": "text", "S": "bytes", "O": "a cell array or struct", "V": "a struct",
        "c": "complex numbers",
    }  # fmt: skip
    return kinds.get(value.dtype.kind, f"dtype {value.dtype}")
