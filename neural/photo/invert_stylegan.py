"""StyleGAN2 / StyleRig inversion: the e4e W+ of the aligned photo, optionally refined.

Refinement minimises, over W+ [1, num_ws, w_dim] from the e4e start w_e4e,

    E = pixel_weight * MSE(pool(G(w)), pool(I))
      + feature_weight * sum_k MSE(f_k(G(w)), f_k(I))
      + latent_weight * mean((w - w_e4e)^2)

with G the generator's synthesis (constant noise), I the FFHQ-aligned photo at the
generator's resolution in [-1, 1], pool an area average to ``loss_size`` px (pSp compares at
256) and f_k the e4e encoder's own IR-SE features c1, c2, c3 of the 256 px images (a
perceptual distance available offline with the file the user already has). The last term keeps
the result near e4e's editable region. ``lpips_weight`` adds LPIPS (VGG, v0.1) between the
256 px images, from the weight files the user supplies (``photo.lpips``); asking for it
without them is refused by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import PhotoError
from .e4e_encoder import INPUT_SIZE, E4EEncoder
from .lpips import LPIPS
from .optimise import Cancel, Progress, adam_minimise, check_budget

LPIPS_FILES_MESSAGE = (
    "refinement option lpips_weight: LPIPS needs its weight files, which are not shipped: "
    "give --lpips-lin (the lpips package's weights/v0.1/vgg.pth) and --lpips-vgg "
    "(torchvision's vgg16-397923af.pth)"
)

Synthesis = Callable[[torch.Tensor], torch.Tensor]
"""W+ [1, num_ws, w_dim] -> image [1, 3, R, R] in [-1, 1], differentiable in W+."""
Features = Callable[[torch.Tensor], list[torch.Tensor]]
"""Image [1, 3, R, R] in [-1, 1] -> feature maps to compare."""


@dataclass(frozen=True)
class RefineOptions:
    """Step budget and loss weights of the refinement (``steps`` 0 = e4e only)."""

    steps: int = 0
    lr: float = 0.01
    pixel_weight: float = 1.0
    feature_weight: float = 0.0
    latent_weight: float = 1e-3
    loss_size: int = 256
    lpips_weight: float = 0.0

    def __post_init__(self) -> None:
        check_budget(self.steps)
        for name in ("lr", "pixel_weight", "feature_weight", "latent_weight", "lpips_weight"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value >= 0 and value == value):
                raise PhotoError(f"refinement option {name}: expected a number >= 0, "
                                 f"found {value!r}")
        if self.loss_size < 8:
            raise PhotoError(f"refinement option loss_size: expected >= 8, found "
                             f"{self.loss_size}")


@dataclass(frozen=True)
class Refinement:
    """``ws`` [1, num_ws, w_dim] float32 (detached); ``losses`` per step (before its update)."""

    ws: torch.Tensor
    losses: list[float]


def pool_to(image: torch.Tensor, size: int) -> torch.Tensor:
    """Area-average [N, C, R, R] down to ``size`` (unchanged when R <= size)."""
    return F.adaptive_avg_pool2d(image, size) if image.shape[-1] > size else image


def encoder_features(encoder: E4EEncoder) -> Features:
    """The e4e body's c1, c2, c3 maps of an image pooled (or resized up) to 256 px."""

    def features(image: torch.Tensor) -> list[torch.Tensor]:
        if image.shape[-1] != INPUT_SIZE:
            image = (pool_to(image, INPUT_SIZE) if image.shape[-1] > INPUT_SIZE else
                     F.interpolate(image, size=INPUT_SIZE, mode="bilinear", align_corners=False))
        return list(encoder.features(image))

    return features


def refine_wplus(
    synthesis: Synthesis,
    target: torch.Tensor,
    ws_start: torch.Tensor,
    options: RefineOptions,
    features: Features | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    lpips: LPIPS | None = None,
) -> Refinement:
    """Refine ``ws_start`` [1, num_ws, w_dim] so the synthesis matches ``target``
    [1, 3, R, R] in [-1, 1] (the module docstring's energy)."""
    if options.feature_weight > 0 and features is None:
        raise PhotoError("refinement option feature_weight needs the e4e encoder's features "
                         "(give the e4e checkpoint)")
    if options.lpips_weight > 0 and lpips is None:
        raise PhotoError(LPIPS_FILES_MESSAGE)
    start = ws_start.detach().float()
    ws = start.clone().requires_grad_(True)
    target = target.detach().float()
    target_small = pool_to(target, options.loss_size)
    with torch.no_grad():
        target_features = features(target) if features and options.feature_weight > 0 else []

    def loss() -> torch.Tensor:
        image = synthesis(ws)
        if image.shape != target.shape:
            raise PhotoError(f"refinement: the generator makes {list(image.shape)}, the target "
                             f"is {list(target.shape)}")
        total = options.pixel_weight * F.mse_loss(pool_to(image, options.loss_size),
                                                  target_small)
        if target_features:
            assert features is not None
            for made, wanted in zip(features(image), target_features, strict=True):
                total = total + options.feature_weight * F.mse_loss(made, wanted)
        if lpips is not None and options.lpips_weight > 0:
            total = total + options.lpips_weight * lpips(pool_to(image, 256),
                                                         pool_to(target, 256)).mean()
        return total + options.latent_weight * (ws - start).square().mean()

    losses = adam_minimise([ws], loss, options.steps, options.lr, progress, cancel)
    return Refinement(ws.detach(), losses)
