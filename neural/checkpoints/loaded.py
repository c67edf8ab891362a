"""What every checkpoint reader produces, and the checks they share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..stylegan2.config import GeneratorConfigError, StyleGAN2Config, check_state_shapes
from ..stylegan2.ops import resample_filter
from .limits import check_architecture

# source_format values, one per reader.
NVIDIA_PKL = "nvidia-pkl"
TF_PKL = "tf-pkl"
ROSINALITY = "rosinality"
E4E = "e4e"
PROJECT = "nfr"


@dataclass(frozen=True)
class LoadedGenerator:
    """A StyleGAN2 generator read from a checkpoint.

    ``state_dict``: NVIDIA stylegan2-ada-pytorch names (no ``G_ema.`` prefix), float32 CPU
    contiguous tensors, exactly the keys and shapes of ``expected_state_shapes(config)``.
    ``sha256``: hex digest identifying the weights; the checkpoint file's own digest, or for a
    converted project file the digest of the checkpoint it was converted from.
    ``extras``: reader-specific facts (JSON-able), e.g. where ``mapping.w_avg`` came from.
    """

    config: StyleGAN2Config
    state_dict: dict[str, torch.Tensor]
    source_format: str
    sha256: str
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReadResult:
    """A reader's output before the file-level facts (format, digest) are attached."""

    config: StyleGAN2Config
    state_dict: dict[str, torch.Tensor]
    extras: dict[str, Any] = field(default_factory=dict)


def make_config(label: str, **fields: Any) -> StyleGAN2Config:
    """StyleGAN2Config from fields read out of a checkpoint; invalid values name the file.
    Sizes are checked against ``limits.check_architecture`` before anything is built."""
    check_architecture(fields, f"{label}: unsupported generator architecture")
    try:
        return StyleGAN2Config(**fields)
    except GeneratorConfigError as exc:
        raise CheckpointError(f"{label}: unsupported generator architecture: {exc}") from exc


def as_float_tensor(value: object, key: str, label: str) -> torch.Tensor:
    """A numeric array/tensor from a checkpoint as a detached float32 CPU tensor."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind != "f":
            raise CheckpointError(f"{label}: {key} has dtype {value.dtype}, expected a float array")
        return torch.from_numpy(np.array(value, dtype=np.float32, order="C"))
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise CheckpointError(f"{label}: {key} has dtype {value.dtype}, expected float")
        # Unpickled/loaded tensors belong to the reader alone: no defensive copy needed.
        return value.detach().to(device="cpu", dtype=torch.float32).contiguous()
    raise CheckpointError(f"{label}: {key} is a {type(value).__name__}, expected a tensor")


def with_resample_filters(
    state: dict[str, torch.Tensor], config: StyleGAN2Config
) -> dict[str, torch.Tensor]:
    """Add every ``*.resample_filter`` buffer (formats that do not store them rebuild them):
    the configured FIR for blocks and their up-sampling conv0, NVIDIA's default for conv1
    (``StyleGAN2Config.layer_resample_kernel``)."""
    out = dict(state)
    for res in config.block_resolutions:
        layers = ["", ".conv0", ".conv1"] if res > 4 else ["", ".conv1"]
        for layer in layers:
            key = f"synthesis.b{res}{layer}.resample_filter"
            out[key] = resample_filter(config.layer_resample_kernel(key))
    return out


def float_tensors(state: Mapping[str, object], label: str) -> dict[str, torch.Tensor]:
    """Every entry as a float32 CPU tensor (``as_float_tensor``)."""
    return {key: as_float_tensor(value, key, label) for key, value in state.items()}


def check_finite(tensors: Mapping[str, torch.Tensor], label: str) -> None:
    """Raise ``CheckpointError`` naming the first tensor holding NaN or inf."""
    for key, tensor in tensors.items():
        # amax propagates NaN and |inf|: one reduction instead of a boolean mask.
        if tensor.numel() and not torch.isfinite(tensor.abs().amax()):
            raise CheckpointError(f"{label}: {key} holds non-finite values (NaN or inf)")


def finish(
    config: StyleGAN2Config,
    state: Mapping[str, object],
    label: str,
    extras: dict[str, Any] | None = None,
) -> ReadResult:
    """Convert to float32 tensors and check keys/shapes against the config."""
    tensors = float_tensors(state, label)
    check_state_shapes(config, tensors, label)
    check_finite(tensors, label)
    return ReadResult(config, tensors, dict(extras or {}))


def plain(value: Any) -> Any:
    """Recursively turn dict subclasses, tuples, sets and numpy scalars into JSON-able data;
    anything else (tensors, arrays, records) becomes its type name."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return f"<{type(value).__name__}>"
