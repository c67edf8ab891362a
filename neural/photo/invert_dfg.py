"""DiscoFaceGAN inversion: the photo's coefficients in, identity latent and noise optimised.

DiscoFaceGAN's generator reads the 3DMM coefficients directly (z = [id 80 | tex 80 | exp 64 |
rot 3 | gamma 27 | noise 32]). The photo's R-Net (or landmark-fit) values give every
coefficient; expression, pose and light are kept as they are, so the rig's sliders start at
the photo's values. The identity latent (id + tex, 160 values, σ units) and the 32-d noise
(everything the rig does not describe: hair, background, clothes) are optimised so the render
matches the aligned photo, as the paper does for real images:

    E = MSE(G(z), I) + prior_weight * (mean(id_tex^2) + mean(noise^2))

through the same mapping the backend renders with (attribute-preserving truncation with psi
on the first ``cutoff`` rows when the identity-average W is given), constant noise buffers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...rig.params import RigParams
from ..discofacegan.adapter import (
    DEFAULT_CUTOFF,
    DEFAULT_PSI,
    IDENTITY_DIM,
    attribute_truncation,
    identity_input,
)
from ..discofacegan.config import COEFF_DIM
from ..discofacegan.generator import DFGGenerator, DFGSynthesisOptions
from . import PhotoError
from .optimise import Cancel, Progress, adam_minimise, check_budget


@dataclass(frozen=True)
class DFGInvertOptions:
    steps: int = 100
    lr: float = 0.02
    prior_weight: float = 1e-3
    psi: float = DEFAULT_PSI
    cutoff: int = DEFAULT_CUTOFF

    def __post_init__(self) -> None:
        check_budget(self.steps)


@dataclass(frozen=True)
class DFGInversion:
    """``rig``: the photo's values with the optimised identity and reflectance; ``noise``
    [noise_dim] float32; ``z`` [z_dim] float32 the generator input; ``losses`` per step."""

    rig: RigParams
    noise: np.ndarray
    z: np.ndarray
    losses: list[float]


def dfg_render(
    generator: DFGGenerator, z: torch.Tensor, w_avg_id: torch.Tensor | None, psi: float,
    cutoff: int,
) -> torch.Tensor:
    """z [N, z_dim] -> image [N, 3, R, R], differentiable in z (the backend's mapping)."""
    ws = generator.map(z)
    if w_avg_id is not None and psi != 1.0:
        ws = attribute_truncation(ws, generator.map(identity_input(z)), w_avg_id, psi, cutoff)
    elif psi != 1.0:
        raise PhotoError(f"DiscoFaceGAN inversion: psi {psi} needs the identity-average W "
                         "(average_w_id.txt); give it or use psi 1")
    return generator.synthesis(ws, DFGSynthesisOptions(noise_mode="const"))


def invert_dfg(
    generator: DFGGenerator,
    target: torch.Tensor,
    photo_rig: RigParams,
    options: DFGInvertOptions,
    w_avg_id: torch.Tensor | None = None,
    noise_start: np.ndarray | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> DFGInversion:
    """Fit id + tex and the noise of ``photo_rig`` to ``target`` [1, 3, R, R] in [-1, 1]
    (the aligned photo at the generator's resolution)."""
    config = generator.config
    expected = (1, config.img_channels, config.img_resolution, config.img_resolution)
    if tuple(target.shape) != expected:
        raise PhotoError(f"DiscoFaceGAN inversion: target must be {list(expected)}, found "
                         f"{list(target.shape)}")
    coefficients = torch.from_numpy(photo_rig.to_dfg_vector().astype(np.float32))[None]
    fixed = coefficients[:, IDENTITY_DIM:COEFF_DIM]  # exp, rot, gamma: the photo's
    identity = coefficients[:, :IDENTITY_DIM].clone().requires_grad_(True)
    start = np.zeros(config.noise_dim, np.float32) if noise_start is None else noise_start
    noise = torch.from_numpy(np.asarray(start, np.float32).copy())[None].requires_grad_(True)
    avg = None if w_avg_id is None else w_avg_id.float()
    target = target.detach().float()

    def assemble() -> torch.Tensor:
        return torch.cat([identity, fixed, noise], dim=1)

    def loss() -> torch.Tensor:
        image = dfg_render(generator, assemble(), avg, options.psi, options.cutoff)
        prior = identity.square().mean() + noise.square().mean()
        return F.mse_loss(image, target) + options.prior_weight * prior

    losses = adam_minimise([identity, noise], loss, options.steps, options.lr, progress, cancel)
    z = assemble().detach()[0].numpy().astype(np.float32)
    rig = RigParams.from_dfg_vector(z[:COEFF_DIM])
    rig.translation[:] = photo_rig.translation  # not a DiscoFaceGAN input: keep the photo's
    return DFGInversion(rig, z[COEFF_DIM:].copy(), z, losses)
