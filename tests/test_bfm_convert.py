"""BFM 2009 + Exp_Pca.bin + index files -> BFM_model_front.mat, on tiny inputs in the official
formats (tests/fixtures/bfm_raw.py), checked against values computed here from the raw arrays;
and every bad-input case, which must name the file and leave no output behind."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from fixtures.bfm_raw import (
    N_EXPRESSION_COMPONENTS,
    RawBfm,
    facemodel_info,
    write_exp_pca_bin,
    write_raw_bfm,
)
from neural_face_rig.rig.bfm_convert import FILES, convert_bfm, convert_bfm_dir
from neural_face_rig.rig.errors import FaceModelError
from neural_face_rig.rig.face_model import FaceModel, load_face_model


@pytest.fixture
def raw(tmp_path) -> RawBfm:
    folder = tmp_path / "BFM"
    folder.mkdir()
    return write_raw_bfm(folder)


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "out" / "BFM_model_front.mat"


def convert(raw: RawBfm, out: Path) -> FaceModel:
    return convert_bfm(**raw.paths, out_path=out)


def assert_fails_cleanly(raw: RawBfm, out: Path, *patterns: str) -> str:
    """Conversion raises FaceModelError whose message holds every pattern; no output remains."""
    with pytest.raises(FaceModelError) as info:
        convert(raw, out)
    message = str(info.value)
    for pattern in patterns:
        assert pattern in message, f"{pattern!r} not in {message!r}"
    assert not out.exists()
    assert not out.parent.exists() or os.listdir(out.parent) == []
    return message


# ---------------------------------------------------------------- conversion


def test_converted_values_match_the_formulas(raw, out):
    model = convert(raw, out)
    loaded = load_face_model(out)
    for name in FaceModel.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name), err_msg=name)

    assert model.n_vertices == raw.front.n_vertices
    rng = np.random.default_rng(1)
    for v in [0, model.n_vertices - 1, *rng.choice(model.n_vertices, 5, replace=False)]:
        expression_vertex = int(raw.idx[v, 0]) - 1  # 1-based into the expression mesh
        bfm_vertex = int(raw.trim_index[expression_vertex, 0]) - 1  # 1-based into the BFM
        rows = slice(3 * v, 3 * v + 3)
        bfm_rows = slice(3 * bfm_vertex, 3 * bfm_vertex + 3)
        exp_columns = slice(3 * expression_vertex, 3 * expression_vertex + 3)

        expected_id = raw.shape_pc[bfm_rows, :80] * raw.shape_ev[:80, 0] / 1e5
        np.testing.assert_allclose(model.id_base[rows], expected_id, rtol=1e-6)
        expected_exp = raw.exp_components[:64, exp_columns].T * raw.std_exp[:64] / 1e5
        np.testing.assert_allclose(model.exp_base[rows], expected_exp, rtol=1e-6)
        expected_tex = raw.tex_pc[bfm_rows, :80] * raw.tex_ev[:80, 0]
        np.testing.assert_allclose(model.tex_base[rows], expected_tex, rtol=1e-6)
        np.testing.assert_allclose(model.mean_shape[rows], raw.shape_mu[bfm_rows, 0] / 1e5)
        np.testing.assert_array_equal(model.mean_tex[rows], raw.tex_mu[bfm_rows, 0])

    # The fixture put the synthetic head where the front face lands.
    np.testing.assert_allclose(model.mean_shape, raw.front.mean_shape, atol=1e-6)
    for name in ("triangles", "point_buf", "keypoints", "skin_mask", "front_mask", "tri_mask"):
        np.testing.assert_array_equal(getattr(model, name), getattr(raw.front, name), err_msg=name)
    assert all(getattr(model, name).dtype == np.float32 for name in ("id_base", "exp_base"))


def test_convert_bfm_dir_uses_the_official_names(raw, out):
    model = convert_bfm_dir(raw.paths["exp_pca_bin"].parent, out)
    np.testing.assert_array_equal(model.id_base, convert(raw, out.with_name("b.mat")).id_base)
    assert {raw.name for raw in FILES.values()} == {p.name for p in raw.paths.values()}


def test_std_exp_one_value_per_line_reads_the_same(raw, out):
    expected = convert(raw, out).exp_base
    raw.paths["std_exp_txt"].write_text("\n".join(f"{v:.9g}" for v in raw.std_exp) + "\n")
    np.testing.assert_array_equal(convert(raw, out.with_name("b.mat")).exp_base, expected)


def test_existing_output_is_replaced_whole(raw, out):
    out.parent.mkdir()
    out.write_bytes(b"stale")
    convert(raw, out)
    assert load_face_model(out).n_vertices == raw.front.n_vertices
    assert os.listdir(out.parent) == [out.name]


# ---------------------------------------------------------------- missing inputs


def test_missing_inputs_are_listed_with_where_to_get_them(raw, out):
    raw.paths["exp_pca_bin"].unlink()
    raw.paths["exp_idx_mat"].unlink()
    message = assert_fails_cleanly(raw, out, "Exp_Pca.bin", "CoarseData", "BFM_exp_idx.mat")
    assert "Deep3DFaceRecon_pytorch" in message
    assert "01_MorphableModel.mat" not in message, "present files are not reported"


def test_missing_bfm_points_to_basel(raw, out):
    raw.paths["morphable_model_mat"].unlink()
    assert_fails_cleanly(raw, out, "01_MorphableModel.mat", "faces.dmi.unibas.ch")


# ---------------------------------------------------------------- Exp_Pca.bin


def exp_pca_size(n_vertices: int, components: int = N_EXPRESSION_COMPONENTS) -> int:
    return 4 + 4 * 3 * n_vertices * (1 + components)  # header, mean, components (float32)


def test_truncated_exp_pca_reports_expected_and_found_bytes(raw, out):
    path = raw.paths["exp_pca_bin"]
    expected = exp_pca_size(raw.trim_index.shape[0])
    assert path.stat().st_size == expected
    path.write_bytes(path.read_bytes()[:-1000])
    assert_fails_cleanly(
        raw, out, "is truncated", f"expected {expected} bytes", f"found {expected - 1000} bytes"
    )


def test_exp_pca_of_another_mesh_is_refused(raw, out):
    n_other = raw.trim_index.shape[0] - 2
    write_exp_pca_bin(
        raw.paths["exp_pca_bin"],
        raw.exp_mean[: 3 * n_other],
        raw.exp_components[:, : 3 * n_other],
    )
    assert_fails_cleanly(raw, out, f"it holds {n_other} vertices", "BFM_exp_idx.mat")


def test_exp_pca_with_a_nonsense_header_is_refused(raw, out):
    data = bytearray(raw.paths["exp_pca_bin"].read_bytes())
    data[:4] = np.int32(-7).tobytes()
    raw.paths["exp_pca_bin"].write_bytes(bytes(data))
    assert_fails_cleanly(raw, out, "header says -7 expression components", "not an Exp_Pca.bin")


def test_tiny_exp_pca_file(raw, out):
    raw.paths["exp_pca_bin"].write_bytes(b"\x01\x02")
    assert_fails_cleanly(raw, out, "truncated: 2 bytes")


def test_nan_in_used_expression_component(raw, out):
    components = raw.exp_components.copy()
    expression_vertex = int(raw.idx[0, 0]) - 1
    components[5, 3 * expression_vertex] = np.nan
    write_exp_pca_bin(raw.paths["exp_pca_bin"], raw.exp_mean, components)
    assert_fails_cleanly(raw, out, "Exp_Pca.bin", "NaN")


# ---------------------------------------------------------------- .mat inputs


def test_corrupt_bfm_mat(raw, out):
    raw.paths["morphable_model_mat"].write_bytes(b"\x00garbage" * 64)
    assert_fails_cleanly(raw, out, "01_MorphableModel.mat", "truncated or corrupt", "Basel")


def test_truncated_bfm_mat(raw, out):
    path = raw.paths["morphable_model_mat"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_fails_cleanly(raw, out, str(path), "faces.dmi.unibas.ch")


def rewrite_bfm(raw: RawBfm, **changes) -> None:
    """Rewrite 01_MorphableModel.mat with fields replaced (an array) or removed (None)."""
    fields = scipy.io.loadmat(raw.paths["morphable_model_mat"])
    fields = {k: v for k, v in fields.items() if not k.startswith("__")} | changes
    kept = {k: v for k, v in fields.items() if v is not None}
    scipy.io.savemat(raw.paths["morphable_model_mat"], kept)


def test_bfm_without_texture_fields(raw, out):
    rewrite_bfm(raw, texPC=None)
    assert_fails_cleanly(raw, out, "lacks the field(s) 'texPC'", "shapePC")


def test_shape_ev_length_must_match_components(raw, out):
    rewrite_bfm(raw, shapeEV=raw.shape_ev[:150])
    assert_fails_cleanly(raw, out, "'shapeEV' has shape [150, 1], expected 199 values")


def test_nan_in_selected_shape_component(raw, out):
    bfm_vertex = int(raw.trim_index[int(raw.idx[3, 0]) - 1, 0]) - 1
    shape_pc = raw.shape_pc.copy()
    shape_pc[3 * bfm_vertex + 1, 10] = np.nan
    rewrite_bfm(raw, shapePC=shape_pc)
    assert_fails_cleanly(raw, out, "'shapePC' contains 1 NaN")


def test_zero_based_front_index(raw, out):
    idx = raw.idx - 1
    idx[0, 0] = 0  # a 0-based file holds the first expression vertex as 0
    scipy.io.savemat(raw.paths["front_idx_mat"], {"idx": idx})
    assert_fails_cleanly(raw, out, "BFM_front_idx.mat", "'idx'", "looks 0-based")


def test_trim_index_beyond_the_bfm_mesh(raw, out):
    n_bfm = raw.shape_mu.shape[0] // 3
    trim = raw.trim_index.copy()
    trim[4, 0] = n_bfm + 1
    scipy.io.savemat(raw.paths["exp_idx_mat"], {"trimIndex": trim})
    assert_fails_cleanly(
        raw, out, f"'trimIndex' contains BFM vertex id {n_bfm + 1}", f"1..{n_bfm}", "shapeMU"
    )


def test_facemodel_info_of_another_mesh(raw, out):
    info = facemodel_info(raw.front)
    rows = raw.front.n_vertices + 5  # a mesh with more vertices than BFM_front_idx selects
    info["point_buf"] = np.vstack([info["point_buf"], np.ones((5, 8))])
    scipy.io.savemat(raw.paths["facemodel_info_mat"], info)
    assert_fails_cleanly(
        raw, out, "facemodel_info.mat", f"'point_buf' has shape [{rows}, 8]", "BFM_front_idx.mat"
    )


def test_zero_based_facemodel_info(raw, out):
    info = facemodel_info(raw.front)
    info["tri"] = info["tri"] - 1
    scipy.io.savemat(raw.paths["facemodel_info_mat"], info)
    assert_fails_cleanly(raw, out, "facemodel_info.mat", "'tri'", "looks 0-based")


# ---------------------------------------------------------------- std_exp.txt


def test_std_exp_with_wrong_count(raw, out):
    raw.paths["std_exp_txt"].write_text(" ".join(["1.0"] * 78))
    assert_fails_cleanly(raw, out, "std_exp.txt has 78 values, expected 79")


def test_std_exp_not_numbers(raw, out):
    raw.paths["std_exp_txt"].write_text("sigma 1 2 3\n")
    assert_fails_cleanly(raw, out, "std_exp.txt is not a list of numbers")


# ---------------------------------------------------------------- no partial output


def test_failure_while_writing_leaves_nothing(raw, out, monkeypatch):
    out.parent.mkdir()

    def broken_savemat(handle, *args, **kwargs):
        handle.write(b"MATLAB 5.0 MAT-file, half of it")
        raise OSError("No space left on device")

    monkeypatch.setattr(scipy.io, "savemat", broken_savemat)
    with pytest.raises(OSError, match="No space left"):
        convert(raw, out)
    assert os.listdir(out.parent) == []


def test_failed_conversion_keeps_the_previous_output(raw, out):
    convert(raw, out)
    before = out.read_bytes()
    shutil.copy(raw.paths["std_exp_txt"], out.parent / "std.bak")
    raw.paths["std_exp_txt"].write_text("1 2 3")
    with pytest.raises(FaceModelError):
        convert(raw, out)
    assert out.read_bytes() == before
    assert sorted(os.listdir(out.parent)) == sorted([out.name, "std.bak"])
