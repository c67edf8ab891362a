"""RigNet: edits a W+ so that the DFR reads target pose, expression and illumination from it.

Per W+ row i (docs/REFERENCE.md §5): a linear encoder w_i (w_dim) -> l_i (``latent``, 32)
and a decoder [l_i, Δp] -> d_i (w_dim), two layers with ELU between; the result is
ŵ_i = w_i + d_i. All rows are computed at once as batched matrix products over a leading row axis.

One network serves the three controls (docs/STYLERIG.md): the decoder reads the change
asked of the controlled parameters, Δp = (target - DFR(w)) / σ on the 94 coefficients of
rotation (3), expression (64) and illumination (27), zero on every coefficient not being
edited. "Leave this control alone" and "set it to what it already is" are the same input, so
no separate control mask is needed, and a combined edit (pose + expression + light, what the
add-on sends) is one forward pass. Identity, reflectance and translation are not controls:
the base latent owns them.

The last decoder layer starts at zero, so an untrained RigNet is the identity map.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...rig.params import GROUP_SLICES, RIG_SIZE
from ..config_json import config_from_dict
from . import StyleRigError
from .dfr import DFR, LatentNormalizer, rig_prior

CONTROL_GROUPS: dict[str, tuple[str, ...]] = {
    "pose": ("rotation",),
    "expression": ("expression",),
    "illumination": ("illumination",),
}
"""Each control of the rig and the rig groups it sets."""

CONTROLS: tuple[str, ...] = tuple(CONTROL_GROUPS)


def control_mask(controls: Iterable[str]) -> np.ndarray:
    """[257] bool: True on the coefficients of the named controls (CONTROLS)."""
    mask = np.zeros(RIG_SIZE, bool)
    for name in controls:
        if name not in CONTROL_GROUPS:
            raise StyleRigError(f"control {name!r}: expected one of {list(CONTROLS)}")
        for group in CONTROL_GROUPS[name]:
            mask[GROUP_SLICES[group]] = True
    return mask


CONTROL_INDEX: np.ndarray = np.flatnonzero(control_mask(CONTROLS))
"""Canonical positions [94] of the controlled coefficients (expression, rotation, light)."""


@dataclass(frozen=True)
class RigNetConfig:
    """Sizes: the W+ edited ([num_ws, w_dim]), the per-row code ``latent`` (l) and the
    decoder's hidden width."""

    num_ws: int
    w_dim: int
    latent: int = 32
    hidden: int = 256

    def __post_init__(self) -> None:
        for name in ("num_ws", "w_dim", "latent", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise StyleRigError(
                    f"RigNet config field {name}: expected an integer >= 1, found {value!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "RigNet config") -> RigNetConfig:
        return config_from_dict(cls, data, source, StyleRigError, "RigNet")


def _uniform(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    """PyTorch's nn.Linear default initialisation (U(-1/sqrt(fan_in), 1/sqrt(fan_in)))."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


class RigNet(nn.Module):
    """(W+ [B, num_ws, w_dim], Δp [B, 94]) -> edited W+ [B, num_ws, w_dim]."""

    control_scale: torch.Tensor

    def __init__(self, config: RigNetConfig) -> None:
        super().__init__()
        self.config = config
        rows, width, code, hidden = config.num_ws, config.w_dim, config.latent, config.hidden
        inputs = code + CONTROL_INDEX.size
        self.normalizer = LatentNormalizer(rows, width)
        self.encoder_weight = _uniform((rows, width, code), width)
        self.encoder_bias = _uniform((rows, code), width)
        self.decoder0_weight = _uniform((rows, inputs, hidden), inputs)
        self.decoder0_bias = _uniform((rows, hidden), inputs)
        self.decoder1_weight = nn.Parameter(torch.zeros(rows, hidden, width))
        self.decoder1_bias = nn.Parameter(torch.zeros(rows, width))
        _, scale = rig_prior()
        self.register_buffer("control_scale", torch.from_numpy(scale[CONTROL_INDEX]))

    def forward(self, ws: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if ws.dim() != 3 or tuple(ws.shape[1:]) != (cfg.num_ws, cfg.w_dim):
            raise StyleRigError(
                f"RigNet input: expected W+ of shape [B, {cfg.num_ws}, {cfg.w_dim}], "
                f"found {list(ws.shape)}"
            )
        if tuple(delta.shape) != (ws.shape[0], CONTROL_INDEX.size):
            raise StyleRigError(
                f"RigNet control change: expected shape [{ws.shape[0]}, {CONTROL_INDEX.size}], "
                f"found {list(delta.shape)}"
            )
        x = self.normalizer(ws)
        code = torch.einsum("brd,rdk->brk", x, self.encoder_weight) + self.encoder_bias
        wanted = delta.to(code.dtype)[:, None, :].expand(-1, cfg.num_ws, -1)
        hidden = torch.einsum("brk,rkh->brh", torch.cat([code, wanted], dim=-1),
                              self.decoder0_weight) + self.decoder0_bias
        offset = torch.einsum("brh,rhd->brd", F.elu(hidden), self.decoder1_weight)
        offset = offset + self.decoder1_bias
        return ws + self.normalizer.scale(offset.float())

    def control_change(
        self, estimate: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Δp [B, 94] (σ units) asking the controlled coefficients to go from the DFR
        ``estimate`` [B, 257] to ``target`` [B, 257] where ``mask`` ([257] or [B, 257] bool)
        is set; zero elsewhere."""
        index = torch.as_tensor(CONTROL_INDEX, device=estimate.device)
        mask = torch.as_tensor(mask, device=estimate.device).expand_as(estimate)
        change = torch.where(mask, target - estimate, torch.zeros_like(estimate))
        return change.index_select(1, index) / self.control_scale


def unwrap(module: nn.Module) -> RigNet:
    """The RigNet inside a DistributedDataParallel wrapper (or the module itself)."""
    inner = getattr(module, "module", module)
    if not isinstance(inner, RigNet):
        raise StyleRigError(f"expected a RigNet, found {type(inner).__name__}")
    return inner


def edit_latents(
    rignet: nn.Module,
    dfr: DFR,
    ws: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | np.ndarray,
) -> torch.Tensor:
    """W+ [B, num_ws, w_dim] edited so the masked coefficients of the DFR estimate move to
    ``target`` [B, 257] (mask [257] or [B, 257] bool). ``rignet`` may be wrapped (DDP); the
    unwrapped RigNet is its ``module``."""
    net = unwrap(rignet)
    with torch.no_grad():
        estimate = dfr(ws)
    delta = net.control_change(estimate, target, torch.as_tensor(mask))
    return rignet(ws, delta)


def random_edit_masks(rng: np.random.Generator, batch: int) -> np.ndarray:
    """Training edit sets [batch, 257] bool: each control joins independently with
    probability 1/2, redrawn when none did (the 7 non-empty sets equally likely)."""
    chosen = np.zeros((batch, len(CONTROLS)), bool)
    for row in chosen:
        while not row.any():
            row[:] = rng.random(len(CONTROLS)) < 0.5
    masks = np.stack([control_mask([c]) for c in CONTROLS])  # [3, 257]
    return (chosen[:, :, None] & masks[None]).any(axis=1)
