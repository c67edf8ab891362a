"""``nfr bench --nvidia-repo DIR``: what can be checked without NVIDIA's code. A bad folder is
refused in one line (exit 2) before any benchmark runs; an import failure names the file and
comes from that folder's own packages; the Generator kwargs built from a config mean that
config to the project's own reader of NVIDIA's recorded kwargs (which applies each
repository's defaults); the commit noted is the folder's own."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
from neural_face_rig.neural import cli
from neural_face_rig.neural.bench_nvidia import (
    ENV_VAR,
    NvidiaRepoError,
    generator_kwargs,
    open_repo,
    repo_commit,
)
from neural_face_rig.neural.checkpoints.nvidia_pkl import _config_fields
from neural_face_rig.neural.checkpoints.safe_pickle import PersistentRecord
from neural_face_rig.neural.stylegan2.config import StyleGAN2Config, expected_state_shapes


def _checkout(root: Path, networks: str | None, packages=("dnnlib", "torch_utils")) -> Path:
    """A folder laid out like NVIDIA's checkout: the packages' __init__.py files and, unless
    None, training/networks.py with the given source."""
    for package in packages:
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    if networks is not None:
        (root / "training").mkdir(parents=True)
        (root / "training" / "__init__.py").write_text("")
        (root / "training" / "networks.py").write_text(networks)
    return root


def _bench_error(argv, capsys) -> str:
    assert cli.main(["bench", *argv]) == 2
    out, err = capsys.readouterr()
    assert "[stylegan2]" not in out  # refused before any suite ran
    lines = err.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


def test_a_missing_folder_is_refused_by_nfr_bench(tmp_path, capsys):
    line = _bench_error(["--suite", "stylegan2", "--nvidia-repo", str(tmp_path / "nope")], capsys)
    assert str(tmp_path / "nope") in line
    assert "found nothing" in line and "NVlabs/stylegan2-ada-pytorch" in line


def test_the_environment_variable_is_the_default_and_named_when_wrong(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "gone"))
    line = _bench_error(["--suite", "stylegan2"], capsys)
    assert str(tmp_path / "gone") in line and f"${ENV_VAR}" in line


def test_the_option_without_the_stylegan2_suite_is_refused(tmp_path, capsys):
    line = _bench_error(["--suite", "dfg", "--nvidia-repo", str(tmp_path)], capsys)
    assert "stylegan2" in line and "dfg" in line


def test_a_folder_without_the_networks_file_names_both_files_expected(tmp_path):
    root = _checkout(tmp_path / "repo", networks=None)
    with pytest.raises(NvidiaRepoError) as err:
        open_repo(root)
    message = str(err.value)
    assert str(root) in message
    assert "training/networks.py" in message and "training/networks_stylegan2.py" in message


def test_a_folder_without_nvidias_packages_names_the_missing_one(tmp_path):
    root = _checkout(tmp_path / "repo", networks="", packages=("torch_utils",))
    with pytest.raises(NvidiaRepoError, match=r"found no dnnlib/__init__\.py"):
        open_repo(root)


@pytest.mark.parametrize("name", ["first", "second"])
def test_an_import_failure_names_the_file_and_uses_the_folders_own_packages(
    tmp_path, monkeypatch, name
):
    # A module of the same name already loaded in the process must neither be used nor lost.
    theirs = types.ModuleType("dnnlib")
    monkeypatch.setitem(sys.modules, "dnnlib", theirs)
    source = f"import dnnlib\nraise RuntimeError('{name} saw ' + str(dnnlib.__file__))\n"
    root = _checkout(tmp_path / name, networks=source)
    with pytest.raises(NvidiaRepoError) as err:
        open_repo(root)
    message = str(err.value)
    assert str(root / "training" / "networks.py") in message
    assert f"RuntimeError: {name} saw {root / 'dnnlib' / '__init__.py'}" in message
    assert sys.modules["dnnlib"] is theirs
    assert "training" not in sys.modules and "training.networks" not in sys.modules


def test_a_networks_file_without_a_generator_is_refused(tmp_path):
    root = _checkout(tmp_path / "repo", networks="import torch_utils\n")
    with pytest.raises(NvidiaRepoError, match="expected a class Generator"):
        open_repo(root)


ODD = StyleGAN2Config(z_dim=64, w_dim=32, c_dim=5, img_resolution=64, img_channels=1,
                      mapping_layers=3, mapping_lr_multiplier=0.1, channel_base=2048,
                      channel_max=128, num_fp16_res=2, conv_clamp=64.0, resample_kernel=(1, 1),
                      w_avg_beta=0.99, mapping_activation="relu", synthesis_activation="swish")


@pytest.mark.parametrize(("layout", "config"), [
    ("nested", ODD),  # every option away from stylegan2-ada-pytorch's defaults
    ("flat", ODD),
    ("flat", StyleGAN2Config()),  # FFHQ: conv_clamp None, no fp16 (stylegan3: 256, 4)
])
def test_generator_kwargs_mean_the_config_to_nvidias_constructors(layout, config):
    record = PersistentRecord("Generator", 4, {"_init_kwargs": generator_kwargs(config, layout)})
    fields, flavour = _config_fields(record, expected_state_shapes(config))
    assert flavour.startswith("stylegan2-ada" if layout == "nested" else "stylegan3")
    assert StyleGAN2Config.from_dict(fields) == config


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t",
                           *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_the_commit_noted_is_the_folders_own(tmp_path):
    assert repo_commit(tmp_path) == "unknown"  # not a git work tree
    root = tmp_path / "repo"
    _checkout(root, networks="")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "c")
    head = _git(root, "rev-parse", "HEAD")
    assert repo_commit(root) == head
    (root / "training" / "networks.py").write_text("# patched\n")
    assert repo_commit(root) == head + "+modified"
    # A plain folder inside that work tree is not a checkout of its own.
    assert repo_commit(root / "training") == "unknown"
