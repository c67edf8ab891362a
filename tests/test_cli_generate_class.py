"""`nfr generate --class N` for conditional StyleGAN2 models (c_dim > 0)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from neural_face_rig.neural.checkpoints import LoadedGenerator, save_project
from neural_face_rig.neural.cli import main
from neural_face_rig.neural.engine import StyleGAN2Engine
from neural_face_rig.neural.stylegan2.config import StyleGAN2Config
from neural_face_rig.neural.stylegan2.generator import random_state_dict

COND = StyleGAN2Config(z_dim=12, w_dim=16, c_dim=4, img_resolution=16, mapping_layers=2,
                       channel_base=256, channel_max=16)
STATE = random_state_dict(COND, 2)


@pytest.fixture()
def weights(tmp_path):
    path = tmp_path / "cond.safetensors"
    save_project(LoadedGenerator(COND, STATE, "nvidia-pkl", "cd" * 32), path)
    return path


def _engine():
    return StyleGAN2Engine.from_state_dict(COND, STATE, cache=False)


def test_class_label_is_a_one_hot_c(weights, tmp_path):
    npy = tmp_path / "img.npy"
    assert main(["generate", "--weights", str(weights), "--seed", "3", "--class", "2",
                 "--psi", "0.8", "--out-npy", str(npy)]) == 0
    eng = _engine()
    c = torch.zeros(1, 4)
    c[0, 2] = 1
    expected = eng.synthesize(eng.map(eng.z_from_seed(3), c, psi=0.8)).numpy()
    assert np.array_equal(np.load(npy), expected)
    other = tmp_path / "other.npy"
    assert main(["generate", "--weights", str(weights), "--seed", "3", "--class", "1",
                 "--psi", "0.8", "--out-npy", str(other)]) == 0
    assert np.abs(np.load(other) - expected).max() > 1e-3  # the label matters
    z = np.random.RandomState(0).randn(2, COND.z_dim)
    np.save(tmp_path / "z.npy", z)
    assert main(["generate", "--weights", str(weights), "--z", str(tmp_path / "z.npy"),
                 "--class", "0", "--out-npy", str(npy)]) == 0
    assert np.load(npy).shape == (2, 3, 16, 16)


@pytest.mark.parametrize("extra, message", [
    ([], r"conditional \(c_dim 4\): give --class N with 0 <= N < 4"),
    (["--class", "4"], r"--class 4 is out of range: this generator has 4 classes"),
    (["--class", "-1"], r"--class -1 is out of range"),
])
def test_missing_or_out_of_range_label_is_refused(weights, tmp_path, capsys, extra, message):
    out = tmp_path / "x.npy"
    assert main(["generate", "--weights", str(weights), "--seed", "1", *extra,
                 "--out-npy", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cond.safetensors" in err
    assert re.search(message, err), err
    assert not out.exists()


def test_unconditional_model_refuses_a_label(tmp_path, capsys):
    cfg = StyleGAN2Config(**{**COND.to_dict(), "c_dim": 0})
    path = tmp_path / "plain.safetensors"
    save_project(LoadedGenerator(cfg, random_state_dict(cfg, 0), "nvidia-pkl", "ef" * 32), path)
    assert main(["generate", "--weights", str(path), "--seed", "1", "--class", "0",
                 "--out-npy", str(tmp_path / "x.npy")]) == 2
    assert "unconditional (c_dim 0)" in capsys.readouterr().err


def test_a_latent_file_whose_header_overstates_its_data_is_refused(weights, tmp_path, capsys):
    z = tmp_path / "huge.npy"
    with z.open("wb") as f:  # a header claiming 10^12 rows over the data of two
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (10**12, COND.z_dim)})
        f.write(np.zeros((2, COND.z_dim), np.float32).tobytes())
    out = tmp_path / "x.npy"
    assert main(["generate", "--weights", str(weights), "--z", str(z), "--class", "0",
                 "--out-npy", str(out)]) == 2
    err = capsys.readouterr().err
    assert "huge.npy" in err and "declares shape [1000000000000" in err, err
    assert f"found {2 * COND.z_dim * 4} bytes of data" in err, err
    assert not out.exists()
