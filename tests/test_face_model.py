"""Synthetic face models, the BFM_model_front.mat writer/loader and its errors, and the atomic
writer underneath."""

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from neural_face_rig.rig.atomic import atomic_open
from neural_face_rig.rig.errors import FaceModelError
from neural_face_rig.rig.face_model import (
    FaceModel,
    face_model_to_mat,
    load_face_model,
    write_face_model_mat,
)
from neural_face_rig.rig.synthetic import make_synthetic_face_model

FIELDS = list(FaceModel.__dataclass_fields__)


@pytest.fixture(scope="module")
def tiny() -> FaceModel:
    return make_synthetic_face_model("tiny")


def assert_models_equal(a: FaceModel, b: FaceModel) -> None:
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def triangle_normals(model: FaceModel) -> np.ndarray:
    v = model.mean_shape.reshape(-1, 3).astype(np.float64)
    a, b, c = (v[model.triangles[:, i]] for i in range(3))
    return np.cross(b - a, c - a)


# ---------------------------------------------------------------- synthetic models


def test_tiny_model_sizes(tiny):
    n, f = tiny.n_vertices, tiny.n_triangles
    assert 200 <= n <= 600
    assert tiny.mean_shape.shape == (3 * n,) and tiny.mean_tex.shape == (3 * n,)
    assert tiny.id_base.shape == (3 * n, 80)
    assert tiny.exp_base.shape == (3 * n, 64)
    assert tiny.tex_base.shape == (3 * n, 80)
    assert tiny.triangles.shape == (f, 3) and tiny.point_buf.shape == (n, 8)
    assert tiny.keypoints.shape == (68,) and len(set(tiny.keypoints.tolist())) == 68
    assert tiny.skin_mask.shape == (n,) and tiny.skin_mask.dtype == bool
    for name in ("mean_shape", "id_base", "exp_base", "mean_tex", "tex_base"):
        assert getattr(tiny, name).dtype == np.float32, name
    for name in ("triangles", "point_buf", "keypoints", "front_mask", "tri_mask"):
        assert getattr(tiny, name).dtype == np.int64, name


def test_synthetic_is_deterministic_and_seeded():
    a, b = make_synthetic_face_model("tiny", seed=3), make_synthetic_face_model("tiny", seed=3)
    assert_models_equal(a, b)
    c = make_synthetic_face_model("tiny", seed=4)
    np.testing.assert_array_equal(a.triangles, c.triangles)  # the mesh is fixed
    assert not np.allclose(a.id_base, c.id_base)
    assert not np.allclose(a.exp_base, c.exp_base)
    assert not np.allclose(a.tex_base, c.tex_base)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="tiny"):
        make_synthetic_face_model("huge")


def test_surface_is_a_head_sized_closed_fan_facing_the_camera(tiny):
    v = tiny.mean_shape.reshape(-1, 3)
    width, height, depth = v.max(axis=0) - v.min(axis=0)
    assert 1.4 < width < 1.8 and 1.7 < height < 2.2 and 0.5 < depth < 1.5  # decimetres
    assert np.abs(v.mean(axis=0)).max() < 0.05
    normals = triangle_normals(tiny)
    assert (normals[:, 2] > 0).all(), "every triangle faces +Z (counter-clockwise from the front)"
    # Consistent winding: each directed edge is used once; each edge by at most two faces.
    t = tiny.triangles
    directed = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)
    _, uses = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    assert uses.max() == 2
    # The nose sticks out: the nose-tip keypoint is the front-most keypoint.
    assert v[tiny.keypoints[30], 2] == v[tiny.keypoints, 2].max()


def test_point_buf_lists_exactly_the_faces_of_each_vertex(tiny):
    f = tiny.n_triangles
    for vertex in range(tiny.n_vertices):
        expected = set(np.flatnonzero((tiny.triangles == vertex).any(axis=1)).tolist())
        row = tiny.point_buf[vertex]
        assert set(row[row < f].tolist()) == expected
        assert (row[len(expected) :] == f).all(), "padding with the dummy face id F"


def test_keypoints_follow_the_ibug_layout(tiny):
    xy = tiny.mean_shape.reshape(-1, 3)[tiny.keypoints, :2]
    x, y = xy.T
    assert x[0] < x[8] < x[16] and y[8] == y[:17].min()  # jaw: left, chin, right
    brows, eyes, nose_tip, mouth = y[17:27].mean(), y[36:48].mean(), y[30], y[48:68].mean()
    assert brows > eyes > nose_tip > mouth > y[8]
    assert x[36:42].mean() < 0 < x[42:48].mean()  # image-left eye first
    assert x[48] < x[54] and x[60] < x[64]  # mouth corners left to right


def test_masks_are_consistent(tiny):
    front = np.zeros(tiny.n_vertices, dtype=bool)
    front[tiny.front_mask] = True
    assert 0.3 < front.mean() < 0.95
    assert front[tiny.tri_mask].all()
    assert not (tiny.skin_mask & ~front).any(), "skin lies inside the front region"
    v = tiny.mean_shape.reshape(-1, 3)
    for feature in (slice(36, 42), slice(42, 48), slice(60, 68)):  # eyes, inner lips
        centre = v[tiny.keypoints[feature]].mean(axis=0)
        near = np.linalg.norm(v - centre, axis=1) < 0.08
        assert near.any() and not tiny.skin_mask[near].any(), "eyes and lips are not skin"
    # tri_mask is a subset of the triangles
    triangles = {tuple(t) for t in tiny.triangles.tolist()}
    assert all(tuple(t) in triangles for t in tiny.tri_mask.tolist())


def test_bases_have_realistic_smooth_magnitudes(tiny):
    n = tiny.n_vertices
    for name, low, high in (
        ("id_base", 0.005, 0.1),  # peak displacement per unit coefficient, decimetres
        ("exp_base", 0.005, 0.15),
        ("tex_base", 3.0, 60.0),  # albedo units of 0..255
    ):
        basis = getattr(tiny, name).reshape(n, 3, -1)
        peaks = np.linalg.norm(basis, axis=1).max(axis=0)
        assert (low < peaks).all() and (peaks < high).all(), name
        # Smooth fields: values differ little along edges (white noise gives ratio ~1.4).
        edges = tiny.triangles[:, [0, 1]]
        step = basis[edges[:, 0]] - basis[edges[:, 1]]
        assert np.sqrt((step**2).mean()) < 0.6 * np.sqrt((basis**2).mean()), name
    tex = tiny.mean_tex.reshape(-1, 3)
    assert tex.min() >= 0 and tex.max() <= 255
    skin = tex[tiny.skin_mask].mean(axis=0)
    assert skin[0] > skin[1] > skin[2] > 80, "skin is reddish, not grey or saturated"


def test_full_model_has_the_bfm_front_counts_and_round_trips(tmp_path):
    full = make_synthetic_face_model("full")
    assert (full.n_vertices, full.n_triangles) == (35709, 70789)
    assert (full.point_buf < full.n_triangles).sum(axis=1).max() <= 8
    assert (triangle_normals(full)[:, 2] > 0).all()
    path = tmp_path / "BFM_model_front.mat"
    write_face_model_mat(full, path)
    assert_models_equal(load_face_model(path), full)


# ---------------------------------------------------------------- file layout and loader


def test_written_file_has_the_official_layout(tiny, tmp_path):
    path = tmp_path / "BFM_model_front.mat"
    write_face_model_mat(tiny, path)
    raw = scipy.io.loadmat(path)
    n, f = tiny.n_vertices, tiny.n_triangles
    expected = {
        "meanshape": (1, 3 * n), "meantex": (1, 3 * n), "idBase": (3 * n, 80),
        "exBase": (3 * n, 64), "texBase": (3 * n, 80), "tri": (f, 3), "point_buf": (n, 8),
        "tri_mask2": (len(tiny.tri_mask), 3), "frontmask2_idx": (len(tiny.front_mask), 1),
        "skinmask": (1, n), "keypoints": (1, 68),
    }  # fmt: skip
    assert {k: raw[k].shape for k in expected} == expected
    assert {k for k in raw if not k.startswith("__")} == set(expected)
    for key in ("idBase", "exBase", "texBase", "meanshape"):
        assert raw[key].dtype == np.float32
    # 1-based on disk, the dummy face is F + 1
    np.testing.assert_array_equal(raw["tri"], tiny.triangles + 1)
    assert raw["tri"].min() == 1 and raw["point_buf"].max() == f + 1
    np.testing.assert_array_equal(raw["keypoints"][0], tiny.keypoints + 1)
    np.testing.assert_array_equal(raw["frontmask2_idx"][:, 0], tiny.front_mask + 1)


def test_loader_round_trip_tiny(tiny, tmp_path):
    path = tmp_path / "model.mat"
    write_face_model_mat(tiny, path)
    assert_models_equal(load_face_model(path), tiny)


def write_variant(path: Path, model: FaceModel, **changes) -> Path:
    """The model's file with fields replaced (an array) or removed (None)."""
    fields = face_model_to_mat(model)
    for key, value in changes.items():
        if value is None:
            del fields[key]
        else:
            fields[key] = value
    scipy.io.savemat(path, fields)
    return path


def test_loader_accepts_double_indices_and_column_vectors(tiny, tmp_path):
    fields = face_model_to_mat(tiny)
    path = write_variant(
        tmp_path / "m.mat",
        tiny,
        tri=fields["tri"].astype(np.float64),
        point_buf=fields["point_buf"].astype(np.float64),
        keypoints=fields["keypoints"].T.astype(np.float64),
        skinmask=fields["skinmask"].T.astype(np.float64),
        meanshape=fields["meanshape"].astype(np.float64).T,
    )
    assert_models_equal(load_face_model(path), tiny)


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(FaceModelError, match="not found.*nfr rig convert-bfm"):
        load_face_model(tmp_path / "nope.mat")


def test_folder_and_empty_file_are_refused(tmp_path):
    with pytest.raises(FaceModelError, match="is a folder"):
        load_face_model(tmp_path)
    (tmp_path / "empty.mat").write_bytes(b"")
    with pytest.raises(FaceModelError, match=r"empty \(0 bytes\)"):
        load_face_model(tmp_path / "empty.mat")


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_file_names_the_file(tiny, tmp_path, cut):
    path = tmp_path / "model.mat"
    write_face_model_mat(tiny, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(FaceModelError) as info:
        load_face_model(path)
    message = str(info.value)
    assert str(path) in message
    # Cut inside a field: the reader fails; cut between fields: the later fields are missing.
    assert "truncated or corrupt" in message or "lacks the field" in message


def test_corrupt_bytes_name_the_file(tmp_path):
    path = tmp_path / "model.mat"
    path.write_bytes(b"this is not a MATLAB file " * 20)
    with pytest.raises(FaceModelError, match=r"model\.mat is truncated or corrupt"):
        load_face_model(path)


def test_hdf5_mat_files_get_a_resave_hint(tiny, tmp_path):
    path = write_variant(tmp_path / "m.mat", tiny)
    data = bytearray(path.read_bytes())
    data[124:126] = (0x0200).to_bytes(2, "little")  # header version of MATLAB v7.3 files
    path.write_bytes(bytes(data))
    with pytest.raises(FaceModelError, match=r"v7\.3 \(HDF5\).*-v7"):
        load_face_model(path)


def test_missing_key_is_named_with_the_keys_found(tiny, tmp_path):
    path = write_variant(tmp_path / "m.mat", tiny, idBase=None, exBase=None)
    with pytest.raises(FaceModelError, match=r"lacks the field\(s\) 'idBase', 'exBase'.*meanshape"):
        load_face_model(path)


def test_wrong_basis_shape_names_key_and_both_shapes(tiny, tmp_path):
    n3 = 3 * tiny.n_vertices
    path = write_variant(tmp_path / "m.mat", tiny, exBase=np.zeros((n3, 63), np.float32))
    with pytest.raises(FaceModelError) as info:
        load_face_model(path)
    message = str(info.value)
    assert "'exBase'" in message and f"[{n3}, 63]" in message and f"expected [{n3}, 64]" in message


def test_meanshape_must_hold_xyz_triples(tiny, tmp_path):
    path = write_variant(tmp_path / "m.mat", tiny, meanshape=np.zeros((1, 100), np.float32))
    with pytest.raises(FaceModelError, match="'meanshape' has 100 values.*multiple of 3"):
        load_face_model(path)


def test_point_buf_row_count_must_match_vertices(tiny, tmp_path):
    fields = face_model_to_mat(tiny)
    path = write_variant(tmp_path / "m.mat", tiny, point_buf=fields["point_buf"][:-1])
    rows = tiny.n_vertices - 1
    with pytest.raises(FaceModelError, match=rf"'point_buf' has shape \[{rows}, 8\]"):
        load_face_model(path)


def test_text_field_is_refused(tiny, tmp_path):
    path = write_variant(tmp_path / "m.mat", tiny, tri=np.array(["abc"]))
    with pytest.raises(FaceModelError, match="'tri' holds text"):
        load_face_model(path)


@pytest.mark.parametrize("key", ["tri", "keypoints", "tri_mask2", "frontmask2_idx", "point_buf"])
def test_zero_based_indices_are_recognised(tiny, tmp_path, key):
    zero_based = face_model_to_mat(tiny)[key] - 1
    # A 0-based field shows itself by a 0; subsets (keypoints, masks) need to hold the first id.
    zero_based.flat[0] = 0
    path = write_variant(tmp_path / "m.mat", tiny, **{key: zero_based})
    with pytest.raises(FaceModelError, match=rf"'{key}' should hold 1-based .* 0-based; add 1"):
        load_face_model(path)


def test_out_of_range_vertex_id(tiny, tmp_path):
    fields = face_model_to_mat(tiny)
    keypoints = fields["keypoints"].copy()
    keypoints[0, 5] = tiny.n_vertices + 1
    path = write_variant(tmp_path / "m.mat", tiny, keypoints=keypoints)
    with pytest.raises(
        FaceModelError, match=rf"'keypoints' contains vertex id {tiny.n_vertices + 1}.*1\.\."
    ):
        load_face_model(path)


def test_fractional_index_is_refused(tiny, tmp_path):
    tri = face_model_to_mat(tiny)["tri"].astype(np.float64)
    tri[2, 1] += 0.5
    path = write_variant(tmp_path / "m.mat", tiny, tri=tri)
    with pytest.raises(FaceModelError, match=r"'tri' must hold whole-number vertex ids.*\[2, 1\]"):
        load_face_model(path)


@pytest.mark.parametrize("key", ["idBase", "meanshape", "texBase"])
def test_nan_is_refused(tiny, tmp_path, key):
    values = face_model_to_mat(tiny)[key].copy()
    values[0, 7] = np.nan
    path = write_variant(tmp_path / "m.mat", tiny, **{key: values})
    with pytest.raises(FaceModelError, match=rf"'{key}' contains 1 NaN or infinite value"):
        load_face_model(path)


def test_skinmask_must_be_flags(tiny, tmp_path):
    skin = face_model_to_mat(tiny)["skinmask"].astype(np.float64)
    skin[0, 3] = 2.0
    path = write_variant(tmp_path / "m.mat", tiny, skinmask=skin)
    with pytest.raises(FaceModelError, match=r"'skinmask' must hold 0/1 flags, found \[2\.0\]"):
        load_face_model(path)


# ---------------------------------------------------------------- atomic writer


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tiny, tmp_path, monkeypatch):
    path = tmp_path / "model.mat"
    path.write_bytes(b"old content")

    def broken_savemat(handle, *args, **kwargs):
        handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(scipy.io, "savemat", broken_savemat)
    with pytest.raises(OSError, match="disk full"):
        write_face_model_mat(tiny, path)
    assert path.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["model.mat"]


def test_atomic_open_text_and_permissions(tmp_path):
    path = tmp_path / "notes.txt"
    old_umask = os.umask(0o022)
    try:
        with atomic_open(path, "w", encoding="utf-8") as handle:
            handle.write("héllo\n")
            assert not path.exists(), "nothing visible before the block ends"
    finally:
        os.umask(old_umask)
    assert path.read_text(encoding="utf-8") == "héllo\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # the umask's, not mkstemp's 0o600
    path.chmod(0o600)
    with atomic_open(path, "wb") as handle:
        handle.write(b"new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "replacing keeps the old permissions"
    assert os.listdir(tmp_path) == ["notes.txt"]
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(path, "a"):
            pass


def test_reading_needs_no_scipy_and_compressed_files_round_trip(tiny, tmp_path):
    # Blender's bundled Python has numpy only: reading a face model must not import scipy.
    path = tmp_path / "compressed.mat"
    scipy.io.savemat(path, face_model_to_mat(tiny), do_compression=True)
    code = (
        "import sys; sys.modules['scipy'] = None\n"
        "from neural_face_rig.rig.face_model import load_face_model\n"
        f"m = load_face_model({str(path)!r})\n"
        "assert 'scipy.io' not in sys.modules\n"
        "print(m.n_vertices, m.n_triangles)\n"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(tiny.n_vertices), str(tiny.n_triangles)]
    assert_models_equal(load_face_model(path), tiny)


def test_fifo_and_device_are_refused_without_reading(tmp_path):
    fifo = tmp_path / "model.mat"
    os.mkfifo(fifo)
    with pytest.raises(FaceModelError, match=r"model\.mat: expected the face model as a regular "
                                             r"file, found a FIFO"):
        load_face_model(fifo)
    with pytest.raises(FaceModelError, match=r"/dev/zero: expected the face model as a regular "
                                             r"file, found a character device"):
        load_face_model("/dev/zero")


def test_stale_temporaries_of_dead_writers_are_cleaned_by_the_next_write(tmp_path):
    import subprocess
    import sys

    from neural_face_rig.rig.atomic import temporary_path

    target = tmp_path / "out.bin"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = temporary_path(target).name.replace(f"-{os.getpid()}.", f"-{gone.stdout.strip()}.")
    (tmp_path / dead).write_bytes(b"half")
    live = temporary_path(target)  # this process is alive: its temporary must stay
    live.write_bytes(b"in progress")
    other = temporary_path(tmp_path / "other.bin").name.replace(
        f"-{os.getpid()}.", f"-{gone.stdout.strip()}.")
    (tmp_path / other).write_bytes(b"another target")
    with atomic_open(target, "wb") as handle:
        handle.write(b"done")
    assert target.read_bytes() == b"done"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other, "out.bin"])
