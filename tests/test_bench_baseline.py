"""The plain-torch baselines ``nfr bench`` compares against compute the same images as the
project's generators (else the comparison would be meaningless)."""

import numpy as np
import torch
from fixtures.dfg_formats import TINY_DFG
from neural_face_rig.neural.bench_baseline import dfg_baseline, stylegan2_baseline
from neural_face_rig.neural.discofacegan.generator import DFGGenerator
from neural_face_rig.neural.discofacegan.generator import random_state_dict as dfg_state
from neural_face_rig.neural.stylegan2.config import StyleGAN2Config
from neural_face_rig.neural.stylegan2.generator import Generator, random_state_dict


def _close(a, b):
    span = float(b.max() - b.min())
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5 * max(span, 1.0), rtol=0)


def test_stylegan2_baseline_matches_the_generator():
    cfg = StyleGAN2Config(z_dim=12, w_dim=16, img_resolution=32, mapping_layers=2,
                          channel_base=512, channel_max=24, conv_clamp=1.0)
    gen = Generator.from_state_dict(cfg, random_state_dict(cfg, 1))
    ws = torch.randn(1, cfg.num_ws, cfg.w_dim, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        _close(stylegan2_baseline(gen)(ws), gen.synthesis(ws))


def test_dfg_baseline_matches_the_generator():
    gen = DFGGenerator.from_state_dict(TINY_DFG, dfg_state(TINY_DFG, 1))
    ws = torch.randn(1, TINY_DFG.num_ws, TINY_DFG.w_dim,
                     generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        _close(dfg_baseline(gen)(ws), gen.synthesis(ws))
