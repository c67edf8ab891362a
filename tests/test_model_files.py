"""Model files per backend, checked cheaply: right files pass, missing/unreadable/wrong/truncated
files get a message naming the file, what is needed, where to get it and where to put it.

The accepted files are written in the official formats by the fixture writers (NVIDIA .pkl,
TF .pkl, rosinality/e4e .pt, the project's .safetensors + .json, DiscoFaceGAN's TF .pkl and
VAE checkpoints, the face model .mat); the real bpy module runs the preferences.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import bpy
import numpy as np
import pytest
import safetensors.numpy
from fixtures import dfg_formats as dfx
from fixtures import stylegan_formats as sfx
from neural_face_rig.neural.checkpoints import load_generator, save_project
from neural_face_rig.neural.discofacegan.config import DFGConfig
from neural_face_rig.neural.discofacegan.generator import random_state_dict as dfg_state
from neural_face_rig.rig.face_model import write_face_model_mat
from neural_face_rig.rig.synthetic import make_synthetic_face_model

addon_utils = importlib.import_module("addon_utils")

MODULE = "neural_face_rig"
PATH_FIELDS = ("face_model_path", "models_dir", "stylegan2_generator_path",
               "dfg_generator_path", "dfg_average_w_path", "dfg_vae_dir", "rignet_path")


@pytest.fixture(scope="module")
def enabled():
    addon_utils.enable(MODULE, default_set=True)
    yield
    addon_utils.disable(MODULE, default_set=True)


@pytest.fixture()
def prefs(enabled, tmp_path: Path):
    """Preferences with every path empty and the models folder in ``tmp_path/models``."""
    prefs = bpy.context.preferences.addons[MODULE].preferences
    for name in PATH_FIELDS:
        setattr(prefs, name, "")
    (tmp_path / "models").mkdir()
    prefs.models_dir = str(tmp_path / "models")
    yield prefs
    for name in PATH_FIELDS:
        setattr(prefs, name, "")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One valid file of every accepted kind."""
    root = tmp_path_factory.mktemp("valid")
    state = sfx.tiny_state()
    nvidia = sfx.write_nvidia_pkl(root / "ffhq.pkl", state)
    save_project(load_generator(nvidia), root / "converted.safetensors")
    rignet = _write_stylerig_file(root / "stylerig-0123456789abcdef.safetensors")
    average = root / "average_w_id.txt"
    np.savetxt(average, np.random.default_rng(0).standard_normal((14, 512)))
    face_model = root / "BFM_model_front.mat"
    write_face_model_mat(make_synthetic_face_model("tiny", seed=1), face_model)
    dfg_config = DFGConfig(w_dim=16, img_resolution=32, mapping_layers=2, fmap_base=64,
                           fmap_max=16)
    return {
        "nvidia": nvidia,
        "tf": sfx.write_tf_pkl(root / "tf.pkl", state),
        "rosinality": sfx.write_rosinality(root / "rosinality.pt", state),
        "rosinality_legacy": sfx.write_rosinality(root / "legacy.pt", state,
                                                  legacy_format=True),
        "e4e": sfx.write_e4e(root / "e4e.pt", state),
        "project": root / "converted.safetensors",
        "dfg": dfx.write_dfg_pkl(root / "dfg.pkl", dfg_state(dfg_config, 0), dfg_config),
        "vae": dfx.write_vae_weights(root / "vae"),
        "average_w": average,
        "rignet": rignet,
        "face_model": face_model,
    }


def _write_stylerig_file(path: Path, file_format: str = "nfr-stylerig") -> Path:
    """The pair ``nfr train rignet`` writes (its shape; the worker checks the contents)."""
    safetensors.numpy.save_file({"rignet.encoder.0.weight": np.ones((4, 8), np.float32)},
                                str(path))
    path.with_suffix(".json").write_text(json.dumps({"format": file_format, "version": 1}))
    return path


def _status(prefs, backend: str, role_label: str, **kwargs):
    from neural_face_rig.model_files import model_status

    (status,) = [s for s in model_status(prefs, backend, **kwargs) if s.label == role_label]
    return status


@pytest.mark.parametrize("kind", ["nvidia", "tf", "rosinality", "rosinality_legacy", "e4e",
                                  "project"])
def test_every_stylegan2_format_passes(prefs, files, kind: str) -> None:
    prefs.stylegan2_generator_path = str(files[kind])
    status = _status(prefs, "stylegan2", "StyleGAN2 Generator")
    assert (status.ok, status.problem, status.path) == (True, None, str(files[kind]))


def test_discofacegan_stylerig_and_face_model_files_pass(prefs, files) -> None:
    from neural_face_rig.model_files import model_status

    prefs.dfg_generator_path = str(files["dfg"])
    prefs.dfg_average_w_path = str(files["average_w"])
    prefs.dfg_vae_dir = str(files["vae"])
    prefs.stylegan2_generator_path = str(files["project"])
    prefs.rignet_path = str(files["rignet"])
    prefs.face_model_path = str(files["face_model"])
    for backend, count in (("discofacegan", 3), ("stylerig", 2), ("face_model", 1)):
        statuses = model_status(prefs, backend)
        assert len(statuses) == count
        assert [s.problem for s in statuses] == [None] * count, backend


def test_unset_file_says_what_where_and_where_to_put_it(prefs, tmp_path) -> None:
    from neural_face_rig.model_files import model_status

    models = str(tmp_path / "models")
    status = _status(prefs, "stylegan2", "StyleGAN2 Generator")
    assert (status.ok, status.path, status.problem) == (False, "", "No StyleGAN2 generator set.")
    text = "\n".join(status.how_to_get)
    for needed in ("Needed: a StyleGAN2 generator", "github.com/NVlabs/stylegan2-ada-pytorch",
                   "stylegan2-ffhq-config-f.pkl", "non-commercial", "rosinality", "e4e",
                   "nfr convert SRC", f"Put it in the models folder as stylegan2.safetensors or "
                   f"ffhq.pkl or stylegan2-ffhq-config-f.pkl: {models}",
                   "Preferences > Add-ons > Neural Face Rig > StyleGAN2 Generator"):
        assert needed in text, needed

    rignet = _status(prefs, "stylerig", "StyleRig RigNet")
    assert rignet.problem == "No RigNet set."
    assert "not released anywhere" in "\n".join(rignet.how_to_get)
    assert "nfr train rignet" in "\n".join(rignet.how_to_get)

    dfg = {s.label: s for s in model_status(prefs, "discofacegan")}
    assert "microsoft/DiscoFaceGAN" in "\n".join(dfg["DiscoFaceGAN Generator"].how_to_get)
    assert "nfr dfg average-w" in "\n".join(dfg["DiscoFaceGAN Average W"].how_to_get)
    vae = dfg["DiscoFaceGAN VAE Folder"]
    assert not vae.required and "vae/weights" in "\n".join(vae.how_to_get)
    assert "stage1_epoch_395.ckpt.index" in "\n".join(vae.how_to_get)


def test_face_model_help_lists_the_bfm_inputs_from_the_converter(prefs) -> None:
    from neural_face_rig.rig.bfm_convert import FILES

    status = _status(prefs, "face_model", "Face Model")
    assert status.problem == "No face model set."
    text = "\n".join(status.how_to_get)
    assert "nfr rig convert-bfm" in text and "BFM_model_front.mat" in text
    for raw in FILES.values():
        assert raw.name in text and raw.source in text


def test_empty_field_finds_the_file_in_the_models_folder(prefs, files, tmp_path) -> None:
    from neural_face_rig.model_files import model_paths

    target = tmp_path / "models" / "stylegan2-ffhq-config-f.pkl"
    target.write_bytes(files["nvidia"].read_bytes())
    status = _status(prefs, "stylegan2", "StyleGAN2 Generator")
    assert (status.ok, status.path) == (True, str(target))
    # A name earlier in the list wins; the field, when set, wins over the folder.
    (tmp_path / "models" / "ffhq.pkl").write_bytes(files["nvidia"].read_bytes())
    assert model_paths(prefs, "stylegan2") == {"generator": str(tmp_path / "models/ffhq.pkl")}
    prefs.stylegan2_generator_path = str(files["e4e"])
    assert model_paths(prefs, "stylegan2") == {"generator": str(files["e4e"])}
    # A rig's own model file overrides the preferences' generator, not the RigNet.
    prefs.rignet_path = str(files["rignet"])
    paths = model_paths(prefs, "stylerig", generator_path=str(files["project"]))
    assert paths == {"generator": str(files["project"]), "rignet": str(files["rignet"])}


def test_missing_file_and_folder_mixups(prefs, tmp_path) -> None:
    missing = tmp_path / "nowhere" / "ffhq.pkl"
    prefs.stylegan2_generator_path = str(missing)
    status = _status(prefs, "stylegan2", "StyleGAN2 Generator")
    assert status.problem == f"StyleGAN2 generator not found: {missing}"
    assert any("ffhq.pkl" in line for line in status.how_to_get)

    prefs.stylegan2_generator_path = str(tmp_path)
    assert _status(prefs, "stylegan2", "StyleGAN2 Generator").problem == (
        f"StyleGAN2 generator path is not a file: {tmp_path}")
    (tmp_path / "vae.txt").write_text("x")
    prefs.dfg_vae_dir = str(tmp_path / "vae.txt")
    assert _status(prefs, "discofacegan", "DiscoFaceGAN VAE Folder").problem == (
        f"DiscoFaceGAN VAE folder path is not a folder: {tmp_path / 'vae.txt'}")


def test_unreadable_and_empty_files(prefs, tmp_path) -> None:
    empty = tmp_path / "ffhq.pkl"
    empty.write_bytes(b"")
    prefs.stylegan2_generator_path = str(empty)
    assert _status(prefs, "stylegan2", "StyleGAN2 Generator").problem == (
        f"StyleGAN2 generator {empty} is empty (0 bytes)")

    if os.geteuid() == 0:  # root reads any file: use one the kernel refuses to read at 0
        unreadable = "/proc/self/mem"
    else:
        locked = tmp_path / "locked.pkl"
        locked.write_bytes(b"\x80\x04.")
        locked.chmod(0)
        unreadable = str(locked)
    prefs.stylegan2_generator_path = unreadable
    problem = _status(prefs, "stylegan2", "StyleGAN2 Generator").problem
    assert problem is not None
    assert problem.startswith(f"StyleGAN2 generator cannot be read: {unreadable} (")


@pytest.mark.parametrize(
    ("field", "label", "content", "message"),
    [
        ("stylegan2_generator_path", "StyleGAN2 Generator", b"\x89PNG\r\n\x1a\n" + bytes(64),
         "is a PNG image; expected a StyleGAN2 .pkl, a rosinality/e4e .pt or a converted "
         ".safetensors"),
        ("stylegan2_generator_path", "StyleGAN2 Generator", b"<!DOCTYPE html><html>",
         "is a web page (the download saved an HTML page, not the file)"),
        ("stylegan2_generator_path", "StyleGAN2 Generator", b"\x00\x01\x02\x03junkjunk",
         "is of an unknown format (first bytes 00 01 02 03 6a 75 6e 6b)"),
        ("dfg_generator_path", "DiscoFaceGAN Generator", b"PK\x03\x04" + bytes(40),
         "is a PyTorch file; expected DiscoFaceGAN's TensorFlow .pkl"),
        ("rignet_path", "StyleRig RigNet", b"\x80\x04K\x01.",
         "is a pickle file; expected a StyleRig .safetensors made by 'nfr train rignet'"),
        ("dfg_average_w_path", "DiscoFaceGAN Average W", b"\x80\x04K\x01.",
         "is a pickle file; expected a text file of 14 x 512 numbers"),
        ("dfg_average_w_path", "DiscoFaceGAN Average W", b"w_avg = [1, 2]",
         "does not start with a number (found b'w_avg')"),
        ("face_model_path", "Face Model", b"\x89HDF\r\n\x1a\n" + bytes(200),
         "is not a MATLAB .mat file (first bytes 89 48 44 46 0d 0a 1a 0a)"),
        ("face_model_path", "Face Model", b"MATLAB 7.3 MAT-file" + bytes(200),
         "is a MATLAB v7.3 (HDF5) file"),
    ],
    ids=["png", "html", "unknown", "dfg-got-torch", "rignet-got-pickle", "avg-got-pickle",
         "avg-not-numbers", "face-hdf5", "face-v73"],
)
def test_wrong_content_is_named(prefs, tmp_path, field, label, content, message) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    setattr(prefs, field, str(path))
    backend = {"stylegan2_generator_path": "stylegan2", "rignet_path": "stylerig",
               "face_model_path": "face_model"}.get(field, "discofacegan")
    status = _status(prefs, backend, label)
    assert not status.ok
    assert f"{path} {message}" in status.problem


def test_truncated_downloads_are_caught(prefs, files, tmp_path) -> None:
    for kind, cut in (("nvidia", 100), ("rosinality", 100), ("project", 50)):
        data = files[kind].read_bytes()
        truncated = tmp_path / f"cut{files[kind].suffix}"
        truncated.write_bytes(data[:-cut])
        if kind == "project":
            (tmp_path / "cut.json").write_bytes(files[kind].with_suffix(".json").read_bytes())
        prefs.stylegan2_generator_path = str(truncated)
        problem = _status(prefs, "stylegan2", "StyleGAN2 Generator").problem
        assert problem is not None and "is truncated" in problem, kind


def test_converted_weights_need_their_sidecar(prefs, files, tmp_path) -> None:
    alone = tmp_path / "alone.safetensors"
    alone.write_bytes(files["project"].read_bytes())
    prefs.stylegan2_generator_path = str(alone)
    assert _status(prefs, "stylegan2", "StyleGAN2 Generator").problem == (
        f"StyleGAN2 generator {alone} has no alone.json next to it (the converter writes both "
        "files; keep them together)")


def test_vae_folder_problems(prefs, files, tmp_path) -> None:
    import shutil

    vae = tmp_path / "vae"
    shutil.copytree(files["vae"], vae)
    prefs.dfg_vae_dir = str(vae)

    def problem() -> str | None:
        return _status(prefs, "discofacegan", "DiscoFaceGAN VAE Folder").problem

    assert problem() is None
    shard = vae / "gamma" / "stage1_epoch_395.ckpt.data-00000-of-00001"
    shard.unlink()
    assert problem() == (f"DiscoFaceGAN VAE folder {vae} lacks the gamma checkpoint data "
                         "stage1_epoch_395.ckpt.data-00000-of-00001")
    index = vae / "exp" / "stage1_epoch_395.ckpt.index"
    index.write_bytes(index.read_bytes()[:-8])
    assert problem().startswith(f"DiscoFaceGAN VAE folder {vae} has a damaged exp checkpoint")
    shutil.rmtree(vae / "rot")
    assert problem() == (f"DiscoFaceGAN VAE folder {vae} has no rot folder(s); expected id, "
                         "exp, gamma and rot as in DiscoFaceGAN's vae/weights")


def test_a_replaced_file_is_checked_again(prefs, files, tmp_path) -> None:
    path = tmp_path / "g.pkl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    prefs.stylegan2_generator_path = str(path)
    assert not _status(prefs, "stylegan2", "StyleGAN2 Generator").ok
    path.write_bytes(files["nvidia"].read_bytes())
    assert _status(prefs, "stylegan2", "StyleGAN2 Generator").ok


def test_the_trainers_stylerig_file_is_found_in_the_models_folder(prefs, files, tmp_path):
    """No name to rename it to: the file the trainer writes is the file the add-on takes."""
    models = tmp_path / "models"
    older = _write_stylerig_file(models / "stylerig-00000000000000aa.safetensors")
    os.utime(older, (1, 1))
    newest = _write_stylerig_file(models / files["rignet"].name)
    status = _status(prefs, "stylerig", "StyleRig RigNet")
    assert (status.ok, status.path) == (True, str(newest))


def test_a_stylerig_file_needs_its_stylerig_sidecar(prefs, tmp_path) -> None:
    lone = tmp_path / "stylerig-1111111111111111.safetensors"
    safetensors.numpy.save_file({"x": np.ones(2, np.float32)}, str(lone))
    prefs.rignet_path = str(lone)
    assert "has no stylerig-1111111111111111.json next to it" in _status(
        prefs, "stylerig", "StyleRig RigNet").problem
    other = _write_stylerig_file(tmp_path / "stylerig-2222222222222222.safetensors",
                                 "nfr-stylerig-dfr")
    prefs.rignet_path = str(other)
    assert "format 'nfr-stylerig-dfr'; expected 'nfr-stylerig'" in _status(
        prefs, "stylerig", "StyleRig RigNet").problem


def test_model_sets_follow_the_catalogue() -> None:
    from neural_face_rig.contract import catalogue
    from neural_face_rig.model_files import MODEL_SETS

    for spec in catalogue.BACKENDS.values():
        files = MODEL_SETS[spec.id]
        assert tuple(f.role for f in files) == spec.roles
        assert [f.required for f in files] == [role in spec.files for role in spec.roles]


def test_unknown_model_set_is_an_error(prefs) -> None:
    from neural_face_rig.model_files import model_status

    with pytest.raises(ValueError, match="model set 'sg3': expected one of stylegan2, "
                       "discofacegan, stylerig, face_model"):
        model_status(prefs, "sg3")


def test_default_models_folder_is_the_extension_user_folder(prefs) -> None:
    from neural_face_rig.model_files import models_folder

    prefs.models_dir = ""
    folder = models_folder(prefs)
    assert folder.startswith(os.environ["BLENDER_USER_RESOURCES"])
    assert folder.rstrip(os.sep).endswith("models")
    assert "blender_addon" not in folder  # never inside the add-on's own folder
