"""Checkpoint readers: every official StyleGAN2 format, written by tests/fixtures from one
NVIDIA-layout state dict, must come back as exactly that state dict; bad files give specific
errors; no file's embedded code ever runs."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from fixtures.stylegan_formats import (
    TINY_CONFIG,
    marker_source,
    rosinality_state,
    tf_static_kwargs,
    tiny_state,
    write_e4e,
    write_nvidia_pkl,
    write_rosinality,
    write_stylegan3_pkl,
    write_tf_pkl,
)
from neural_face_rig.neural import cli_convert
from neural_face_rig.neural.checkpoints import (
    E4E,
    NVIDIA_PKL,
    PROJECT,
    ROSINALITY,
    TF_PKL,
    LoadedGenerator,
    load_generator,
    save_project,
)
from neural_face_rig.neural.checkpoints.project_format import sidecar_path
from neural_face_rig.neural.checkpoints.rosinality import W_AVG_SAMPLES, W_AVG_SEED
from neural_face_rig.neural.errors import CheckpointError, NeuralError, UnsafePickleError
from neural_face_rig.neural.stylegan2.generator import Generator


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def source() -> dict[str, torch.Tensor]:
    return tiny_state(seed=7)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, source: dict[str, torch.Tensor]) -> dict:
    folder = tmp_path_factory.mktemp("formats")
    marker = folder / "module-source-was-executed"
    src = marker_source(marker)
    paths = {
        "nvidia": write_nvidia_pkl(folder / "ada.pkl", source, module_src=src),
        "nvidia_protocol4": write_nvidia_pkl(folder / "ada4.pkl", source, module_src=src,
                                             protocol=4),
        "stylegan3_repo": write_nvidia_pkl(folder / "sg3.pkl", source, module_src=src,
                                           flavour="sg3"),
        "tf": write_tf_pkl(folder / "tf.pkl", source, build_module_src=src),
        "rosinality": write_rosinality(folder / "ros.pt", source),
        "rosinality_legacy": write_rosinality(folder / "ros-legacy.pt", source,
                                              legacy_format=True),
        "e4e": write_e4e(folder / "e4e.pt", source),
    }
    paths["project"] = folder / "converted.safetensors"
    save_project(load_generator(paths["nvidia"]), paths["project"])
    return {"paths": paths, "marker": marker, "folder": folder}


FORMATS = [
    ("nvidia", NVIDIA_PKL),
    ("nvidia_protocol4", NVIDIA_PKL),
    ("stylegan3_repo", NVIDIA_PKL),
    ("tf", TF_PKL),
    ("rosinality", ROSINALITY),
    ("rosinality_legacy", ROSINALITY),
    ("e4e", E4E),
    ("project", PROJECT),
]


# --- one set of weights through every reader -----------------------------------------------


@pytest.mark.parametrize(("name", "source_format"), FORMATS)
def test_every_reader_returns_the_source_state_dict(files, source, name, source_format) -> None:
    path = files["paths"][name]
    loaded = load_generator(path)
    assert loaded.source_format == source_format
    assert loaded.config == TINY_CONFIG
    assert set(loaded.state_dict) == set(source)
    for key, tensor in source.items():
        got = loaded.state_dict[key]
        assert got.dtype == torch.float32 and got.is_contiguous(), key
        assert torch.equal(got, tensor), key
    # The digest identifies the weights: a converted file keeps its source's.
    origin = files["paths"]["nvidia"] if name == "project" else path
    assert loaded.sha256 == _sha256(origin)


def test_embedded_module_source_never_runs(files, tmp_path: Path) -> None:
    for name, _ in FORMATS:
        load_generator(files["paths"][name])
    assert not files["marker"].exists()
    # Control: the payload is live, so its absence above means it never ran.
    control = tmp_path / "control"
    exec(marker_source(control), {})
    assert control.exists()


@pytest.mark.parametrize("name", ["nvidia", "tf", "rosinality", "e4e", "project"])
def test_images_match_the_source_weights(files, source, name) -> None:
    loaded = load_generator(files["paths"][name])
    z = torch.randn(2, TINY_CONFIG.z_dim, generator=torch.Generator().manual_seed(3))
    reference = Generator.from_state_dict(TINY_CONFIG, source)(z, truncation_psi=0.7)
    image = Generator.from_state_dict(loaded.config, loaded.state_dict)(z, truncation_psi=0.7)
    assert image.shape == (2, 3, 32, 32)
    torch.testing.assert_close(image, reference, rtol=0, atol=1e-5)


# --- format-specific behaviour -------------------------------------------------------------


def _mapping_mean_reference(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """mean over seeded z of NVIDIA's mapping, written out here with plain tensor maths."""
    z = torch.randn(W_AVG_SAMPLES, TINY_CONFIG.z_dim,
                    generator=torch.Generator().manual_seed(W_AVG_SEED)).double()
    x = z / torch.sqrt((z * z).mean(dim=1, keepdim=True) + 1e-8)
    lr = TINY_CONFIG.mapping_lr_multiplier
    for i in range(TINY_CONFIG.mapping_layers):
        weight = state[f"mapping.fc{i}.weight"].double() * lr / math.sqrt(x.shape[1])
        x = x @ weight.T + state[f"mapping.fc{i}.bias"].double() * lr
        x = torch.where(x >= 0, x, 0.2 * x) * math.sqrt(2)
    return x.mean(dim=0).float()


def test_rosinality_training_checkpoint_estimates_w_avg(tmp_path: Path, source) -> None:
    path = write_rosinality(tmp_path / "train.pt", source, training=True)
    loaded = load_generator(path)
    assert loaded.source_format == ROSINALITY
    assert loaded.extras["kind"] == "training"
    assert loaded.extras["args"]["n_mlp"] == TINY_CONFIG.mapping_layers
    for key, tensor in source.items():
        if key != "mapping.w_avg":
            assert torch.equal(loaded.state_dict[key], tensor), key
    torch.testing.assert_close(loaded.state_dict["mapping.w_avg"], _mapping_mean_reference(source),
                               rtol=0, atol=1e-5)
    assert "estimated" in loaded.extras["w_avg_source"]


def test_e4e_latent_avg_forms(tmp_path: Path, source) -> None:
    rows = source["mapping.w_avg"].repeat(TINY_CONFIG.num_ws, 1)
    rows[1:] += 0.5
    differing = load_generator(write_e4e(tmp_path / "a.pt", source, latent_avg=rows))
    torch.testing.assert_close(differing.state_dict["mapping.w_avg"], rows.mean(dim=0))
    assert "mean" in differing.extras["w_avg_source"]
    flat = load_generator(write_e4e(tmp_path / "b.pt", source, latent_avg=source["mapping.w_avg"]))
    assert torch.equal(flat.state_dict["mapping.w_avg"], source["mapping.w_avg"])
    assert flat.extras["encoder_tensors"] == 2
    assert flat.extras["opts"]["encoder_type"] == "Encoder4Editing"


@pytest.mark.parametrize("flavour", ["ada", "sg3"])
@pytest.mark.parametrize("omit", [(), ("conv_clamp", "num_fp16_res")])
def test_nvidia_architecture_from_kwargs_and_attributes(tmp_path: Path, flavour, omit) -> None:
    config = replace(TINY_CONFIG, conv_clamp=256, num_fp16_res=2, w_avg_beta=0.998,
                     mapping_lr_multiplier=0.02, channel_base=256)
    state = tiny_state(seed=1, config=config)
    path = write_nvidia_pkl(tmp_path / "g.pkl", state, config, flavour=flavour, omit_kwargs=omit)
    loaded = load_generator(path)
    assert loaded.config == config
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in state.items())
    assert loaded.extras["persistence_version"] == 6
    assert loaded.extras["training_set_kwargs"]["resolution"] == 32


def test_stylegan3_generators_are_refused(tmp_path: Path) -> None:
    path = write_stylegan3_pkl(tmp_path / "sg3-t.pkl")
    with pytest.raises(CheckpointError, match=r"StyleGAN3 \(alias-free\).*SynthesisInput"):
        load_generator(path)


def test_tf_stylegan1_pickle_is_refused_by_name(tmp_path: Path, source) -> None:
    path = write_tf_pkl(tmp_path / "sg1.pkl", source, version=3)
    with pytest.raises(CheckpointError, match=r"version 3 is a StyleGAN \(v1\) pickle"):
        load_generator(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fancy_option": 1}, "unknown TF generator kwarg.*fancy_option"),
        ({"nonlinearity": "relu"}, "nonlinearity='relu' is not supported"),
        ({"architecture": "resnet"}, "architecture"),
        ({"mapping_layers": 3}, r"missing TF variable mapping/Dense2/weight"),
        ({"resolution": 16}, r"unexpected TF variable.*synthesis/32x32/Conv0_up/weight"),
    ],
)
def test_tf_kwargs_and_variables_are_checked(tmp_path: Path, source, change, message) -> None:
    path = write_tf_pkl(tmp_path / "tf.pkl", source,
                        static_kwargs={**tf_static_kwargs(TINY_CONFIG), **change})
    with pytest.raises(CheckpointError, match=message):
        load_generator(path)


# --- bad files -----------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("photo.pkl", PNG, "PNG image, not a model checkpoint"),
        ("empty.pkl", b"", "empty"),
        ("noise.pt", bytes(range(7, 200)), "unknown file format"),
        ("notes.pkl", b'{"a": 1}', "JSON"),
    ],
)
def test_wrong_format_files(tmp_path: Path, name, content, message) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_generator(path)


def test_other_pickles_and_torch_files_are_named(tmp_path: Path) -> None:
    import pickle

    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3], protocol=4))
    with pytest.raises(CheckpointError, match="not a StyleGAN2 snapshot.*list"):
        load_generator(tmp_path / "list.pkl")
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"neither rosinality.*\['model'\]"):
        load_generator(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        load_generator(tmp_path / "missing.pkl")


@pytest.mark.parametrize(
    "name", ["nvidia", "tf", "rosinality", "rosinality_legacy", "e4e", "project"]
)
def test_truncated_files_give_checkpoint_errors(files, tmp_path: Path, name) -> None:
    data = files["paths"][name].read_bytes()
    for fraction in (0.02, 0.5, 0.98):
        cut = tmp_path / f"cut{files['paths'][name].suffix}"
        cut.write_bytes(data[: int(len(data) * fraction)])
        if name == "project":
            sidecar_path(cut).write_text(sidecar_path(files["paths"][name]).read_text())
        with pytest.raises(CheckpointError, match=str(cut)):
            load_generator(cut)


def test_unexpected_shape_names_key_and_shapes(tmp_path: Path, source) -> None:
    bad = dict(source)
    bad["synthesis.b8.conv1.weight"] = torch.randn(32, 32, 3, 1)
    path = write_nvidia_pkl(tmp_path / "bad.pkl", bad)
    with pytest.raises(
        CheckpointError,
        match=r"key synthesis\.b8\.conv1\.weight: expected shape \(32, 32, 3, 3\), "
        r"found \(32, 32, 3, 1\)",
    ):
        load_generator(path)


def _save_rosinality(path: Path, g_ema: dict, latent_avg: torch.Tensor) -> Path:
    torch.save({"g_ema": g_ema, "latent_avg": latent_avg}, path)
    return path


def test_rosinality_key_and_shape_errors_name_the_files_keys(tmp_path: Path, source) -> None:
    w_avg = source["mapping.w_avg"]
    extra = rosinality_state(source, TINY_CONFIG)
    extra["junk.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError, match="unexpected key.*junk.weight"):
        load_generator(_save_rosinality(tmp_path / "a.pt", extra, w_avg))

    misshaped = rosinality_state(source, TINY_CONFIG)
    misshaped["convs.1.conv.modulation.weight"] = torch.zeros(16, 32)
    with pytest.raises(CheckpointError, match=r"key convs\.1\.conv\.modulation\.weight: "
                                              r"expected shape \(32, 32\), found \(16, 32\)"):
        load_generator(_save_rosinality(tmp_path / "b.pt", misshaped, w_avg))

    missing = rosinality_state(source, TINY_CONFIG)
    del missing["noises.noise_3"]
    with pytest.raises(CheckpointError,
                       match=r"missing key noises\.noise_3 \(shape \(1, 1, 16, 16\)"):
        load_generator(_save_rosinality(tmp_path / "c.pt", missing, w_avg))

    good = rosinality_state(source, TINY_CONFIG)
    with pytest.raises(CheckpointError, match=r"latent_avg: expected shape \(32,\).*found \(31,\)"):
        load_generator(_save_rosinality(tmp_path / "d.pt", good, w_avg[:31]))


def test_non_finite_weights_are_refused(tmp_path: Path, source) -> None:
    bad = dict(source)
    bad["mapping.fc1.bias"] = source["mapping.fc1.bias"].clone()
    bad["mapping.fc1.bias"][3] = float("nan")
    with pytest.raises(CheckpointError, match=r"mapping\.fc1\.bias holds non-finite"):
        load_generator(write_rosinality(tmp_path / "nan.pt", bad))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_torch_checkpoint_with_code_is_refused(tmp_path: Path, source) -> None:
    marker = tmp_path / "pwned"
    torch.save({"g_ema": rosinality_state(source, TINY_CONFIG), "args": _Payload(marker)},
               tmp_path / "evil.pt")
    with pytest.raises(UnsafePickleError, match="'posix.system'"):
        load_generator(tmp_path / "evil.pt")
    assert not marker.exists()


# --- the project's own format --------------------------------------------------------------


def test_project_files_and_sidecar(files) -> None:
    weights = files["paths"]["project"]
    sidecar = json.loads(sidecar_path(weights).read_text())
    assert sidecar["format"] == "nfr-stylegan2" and sidecar["version"] == 2
    assert sidecar["weights_sha256"] == _sha256(weights)
    assert sidecar["source_format"] == NVIDIA_PKL
    assert sidecar["source_sha256"] == _sha256(files["paths"]["nvidia"])
    assert sidecar["config"] == TINY_CONFIG.to_dict()
    assert load_generator(weights).extras["converted_from"] == NVIDIA_PKL
    assert not [p for p in files["folder"].iterdir() if "tmp" in p.name]


def _project_copy(files, tmp_path: Path) -> Path:
    weights = tmp_path / "copy.safetensors"
    weights.write_bytes(files["paths"]["project"].read_bytes())
    sidecar_path(weights).write_text(sidecar_path(files["paths"]["project"]).read_text())
    return weights


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("format", "something-else", "field format: expected 'nfr-stylegan2'"),
        ("version", 99, "field version: expected 1..2, found 99"),
        ("weights_sha256", None, "field weights_sha256: expected the 64-hex-digit digest"),
        ("source_sha256", "abc", "field source_sha256: expected 64 lowercase hex"),
        ("config", {"img_resolution": 64, "z_dim": 32, "w_dim": 32}, "missing key"),
        ("config", {"frobnicate": 1}, "unknown generator config field"),
    ],
)
def test_project_sidecar_errors(files, tmp_path: Path, field, value, message) -> None:
    weights = _project_copy(files, tmp_path)
    data = json.loads(sidecar_path(weights).read_text())
    data[field] = value
    sidecar_path(weights).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=message):
        load_generator(weights)


def test_project_weights_need_their_sidecar(files, tmp_path: Path) -> None:
    weights = _project_copy(files, tmp_path)
    sidecar_path(weights).unlink()
    with pytest.raises(CheckpointError, match="without their sidecar copy.json: expected it next"):
        load_generator(weights)


def test_a_sidecar_from_another_model_is_refused_with_both_digests(files, tmp_path) -> None:
    weights = _project_copy(files, tmp_path)
    other = LoadedGenerator(TINY_CONFIG, {k: v + 1 for k, v in
                                          load_generator(weights).state_dict.items()},
                            NVIDIA_PKL, "ab" * 32)
    save_project(other, tmp_path / "other.safetensors")
    sidecar_path(weights).write_text(sidecar_path(tmp_path / "other.safetensors").read_text())
    claimed = json.loads(sidecar_path(weights).read_text())["weights_sha256"]
    with pytest.raises(CheckpointError, match=rf"sha256 {_sha256(weights)} does not match "
                                              rf"copy.json, which describes weights with "
                                              rf"sha256 {claimed}"):
        load_generator(weights)


def test_a_sidecar_path_that_is_a_folder_replaces_nothing(files, tmp_path) -> None:
    weights = _project_copy(files, tmp_path)
    before = weights.read_bytes()
    sidecar_path(weights).unlink()
    sidecar_path(weights).mkdir()
    with pytest.raises(CheckpointError, match=r"cannot write the artefact pair.*nothing was "
                                              r"replaced"):
        save_project(load_generator(files["paths"]["nvidia"]), weights)
    assert weights.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.json", "copy.safetensors"]


# --- nfr convert ---------------------------------------------------------------------------


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="nfr")
    cli_convert.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.mark.parametrize("name", ["tf", "rosinality", "e4e"])
def test_nfr_convert_output_equals_source(files, tmp_path: Path, name, capsys) -> None:
    src = files["paths"][name]
    assert _run("convert", str(src), str(tmp_path / "out")) == 0
    converted = load_generator(tmp_path / "out.safetensors")
    original = load_generator(src)
    assert converted.config == original.config
    assert converted.sha256 == original.sha256
    assert converted.state_dict.keys() == original.state_dict.keys()
    assert all(torch.equal(converted.state_dict[k], v) for k, v in original.state_dict.items())
    assert "out.safetensors" in capsys.readouterr().out


def test_nfr_convert_refuses_other_output_suffixes(files, tmp_path: Path) -> None:
    with pytest.raises(NeuralError, match=r"must be a \*\.safetensors file"):
        _run("convert", str(files["paths"]["tf"]), str(tmp_path / "out.pkl"))


def test_a_missing_output_folder_is_named(files, tmp_path) -> None:
    loaded = load_generator(files["paths"]["nvidia"])
    with pytest.raises(CheckpointError, match=r"the folder .*nowhere does not exist; nothing was "
                                              r"replaced"):
        save_project(loaded, tmp_path / "nowhere" / "g.safetensors")
