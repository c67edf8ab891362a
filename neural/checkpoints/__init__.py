"""Safe readers for StyleGAN2 checkpoints; the format is detected from the file's content.

``load_generator(path)`` accepts NVIDIA PyTorch ``.pkl`` snapshots (stylegan2-ada-pytorch,
stylegan3 repo's StyleGAN2), original TensorFlow StyleGAN2 ``.pkl``, rosinality ``.pt``
(converted or training), encoder4editing checkpoints (their decoder) and the project's own
``.safetensors`` + ``.json`` pair, and returns one :class:`LoadedGenerator` in NVIDIA naming.
No file's code is ever run: pickles and torch files go through an allow-listed, bounded
unpickler (torch files' storages are read and checked by :mod:`.torch_file`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol, TypeVar

from ...rig.errors import RigError
from ...rig.file_limits import CHECKPOINT_MAX_BYTES, open_regular_file
from ..errors import CheckpointError, NeuralError
from .e4e import is_e4e, read_e4e
from .loaded import (
    E4E,
    NVIDIA_PKL,
    PROJECT,
    ROSINALITY,
    TF_PKL,
    LoadedGenerator,
    ReadResult,
)
from .nvidia_pkl import read_nvidia_pkl
from .project_format import read_project, save_project
from .rosinality import load_torch_checkpoint, read_rosinality
from .safe_pickle import TFNetworkState, load_pickle_file, one_line
from .tf_pkl import read_tf_pkl

__all__ = [
    "E4E",
    "NVIDIA_PKL",
    "PROJECT",
    "ROSINALITY",
    "TF_PKL",
    "LoadedGenerator",
    "detect_container",
    "file_sha256",
    "guarded_read",
    "load_generator",
    "read_checkpoint",
    "save_project",
]

T = TypeVar("T")

# torch.save's legacy (pre-zip) files start with this pickled magic number (protocol 2).
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."
_NOT_CHECKPOINTS = {
    b"\x89PNG\r\n\x1a\n": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip archive (unpack it first)",
    b"\x89HDF": "an HDF5 file",
    b"{": "a JSON/text file",
}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (a regular file of at most CHECKPOINT_MAX_BYTES)."""
    digest = hashlib.sha256()
    with open_regular_file(path, "checkpoint", CHECKPOINT_MAX_BYTES, CheckpointError) as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def detect_container(path: str | os.PathLike[str]) -> str:
    """'pickle', 'torch' (zip or legacy torch.save) or 'safetensors', from the first bytes.
    Folders, FIFOs, devices, missing files or folders and unreadable files are refused by
    name before anything is read."""
    label = os.fspath(path)
    with open_regular_file(label, "checkpoint", CHECKPOINT_MAX_BYTES, CheckpointError) as stream:
        size = os.fstat(stream.fileno()).st_size
        head = stream.read(16)
    if not head:
        raise CheckpointError(f"{label}: the file is empty")
    if head.startswith(b"PK\x03\x04") or head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if 8 + header_len <= size:
            return "safetensors"
        raise CheckpointError(
            f"{label}: truncated safetensors file (header of {header_len} bytes, file {size} bytes)"
        )
    for magic, what in _NOT_CHECKPOINTS.items():
        if head.startswith(magic):
            raise CheckpointError(f"{label}: this is {what}, not a model checkpoint")
    # The file's bytes are never echoed: a path sent to the worker may be any file.
    raise CheckpointError(
        f"{label}: unknown file format: expected a StyleGAN2 .pkl (NVIDIA or TensorFlow), a "
        "rosinality/e4e .pt or a converted .safetensors, found none of their signatures"
    )


def _some_keys(data: dict[object, object], shown: int = 8) -> str:
    """The first keys of a dict, for a message (a crafted file may hold millions)."""
    keys = sorted(str(k)[:40] for k in list(data)[:1000])
    more = f" and {len(data) - shown} more" if len(data) > shown else ""
    return f"{keys[:shown]}{more}"


def _read_pickle(path: Path, label: str) -> tuple[str, ReadResult]:
    data = load_pickle_file(path)
    if isinstance(data, dict) and "G_ema" in data:
        return NVIDIA_PKL, read_nvidia_pkl(data, label)
    if isinstance(data, TFNetworkState) or (
        isinstance(data, tuple) and any(isinstance(x, TFNetworkState) for x in data)
    ):
        return TF_PKL, read_tf_pkl(data, label)
    found = f"a dict with keys {_some_keys(data)}" if isinstance(data, dict) else (
        f"a {type(data).__name__}"
    )
    raise CheckpointError(
        f"{label}: a pickle, but not a StyleGAN2 snapshot: expected an NVIDIA dict with 'G_ema' "
        f"or a TF (G, D, Gs) tuple, found {found}"
    )


def _read_torch(path: Path, label: str) -> tuple[str, ReadResult]:
    ckpt = load_torch_checkpoint(path)
    if is_e4e(ckpt):
        return E4E, read_e4e(ckpt, label)
    if isinstance(ckpt, dict) and "g_ema" in ckpt:
        return ROSINALITY, read_rosinality(ckpt, label)
    found = f"keys {_some_keys(ckpt)}" if isinstance(ckpt, dict) else type(ckpt).__name__
    raise CheckpointError(
        f"{label}: a torch checkpoint, but neither rosinality ('g_ema') nor e4e "
        f"('state_dict' with decoder.*): found {found}"
    )


def guarded_read(label: str, read: Callable[[], T]) -> T:
    """``read()``, with every exception that parsing untrusted bytes can raise (a structure
    of the wrong types, recursion, overflow, memory) turned into a one-line CheckpointError
    naming the file; the project's own errors pass through unchanged."""
    try:
        return read()
    except (NeuralError, RigError):
        raise
    except MemoryError:
        raise CheckpointError(
            f"{label}: reading it needs more memory than this machine has; a model file of this "
            "size never does (damaged or crafted file)"
        ) from None
    except (TypeError, AttributeError, ValueError, KeyError, IndexError, RecursionError,
            OverflowError, struct.error, UnicodeError) as exc:
        raise CheckpointError(
            f"{label}: malformed checkpoint: expected the structure its format defines, found "
            f"{one_line(exc)}"
        ) from None


class _Digested(Protocol):
    @property
    def sha256(self) -> str: ...


Loaded = TypeVar("Loaded", bound=_Digested)
ContainerReader = Callable[[Path, str], Loaded]
"""(path, label) -> a loaded generator; its ``sha256`` "" means: the file's own digest."""


def read_checkpoint(
    path: str | os.PathLike[str], readers: Mapping[str, ContainerReader[Loaded]], expected: str
) -> Loaded:
    """The one dispatch of every generator reader: the container from the file's first bytes
    (``detect_container``), then ``readers[container]`` under ``guarded_read``; a container
    with no reader is refused naming ``expected``. A result without a digest gets the file's.
    """
    path = Path(path)
    label = str(path)
    container = detect_container(path)
    reader = readers.get(container)
    if reader is None:
        raise CheckpointError(f"{label}: a {container} file; expected {expected}")
    loaded = guarded_read(label, lambda: reader(path, label))
    if not loaded.sha256:
        loaded = dataclasses.replace(loaded, sha256=file_sha256(path))  # type: ignore[type-var]
    return loaded


def _generator_reader(read: Callable[[Path, str], tuple[str, ReadResult]]
                      ) -> ContainerReader[LoadedGenerator]:
    def reader(path: Path, label: str) -> LoadedGenerator:
        source_format, result = read(path, label)
        return LoadedGenerator(result.config, result.state_dict, source_format, "",
                               result.extras)
    return reader


def _read_project_generator(path: Path, label: str) -> LoadedGenerator:
    result, sidecar = read_project(path)
    return LoadedGenerator(result.config, result.state_dict, PROJECT, sidecar["source_sha256"],
                           result.extras)


STYLEGAN2_READERS: dict[str, ContainerReader[LoadedGenerator]] = {
    "safetensors": _read_project_generator,
    "pickle": _generator_reader(_read_pickle),
    "torch": _generator_reader(_read_torch),
}


def load_generator(path: str | os.PathLike[str]) -> LoadedGenerator:
    """Read any supported StyleGAN2 checkpoint; the format comes from the content."""
    return read_checkpoint(path, STYLEGAN2_READERS, "a StyleGAN2 checkpoint")
