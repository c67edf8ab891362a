"""MATLAB ``.mat`` files as checked numpy arrays, with errors a user can act on.

Reading is numpy only (no scipy: Blender's bundled Python has numpy alone, and face models are
read in Blender's own process). The reader implements the MAT v5 layout MATLAB (``-v6``,
``-v7``) and scipy's ``savemat`` write: a 128-byte header, then data elements (an 8-byte tag,
or a 4-byte "small element" tag), numeric matrices as array flags + dimensions + name + real
part (column-major, any stored integer/float type converted to the array's class), and
zlib-compressed elements (``miCOMPRESSED``) holding one element each. Text, cells, structs,
objects, sparse and complex matrices are recognised and reported by kind; v7.3 (HDF5) files get
a re-save hint.

It is bounded: only the requested fields are decoded (others are skipped, compressed ones after
inflating just their header), a field's element count must match the bytes present, and zlib
output is capped per element (its declared size) and in total (MAT_MAX_DECOMPRESSED_BYTES), so
a zlib bomb stops at the cap. The file must be a regular file (no FIFO or device).

Every failure raises FaceModelError naming the file, the field, what was expected and what was
found: a missing or unreadable file, a field that is absent, of the wrong shape, not numeric,
not finite, or an index field with out-of-range or 0-based values.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .errors import FaceModelError
from .file_limits import (
    FACE_MODEL_MAX_BYTES,
    MAT_INFLATE_FREE_BYTES,
    MAT_MAX_DECOMPRESSED_BYTES,
    MAT_MAX_INFLATE_RATIO,
    FileLimitError,
    read_regular_file,
)

_HEADER_BYTES = 128
MAT_MAX_DIMENSIONS = 32
"""MATLAB arrays have at most a handful of dimensions; 32 bounds a crafted dims list."""
_MI_TYPES = {  # MAT-file data type -> numpy dtype (byte order applied per file)
    1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8",
}
_MI_MATRIX, _MI_COMPRESSED, _MI_UTF8, _MI_UTF16, _MI_UTF32 = 14, 15, 16, 17, 18
_MX_NUMERIC = {  # array class -> numpy dtype of the result
    6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8",
    15: "u8",
}
_MX_KINDS = {1: "O", 2: "O", 3: "O", 4: "U", 5: "O"}  # cell, struct, object, char, sparse
_COMPLEX_FLAG = 0x0800


class _Corrupt(Exception):
    """Internal: the bytes do not follow the MAT v5 layout (reported as truncated/corrupt)."""


class _Reader:
    """One MAT v5 byte stream (the file after its header, or an inflated element)."""

    def __init__(self, data: bytes | memoryview, order: Literal["<", ">"]) -> None:
        self.data = memoryview(data)
        self.order = order
        self.tag = struct.Struct(order + "II")

    def element(self, pos: int) -> tuple[int, int, int, int]:
        """(type, data start, data size, next element's position) of the element at pos."""
        if pos + 8 > len(self.data):
            raise _Corrupt(f"element tag at byte {pos} runs past the end")
        kind, size = self.tag.unpack_from(self.data, pos)
        if kind >> 16:  # small data element: size in the upper half, data in the tag itself
            small = kind >> 16
            if small > 4:
                raise _Corrupt(f"small element at byte {pos} claims {small} bytes")
            return kind & 0xFFFF, pos + 4, small, pos + 8
        start = pos + 8
        if start + size > len(self.data):
            raise _Corrupt(f"element at byte {pos} needs {size} bytes, only "
                           f"{len(self.data) - start} remain")
        padded = size if kind == _MI_COMPRESSED else (size + 7) // 8 * 8
        return kind, start, size, min(start + padded, len(self.data))

    def typed(self, pos: int, what: str) -> tuple[np.ndarray, int]:
        """A numeric sub-element as a 1-D array, and the next position."""
        kind, start, size, following = self.element(pos)
        if kind in (_MI_UTF8,):
            kind = 2
        if kind in (_MI_UTF16,):
            kind = 4
        if kind in (_MI_UTF32,):
            kind = 6
        if kind not in _MI_TYPES:
            raise _Corrupt(f"{what}: data type {kind} is not a numeric MAT type")
        dtype = np.dtype(_MI_TYPES[kind]).newbyteorder(self.order)
        if size % dtype.itemsize:
            raise _Corrupt(f"{what}: {size} bytes is not a whole number of {dtype.name}")
        return np.frombuffer(self.data[start:start + size], dtype=dtype), following


def _inflate_head(raw: memoryview, budget: int) -> tuple[zlib._Decompress, bytes]:
    inflater = zlib.decompressobj()
    head = inflater.decompress(raw, max(1, min(budget, 256)))
    return inflater, head


def _matrix(
    reader: _Reader, start: int, end: int, want: set[str] | None
) -> tuple[str, np.ndarray | None]:
    """(name, array or None when not wanted) of the miMATRIX element data at start..end."""
    flags_array, pos = reader.typed(start, "array flags")
    if flags_array.size < 2:
        raise _Corrupt("array flags too short")
    flags = int(flags_array[0])
    mx_class = flags & 0xFF
    dims_array, pos = reader.typed(pos, "dimensions")
    if dims_array.size > MAT_MAX_DIMENSIONS or (dims_array < 0).any():
        raise _Corrupt(f"dimensions {dims_array.tolist()[:8]} are not a MATLAB array shape")
    dims = tuple(int(d) for d in dims_array)
    name_array, pos = reader.typed(pos, "array name")
    name = bytes(name_array.astype(np.uint8, copy=False)).decode("latin1")
    if want is not None and name not in want:
        return name, None
    if mx_class in _MX_KINDS:
        kind = _MX_KINDS[mx_class]
        return name, np.empty((0,), dtype="U1" if kind == "U" else object)
    if mx_class not in _MX_NUMERIC:
        raise _Corrupt(f"field {name!r}: unknown array class {mx_class}")
    numel = math.prod(dims)  # Python ints: a crafted shape cannot wrap around
    real, pos = reader.typed(pos, f"field {name!r}")
    if real.size != numel:
        raise _Corrupt(f"field {name!r}: shape {list(dims)} needs {numel} values, the file holds "
                       f"{real.size}")
    if flags & _COMPLEX_FLAG:
        return name, np.zeros((1,), np.complex64)  # reported as "complex numbers"
    dtype = np.dtype(_MX_NUMERIC[mx_class])  # logical arrays keep their uint8 class, as scipy
    values = real.astype(dtype.newbyteorder("="), copy=True)
    return name, values.reshape(dims, order="F") if dims else values


def parse_mat_v5(data: bytes, want: set[str] | None, label: str) -> tuple[dict[str, np.ndarray],
                                                                        list[str]]:
    """The wanted numeric arrays of MAT v5 bytes (all when ``want`` is None) and the names of
    every field found. Raises _Corrupt for layout errors, FaceModelError for limits."""
    if len(data) < _HEADER_BYTES:
        raise _Corrupt(f"{len(data)} bytes is shorter than the {_HEADER_BYTES}-byte header")
    marker = bytes(data[126:128])
    if marker not in (b"IM", b"MI"):
        raise _Corrupt("no MAT v5 endian marker in the header")
    order: Literal["<", ">"] = "<" if marker == b"IM" else ">"
    (version,) = struct.unpack(order + "H", data[124:126])
    if version == 0x0200:
        raise NotImplementedError("MATLAB v7.3")
    if version != 0x0100:
        raise _Corrupt(f"header version {version:#06x}, expected 0x0100 (MAT v5)")
    reader = _Reader(memoryview(data)[_HEADER_BYTES:], order)
    arrays: dict[str, np.ndarray] = {}
    names: list[str] = []
    budget = MAT_MAX_DECOMPRESSED_BYTES
    pos = 0
    while pos < len(reader.data):
        if len(reader.data) - pos < 8 and not any(reader.data[pos:]):
            break  # padding at the end of the file
        kind, start, size, following = reader.element(pos)
        inner, inner_start, inner_end = reader, start, start + size
        if kind == _MI_COMPRESSED:
            inflater, head = _inflate_head(reader.data[start:following], budget)
            if len(head) < 8:
                raise _Corrupt(f"compressed element at byte {pos} does not inflate to an element")
            inner_kind, inner_size = struct.unpack(order + "II", head[:8])
            allowed = min(budget, MAT_INFLATE_FREE_BYTES + MAT_MAX_INFLATE_RATIO * size)
            if inner_size + 8 > allowed:
                raise FaceModelError(
                    f"{label}: expected a compressed field to inflate to at most {allowed} bytes "
                    f"({MAT_MAX_INFLATE_RATIO}x its {size} compressed bytes, within the "
                    f"{MAT_MAX_DECOMPRESSED_BYTES}-byte total), found one declaring "
                    f"{inner_size + 8} bytes (a zlib bomb?)"
                )
            need = inner_size + 8
            body = bytearray(head)
            while len(body) < need:  # never more than the element declares (max_length > 0)
                chunk = inflater.decompress(inflater.unconsumed_tail, need - len(body))
                if not chunk:
                    break
                body += chunk
            if len(body) < inner_size + 8 or inner_kind != _MI_MATRIX:
                raise _Corrupt(f"compressed element at byte {pos} inflates to {len(body)} bytes, "
                               f"its element declares {inner_size + 8}")
            budget -= len(body)
            inner = _Reader(bytes(body[:need]), order)
            kind, inner_start, inner_end = inner_kind, 8, inner_size + 8
        if kind == _MI_MATRIX:
            name, array = _matrix(inner, inner_start, inner_end, want)
            names.append(name)
            if array is not None:
                arrays[name] = array
        pos = following
    return arrays, names


def read_mat(
    path: str | os.PathLike[str], *, what: str, hint: str, keys: Sequence[str]
) -> MatContents:
    """Load ``keys`` from a MATLAB v5/v7 ``.mat`` file; every key must be present.

    ``what`` names the file in messages ("face model", "BFM 2009 model"); ``hint`` says where
    the user gets or how they make the file, appended to missing/corrupt-file messages."""
    file = Path(path)
    source = f"{what} {file}"
    if not file.exists() and not file.is_symlink():
        folder = file.absolute().parent
        where = "" if folder.is_dir() else f" (the folder {folder} does not exist)"
        raise FaceModelError(f"{what} not found: {file}{where}. {hint}")
    if file.is_dir():
        raise FaceModelError(f"{source} is a folder; expected a .mat file. {hint}")
    try:
        data = read_regular_file(file, what, FACE_MODEL_MAX_BYTES, FaceModelError)
    except FileLimitError as exc:  # pragma: no cover - read_regular_file raises FaceModelError
        raise FaceModelError(str(exc)) from None
    size = len(data)
    if size == 0:
        raise FaceModelError(f"{source} is empty (0 bytes). {hint}")
    if data.startswith(b"\x89HDF") or data[512:516] == b"\x89HDF":
        raise FaceModelError(f"{source} is a MATLAB v7.3 (HDF5) file, which cannot be read "
                             "here; re-save it in MATLAB with save(..., '-v7')")
    try:
        arrays, found = parse_mat_v5(data, set(keys), source)
    except NotImplementedError:
        raise FaceModelError(
            f"{source} is a MATLAB v7.3 (HDF5) file, which cannot be read here; re-save it in "
            "MATLAB with save(..., '-v7')"
        ) from None
    except MemoryError:
        raise FaceModelError(f"{source}: reading it needs more memory than this machine has "
                             f"({size} bytes on disk). {hint}") from None
    except (_Corrupt, zlib.error, ValueError, struct.error) as exc:
        raise FaceModelError(
            f"{source} is truncated or corrupt ({size} bytes; expected MAT v5 data, found: "
            f"{exc}). {hint}"
        ) from None
    missing = [key for key in keys if key not in arrays]
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
