"""The project's converted generators: ``<name>.safetensors`` + sidecar ``<name>.json``.

The safetensors file holds the float32 state dict; the sidecar holds ``{"format": <FORMAT>,
"version": <int>, "config": {...}, "source_sha256": "<hex>", "source_format": "<reader>"}``.
StyleGAN2 generators use format ``nfr-stylegan2`` (NVIDIA names); DiscoFaceGAN's reader
(neural/discofacegan/tf_reader.py) writes ``nfr-discofacegan`` through the same functions.
Both files are written atomically (temporary file + os.replace), weights first, so a sidecar
never describes weights that are not complete. Loading is a safetensors read plus a JSON
parse: no pickle, no format conversion.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Protocol

import safetensors
import safetensors.torch
import torch

from ...rig.atomic import atomic_open
from ..errors import CheckpointError
from ..stylegan2.config import GeneratorConfigError, StyleGAN2Config
from .loaded import LoadedGenerator, ReadResult, finish

FORMAT = "nfr-stylegan2"
VERSION = 1
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


def save_converted(
    loaded: ConvertedModel, weights: str | os.PathLike[str], fmt: str, version: int
) -> Path:
    """Write ``loaded`` as ``weights`` (must end in .safetensors) + its sidecar of format
    ``fmt``; returns the sidecar path. The source digest and format are kept, so the
    converted file keeps the model identity of the checkpoint it came from."""
    path = Path(weights)
    if path.suffix != WEIGHTS_SUFFIX:
        raise CheckpointError(f"{path}: converted weights must be named *{WEIGHTS_SUFFIX}")
    blob = safetensors.torch.save({k: v.contiguous() for k, v in loaded.state_dict.items()})
    with atomic_open(path, "wb") as out:
        out.write(blob)
    sidecar = {
        "format": fmt,
        "version": version,
        "config": loaded.config.to_dict(),
        "source_sha256": loaded.sha256,
        "source_format": loaded.source_format,
    }
    with atomic_open(sidecar_path(path), "w", encoding="utf-8") as out:
        json.dump(sidecar, out, indent=2, sort_keys=True)
        out.write("\n")
    return sidecar_path(path)


def read_sidecar(path: str | os.PathLike[str], fmt: str, version: int) -> dict[str, Any]:
    """The checked sidecar of converted weights ``path``: format ``fmt``, version 1..
    ``version``, a source digest and format (the config is left to the caller)."""
    path = Path(path)
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise CheckpointError(
            f"{path}: safetensors weights without their sidecar {sidecar.name} (converted "
            "generators are written by `nfr convert` as a .safetensors + .json pair)"
        )
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{sidecar}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{sidecar}: field format: expected {fmt!r}, found {found!r}")
    found_version = data.get("version")
    if not isinstance(found_version, int) or not 1 <= found_version <= version:
        raise CheckpointError(
            f"{sidecar}: field version: expected 1..{version}, found {found_version!r} "
            "(written by a newer Neural Face Rig?)"
        )
    digest = data.get("source_sha256")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise CheckpointError(
            f"{sidecar}: field source_sha256: expected 64 lowercase hex digits, "
            f"found {digest!r}"
        )
    if not isinstance(data.get("source_format"), str):
        raise CheckpointError(f"{sidecar}: field source_format: expected a string")
    return data


def load_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of converted weights, on the CPU."""
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except safetensors.SafetensorError as exc:
        raise CheckpointError(f"{path}: truncated or damaged safetensors file ({exc})") from None


# ------------------------------------------------------------------ StyleGAN2


def save_project(loaded: LoadedGenerator, weights: str | os.PathLike[str]) -> Path:
    """Write a StyleGAN2 generator as ``weights`` + sidecar; returns the sidecar path."""
    return save_converted(loaded, weights, FORMAT, VERSION)


def read_project(path: str | os.PathLike[str]) -> tuple[ReadResult, dict[str, Any]]:
    """Read a converted generator; returns the checked result and its sidecar dict."""
    path = Path(path)
    data = read_sidecar(path, FORMAT, VERSION)
    config_data = data.get("config")
    if not isinstance(config_data, dict):
        raise CheckpointError(f"{sidecar_path(path)}: field config: expected a JSON object")
    try:
        config = StyleGAN2Config.from_dict(config_data, f"{sidecar_path(path)} config")
    except GeneratorConfigError as exc:
        raise CheckpointError(str(exc)) from None
    extras = {"converted_from": data["source_format"]}
    return finish(config, load_weights(path), str(path), extras), data
