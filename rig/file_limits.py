"""Limits for reading untrusted files, and the one way to open and parse them.

Every reader of a user-supplied file (rig params, presets, sidecars, StyleRig files, face
models, checkpoints) opens it through :func:`open_regular_file` and parses JSON through
:func:`parse_json`. Each limit below is a named constant with the reason for its value, so a
crafted file is refused before anything is allocated from its header, and a legitimate file
is never near a limit.

Pure standard library: ``rig`` (and Blender's own process) uses it, ``neural`` builds on it.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Callable
from typing import IO, Any, NoReturn

from .errors import RigError

# ------------------------------------------------------------------ limits (bytes, counts)

JSON_MAX_BYTES = 4 << 20
"""Rig params (257 numbers), presets, sidecars, StyleRig and trainer JSON are a few KiB; 4 MiB
leaves room for long training logs in a sidecar and still refuses ``/dev/zero``-sized input."""

JSON_MAX_DEPTH = 32
"""The deepest JSON the project writes nests 4 levels (sidecar -> config -> list); 32 refuses
crafted 100 000-deep documents before Python's recursion limit is reached."""

JSON_MAX_INT_DIGITS = 30
"""The largest integer the project stores is a 64-bit seed or byte count (20 digits). Python
refuses to convert more than 4300 digits with a ValueError; 30 digits is refused here first,
with the file named."""

FACE_MODEL_MAX_BYTES = 2 << 30
"""Deep3DFaceRecon's BFM_model_front.mat is ~200 MB and BFM 2009's 01_MorphableModel.mat is
~240 MB (uncompressed MAT v5 is at most ~2x that); 2 GiB bounds every face-model input."""

MAT_MAX_DECOMPRESSED_BYTES = 2 << 30
"""The sum of every zlib-compressed MAT v5 element, decompressed: the same bound as the
uncompressed file (a zlib bomb inflates 1000:1)."""

MAT_MAX_INFLATE_RATIO = 64
"""Per compressed MAT element, decompressed bytes / compressed bytes beyond MAT_INFLATE_FREE_
BYTES: face-model bases are float data that zlib shrinks by ~1.1x, index arrays by ~4x; 64x
is only reached by runs of one byte value, i.e. a zlib bomb."""

MAT_INFLATE_FREE_BYTES = 16 << 20
"""Decompressed bytes every compressed MAT element may have regardless of its ratio (small
masks and index lists of zeros compress far better than 64x)."""

CHECKPOINT_MAX_BYTES = 8 << 30
"""An FFHQ-1024 StyleGAN2 .pkl is ~380 MB, an e4e .pt ~1.2 GB, a rosinality training .pt with
discriminator and optimiser ~1.5 GB: 8 GiB is beyond any real generator file."""

TEXT_MAX_BYTES = 16 << 20
"""Small text inputs (an average-W text file: 18 x 512 numbers ~ 200 KB)."""


class FileLimitError(RigError):
    """An input file is not a regular file, cannot be opened, or exceeds a limit."""


ErrorType = Callable[[str], Exception]


def _fail(error: ErrorType, message: str) -> NoReturn:
    raise error(message)


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def describe_os_error(path: str | os.PathLike[str], exc: OSError) -> str:
    """What went wrong opening ``path``, in words: missing file vs missing folder, a folder,
    permission denied; anything else names the OS's own reason."""
    path = os.fspath(path)
    if exc.errno == errno.ENOENT:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            return f"the folder {folder} does not exist"
        return "no such file"
    if exc.errno == errno.EISDIR:
        return "is a folder, not a file"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (cannot read the file)"
    if exc.errno == errno.ENOTDIR:
        return "a part of the path is a file, not a folder"
    return exc.strerror or str(exc)


def check_regular_file(
    path: str | os.PathLike[str], role: str, max_bytes: int | None,
    error: ErrorType = FileLimitError,
) -> int:
    """The size of ``path`` after checking, without opening it, that it is an existing
    regular file (not a folder, FIFO, device or socket) of at most ``max_bytes``. Cheap
    enough for a UI redraw; raises ``error`` naming the file and ``role`` ("rig params")."""
    label = os.fspath(path)
    try:
        info = os.stat(label)
    except OSError as exc:
        _fail(error, f"{label}: cannot read the {role}: {describe_os_error(label, exc)}")
    if not stat.S_ISREG(info.st_mode):
        _fail(error, f"{label}: expected the {role} as a regular file, found {_kind(info.st_mode)}")
    if max_bytes is not None and info.st_size > max_bytes:
        _fail(error, f"{label}: expected the {role} to be at most {max_bytes} bytes, found "
                     f"{info.st_size} bytes")
    return info.st_size


def open_regular_file(
    path: str | os.PathLike[str], role: str, max_bytes: int | None,
    error: ErrorType = FileLimitError,
) -> IO[bytes]:
    """Open ``path`` for binary reading, refusing anything that is not a regular file of at most
    ``max_bytes`` (None: any size) before it is opened.

    The stat check comes first; the open itself is non-blocking (a FIFO swapped in after the
    check cannot hang it) and the opened descriptor is checked again, so what is read is the
    regular file that was checked. Errors (``error``, default FileLimitError) name the file,
    the ``role`` and what was found: missing file or folder, folder, permission denied."""
    label = os.fspath(path)
    check_regular_file(label, role, max_bytes, error)
    try:
        fd = os.open(label, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        _fail(error, f"{label}: cannot read the {role}: {describe_os_error(label, exc)}")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            _fail(error, f"{label}: expected the {role} as a regular file, found "
                         f"{_kind(info.st_mode)}")
        if max_bytes is not None and info.st_size > max_bytes:
            _fail(error, f"{label}: expected the {role} to be at most {max_bytes} bytes, found "
                         f"{info.st_size} bytes")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(
    path: str | os.PathLike[str], role: str, max_bytes: int, error: ErrorType = FileLimitError
) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (see :func:`open_regular_file`);
    never reads more than ``max_bytes`` + 1 even if the file grows meanwhile."""
    label = os.fspath(path)
    with open_regular_file(label, role, max_bytes, error) as stream:
        try:
            # read(n) allocates n bytes up front: ask for what the file holds (+1 to notice
            # growth), never for the limit itself.
            size = os.fstat(stream.fileno()).st_size
            data = stream.read(min(max_bytes, size) + 1)
        except OSError as exc:
            _fail(error, f"{label}: cannot read the {role}: {describe_os_error(label, exc)}")
    if len(data) > max_bytes:
        _fail(error, f"{label}: expected the {role} to be at most {max_bytes} bytes, found more")
    return data


# ------------------------------------------------------------------ JSON


class _JSONRefusal(ValueError):
    pass


def _refuse_constant(name: str) -> NoReturn:
    raise _JSONRefusal(f"expected finite numbers, found {name}")


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > JSON_MAX_INT_DIGITS:
        raise _JSONRefusal(
            f"expected integers of at most {JSON_MAX_INT_DIGITS} digits, found one of {digits} "
            "digits"
        )
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _JSONRefusal(f"expected finite numbers, found {text} (beyond float range)")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _JSONRefusal(f"expected each key once, found {key!r} twice")
        out[key] = value
    return out


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), iteratively."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) \
            else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level > JSON_MAX_DEPTH:
            break
        todo.extend((child, level + 1) for child in children)
    return deepest


def parse_json(
    text: str | bytes, source: str, error: ErrorType = FileLimitError,
    max_bytes: int = JSON_MAX_BYTES, *, non_finite_as_floats: bool = False,
) -> Any:
    """Parse untrusted JSON: at most ``max_bytes``, nesting at most JSON_MAX_DEPTH, integers of
    at most JSON_MAX_INT_DIGITS digits, every object key once, no NaN/Infinity (with
    ``non_finite_as_floats`` they parse to float nan/inf for a caller that reports them by
    field). Any refusal raises ``error`` with one line starting with ``source``."""
    if len(text) > max_bytes:
        _fail(error, f"{source}: expected JSON of at most {max_bytes} bytes, found {len(text)}")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            _fail(error, f"{source}: expected UTF-8 JSON text, found undecodable bytes ({exc})")
    try:
        value = json.loads(
            text, object_pairs_hook=_unique_keys, parse_int=_bounded_int,
            parse_float=float if non_finite_as_floats else _finite_float,
            parse_constant=float if non_finite_as_floats else _refuse_constant,
        )
    except _JSONRefusal as exc:
        _fail(error, f"{source}: {exc}")
    except RecursionError:
        _fail(error, f"{source}: expected JSON nested at most {JSON_MAX_DEPTH} levels, found "
                     "deeper nesting")
    except json.JSONDecodeError as exc:
        _fail(error, f"{source}: expected JSON, found a syntax error ({exc})")
    except ValueError as exc:  # e.g. Python's own integer-string limit
        _fail(error, f"{source}: expected JSON, found {exc}")
    depth = _depth(value)
    if depth > JSON_MAX_DEPTH:
        _fail(error, f"{source}: expected JSON nested at most {JSON_MAX_DEPTH} levels, found "
                     f"more than {JSON_MAX_DEPTH}")
    return value


def read_json_file(
    path: str | os.PathLike[str], role: str, error: ErrorType = FileLimitError,
    max_bytes: int = JSON_MAX_BYTES, *, non_finite_as_floats: bool = False,
) -> Any:
    """A regular JSON file of at most ``max_bytes``, parsed by :func:`parse_json`."""
    data = read_regular_file(path, role, max_bytes, error)
    return parse_json(data, os.fspath(path), error, max_bytes,
                      non_finite_as_floats=non_finite_as_floats)
