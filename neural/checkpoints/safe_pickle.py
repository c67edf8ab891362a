"""Allow-listed unpickling of model files: data only, never code.

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
  ``torch.storage._load_from_bytes`` -> the bounded legacy torch-file reader.

Any other global raises :class:`UnsafePickleError` naming it. Before unpickling, the opcode
stream is scanned without building anything: truncation, length fields larger than the file,
sparse or undefined memo indices, stack underflow, runaway stack/mark depth, persistent ids
(except for torch files, whose reader resolves them to storages it read and checked),
out-of-band buffers and extension-registry opcodes are all refused up front.

What the allow-listed constructors may build is bounded too: numpy arrays come only from
numpy's own pickle spelling (``_reconstruct(ndarray, (0,), ...)`` + its state, whose data
must match its shape), tensors only as views that lie inside their storage with no zero or
overlapping strides, embedded torch storages through :mod:`.torch_file`'s bounded reader.
After loading, :func:`check_materialised` walks the result once and refuses what downstream
code cannot afford: more than MAX_MATERIALISED_BYTES when every shared reference is counted
as a copy (a "billion laughs" memo pickle is tiny on disk but exponential when traversed),
nesting beyond MAX_NESTING_DEPTH, cycles, and integers wider than MAX_INT_BITS.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import pickle
import pickletools
from collections import OrderedDict
from collections.abc import Callable
from typing import IO, Any, NoReturn, cast

import numpy as np
import torch

from ...rig.file_limits import CHECKPOINT_MAX_BYTES, open_regular_file
from ..errors import CheckpointError, UnsafePickleError

# Generous bounds: real snapshots nest a few dozen levels and batch at most 1000 items per
# APPENDS/SETITEMS, so anything near these is a crafted file.
MAX_STACK_DEPTH = 100_000
MAX_MARK_DEPTH = 1_000
HIGHEST_PROTOCOL = 5
MAX_NESTING_DEPTH = 200
"""An NVIDIA snapshot nests ~25 levels (snapshot -> G_ema -> synthesis -> block -> layer ->
_parameters -> tensor, each a record + state dict); 200 refuses 20 000-deep lists before any
recursive consumer (repr, JSON, config checks) meets Python's recursion limit."""
MAX_MATERIALISED_BYTES = 256 << 20
"""Python objects a pickle builds besides tensor/array data (which is bounded by the file's
own bytes), counted with every memo reuse as a full copy: a real snapshot's structure is a
few MB; 256 MiB refuses exponential "billion laughs" structures before they are traversed."""
MAX_INT_BITS = 128
"""Weights files store sizes, versions and seeds (64 bits); the torch magic number is 80
bits. Wider integers only serve to make str()/JSON of a value fail or hang."""
_OBJECT_BYTES = 64  # charged per object, container slot or leaf (the order of CPython's own)

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
    # numpy pickles an array as _reconstruct(ndarray, (0,), b'b') + BUILD(version, shape,
    # dtype, fortran, data); numpy's __setstate__ checks that the data matches the shape, so
    # the empty start is the only shape accepted here (anything else allocates at will).
    if subtype is not _NDARRAY_REF:
        raise UnsafePickleError(f"numpy _reconstruct of {subtype!r} refused: only numpy.ndarray")
    if shape != (0,) or dtype not in (b"b", "b"):
        raise UnsafePickleError(
            f"numpy _reconstruct(ndarray, {shape!r:.40}, {dtype!r:.20}) refused: numpy itself "
            "writes (0,) and b'b' and sets the shape from the data"
        )
    return _numpy_multiarray()._reconstruct(np.ndarray, (0,), b"b")


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

    def __call__(self, *args: object, **kwargs: object) -> NoReturn:
        raise UnsafePickleError(
            f"the pickle calls {self.cls.__module__}.{self.cls.__name__} directly; refused "
            "(weights files only name it as the type of what they rebuild)"
        )


_TENSOR_REF = _TypeRef(torch.Tensor)
_PARAMETER_REF = _TypeRef(torch.nn.Parameter)
_NDARRAY_REF = _TypeRef(np.ndarray)


class StorageType:
    """What a torch file's storage class global (``torch.FloatStorage``, ...) resolves to: a
    non-callable token naming the dtype, accepted only inside a torch file's persistent ids."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name = name
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"torch.{self.name}"


STORAGE_TYPES = {
    name: StorageType(name, dtype)
    for name, dtype in (
        ("FloatStorage", torch.float32), ("DoubleStorage", torch.float64),
        ("HalfStorage", torch.float16), ("BFloat16Storage", torch.bfloat16),
        ("LongStorage", torch.int64), ("IntStorage", torch.int32),
        ("ShortStorage", torch.int16), ("CharStorage", torch.int8),
        ("ByteStorage", torch.uint8), ("BoolStorage", torch.bool),
    )
}


class Namespace(argparse.Namespace):
    """Stand-in for ``argparse.Namespace`` (rosinality training ``args``): its state must be a
    dict of str keys; it is an ``argparse.Namespace``, so ``vars()`` reads it."""

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise CheckpointError(
                f"argparse.Namespace state must be a dict of names, found {type(state).__name__}"
            )
        self.__dict__.update(state)


def _require_no_hooks(hooks: object, what: str) -> None:
    if hooks:
        raise UnsafePickleError(f"{what} carries backward hooks; refused")


def _check_view(
    storage: torch.storage.TypedStorage | torch.UntypedStorage, offset: int,
    size: tuple[int, ...], stride: tuple[int, ...],
) -> None:
    """A tensor view must lie inside its storage and hold no more elements than it: no
    negative sizes, no zero or negative strides on a dimension longer than 1 (as_strided
    tricks that turn a few bytes into gigabytes once made contiguous). Python ints: no
    overflow."""
    available = storage._size() if isinstance(storage, torch.storage.TypedStorage) \
        else storage.nbytes()
    numel = 1
    extent = offset
    for n, step in zip(size, stride, strict=True):
        if n < 0:
            raise UnsafePickleError(f"tensor rebuild with a negative size {size} refused")
        numel *= n
        if n > 1:
            if step <= 0:
                raise UnsafePickleError(
                    f"tensor rebuild with size {list(size)} and stride {list(stride)} refused: "
                    "zero or negative strides repeat storage elements"
                )
            extent += (n - 1) * step
    if offset < 0 or (numel and extent >= available) or numel > available:
        raise UnsafePickleError(
            f"tensor rebuild of size {list(size)}, stride {list(stride)}, offset {offset} "
            f"refused: it needs more than the {available} elements its storage holds"
        )


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
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)):
        raise UnsafePickleError("tensor rebuild needs size and stride tuples of one length")
    ints = (storage_offset, *size, *stride)
    if not all(type(v) is int for v in ints) or not isinstance(requires_grad, bool):
        raise UnsafePickleError("tensor rebuild with non-integer geometry refused")
    _check_view(storage, storage_offset, size, stride)  # type: ignore[arg-type]
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
    # A storage pickled on its own is a legacy torch.save blob; the bounded torch-file reader
    # checks its declared element counts against the bytes present.
    from .torch_file import read_legacy_torch

    if not isinstance(blob, bytes):
        raise UnsafePickleError(f"torch storage from {type(blob).__name__} refused")
    storage = read_legacy_torch(io.BytesIO(blob), "embedded torch storage", len(blob))
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(
            f"embedded torch blob holds a {type(storage).__name__}, not a storage"
        )
    return storage


_TENSOR_REBUILDERS = (_checked_rebuild_tensor_v2, _checked_rebuild_parameter)

_ALLOWED: dict[tuple[str, str], Callable[..., Any] | type | _TypeRef | StorageType] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib.tflib.network", "Network"): TFNetworkState,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,  # protocols 0-2 written by Python 3 use Python 2 names
    ("_codecs", "encode"): _checked_latin1_encode,
    ("numpy", "dtype"): _checked_dtype,
    ("numpy", "ndarray"): _NDARRAY_REF,
    ("argparse", "Namespace"): Namespace,
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
_ALLOWED.update({("torch", name): token for name, token in STORAGE_TYPES.items()})
ALLOWED_GLOBALS = frozenset(f"{m}.{n}" for m, n in _ALLOWED)


class _BoundedReader:
    """File view for the opcode scan: a read longer than what is left is a truncated file."""

    def __init__(self, stream: IO[bytes], label: str) -> None:
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


def scan_opcodes(stream: IO[bytes], label: str, persistent_ids: bool = False) -> None:
    """Validate the opcode stream of one pickle starting at the stream's position; leaves the
    stream just after its STOP.

    Builds nothing and resolves no global. Raises CheckpointError (malformed / truncated) or
    UnsafePickleError (opcodes a weights file never needs; ``persistent_ids`` allows the
    ones torch files use for their storages).
    """
    memo_size = 0
    depth = 0
    marks: list[int] = []
    try:
        reader = cast(IO[bytes], _BoundedReader(stream, label))
        for op, arg, pos in pickletools.genops(reader):
            name = op.name
            where = f"{label}: opcode {name} at byte {pos}"
            if name in _REFUSED_OPCODES and not (persistent_ids and name == "BINPERSID"):
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
    def __init__(self, stream: IO[bytes], label: str,
                 persistent: Callable[[object], Any] | None = None,
                 overrides: dict[tuple[str, str], Any] | None = None) -> None:
        super().__init__(stream)
        self._label = label
        self._persistent = persistent
        self._overrides = overrides or {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._overrides:
            return self._overrides[(module, name)]
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._label}: the pickle names the global '{module}.{name}', which is not on "
                "the allow-list of weights-file types; refused before anything ran"
            ) from None

    def persistent_load(self, pid: object) -> Any:
        if self._persistent is None:
            raise UnsafePickleError(f"{self._label}: persistent id {pid!r:.80} refused")
        return self._persistent(pid)


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters) for error messages."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def load_pickle(
    stream: IO[bytes], label: str, persistent: Callable[[object], Any] | None = None,
    overrides: dict[tuple[str, str], Any] | None = None,
    on_scanned: Callable[[int], None] | None = None,
) -> Any:
    """Unpickle one object from a seekable binary stream through the allow-list, then
    :func:`check_materialised` it; the stream is left just after the pickle.

    ``label`` (usually the file path) starts every error message. ``persistent`` resolves
    persistent ids (torch files' storages; without it they are refused); ``overrides``
    replaces allow-list entries for this load; ``on_scanned`` is told where the pickle ends
    (after the opcode scan, before anything is built).
    """
    start = stream.tell()
    scan_opcodes(stream, label, persistent_ids=persistent is not None)
    end = stream.tell()
    if on_scanned is not None:
        on_scanned(end)
    stream.seek(start)
    try:
        value = _AllowListUnpickler(stream, label, persistent, overrides).load()
    except CheckpointError as exc:
        if str(exc).startswith(label):
            raise
        raise type(exc)(f"{label}: {exc}") from exc
    except MemoryError:
        raise CheckpointError(
            f"{label}: the pickle asks for more memory than is available; a weights file of "
            "this size never does"
        ) from None
    except Exception as exc:  # e.g. APPEND onto a non-list: a damaged or crafted file
        raise CheckpointError(f"{label}: malformed pickle ({one_line(exc)})") from exc
    stream.seek(end)
    check_materialised(value, label)
    return value


def _children(value: Any) -> tuple[Any, ...] | None:
    """What a built pickle value holds (None: a leaf)."""
    if isinstance(value, dict):
        return (*value.keys(), *value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(value)
    if isinstance(value, PersistentRecord):
        return (value.class_name, value.version, value.state)
    if isinstance(value, Namespace):
        return tuple(vars(value).values())
    return None


def _leaf_bytes(value: Any, label: str) -> int:
    if isinstance(value, (str, bytes, bytearray)):
        return _OBJECT_BYTES + len(value)
    if type(value) is int and value.bit_length() > MAX_INT_BITS:
        raise CheckpointError(
            f"{label}: expected integers of at most {MAX_INT_BITS} bits in a weights file, "
            f"found one of {value.bit_length()} bits"
        )
    return _OBJECT_BYTES  # tensors and arrays: their data is bounded by the file's bytes


def check_materialised(value: Any, label: str) -> None:
    """Refuse a built pickle value whose tree (every shared reference counted as a copy)
    exceeds MAX_MATERIALISED_BYTES, nests deeper than MAX_NESTING_DEPTH or has a cycle.

    One iterative pass over the object graph (each object visited once; sizes summed with
    Python ints), so the check itself costs what the file holds, not what it expands to."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    open_: set[int] = set()
    keep: list[Any] = []  # ids stay valid while their objects are alive
    todo: list[tuple[Any, bool]] = [(value, False)]
    while todo:
        item, done = todo.pop()
        key = id(item)
        children = _children(item)
        if children is None:
            if key not in sizes:
                sizes[key], depths[key] = _leaf_bytes(item, label), 0
                keep.append(item)
            continue
        if done:
            open_.discard(key)
            sizes[key] = _OBJECT_BYTES * (1 + len(children)) + sum(
                sizes[id(c)] for c in children
            )
            depths[key] = 1 + max((depths[id(c)] for c in children), default=0)
            if sizes[key] > MAX_MATERIALISED_BYTES:
                raise CheckpointError(
                    f"{label}: expected a weights-file structure of at most "
                    f"{MAX_MATERIALISED_BYTES} bytes with shared references expanded, found "
                    f"{sizes[key]} bytes (a memo-reference bomb); refused before use"
                )
            if depths[key] > MAX_NESTING_DEPTH:
                raise CheckpointError(
                    f"{label}: expected objects nested at most {MAX_NESTING_DEPTH} levels in a "
                    f"weights file, found deeper nesting; refused before use"
                )
            continue
        if key in sizes:
            continue
        if key in open_:
            raise CheckpointError(f"{label}: the pickle holds a reference cycle; a weights "
                                  "file never does")
        if len(open_) > MAX_NESTING_DEPTH:
            raise CheckpointError(
                f"{label}: expected objects nested at most {MAX_NESTING_DEPTH} levels in a "
                f"weights file, found deeper nesting; refused before use"
            )
        open_.add(key)
        keep.append(item)
        todo.append((item, True))
        todo.extend((child, False) for child in children if id(child) not in sizes)


def load_pickle_file(path: str | os.PathLike[str]) -> Any:
    """:func:`load_pickle` on a file path (a regular file of at most CHECKPOINT_MAX_BYTES)."""
    label = os.fspath(path)
    with open_regular_file(label, "checkpoint", CHECKPOINT_MAX_BYTES, CheckpointError) as stream:
        return load_pickle(stream, label)
