"""The project's one artefact format: ``<name>.safetensors`` + sidecar ``<name>.json``.

Every file the project writes for itself uses it: converted generators (``nfr convert``,
DiscoFaceGAN's converter), StyleRig's DFR and RigNet, trainer checkpoints and SeFa caches.

- The safetensors file holds the tensors (no pickle, no code).
- The sidecar is a JSON object ``{"format": <kind>, "version": <int>, "weights_sha256":
  <sha256 of the safetensors file's bytes>, ...}`` plus what the kind needs. Converted
  generators add ``"config"``, ``"source_sha256"`` (the digest identifying the model: that of
  the checkpoint it came from, which every later artefact keys on) and ``"source_format"``.
- The loader checks the sidecar's format and version, then the weights' digest against
  ``weights_sha256``: a sidecar from another model, or weights replaced after it was written,
  is refused with both digests named.
- Writing is crash-safe: both files are written to temporary files in the destination folder
  first (``rig.atomic``: hidden ``.<name>.<pid>.<token>.nfr-tmp``, removed by the next write
  into that folder once their process is gone); only when both are complete is the weights
  file renamed into place, then the sidecar. A crash between the two renames leaves new
  weights beside the old sidecar, whose digest no longer matches: the loader refuses the pair
  and says to write it again. Nothing is replaced if the sidecar's path cannot take a file
  (e.g. it is a folder).

Loading is a bounded JSON parse, one pass over the weights through a memory map to hash them,
and safetensors' own memory-mapped load.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import safetensors
import safetensors.torch
import torch

from ...rig.atomic import AtomicPair
from ...rig.file_limits import (
    CHECKPOINT_MAX_BYTES,
    JSON_MAX_BYTES,
    describe_os_error,
    open_regular_file,
)
from ..config_json import read_json_document
from ..errors import CheckpointError, NeuralError
from ..stylegan2.config import GeneratorConfigError, StyleGAN2Config
from .limits import check_architecture
from .loaded import LoadedGenerator, ReadResult, finish

FORMAT = "nfr-stylegan2"
VERSION = 2  # 2: the sidecar carries weights_sha256
WEIGHTS_SUFFIX = ".safetensors"
SIDECAR_SUFFIX = ".json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class _Config(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


class ConvertedModel(Protocol):
    """What a converted file stores: LoadedGenerator, LoadedDFG."""

    @property
    def config(self) -> _Config: ...

    @property
    def state_dict(self) -> dict[str, torch.Tensor]: ...

    @property
    def source_format(self) -> str: ...

    @property
    def sha256(self) -> str: ...


def sidecar_path(weights: str | os.PathLike[str]) -> Path:
    """``<name>.json`` next to ``<name>.safetensors``."""
    return Path(weights).with_suffix(SIDECAR_SUFFIX)


# ------------------------------------------------------------------ any artefact


def _as_tensor(value: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    return value.detach().cpu().contiguous()


def write_artifact(
    weights: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor | np.ndarray],
    meta: Mapping[str, Any],
    fmt: str,
    version: int,
    sidecar: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``tensors`` as ``weights`` (*.safetensors) + its sidecar ``{format: fmt, version,
    weights_sha256, **meta}`` crash-safely (module docstring); returns the sidecar path.
    ``sidecar`` defaults to ``<name>.json`` (the trainer names its own ``checkpoint.json``)."""
    path = Path(weights)
    if path.suffix != WEIGHTS_SUFFIX:
        raise CheckpointError(f"{path}: expected an artefact name ending in {WEIGHTS_SUFFIX}")
    blob = safetensors.torch.save({k: _as_tensor(v) for k, v in tensors.items()})
    document = dict(meta, format=fmt, version=version,
                    weights_sha256=hashlib.sha256(blob).hexdigest())
    text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n"
    sidecar = sidecar_path(path) if sidecar is None else Path(sidecar)
    try:
        with AtomicPair(path, sidecar) as pair:
            pair.first.write(blob)
            pair.second.write(text.encode("utf-8"))
    except OSError as exc:
        raise CheckpointError(
            f"{path}: cannot write the artefact pair (weights + {sidecar.name}): "
            f"{Path(exc.filename or path).name}: {describe_os_error(exc.filename or path, exc)}; "
            "nothing was replaced"
        ) from None
    return sidecar


def read_artifact_sidecar(
    weights: str | os.PathLike[str], fmt: str, version: int,
    error: type[NeuralError] = CheckpointError, sidecar: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """The checked sidecar of artefact ``weights``: format ``fmt``, version 1..``version``
    (older versions without ``weights_sha256`` are refused: write the file again)."""
    path = Path(weights)
    sidecar = sidecar_path(path) if sidecar is None else Path(sidecar)
    if not sidecar.exists():
        raise error(
            f"{path}: safetensors weights without their sidecar {sidecar.name}: expected it "
            f"next to them (the project writes {WEIGHTS_SUFFIX} + {SIDECAR_SUFFIX} pairs; keep "
            "them together)"
        )
    data = read_json_document(sidecar, "artefact sidecar", error, JSON_MAX_BYTES)
    if not isinstance(data, dict) or data.get("format") != fmt:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise error(f"{sidecar}: field format: expected {fmt!r}, found {found!r}")
    found_version = data.get("version")
    if isinstance(found_version, bool) or not isinstance(found_version, int) \
            or not 1 <= found_version <= version:
        raise error(
            f"{sidecar}: field version: expected 1..{version}, found {found_version!r} "
            "(written by a newer Neural Face Rig?)"
        )
    digest = data.get("weights_sha256")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise error(
            f"{sidecar}: field weights_sha256: expected the 64-hex-digit digest of "
            f"{path.name}, found {digest!r:.80} (written by an older Neural Face Rig: write "
            "the file again)"
        )
    return data


def _sha256_of(path: Path, error: type[NeuralError]) -> str:
    """Digest of a regular file, hashed through a read-only memory map (no copy in memory)."""
    digest = hashlib.sha256()
    with open_regular_file(path, "artefact weights", CHECKPOINT_MAX_BYTES, error) as stream:
        if os.fstat(stream.fileno()).st_size:
            with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as view:
                digest.update(view)
    return digest.hexdigest()


def read_artifact(
    weights: str | os.PathLike[str], fmt: str, version: int,
    error: type[NeuralError] = CheckpointError, sidecar: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors (CPU) and checked sidecar of an artefact written by :func:`write_artifact`.
    The weights must be the ones the sidecar describes (their sha256)."""
    path = Path(weights)
    sidecar = sidecar_path(path) if sidecar is None else Path(sidecar)
    data = read_artifact_sidecar(path, fmt, version, error, sidecar)
    found = _sha256_of(path, error)
    if found != data["weights_sha256"]:
        raise error(
            f"{path}: the weights do not match their sidecar {sidecar.name}: their sha256 "
            f"{found} does not match {sidecar.name}, which describes weights with sha256 "
            f"{data['weights_sha256']} (a sidecar from another model, or an interrupted write: "
            "write the pair again)"
        )
    try:
        tensors = safetensors.torch.load_file(str(path), device="cpu")
    except (safetensors.SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise error(f"{path}: damaged safetensors file ({str(exc).splitlines()[0]})") from None
    return tensors, data


# ------------------------------------------------------------------ converted generators


def save_converted(
    loaded: ConvertedModel, weights: str | os.PathLike[str], fmt: str, version: int
) -> Path:
    """Write ``loaded`` as ``weights`` (must end in .safetensors) + its sidecar of format
    ``fmt``; returns the sidecar path. The source digest and format are kept, so the
    converted file keeps the model identity of the checkpoint it came from."""
    meta = {
        "config": loaded.config.to_dict(),
        "source_sha256": loaded.sha256,
        "source_format": loaded.source_format,
    }
    return write_artifact(weights, loaded.state_dict, meta, fmt, version)


def read_converted(
    path: str | os.PathLike[str], fmt: str, version: int
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and checked sidecar of a converted generator: the artefact checks plus a
    source digest and format (the config is left to the caller, after
    ``limits.check_architecture``)."""
    tensors, data = read_artifact(path, fmt, version)
    sidecar = sidecar_path(path)
    digest = data.get("source_sha256")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise CheckpointError(
            f"{sidecar}: field source_sha256: expected 64 lowercase hex digits, "
            f"found {digest!r:.80}"
        )
    if not isinstance(data.get("source_format"), str):
        raise CheckpointError(f"{sidecar}: field source_format: expected a string")
    config = data.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{sidecar}: field config: expected a JSON object")
    check_architecture(config, f"{sidecar} config")
    return tensors, data


# ------------------------------------------------------------------ StyleGAN2


def save_project(loaded: LoadedGenerator, weights: str | os.PathLike[str]) -> Path:
    """Write a StyleGAN2 generator as ``weights`` + sidecar; returns the sidecar path."""
    return save_converted(loaded, weights, FORMAT, VERSION)


def read_project(path: str | os.PathLike[str]) -> tuple[ReadResult, dict[str, Any]]:
    """Read a converted generator; returns the checked result and its sidecar dict."""
    path = Path(path)
    tensors, data = read_converted(path, FORMAT, VERSION)
    try:
        config = StyleGAN2Config.from_dict(data["config"], f"{sidecar_path(path)} config")
    except GeneratorConfigError as exc:
        raise CheckpointError(str(exc)) from None
    extras = {"converted_from": data["source_format"]}
    return finish(config, tensors, str(path), extras), data
