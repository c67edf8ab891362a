"""Inversion round trips on tiny random generators at their full architecture: StyleGAN2 W+
refinement and DiscoFaceGAN identity + noise, with progress, cancel and refused options."""

import numpy as np
import pytest
import torch
from neural_face_rig.neural.discofacegan.config import DFGConfig
from neural_face_rig.neural.discofacegan.generator import DFGGenerator
from neural_face_rig.neural.discofacegan.generator import random_state_dict as dfg_random_state
from neural_face_rig.neural.photo import PhotoError
from neural_face_rig.neural.photo.invert_dfg import DFGInvertOptions, dfg_render, invert_dfg
from neural_face_rig.neural.photo.invert_stylegan import RefineOptions, refine_wplus
from neural_face_rig.neural.photo.optimise import InversionCancelled
from neural_face_rig.neural.stylegan2.config import StyleGAN2Config
from neural_face_rig.neural.stylegan2.generator import (
    Generator,
    SynthesisOptions,
    random_state_dict,
)
from neural_face_rig.rig.params import RigParams

SG2 = StyleGAN2Config(z_dim=32, w_dim=32, img_resolution=32, mapping_layers=2,
                      channel_base=512, channel_max=32)
# w_dim above the 192 optimised inputs, so the render can pin them down locally.
DFG = DFGConfig(w_dim=256, img_resolution=32, mapping_layers=2, fmap_base=1024, fmap_max=32)


@pytest.fixture(scope="module")
def stylegan():
    generator = Generator.from_state_dict(SG2, random_state_dict(SG2, 0))
    g = torch.Generator().manual_seed(1)
    w_true = generator.map(torch.randn(1, SG2.z_dim, generator=g))
    w_true = w_true + 0.2 * torch.randn(w_true.shape, generator=g)  # a real W+ (rows differ)
    start = w_true + 0.5 * w_true.std() * torch.randn(w_true.shape, generator=g)

    def synthesis(ws):
        return generator.synthesis(ws, SynthesisOptions(noise_mode="const"))

    with torch.no_grad():
        target = synthesis(w_true)
    return synthesis, target, w_true, start


def test_refinement_lowers_the_loss_and_moves_w_towards_the_known_one(stylegan):
    synthesis, target, w_true, start = stylegan
    calls = []
    result = refine_wplus(synthesis, target, start,
                          RefineOptions(steps=100, lr=0.03, latent_weight=0.0),
                          progress=lambda done, total, loss: calls.append((done, total, loss)))
    assert result.losses[-1] < 0.05 * result.losses[0]
    assert (result.ws - w_true).norm() < 0.95 * (start - w_true).norm()
    assert [c[:2] for c in calls] == [(i, 100) for i in range(1, 101)]
    assert result.ws.shape == start.shape and not result.ws.requires_grad


def test_refinement_cancel_and_refused_options(stylegan):
    synthesis, target, _, start = stylegan
    checks = iter([False, False, False, True])
    with pytest.raises(InversionCancelled, match="after 3 of 50 steps"):
        refine_wplus(synthesis, target, start, RefineOptions(steps=50),
                     cancel=lambda: next(checks))
    with pytest.raises(PhotoError, match="refinement option lpips_weight: LPIPS needs its"):
        refine_wplus(synthesis, target, start, RefineOptions(steps=5, lpips_weight=1.0))
    with pytest.raises(PhotoError, match="feature_weight needs the e4e encoder"):
        refine_wplus(synthesis, target, start, RefineOptions(steps=1, feature_weight=1.0))
    with pytest.raises(PhotoError, match="step budget"):
        RefineOptions(steps=-1)


@pytest.fixture(scope="module")
def dfg_truth():
    generator = DFGGenerator.from_state_dict(DFG, dfg_random_state(DFG, 0))
    rng = np.random.default_rng(0)
    truth = RigParams.sample(rng)
    noise = rng.normal(size=DFG.noise_dim).astype(np.float32)
    z = torch.from_numpy(np.concatenate([truth.to_dfg_vector(), noise]).astype(np.float32))
    with torch.no_grad():
        target = dfg_render(generator, z[None], None, 1.0, 8)
    # The photo's estimate: exact expression, pose and light; identity, reflectance and the
    # noise 0.1 σ off (an R-Net is not exact).
    photo = RigParams.from_vector(truth.to_vector().copy())
    photo.identity[:] += 0.1 * rng.normal(size=80)
    photo.reflectance[:] += 0.1 * rng.normal(size=80)
    noise_start = noise + 0.1 * rng.normal(size=DFG.noise_dim).astype(np.float32)
    return generator, target, truth, noise, photo, noise_start


def test_dfg_recovers_the_coefficients_of_its_render(dfg_truth):
    generator, target, truth, noise, photo, noise_start = dfg_truth
    steps = []
    result = invert_dfg(generator, target, photo,
                        DFGInvertOptions(steps=100, lr=0.02, psi=1.0, prior_weight=0.0),
                        noise_start=noise_start, progress=lambda d, t, loss: steps.append(d))
    assert steps == list(range(1, 101))
    assert result.losses[-1] < 0.01 * result.losses[0]
    # Expression, pose and light are the photo's, exactly: the sliders start there.
    for group in ("expression", "rotation", "illumination", "translation"):
        np.testing.assert_array_equal(getattr(result.rig, group), getattr(photo, group))

    def identity_error(rig):
        return np.abs(np.concatenate([rig.identity - truth.identity,
                                      rig.reflectance - truth.reflectance])).max()

    # Stated tolerances: identity/reflectance and noise errors at most 60 % of the start's.
    assert identity_error(result.rig) < 0.6 * identity_error(photo)
    assert np.abs(result.noise - noise).max() < 0.6 * np.abs(noise_start - noise).max()
    np.testing.assert_array_equal(result.z[-DFG.noise_dim:], result.noise)


def test_dfg_cancel_and_truncation_without_average(dfg_truth):
    generator, target, _, _, photo, _ = dfg_truth
    with pytest.raises(InversionCancelled, match="after 0 of 10 steps"):
        invert_dfg(generator, target, photo, DFGInvertOptions(steps=10, psi=1.0),
                   cancel=lambda: True)
    with pytest.raises(PhotoError, match="needs the identity-average W"):
        invert_dfg(generator, target, photo, DFGInvertOptions(steps=1, psi=0.7))
    with pytest.raises(PhotoError, match="target must be"):
        invert_dfg(generator, target[:, :, :16, :16], photo, DFGInvertOptions(steps=1))
