"""Allow-listed unpickling of model files: data only, never code (METHODS §1.6, §1.7).

NVIDIA ``.pkl`` snapshots embed the source of their networks and their own loader executes it.
This reader resolves only the globals a weights file needs, each to a checked stand-in:

- ``torch_utils.persistence._reconstruct_persistent_obj`` -> :class:`PersistentRecord`
  (class name, version, state); the embedded ``module_src`` is never read.
- ``dnnlib.util.EasyDict`` -> :class:`EasyDict`; ``dnnlib.tflib.network.Network`` (TF pkls)
  -> :class:`TFNetworkState`, the dict of the network's ``__getstate__``.
- ``collections.OrderedDict``, ``builtins.set``, ``_codecs.encode`` (latin1 only: how
  protocols 0-2 spell bytes); numpy ``dtype`` / ``ndarray`` / ``_reconstruct`` /
  ``_frombuffer`` / ``scalar`` (both ``numpy.core`` and ``numpy._core`` paths, no object
  dtypes); the torch tensor/parameter rebuild functions, each with its arguments checked
  (``torch.Tensor`` / ``Parameter`` resolve to non-callable tokens they accept);
  ``torch.storage._load_from_bytes`` -> ``torch.load(weights_only=True)``.

Any other global raises :class:`UnsafePickleError` naming it. Before unpickling, the opcode
stream is scanned without building anything: truncation, length fields larger than the file,
sparse or undefined memo indices, stack underflow, runaway stack/mark depth, persistent ids,
out-of-band buffers and extension-registry opcodes are all refused up front.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import pickletools
from collections import OrderedDict
from collections.abc import Callable
from typing import IO, Any, BinaryIO, cast

import numpy as np
import torch

from ..errors import CheckpointError, UnsafePickleError

# Generous bounds: real snapshots nest a few dozen levels and batch at most 1000 items per
# APPENDS/SETITEMS, so anything near these is a crafted file.
MAX_STACK_DEPTH = 100_000
MAX_MARK_DEPTH = 1_000
HIGHEST_PROTOCOL = 5

_REFUSED_OPCODES = {
    "PERSID": "persistent ids",
    "BINPERSID": "persistent ids",
    "EXT1": "the copyreg extension registry",
    "EXT2": "the copyreg extension registry",
    "EXT4": "the copyreg extension registry",
    "NEXT_BUFFER": "out-of-band buffers",
    "READONLY_BUFFER": "out-of-band buffers",
}
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}


class PersistentRecord:
    """One NVIDIA persistent-class object, as data.

    ``state`` is the pickled ``nn.Module.__dict__`` (``_parameters``, ``_buffers``,
    ``_modules`` of nested records, ``_init_kwargs``, plain attributes).
    """

    __slots__ = ("class_name", "version", "state")

    def __init__(self, class_name: str, version: int, state: dict[str, Any]) -> None:
        self.class_name = class_name
        self.version = version
        self.state = state

    def __setstate__(self, state: object) -> None:
        raise UnsafePickleError("the pickle applies BUILD to a persistent object; refused")

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name!r}, version={self.version})"


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a dict with attribute reads."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class TFNetworkState(dict):
    """Stand-in for ``dnnlib.tflib.network.Network``: holds its pickled state dict."""

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict):
            raise CheckpointError(
                f"TF Network state must be a dict, found {type(state).__name__}"
            )
        self.update(state)


def _reconstruct_persistent_obj(meta: object) -> PersistentRecord:
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"persistent object meta must be a dict, found {type(meta).__name__}"
        )
    if meta.get("type") != "class":
        raise CheckpointError(
            f"persistent object meta type must be 'class', found {meta.get('type')!r}"
        )
    class_name, version, state = meta.get("class_name"), meta.get("version"), meta.get("state")
    if not (isinstance(class_name, str) and isinstance(version, int) and isinstance(state, dict)):
        raise CheckpointError(
            "persistent object meta needs class_name (str), version (int) and state (dict); "
            f"found {type(class_name).__name__}, {type(version).__name__}, {type(state).__name__}"
        )
    return PersistentRecord(class_name, version, state)


def _numpy_multiarray() -> Any:
    try:
        return importlib.import_module("numpy._core.multiarray")  # numpy >= 1.26
    except ImportError:
        return importlib.import_module("numpy.core.multiarray")


def _checked_dtype(obj: object, align: object = False, copy: object = False) -> np.dtype:
    if not isinstance(obj, str) or obj.startswith("O"):
        raise UnsafePickleError(f"numpy.dtype({obj!r}) refused: only numeric type codes")
    dtype = np.dtype(obj, align=bool(align), copy=bool(copy))
    if dtype.hasobject:
        raise UnsafePickleError(f"numpy.dtype({obj!r}) refused: object dtypes are not allowed")
    return dtype


def _checked_ndarray_reconstruct(subtype: object, shape: object, dtype: object) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"numpy _reconstruct of {subtype!r} refused: only numpy.ndarray")
    return _numpy_multiarray()._reconstruct(np.ndarray, shape, dtype)


def _checked_frombuffer(buffer: object, dtype: object, shape: object, order: object) -> np.ndarray:
    # Protocol 5 spells arrays as numpy's _frombuffer(bytes, dtype, shape, order).
    if not isinstance(buffer, (bytes, bytearray)) or not isinstance(dtype, np.dtype):
        raise UnsafePickleError(f"numpy _frombuffer of {type(buffer).__name__} refused")
    if dtype.hasobject or order not in ("C", "F"):
        raise UnsafePickleError(f"numpy _frombuffer with dtype {dtype} order {order!r} refused")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)  # type: ignore[call-overload]


def _checked_scalar(dtype: object, data: object = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise UnsafePickleError(f"numpy scalar({dtype!r}, {type(data).__name__}) refused")
    return _numpy_multiarray().scalar(dtype, data)


def _checked_latin1_encode(
    text: object, encoding: object = "utf-8", errors: object = None
) -> bytes:
    # Protocols 0-2 spell bytes as _codecs.encode(str, 'latin1'); other codecs are refused
    # because a codec lookup may import modules.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors is not None:
        raise UnsafePickleError(f"_codecs.encode(..., {encoding!r}) refused: only latin1 text")
    return text.encode("latin1")


class _TypeRef:
    """What the globals ``torch.Tensor`` / ``torch.nn.parameter.Parameter`` resolve to: a
    non-callable token, accepted only as ``_rebuild_from_type_v2``'s target type."""

    __slots__ = ("cls",)

    def __init__(self, cls: type) -> None:
        self.cls = cls


_TENSOR_REF = _TypeRef(torch.Tensor)
_PARAMETER_REF = _TypeRef(torch.nn.Parameter)


def _require_no_hooks(hooks: object, what: str) -> None:
    if hooks:
        raise UnsafePickleError(f"{what} carries backward hooks; refused")


def _checked_rebuild_tensor_v2(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object,
    backward_hooks: object,
    metadata: object = None,
) -> torch.Tensor:
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(f"tensor rebuild from a {type(storage).__name__} refused")
    ints = (storage_offset, *tuple(size or ()), *tuple(stride or ()))  # type: ignore[arg-type]
    if not all(isinstance(v, int) for v in ints) or not isinstance(requires_grad, bool):
        raise UnsafePickleError("tensor rebuild with non-integer geometry refused")
    _require_no_hooks(backward_hooks, "a tensor")
    # metadata: torch's per-tensor flags (e.g. the conjugate bit), a dict of bools.
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, bool) for v in metadata.values())
    ):
        raise UnsafePickleError(f"tensor rebuild with metadata {metadata!r:.80} refused")
    return torch._utils._rebuild_tensor_v2(
        storage, storage_offset, size, stride, requires_grad, OrderedDict(), metadata
    )


def _checked_rebuild_parameter(
    data: object, requires_grad: object, backward_hooks: object, state: object = None
) -> torch.nn.Parameter:
    # ``state`` (Python attributes someone set on the parameter) is dropped: it is already
    # plain allow-listed data, and no weight depends on it.
    if not isinstance(data, torch.Tensor) or not isinstance(requires_grad, bool):
        raise UnsafePickleError(f"parameter rebuild from {type(data).__name__} refused")
    _require_no_hooks(backward_hooks, "a parameter")
    return torch.nn.Parameter(data, requires_grad=requires_grad)


def _checked_rebuild_from_type_v2(
    func: object, new_type: object, args: object, state: object
) -> torch.Tensor:
    # Written for tensors carrying Python attributes; those (``state``) are dropped.
    if func not in _TENSOR_REBUILDERS or not isinstance(new_type, _TypeRef):
        raise UnsafePickleError(f"tensor rebuild via {func!r} as {new_type!r} refused")
    if not isinstance(args, tuple):
        raise UnsafePickleError("tensor rebuild with non-tuple arguments refused")
    tensor = func(*args)  # type: ignore[operator]
    return tensor if type(tensor) is new_type.cls else tensor.as_subclass(new_type.cls)


def _checked_load_from_bytes(blob: object) -> object:
    if not isinstance(blob, bytes):
        raise UnsafePickleError(f"torch storage from {type(blob).__name__} refused")
    try:
        storage = torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise UnsafePickleError(f"embedded torch storage refused by weights_only: {exc}") from exc
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(
            f"embedded torch blob holds a {type(storage).__name__}, not a storage"
        )
    return storage


_TENSOR_REBUILDERS = (_checked_rebuild_tensor_v2, _checked_rebuild_parameter)

_ALLOWED: dict[tuple[str, str], Callable[..., Any] | type | _TypeRef] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib.tflib.network", "Network"): TFNetworkState,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,  # protocols 0-2 written by Python 3 use Python 2 names
    ("_codecs", "encode"): _checked_latin1_encode,
    ("numpy", "dtype"): _checked_dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "_reconstruct"): _checked_ndarray_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _checked_ndarray_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _checked_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _checked_frombuffer,
    ("numpy.core.multiarray", "scalar"): _checked_scalar,
    ("numpy._core.multiarray", "scalar"): _checked_scalar,
    ("torch._utils", "_rebuild_tensor_v2"): _checked_rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _checked_rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _checked_rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _checked_rebuild_from_type_v2,
    ("torch", "Tensor"): _TENSOR_REF,
    ("torch.nn.parameter", "Parameter"): _PARAMETER_REF,
    ("torch.storage", "_load_from_bytes"): _checked_load_from_bytes,
}
ALLOWED_GLOBALS = frozenset(f"{m}.{n}" for m, n in _ALLOWED)


class _BoundedReader:
    """File view for the opcode scan: a read longer than what is left is a truncated file."""

    def __init__(self, stream: BinaryIO, label: str) -> None:
        self._stream = stream
        self._label = label
        start = stream.tell()
        self._end = stream.seek(0, os.SEEK_END)
        stream.seek(start)

    def _check(self, n: int) -> None:
        left = self._end - self._stream.tell()
        if n > left:
            raise CheckpointError(
                f"{self._label}: pickle is truncated: an opcode at byte {self._stream.tell()} "
                f"needs {n} bytes, only {left} remain"
            )

    def read(self, n: int = -1) -> bytes:
        if n >= 0:
            self._check(n)
        return self._stream.read(n)

    def readline(self) -> bytes:
        return self._stream.readline()

    def tell(self) -> int:
        return self._stream.tell()


def scan_opcodes(stream: BinaryIO, label: str) -> None:
    """Validate the opcode stream of one pickle starting at the stream's position.

    Builds nothing and resolves no global. Raises CheckpointError (malformed / truncated) or
    UnsafePickleError (opcodes a weights file never needs).
    """
    memo_size = 0
    depth = 0
    marks: list[int] = []
    try:
        reader = cast(IO[bytes], _BoundedReader(stream, label))
        for op, arg, pos in pickletools.genops(reader):
            name = op.name
            where = f"{label}: opcode {name} at byte {pos}"
            if name in _REFUSED_OPCODES:
                raise UnsafePickleError(f"{where} uses {_REFUSED_OPCODES[name]}; refused")
            number = arg if isinstance(arg, int) else 0  # PROTO and memo opcodes carry ints
            if name == "PROTO" and number > HIGHEST_PROTOCOL:
                raise CheckpointError(f"{where}: unsupported pickle protocol {arg}")
            if name in _MEMO_PUT:
                if number > memo_size:
                    raise CheckpointError(f"{where}: memo index {arg} skips ahead of {memo_size}")
                memo_size = max(memo_size, number + 1)
            elif name == "MEMOIZE":
                memo_size += 1
            elif name in _MEMO_GET and number >= memo_size:
                raise CheckpointError(f"{where}: memo index {arg} was never stored")
            elif name == "STOP" and (depth != 1 or marks):
                raise CheckpointError(f"{where}: stack must hold exactly one object, not {depth}")
            before, after = op.stack_before, op.stack_after
            if pickletools.markobject in before:
                if not marks:
                    raise CheckpointError(f"{where}: no MARK on the stack")
                depth = marks.pop() - before.index(pickletools.markobject)
            elif name == "POP" and marks and marks[-1] == depth - 1:
                marks.pop()
                depth -= 1
            else:
                depth -= len(before)
            if depth < 0:
                raise CheckpointError(f"{where}: stack underflow")
            if pickletools.markobject in after:
                marks.append(depth)
            depth += len(after)
            if depth > MAX_STACK_DEPTH or len(marks) > MAX_MARK_DEPTH:
                raise CheckpointError(
                    f"{where}: stack depth {depth} / mark depth {len(marks)} exceeds the limits "
                    f"{MAX_STACK_DEPTH} / {MAX_MARK_DEPTH} of a weights file"
                )
    except ValueError as exc:
        # genops reports an unknown opcode or a stream that ends before STOP.
        raise CheckpointError(f"{label}: not a complete pickle ({exc})") from exc


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, stream: BinaryIO, label: str) -> None:
        super().__init__(stream)
        self._label = label

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._label}: the pickle names the global '{module}.{name}', which is not on "
                "the allow-list of weights-file types; refused before anything ran"
            ) from None

    def persistent_load(self, pid: object) -> Any:
        raise UnsafePickleError(f"{self._label}: persistent id {pid!r} refused")


def load_pickle(stream: BinaryIO, label: str) -> Any:
    """Unpickle one object from a seekable binary stream through the allow-list.

    ``label`` (usually the file path) starts every error message.
    """
    start = stream.tell()
    scan_opcodes(stream, label)
    stream.seek(start)
    try:
        return _AllowListUnpickler(stream, label).load()
    except CheckpointError as exc:
        if str(exc).startswith(label):
            raise
        raise type(exc)(f"{label}: {exc}") from exc
    except Exception as exc:  # e.g. APPEND onto a non-list: a damaged or crafted file
        raise CheckpointError(f"{label}: malformed pickle ({type(exc).__name__}: {exc})") from exc


def load_pickle_file(path: str | os.PathLike[str]) -> Any:
    """:func:`load_pickle` on a file path."""
    with open(path, "rb") as stream:
        return load_pickle(stream, os.fspath(path))
