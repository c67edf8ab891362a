"""LPIPS (VGG, v0.1) from the two files a user supplies, in their official layouts (written
here), against a float64 reference; used as a refinement loss."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from neural_face_rig.neural.errors import CheckpointError
from neural_face_rig.neural.photo.invert_stylegan import RefineOptions, refine_wplus
from neural_face_rig.neural.photo.lpips import load_lpips
from test_photo_invert import stylegan  # noqa: F401  (the tiny generator fixture)

CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # torchvision vgg16 features.*
WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
POOL_AFTER = {2, 7, 14, 21}  # a max-pool follows these convs (features 4, 9, 16, 23)
TAPS = {2: 0, 7: 1, 14: 2, 21: 3, 28: 4}  # conv index -> lin index (relu1_2 ... relu5_3)


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lpips")
    g = torch.Generator().manual_seed(0)
    vgg, channels = {}, 3
    for index, width in zip(CONVS, WIDTHS, strict=True):
        vgg[f"features.{index}.weight"] = torch.randn(width, channels, 3, 3, generator=g) * (
            math.sqrt(2.0 / (channels * 9)))
        vgg[f"features.{index}.bias"] = 0.01 * torch.randn(width, generator=g)
        channels = width
    torch.save(vgg, folder / "vgg16-397923af.pth")  # (its classifier.* is not read)
    lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) * 0.1
           for k, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(lin, folder / "vgg.pth")
    return folder / "vgg.pth", folder / "vgg16-397923af.pth", vgg, lin


def reference(vgg, lin, x, y):
    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)

    def taps(image):
        h, out = (image - shift) / scale, []
        for index in CONVS:
            h = F.relu(F.conv2d(h, vgg[f"features.{index}.weight"].double(),
                                vgg[f"features.{index}.bias"].double(), padding=1))
            if index in TAPS:
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
            if index in POOL_AFTER:
                h = F.max_pool2d(h, 2)
        return out

    total = 0
    for k, (a, b) in enumerate(zip(taps(x), taps(y), strict=True)):
        weight = lin[f"lin{k}.model.1.weight"].double()
        total = total + ((a - b) ** 2 * weight.view(1, -1, 1, 1)).sum(1).mean(dim=(1, 2))
    return total


def test_lpips_matches_float64_reference(lpips_files):
    lin_path, vgg_path, vgg, lin = lpips_files
    net = load_lpips(lin_path, vgg_path)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    distance = net(x, y)
    expected = reference(vgg, lin, x.double(), y.double())
    assert distance.shape == (2,) and float(expected.min()) > 1e-3
    np.testing.assert_allclose(distance.numpy(), expected.numpy(), rtol=1e-5)
    assert float(net(x, x).abs().max()) < 1e-6


def test_lpips_files_are_checked_by_name(lpips_files, tmp_path):
    lin_path, vgg_path, vgg, _ = lpips_files
    with pytest.raises(CheckpointError, match="holds no lin\\* keys"):
        load_lpips(vgg_path, vgg_path)
    short = {k: v for k, v in vgg.items() if not k.startswith("features.28.")}
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match=r"missing \['features.28.weight'"):
        load_lpips(lin_path, tmp_path / "short.pth")


def test_refinement_with_lpips_lowers_the_loss(lpips_files, stylegan):  # noqa: F811
    synthesis, target, w_true, start = stylegan
    net = load_lpips(lpips_files[0], lpips_files[1])
    result = refine_wplus(synthesis, target, start,
                          RefineOptions(steps=30, lr=0.03, latent_weight=0.0, lpips_weight=1.0),
                          lpips=net)
    assert result.losses[-1] < 0.5 * result.losses[0]
