"""NVIDIA pickles built with non-default constructor options: every option NVIDIA's code
accepts for them is honoured (a non-default FIR, other bias_act activations) or refused by
name; none is silently ignored."""

from __future__ import annotations

import pytest
import torch
from fixtures.stylegan_formats import TINY_CONFIG, _NvidiaTree, dump_pickle
from neural_face_rig.neural.checkpoints import load_generator
from neural_face_rig.neural.errors import CheckpointError
from neural_face_rig.neural.stylegan2.config import StyleGAN2Config
from neural_face_rig.neural.stylegan2.generator import Generator, random_state_dict


def _write(path, config, synthesis_extra=None, mapping_extra=None):
    """An ada snapshot whose recorded kwargs carry the given synthesis/mapping options, the
    state (incl. every resample_filter buffer) laid out as NVIDIA's modules register it."""
    state = random_state_dict(config, 3)
    tree = _NvidiaTree(state, config, "", "ada", ())
    g_ema = tree.generator()
    kwargs = g_ema.meta["state"]["_init_kwargs"]
    kwargs["synthesis_kwargs"].update(synthesis_extra or {})
    kwargs["mapping_kwargs"].update(mapping_extra or {})
    dump_pickle({"G_ema": g_ema, "G": g_ema}, path, 4)
    return state


def test_resample_filter_1_1_network_loads_with_conv1_on_the_default_fir(tmp_path):
    config = StyleGAN2Config(**{**TINY_CONFIG.to_dict(), "resample_kernel": [1, 1]})
    state = _write(tmp_path / "fir.pkl", config, {"resample_filter": [1, 1]})
    assert state["synthesis.b8.conv1.resample_filter"].shape == (4, 4)
    assert state["synthesis.b8.conv0.resample_filter"].shape == (2, 2)
    loaded = load_generator(tmp_path / "fir.pkl")
    assert loaded.config.resample_kernel == (1, 1)
    gen = Generator.from_state_dict(loaded.config, loaded.state_dict)
    ws = torch.randn(1, config.num_ws, config.w_dim)
    with torch.no_grad():
        img = gen.synthesis(ws)
        default = Generator.from_state_dict(TINY_CONFIG, random_state_dict(TINY_CONFIG, 3))
        assert (img - default.synthesis(ws)).abs().max() > 1e-3  # the FIR is honoured


def test_activation_kwargs_are_read_and_honoured(tmp_path):
    config = StyleGAN2Config(**{**TINY_CONFIG.to_dict(), "mapping_activation": "linear",
                                "synthesis_activation": "relu"})
    _write(tmp_path / "act.pkl", config, {"activation": "relu"}, {"activation": "linear"})
    loaded = load_generator(tmp_path / "act.pkl")
    assert loaded.config.mapping_activation == "linear"
    assert loaded.config.synthesis_activation == "relu"


def test_unknown_activation_kwarg_is_refused_by_name(tmp_path):
    _write(tmp_path / "bad.pkl", TINY_CONFIG, {"activation": "gelu"})
    with pytest.raises(CheckpointError, match=r"bad.pkl.*synthesis_activation.*'gelu'"):
        load_generator(tmp_path / "bad.pkl")


def test_rebuilt_filters_follow_nvidia_per_layer():
    from neural_face_rig.neural.checkpoints.loaded import with_resample_filters

    config = StyleGAN2Config(**{**TINY_CONFIG.to_dict(), "resample_kernel": [1, 1]})
    state = {k: v for k, v in random_state_dict(config, 1).items()
             if not k.endswith("resample_filter")}
    rebuilt = with_resample_filters(state, config)
    assert rebuilt["synthesis.b4.conv1.resample_filter"].shape == (4, 4)
    assert rebuilt["synthesis.b16.conv0.resample_filter"].shape == (2, 2)
    assert rebuilt["synthesis.b16.resample_filter"].shape == (2, 2)
    Generator.from_state_dict(config, rebuilt)  # passes the per-layer filter check
