"""Small safetensors files with numpy alone (Blender's bundled Python has no safetensors).

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header
length, a JSON header {name: {"dtype", "shape", "data_offsets": [start, end]}, optional
"__metadata__": {str: str}}, then the raw little-endian bytes. This writer pads the header
with spaces to a multiple of 8 like the reference implementation, so both read each other's
files. The reader trusts nothing: header length bounded by the file size and MAX_HEADER,
every tensor's offsets inside the data, its byte count equal to its shape and dtype, no
overlaps. Only float32 and int64 tensors (what the project's small caches hold).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from .atomic import atomic_open
from .errors import RigError

MAX_HEADER = 1 << 20
_DTYPES: dict[str, np.dtype] = {"F32": np.dtype("<f4"), "I64": np.dtype("<i8")}
_NAMES: dict[np.dtype, str] = {np.dtype("<f4"): "F32", np.dtype("<i8"): "I64"}


class TensorFileError(RigError):
    """A tensor file is damaged or holds something this reader does not accept."""


def write_tensor_file(
    path: str | os.PathLike[str], tensors: dict[str, np.ndarray], metadata: dict[str, str]
) -> None:
    """Write ``tensors`` (float32 or int64 arrays) and string ``metadata`` atomically."""
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    blobs, offset = [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        if data.dtype not in _NAMES:
            raise TensorFileError(f"{path}: tensor '{name}' has dtype {array.dtype}, "
                                  "expected float32 or int64")
        raw = data.tobytes()
        header[name] = {"dtype": _NAMES[data.dtype], "shape": list(data.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with atomic_open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        for raw in blobs:
            out.write(raw)


def read_tensor_file(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; TensorFileError names what is wrong."""
    source = Path(path)
    try:
        blob = source.read_bytes()
    except OSError as exc:
        raise TensorFileError(f"{source}: cannot read ({exc.strerror})") from None
    if len(blob) < 8:
        raise TensorFileError(f"{source}: expected a safetensors file, found {len(blob)} bytes")
    (size,) = struct.unpack("<Q", blob[:8])
    if size > min(MAX_HEADER, len(blob) - 8):
        raise TensorFileError(f"{source}: header of {size} bytes does not fit the file "
                              f"({len(blob)} bytes, at most {MAX_HEADER})")
    try:
        header = json.loads(blob[8 : 8 + size])
    except (ValueError, UnicodeDecodeError) as exc:
        raise TensorFileError(f"{source}: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise TensorFileError(f"{source}: header is not a JSON object")
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise TensorFileError(f"{source}: __metadata__ must map strings to strings")
    data = memoryview(blob)[8 + size :]
    tensors, spans = {}, []
    for name, entry in header.items():
        tensors[name] = _tensor(source, name, entry, data)
        spans.append(tuple(entry["data_offsets"]))
    spans.sort()
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:], strict=False)):
        raise TensorFileError(f"{source}: tensors overlap")
    return tensors, metadata


def _tensor(source: Path, name: str, entry: object, data: memoryview) -> np.ndarray:
    if not isinstance(entry, dict) or entry.get("dtype") not in _DTYPES:
        found = entry.get("dtype") if isinstance(entry, dict) else entry
        raise TensorFileError(f"{source}: tensor '{name}': expected dtype F32 or I64, "
                              f"found {found!r}")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)
            and isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= len(data)):
        raise TensorFileError(f"{source}: tensor '{name}': bad shape {shape!r} or offsets "
                              f"{offsets!r} (data is {len(data)} bytes)")
    dtype = _DTYPES[entry["dtype"]]
    count = 1
    for s in shape:
        count *= s
    if count * dtype.itemsize != offsets[1] - offsets[0]:
        raise TensorFileError(f"{source}: tensor '{name}': shape {shape} needs "
                              f"{count * dtype.itemsize} bytes, offsets give "
                              f"{offsets[1] - offsets[0]}")
    return np.frombuffer(data[offsets[0] : offsets[1]], dtype=dtype).reshape(shape).astype(
        dtype.newbyteorder("="))
