"""LPIPS (VGG variant, v0.1) for the optional refinement loss, from files the user supplies.

Two files, both read with ``torch.load(weights_only=True)``:

- torchvision's VGG-16 (``vgg16-397923af.pth``): ``features.{0,2,5,7,10,12,14,17,19,21,24,
  26,28}.weight/bias`` (3x3 convolutions, ReLU after each, 2x2 max-pools after the 2nd, 4th,
  7th and 10th); ``classifier.*`` is not used.
- LPIPS' linear layers (``weights/v0.1/vgg.pth`` of the lpips package): ``lin{k}.model.1.weight``
  [1, C_k, 1, 1] for the five taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (C = 64, 128,
  256, 512, 512).

d(x, y) = sum_k mean_hw( w_k . (n(f_k(x)) - n(f_k(y)))^2 ) with images in [-1, 1] first shifted
and scaled per channel (shift [-0.030, -0.088, -0.188], scale [0.458, 0.448, 0.450]) and n the
unit-length normalisation over channels (eps 1e-10).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from .state_check import checked_state

# torchvision vgg16 "D" configuration: channels, "M" = max-pool.
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
TAPS = (3, 8, 15, 22, 29)  # indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
TAP_CHANNELS = (64, 128, 256, 512, 512)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def _features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            assert isinstance(item, int)
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
            channels = item
    return nn.Sequential(*layers[: TAPS[-1] + 1])  # nothing after relu5_3 is needed


class _Lin(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """(x, y) images [N, 3, H, W] in [-1, 1] -> distance [N]."""

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.features = _features()
        for k, channels in enumerate(TAP_CHANNELS):
            self.add_module(f"lin{k}", _Lin(channels))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        out = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAPS:
                out.append(x / (x.square().sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(x.shape[0])
        for k, (a, b) in enumerate(zip(self.taps(x), self.taps(y), strict=True)):
            lin = getattr(self, f"lin{k}").model[1]
            total = total + F.conv2d((a - b).square(), lin.weight).mean(dim=(1, 2, 3))
        return total


def load_lpips(lin_path: str | os.PathLike[str], vgg_path: str | os.PathLike[str],
               device: torch.device | str = "cpu") -> LPIPS:
    """LPIPS from the user's two files (module docstring): eval mode, frozen."""
    from ..checkpoints.rosinality import load_torch_checkpoint

    net = LPIPS()
    state: dict[str, torch.Tensor] = {}
    for path, prefix, what in ((vgg_path, "features.", "torchvision VGG-16"),
                               (lin_path, "lin", "LPIPS v0.1 linear layers")):
        label = os.fspath(path)
        if not os.path.isfile(path):
            raise CheckpointError(f"{label}: no such file ({what})")
        data = load_torch_checkpoint(path)
        if not isinstance(data, dict):
            raise CheckpointError(f"{label}: expected a state dict ({what}), found "
                                  f"{type(data).__name__}")
        state.update({k: v for k, v in data.items() if isinstance(k, str) and k.startswith(prefix)
                      and k in net.state_dict()})
        if not any(isinstance(k, str) and k.startswith(prefix) for k in data):
            raise CheckpointError(f"{label}: holds no {prefix}* keys; expected the {what} file")
    net.load_state_dict(checked_state(net, state, f"{lin_path} + {vgg_path}", "",
                                      "LPIPS (VGG-16) "), strict=True)
    return net.to(device).eval().requires_grad_(False)
