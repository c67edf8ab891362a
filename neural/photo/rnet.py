"""Deep3DFaceRecon's R-Net: the 257 rig values of an aligned 224 px face.

Architecture (``models/networks.py: ReconNetWrapper``, ``use_last_fc=False``): a ResNet-50 in
torchvision's layout (``conv1``, ``bn1``, ``layer1``..``layer4`` of Bottleneck units with the
stride on the 3x3 convolution, ``downsample.{0,1}``; global average pooling; no ``fc``) and
seven 1x1 convolutions with bias, ``final_layers.{0..6}``, of 80 (identity), 64 (expression),
80 (reflectance), 3 (angles), 27 (SH gamma), 2 (tx, ty) and 1 (tz) outputs, concatenated in
that order: exactly the canonical rig order (rig/params.py).

Input: RGB [B, 3, 224, 224] float in 0..1 (no mean/std), the ``align_d3d`` crop.

File: ``checkpoints/<name>/epoch_20.pth``, a ``torch.save`` dict ``{'net_recon': state dict,
'opt_00': Adam state, 'sched_00': scheduler state}``, read with ``torch.load(weights_only=True)``
(the project's allow-listed torch-file reader); only ``net_recon`` is used. Files of the
``use_last_fc=True`` variant (a 257-way ``backbone.fc``) are refused by name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...rig.params import RIG_SIZE
from ..errors import CheckpointError
from .state_check import checked_state

HEAD_SIZES = (80, 64, 80, 3, 27, 2, 1)
LAYERS = (3, 4, 6, 3)  # ResNet-50
WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
FEATURES = 512 * EXPANSION
INPUT_SIZE = 224
STATE_KEY = "net_recon"


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: 1x1, 3x3 (stride), 1x1 (x4), BN after each."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or inplanes != planes * EXPANSION:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * EXPANSION, 1, stride, bias=False),
                nn.BatchNorm2d(planes * EXPANSION),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet50(nn.Module):
    """[B, 3, H, W] -> pooled features [B, 2048, 1, 1] (torchvision names, no fc)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        inplanes = 64
        for index, (blocks, planes) in enumerate(zip(LAYERS, WIDTHS, strict=True)):
            units = []
            for unit in range(blocks):
                stride = 2 if unit == 0 and index > 0 else 1
                units.append(Bottleneck(inplanes, planes, stride))
                inplanes = planes * EXPANSION
            self.add_module(f"layer{index + 1}", nn.Sequential(*units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for index in range(len(LAYERS)):
            x = getattr(self, f"layer{index + 1}")(x)
        return x.mean(dim=(2, 3), keepdim=True)


class RNet(nn.Module):
    """Aligned faces [B, 3, 224, 224] RGB 0..1 -> rig vectors [B, 257] (canonical order)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ResNet50()
        self.final_layers = nn.ModuleList(nn.Conv2d(FEATURES, n, 1) for n in HEAD_SIZES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise CheckpointError(
                f"R-Net input: expected [B, 3, {INPUT_SIZE}, {INPUT_SIZE}], found {list(x.shape)}"
            )
        features = self.backbone(x)
        return torch.cat([head(features) for head in self.final_layers], dim=1).flatten(1)


def read_rnet_state(ckpt: Any, label: str) -> dict[str, torch.Tensor]:
    """A loaded ``epoch_20.pth`` dict -> the checked ``net_recon`` state dict."""
    if not isinstance(ckpt, Mapping) or STATE_KEY not in ckpt:
        found = f"keys {sorted(map(str, ckpt))[:8]}" if isinstance(ckpt, Mapping) else (
            type(ckpt).__name__)
        raise CheckpointError(
            f"{label}: expected a Deep3DFaceRecon checkpoint (a dict with '{STATE_KEY}'), "
            f"found {found}"
        )
    state = ckpt[STATE_KEY]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{label}: '{STATE_KEY}' is a {type(state).__name__}, expected a "
                              "state dict")
    if "backbone.fc.weight" in state:
        raise CheckpointError(
            f"{label}: a use_last_fc=True R-Net (one 257-way backbone.fc); only the released "
            "layout with seven final_layers heads (use_last_fc=False) is supported"
        )
    return checked_state(RNet(), state, label, f"{STATE_KEY}.", "ResNet-50 R-Net")


def load_rnet(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> RNet:
    """``epoch_20.pth`` -> R-Net in eval mode, frozen, on ``device``."""
    from ..checkpoints.rosinality import load_torch_checkpoint

    label = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{label}: no such R-Net file (Deep3DFaceRecon's epoch_20.pth)")
    state = read_rnet_state(load_torch_checkpoint(path), label)
    net = RNet()
    net.load_state_dict(state, strict=True)
    return net.to(device).eval().requires_grad_(False)


def crop_tensor(crop: np.ndarray) -> torch.Tensor:
    """uint8 RGB [224, 224, 3] -> [1, 3, 224, 224] float32 0..1."""
    return torch.from_numpy(np.array(crop, np.uint8)).permute(2, 0, 1)[None].float() / 255.0


def rig_from_crop(net: RNet, crop: np.ndarray) -> np.ndarray:
    """The rig vector [257] float32 of one aligned crop (``align_d3d``)."""
    device = next(net.parameters()).device
    with torch.no_grad():
        out = net(crop_tensor(crop).to(device))
    values = out[0].double().cpu().numpy()
    if values.shape != (RIG_SIZE,) or not np.isfinite(values).all():
        raise CheckpointError("R-Net: produced non-finite rig values (a damaged checkpoint?)")
    return values.astype(np.float32)
