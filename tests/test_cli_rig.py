"""`nfr rig check` and `nfr rig convert-bfm` through the real entry point (neural.cli.main)."""

import shutil

import numpy as np
import pytest
from fixtures.bfm_raw import write_raw_bfm
from neural_face_rig.neural.cli import main
from neural_face_rig.rig.bfm_convert import FILES, convert_bfm
from neural_face_rig.rig.face_model import face_model_to_mat, load_face_model, write_face_model_mat
from neural_face_rig.rig.synthetic import make_synthetic_face_model
from scipy.io import savemat


@pytest.fixture
def raw(tmp_path):
    folder = tmp_path / "BFM"
    folder.mkdir()
    return write_raw_bfm(folder)


def summary(text: str) -> dict[str, str]:
    """The `name   value` lines printed by the rig commands."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("  "):
            name, _, value = line.strip().rpartition("  ")
            rows[name.strip()] = value.strip()
    return rows


def test_check_prints_counts_and_basis_sizes(tmp_path, capsys):
    model = make_synthetic_face_model("tiny")
    path = tmp_path / "model.mat"
    write_face_model_mat(model, path)
    assert main(["rig", "check", str(path)]) == 0
    rows = summary(capsys.readouterr().out)
    assert rows["vertices"] == str(model.n_vertices)
    assert rows["triangles"] == str(model.n_triangles)
    assert (rows["identity basis"], rows["expression basis"], rows["reflectance basis"]) == (
        "80", "64", "80",
    )  # fmt: skip
    assert rows["keypoints"] == "68"
    assert rows["skin-mask vertices"] == str(int(model.skin_mask.sum()))


def test_check_bad_file_exits_nonzero_with_the_specific_message(tmp_path, capsys):
    model = make_synthetic_face_model("tiny")
    fields = face_model_to_mat(model)
    fields["tri"] = fields["tri"] - 1
    path = tmp_path / "zero_based.mat"
    savemat(path, fields)
    assert main(["rig", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nfr: error:") and "'tri'" in err and "0-based" in err
    assert "Traceback" not in err


def test_check_missing_file(tmp_path, capsys):
    assert main(["rig", "check", str(tmp_path / "none.mat")]) == 2
    assert "not found" in capsys.readouterr().err


def test_convert_bfm_from_a_folder(raw, tmp_path, capsys):
    out = tmp_path / "models" / "BFM_model_front.mat"
    assert main(["rig", "convert-bfm", "--bfm-dir", str(raw.paths["std_exp_txt"].parent),
                 "--out", str(out)]) == 0  # fmt: skip
    stdout = capsys.readouterr().out
    assert f"wrote {out}" in stdout
    assert summary(stdout)["vertices"] == str(raw.front.n_vertices)
    expected = convert_bfm(**raw.paths, out_path=tmp_path / "direct.mat")
    np.testing.assert_array_equal(load_face_model(out).exp_base, expected.exp_base)


def test_convert_bfm_with_per_file_options(raw, tmp_path, capsys):
    elsewhere = tmp_path / "scattered"
    elsewhere.mkdir()
    argv = ["rig", "convert-bfm", "--out", str(tmp_path / "out.mat")]
    for key, path in raw.paths.items():
        moved = shutil.move(path, elsewhere / f"renamed_{path.name}")
        argv += ["--" + key.replace("_", "-"), str(moved)]
    assert main(argv) == 0
    assert load_face_model(tmp_path / "out.mat").n_vertices == raw.front.n_vertices


def test_per_file_option_overrides_the_folder(raw, tmp_path, capsys):
    folder = raw.paths["std_exp_txt"].parent
    other_std = tmp_path / "my_std.txt"
    other_std.write_text(" ".join(str(2.0 * v) for v in raw.std_exp))
    out = tmp_path / "out.mat"
    argv = ["rig", "convert-bfm", "--bfm-dir", str(folder), "--std-exp-txt", str(other_std)]
    assert main([*argv, "--out", str(out)]) == 0
    baseline = convert_bfm(**raw.paths, out_path=tmp_path / "baseline.mat")
    np.testing.assert_allclose(load_face_model(out).exp_base, 2.0 * baseline.exp_base, rtol=1e-6)


def test_convert_bfm_without_inputs_names_the_missing_options(tmp_path, capsys):
    argv = ["rig", "convert-bfm", "--exp-pca-bin", "x.bin", "--out", str(tmp_path / "o.mat")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--bfm-dir" in err and "--morphable-model-mat (01_MorphableModel.mat)" in err
    assert "--exp-pca-bin" not in err.split("missing:")[1]


def test_convert_bfm_missing_file_says_where_to_get_it(raw, tmp_path, capsys):
    raw.paths["morphable_model_mat"].unlink()
    folder = raw.paths["std_exp_txt"].parent
    out = tmp_path / "o.mat"
    assert main(["rig", "convert-bfm", "--bfm-dir", str(folder), "--out", str(out)]) == 2
    assert "faces.dmi.unibas.ch" in capsys.readouterr().err
    assert not out.exists()


def test_convert_bfm_help_lists_every_input_and_its_source(capsys):
    with pytest.raises(SystemExit) as info:
        main(["rig", "convert-bfm", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for raw_file in FILES.values():
        assert raw_file.name in text
    assert "faces.dmi.unibas.ch" in text and "CoarseData" in text
    assert "Deep3DFaceRecon_pytorch" in text


def test_rig_needs_a_sub_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["rig"])
    assert info.value.code == 2


def test_render_writes_the_rig_face_of_the_params(tmp_path, capsys):
    import torch
    from neural_face_rig.rig.camera import CAMERA_256
    from neural_face_rig.rig.geometry import TorchFaceModel
    from neural_face_rig.rig.params import RigParams
    from neural_face_rig.rig.render import render_face
    from PIL import Image

    model = make_synthetic_face_model("tiny")
    model_path = tmp_path / "BFM_model_front.mat"
    write_face_model_mat(model, model_path)
    params = RigParams.sample(np.random.default_rng(3))
    params_path = tmp_path / "p.json"
    params.write_json(params_path)
    out = tmp_path / "face.png"

    code = main(["rig", "render", "--model", str(model_path), "--params", str(params_path),
                 "--size", "256", "--out", str(out)])

    assert code == 0 and "face covers" in capsys.readouterr().out
    with torch.no_grad():
        direct = render_face(TorchFaceModel.from_face_model(load_face_model(model_path)),
                             torch.from_numpy(params.to_vector())[None], CAMERA_256)
    expected = (direct.image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    written = np.asarray(Image.open(out))
    assert written.shape == (256, 256, 3)
    np.testing.assert_array_equal(written, expected)
    assert written.std() > 0  # a face, not an empty frame


def test_render_with_bad_params_fails_cleanly_and_writes_nothing(tmp_path, capsys):
    model_path = tmp_path / "BFM_model_front.mat"
    write_face_model_mat(make_synthetic_face_model("tiny"), model_path)
    params_path = tmp_path / "p.json"
    params_path.write_text('{"schema": "neural_face_rig/rig_params", "version": 1, '
                           '"expression": [0.0, 1.0]}')
    out = tmp_path / "face.png"

    code = main(["rig", "render", "--model", str(model_path), "--params", str(params_path),
                 "--out", str(out)])

    assert code == 2
    err = capsys.readouterr().err
    assert "expression" in err and "64" in err
    assert not out.exists()
