"""Check a checkpoint's state dict against the module that will hold it, before loading."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError


def checked_state(
    module: nn.Module, state: Mapping[str, Any], label: str, prefix: str, layout: str
) -> dict[str, torch.Tensor]:
    """``state`` with exactly ``module``'s keys and shapes, floats finite (as float32),
    integer counters (BatchNorm's ``num_batches_tracked``) as int64; otherwise a
    CheckpointError naming the file, the key (``prefix`` + key), what was expected and found.
    ``layout`` names the expected architecture in the message."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{label}: not the {layout} layout: missing {[prefix + k for k in missing[:4]]}"
            f"{' ...' if len(missing) > 4 else ''}, unexpected "
            f"{[prefix + k for k in unexpected[:4]]}{' ...' if len(unexpected) > 4 else ''}"
        )
    checked: dict[str, torch.Tensor] = {}
    for key, shape in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            what = (str(list(value.shape)) if isinstance(value, torch.Tensor)
                    else type(value).__name__)
            raise CheckpointError(f"{label}: {prefix}{key}: expected shape {list(shape)}, "
                                  f"found {what}")
        if key.endswith("num_batches_tracked"):
            checked[key] = value.long()
            continue
        if not value.is_floating_point() or not torch.isfinite(value).all():
            raise CheckpointError(f"{label}: {prefix}{key}: expected finite float values")
        checked[key] = value.float()
    return checked
