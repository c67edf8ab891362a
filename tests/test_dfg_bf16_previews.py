"""DiscoFaceGAN's bf16 live previews at the released architecture (256 px, 512 channels up to
32 px; random weights): the engine's own calibration (``preview_errors``, measured after its
first progressive run) finds every preview block within the 1 % tolerance, for a face mapped
from rig coefficients (what the worker renders) and for a random W+. The blocks below
``BF16_MIN_RES`` run in float32 in bf16 mode, so their previews are the exact images."""

import numpy as np
import pytest
import torch
from neural_face_rig.neural import engine as engine_mod
from neural_face_rig.neural.bench_live import mapping_mean_w
from neural_face_rig.neural.discofacegan.backend import DFGEngine
from neural_face_rig.neural.discofacegan.config import DFGConfig
from neural_face_rig.neural.discofacegan.generator import (
    BF16_MIN_RES,
    DFGGenerator,
    random_state_dict,
)
from neural_face_rig.rig.params import RigParams

RELEASE = DFGConfig()


@pytest.fixture(scope="module")
def generator() -> DFGGenerator:
    return DFGGenerator.from_state_dict(RELEASE, random_state_dict(RELEASE, 0))


@pytest.mark.parametrize("face", ["rig", "random W+"])
def test_every_bf16_preview_block_is_within_the_tolerance(generator, face, monkeypatch) -> None:
    # Native bf16 where the CPU has it; elsewhere plain torch's bf16 (slow, same rounding).
    monkeypatch.setattr(engine_mod, "bf16_supported", lambda device="cpu": True)
    engine = DFGEngine(generator, mapping_mean_w(generator))
    if face == "rig":
        z = engine.input_from_rig(RigParams.sample(np.random.default_rng(10)), seed=1)
        ws = engine.map(z)
    else:
        ws = torch.randn(1, RELEASE.num_ws, RELEASE.w_dim,
                         generator=torch.Generator().manual_seed(0))
    for _ in engine.progressive(ws):
        pass  # the first progressive run is fp32, then calibrated
    errors = engine.preview_errors
    assert errors is not None and sorted(errors) == [4, 8, 16, 32, 64, 128]
    for res, error in errors.items():
        if res < BF16_MIN_RES:
            assert error == 0.0, res  # float32 in bf16 mode: the exact image
        else:
            assert 0.0 < error <= engine_mod.PREVIEW_TOLERANCE, (res, error)
