"""encoder4editing: an aligned face -> StyleGAN2 W+ [N, style_count, 512] in one pass.

Architecture (omertov/encoder4editing ``models/encoders/psp_encoders.py`` and pSp's
``helpers.py``), with the official module names so ``encoder.*`` loads strictly:

- ``input_layer``: conv 3x3 3->64 (no bias), BatchNorm, PReLU(64).
- ``body``: 24 IR-SE bottleneck units (IR-SE-50: 3 x 64, 4 x 128, 14 x 256, 3 x 512
  channels, the first unit of each stage with stride 2). Unit: ``shortcut_layer`` (identity
  max-pool of stride s when the width stays, else conv 1x1 stride s + BN) +
  ``res_layer`` = BN, conv 3x3, PReLU, conv 3x3 stride s, BN, squeeze-excitation
  (``fc1``/``fc2`` 1x1 convs without bias, reduction 16, ReLU, sigmoid).
- Features c1 (after unit 6, 128 ch, 64 px), c2 (unit 20, 256 ch, 32 px), c3 (unit 23,
  512 ch, 16 px); FPN: p2 = up(c3) + ``latlayer1``(c2), p1 = up(p2) + ``latlayer2``(c1)
  (bilinear, align_corners=True).
- ``styles.{i}``: GradualStyleBlock = log2(spatial) stride-2 3x3 convs (+ LeakyReLU 0.01) to
  1 x 1, then an EqualLinear 512->512 (weight scaled by 1/sqrt(512), lr_mul 1). Rows 0-2 read
  c3 (spatial 16), 3-6 p2 (32), the rest p1 (64).
- Encoder4Editing: w = styles[0](c3) repeated on every row, plus styles[i](features) on row i
  for i >= 1 (the progressive deltas, all of them at inference). GradualStyleEncoder (pSp):
  every row its own style. Then + latent_avg when ``start_from_latent_avg``.

Input: the FFHQ-aligned face at 256 x 256, RGB scaled to [-1, 1] ((x / 255 - 0.5) / 0.5).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints.e4e import E4EEncoderWeights, read_e4e_encoder
from ..errors import CheckpointError
from .state_check import checked_state

INPUT_SIZE = 256
W_DIM = 512
COARSE_END, MIDDLE_END = 3, 7
# IR-SE-50 stages: (input width, width, units); each stage starts with stride 2.
STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))
C1_UNIT, C2_UNIT, C3_UNIT = 6, 20, 23


class SEModule(nn.Module):
    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(scale)


class BottleneckIRSE(nn.Module):
    def __init__(self, in_channel: int, depth: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.shortcut_layer: nn.Module
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, 16),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class EqualLinear(nn.Module):
    """rosinality's EqualLinear without activation: x W^T / sqrt(in) * lr_mul + b * lr_mul."""

    def __init__(self, in_dim: int, out_dim: int, lr_mul: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class GradualStyleBlock(nn.Module):
    def __init__(self, in_c: int, out_c: int, spatial: int) -> None:
        super().__init__()
        self.out_c = out_c
        layers: list[nn.Module] = []
        for i in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(in_c if i == 0 else out_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).reshape(-1, self.out_c))


def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=y.shape[2:], mode="bilinear", align_corners=True) + y


class E4EEncoder(nn.Module):
    """Aligned faces [N, 3, 256, 256] in [-1, 1] -> W+ [N, style_count, 512] (latent_avg
    included when the file says so)."""

    latent_avg: torch.Tensor

    def __init__(self, style_count: int, encoder_type: str = "Encoder4Editing") -> None:
        super().__init__()
        self.style_count = style_count
        self.encoder_type = encoder_type
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        )
        units = []
        for in_channel, depth, count in STAGES:
            units.append(BottleneckIRSE(in_channel, depth, 2))
            units += [BottleneckIRSE(depth, depth, 1) for _ in range(count - 1)]
        self.body = nn.Sequential(*units)
        self.styles = nn.ModuleList(
            GradualStyleBlock(512, 512, 16 if i < COARSE_END else 32 if i < MIDDLE_END else 64)
            for i in range(style_count)
        )
        self.latlayer1 = nn.Conv2d(256, 512, 1)
        self.latlayer2 = nn.Conv2d(128, 512, 1)
        self.register_buffer("latent_avg", torch.zeros(style_count, W_DIM), persistent=False)
        self.add_latent_avg = False

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c1, c2, c3) body features of [N, 3, 256, 256] inputs."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise CheckpointError(
                f"e4e input: expected [N, 3, {INPUT_SIZE}, {INPUT_SIZE}], found {list(x.shape)}"
            )
        x = self.input_layer(x)
        c1 = c2 = x
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i == C1_UNIT:
                c1 = x
            elif i == C2_UNIT:
                c2 = x
        return c1, c2, x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3 = self.features(x)
        p2 = _upsample_add(c3, self.latlayer1(c2))
        p1 = _upsample_add(p2, self.latlayer2(c1))

        def source(i: int) -> torch.Tensor:
            return c3 if i < COARSE_END else p2 if i < MIDDLE_END else p1

        if self.encoder_type == "Encoder4Editing":
            w0 = self.styles[0](c3)
            rows = [w0] + [w0 + self.styles[i](source(i)) for i in range(1, self.style_count)]
        else:
            rows = [self.styles[i](source(i)) for i in range(self.style_count)]
        ws = torch.stack(rows, dim=1)
        return ws + self.latent_avg if self.add_latent_avg else ws


def encoder_from_weights(weights: E4EEncoderWeights, label: str) -> E4EEncoder:
    """The encoder module of a read checkpoint, loaded strictly, eval mode, frozen."""
    encoder = E4EEncoder(weights.style_count, weights.encoder_type)
    state = checked_state(encoder, weights.state, label, "encoder.",
                          f"{weights.encoder_type} (IR-SE-50)")
    encoder.load_state_dict(state, strict=True)
    if weights.start_from_latent_avg and weights.latent_avg is not None:
        encoder.latent_avg.copy_(weights.latent_avg)
        encoder.add_latent_avg = True
    return encoder.eval().requires_grad_(False)


def load_e4e_encoder(path: str | os.PathLike[str], device: torch.device | str = "cpu"
                     ) -> E4EEncoder:
    """An e4e (or pSp) checkpoint -> its encoder, through ``torch.load(weights_only=True)``."""
    from ..checkpoints.rosinality import load_torch_checkpoint

    label = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{label}: no such e4e checkpoint")
    weights = read_e4e_encoder(load_torch_checkpoint(path), label)
    return encoder_from_weights(weights, label).to(device)


def encoder_input(aligned: np.ndarray) -> torch.Tensor:
    """uint8 RGB [256, 256, 3] (``align_ffhq`` at 256) -> [1, 3, 256, 256] in [-1, 1]."""
    if aligned.shape != (INPUT_SIZE, INPUT_SIZE, 3) or aligned.dtype != np.uint8:
        raise CheckpointError(f"e4e input: expected uint8 [256, 256, 3], found {aligned.dtype} "
                              f"{list(aligned.shape)}")
    pixels = torch.from_numpy(np.array(aligned, np.uint8)).permute(2, 0, 1)[None].float()
    return (pixels / 255.0 - 0.5) / 0.5


def encode(encoder: E4EEncoder, aligned: np.ndarray) -> torch.Tensor:
    """W+ [1, style_count, 512] float32 of one aligned face."""
    device = next(encoder.parameters()).device
    with torch.no_grad():
        ws = encoder(encoder_input(aligned).to(device))
    if not torch.isfinite(ws).all():
        raise CheckpointError("e4e: produced non-finite latents (a damaged checkpoint?)")
    return ws
