"""DFR (differentiable face reconstruction): an MLP from StyleGAN2 W+ to the 257 rig values.

StyleRig's F (docs/REFERENCE.md §5): three fully connected layers with ELU after the first
two, input the flattened W+ (num_ws x w_dim: 18 x 512 for FFHQ-1024, any size here). Two
fixed affine maps around the MLP make it generator- and unit-agnostic:

- input: each W+ row is centred on the training samples' mean and divided by that row's
  standard deviation (``w_mean`` [num_ws, w_dim], ``w_std`` [num_ws] buffers);
- output: rig = prior_mean + prior_scale * raw, with the last layer initialised 100x smaller
  than PyTorch's default, so an untrained DFR predicts values near the rig prior (small
  spread in σ units) instead of faces turned 90 degrees with saturated light.

``prior_scale`` is the σ of rig.params' priors per coefficient; translation, whose prior σ is
0 (faces stay centred), gets 0.1 dm sideways and 0.5 dm in depth so the DFR can absorb the
residual framing of a generator's faces against the rig camera.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...rig.params import GROUP_SLICES, PRIOR_SIGMAS, RIG_SIZE, RigParams
from ..config_json import config_from_dict
from . import StyleRigError

TRANSLATION_SCALE = np.array([0.1, 0.1, 0.5], np.float32)
"""Output scale of the translation group, dm (its prior σ is 0)."""

_LAST_LAYER_GAIN = 0.01
_ILLUMINATION_DRAWS = 4096


def rig_prior() -> tuple[np.ndarray, np.ndarray]:
    """(mean [257], scale [257]) float32: the centre and σ of the rig prior per coefficient.

    Groups with independent Gaussian priors take rig.params' PRIOR_SIGMAS (mean 0);
    illumination (a shared white light plus a per-channel tint) takes the mean and standard
    deviation of 4096 seeded draws of ``RigParams.sample``; translation TRANSLATION_SCALE."""
    mean = np.zeros(RIG_SIZE, np.float64)
    scale = np.zeros(RIG_SIZE, np.float64)
    for name, sigma in PRIOR_SIGMAS.items():
        scale[GROUP_SLICES[name]] = sigma
    rng = np.random.default_rng(0)
    light = GROUP_SLICES["illumination"]
    draws = np.stack(
        [RigParams.sample(rng, ["illumination"]).illumination for _ in range(_ILLUMINATION_DRAWS)]
    )
    mean[light] = draws.mean(axis=0)
    scale[light] = draws.std(axis=0)
    scale[GROUP_SLICES["translation"]] = TRANSLATION_SCALE
    return mean.astype(np.float32), scale.astype(np.float32)


@dataclass(frozen=True)
class DFRConfig:
    """Sizes of a DFR: the W+ it reads ([num_ws, w_dim]) and the hidden width."""

    num_ws: int
    w_dim: int
    hidden: int = 512

    def __post_init__(self) -> None:
        for name in ("num_ws", "w_dim", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise StyleRigError(f"DFR config field {name}: expected an integer >= 1, "
                                    f"found {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "DFR config") -> DFRConfig:
        return config_from_dict(cls, data, source, StyleRigError, "DFR")


def latent_statistics(ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [num_ws, w_dim] and per-row standard deviation [num_ws] of W+ samples
    [N, num_ws, w_dim] (N >= 2), float32: the input normalisation of DFR and RigNet."""
    if ws.dim() != 3 or ws.shape[0] < 2:
        raise StyleRigError(
            f"W+ samples: expected shape [N >= 2, num_ws, w_dim], found {list(ws.shape)}"
        )
    ws = ws.detach().double()
    mean = ws.mean(dim=0)
    std = (ws - mean).square().mean(dim=(0, 2)).sqrt().clamp_min(1e-6)
    return mean.float(), std.float()


class LatentNormalizer(nn.Module):
    """W+ [B, num_ws, w_dim] -> (W+ - mean) / std per row, and back (buffers, not trained)."""

    w_mean: torch.Tensor
    w_std: torch.Tensor

    def __init__(self, num_ws: int, w_dim: int) -> None:
        super().__init__()
        self.register_buffer("w_mean", torch.zeros(num_ws, w_dim))
        self.register_buffer("w_std", torch.ones(num_ws))

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        if mean.shape != self.w_mean.shape or std.shape != self.w_std.shape:
            raise StyleRigError(
                f"W+ statistics: expected mean {list(self.w_mean.shape)} and std "
                f"{list(self.w_std.shape)}, found {list(mean.shape)} and {list(std.shape)}"
            )
        self.w_mean.copy_(mean)
        self.w_std.copy_(std)

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return (ws - self.w_mean) / self.w_std[:, None]

    def scale(self, normalized: torch.Tensor) -> torch.Tensor:
        """Normalised W+ offsets [B, num_ws, w_dim] -> W+ units (no mean added)."""
        return normalized * self.w_std[:, None]


class DFR(nn.Module):
    """W+ [B, num_ws, w_dim] -> canonical rig vectors [B, 257] (rig/params.py order)."""

    prior_mean: torch.Tensor
    prior_scale: torch.Tensor

    def __init__(self, config: DFRConfig) -> None:
        super().__init__()
        self.config = config
        self.normalizer = LatentNormalizer(config.num_ws, config.w_dim)
        self.fc0 = nn.Linear(config.num_ws * config.w_dim, config.hidden)
        self.fc1 = nn.Linear(config.hidden, config.hidden)
        self.fc2 = nn.Linear(config.hidden, RIG_SIZE)
        with torch.no_grad():
            self.fc2.weight.mul_(_LAST_LAYER_GAIN)
            self.fc2.bias.zero_()
        mean, scale = rig_prior()
        self.register_buffer("prior_mean", torch.from_numpy(mean))
        self.register_buffer("prior_scale", torch.from_numpy(scale))

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if ws.dim() != 3 or tuple(ws.shape[1:]) != (cfg.num_ws, cfg.w_dim):
            raise StyleRigError(
                f"DFR input: expected W+ of shape [B, {cfg.num_ws}, {cfg.w_dim}], "
                f"found {list(ws.shape)}"
            )
        x = self.normalizer(ws).flatten(1)
        x = F.elu(self.fc0(x))
        x = F.elu(self.fc1(x))
        raw = self.fc2(x)
        return self.prior_mean + self.prior_scale * raw.float()
