"""Named expression controls: documented landmark patterns, closed-form derivation, cache."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from neural_face_rig.rig.control_basis import (
    ControlsError,
    cache_path,
    controls_from_expression,
    derive_controls,
    expression_from_controls,
    load_or_derive_controls,
    model_digest,
    read_controls,
    target_displacement,
    write_controls,
)
from neural_face_rig.rig.controls import (
    ARKIT_BLENDSHAPES,
    CONTROL_NAMES,
    CONTROLS,
    GROUPS,
    MIRROR,
    UNDEFINABLE,
    control,
    controls_in_group,
)
from neural_face_rig.rig.face_model import load_face_model, write_face_model_mat
from neural_face_rig.rig.geometry import TorchFaceModel, shape_vertices
from neural_face_rig.rig.synthetic import make_synthetic_face_model
from neural_face_rig.rig.tensor_file import TensorFileError, read_tensor_file


@pytest.fixture(scope="module")
def model():
    return make_synthetic_face_model("full", expressions="actions")


@pytest.fixture(scope="module")
def basis(model):
    return derive_controls(model)


def keypoints(model, expression):
    """Keypoints [68, 3] dm for expression [64], through the torch rig (independent of the
    derivation's own indexing)."""
    tm = TorchFaceModel.from_face_model(model, dtype=torch.float64)
    exp = torch.as_tensor(np.asarray(expression, np.float64))[None]
    return shape_vertices(tm, torch.zeros(1, 80, dtype=torch.float64), exp, tm.keypoints)[0].numpy()


@pytest.fixture(scope="module")
def displacements(model, basis):
    neutral = keypoints(model, np.zeros(64))
    return {n: keypoints(model, basis.direction(n)) - neutral for n in basis.names}, neutral


def test_vocabulary_covers_arkit_exactly():
    assert len(ARKIT_BLENDSHAPES) == 52
    assert set(CONTROL_NAMES).isdisjoint(UNDEFINABLE)
    assert sorted(CONTROL_NAMES + tuple(UNDEFINABLE)) == sorted(ARKIT_BLENDSHAPES)
    for c in CONTROLS:
        assert c.group in GROUPS and "\n" not in c.description and c.moved_landmarks
        if c.side:
            partner = control(c.mirror)
            assert partner.mirror == c.name and {c.side, partner.side} == {"left", "right"}
    assert [c.name for c in controls_in_group("eyes")][:2] == ["eyeBlinkLeft", "eyeBlinkRight"]
    with pytest.raises(KeyError, match="tongueOut.*tongue"):
        control("tongueOut")
    assert all(MIRROR[MIRROR[i]] == i for i in range(68))


def test_each_control_moves_its_landmarks_by_the_documented_amount(displacements, basis):
    moved_by, neutral = displacements
    for c in CONTROLS:
        target = target_displacement(c, neutral)
        amount = np.linalg.norm(target, axis=1)
        got = moved_by[c.name]
        moved = amount > 0
        assert set(np.flatnonzero(moved)) == set(c.moved_landmarks)
        error = np.linalg.norm(got[moved] - target[moved], axis=1) / amount[moved]
        assert error.max() < 0.05, (c.name, error.max())
        held = np.linalg.norm(got[~moved], axis=1)
        assert held.max() < 0.1 * amount.max(), (c.name, held.max() / amount.max())
        i = basis.names.index(c.name)
        assert basis.target_error[i] < 0.05 and basis.leak[i] < 0.1


def test_documented_examples(displacements):
    moved_by, neutral = displacements
    np.testing.assert_allclose(moved_by["jawOpen"][8], [0.0, -0.2, 0.0], atol=0.01)
    assert np.abs(moved_by["jawOpen"][17:48]).max() < 0.02  # brows, nose and eyes stay
    # Blink: the left upper lid lands on the left lower lid; the left eye is on +x.
    assert neutral[43, 0] > 0
    closed = neutral + moved_by["eyeBlinkLeft"]
    np.testing.assert_allclose(closed[[43, 44]], neutral[[47, 46]], atol=0.005)
    smile = moved_by["mouthSmileLeft"][54]
    assert smile[0] > 0.04 and smile[1] > 0.05  # left corner out (+x) and up
    assert moved_by["browInnerUp"][21, 1] == pytest.approx(0.05, rel=0.05)


def test_left_controls_leave_the_right_side_still(displacements):
    moved_by, neutral = displacements
    sided = np.array([MIRROR[i] != i for i in range(68)])
    for c in CONTROLS:
        if not c.side:
            continue
        own = moved_by[c.name]
        mirrored = own[list(MIRROR)] * [-1.0, 1.0, 1.0]
        scale = np.linalg.norm(own, axis=1).max()
        assert np.abs(moved_by[c.mirror] - mirrored).max() < 0.05 * scale, c.name
        if not c.one_sided:
            continue
        other = sided & ((neutral[:, 0] < 0) if c.side == "left" else (neutral[:, 0] > 0))
        assert np.linalg.norm(own[other], axis=1).max() < 0.1 * scale, c.name
    assert sum(c.one_sided for c in CONTROLS) >= 26


def test_expression_is_the_sum_of_controls_plus_raw(basis):
    raw = np.linspace(-1, 1, 64)
    values = {"jawOpen": 0.5, "mouthSmileLeft": 1.0, "eyeBlinkRight": 0.25}
    got = expression_from_controls(basis, values, raw)
    expected = (
        raw
        + 0.5 * basis.direction("jawOpen").astype(np.float64)
        + basis.direction("mouthSmileLeft")
        + 0.25 * basis.direction("eyeBlinkRight")
    )
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got.dtype == np.float32
    assert expression_from_controls(basis, {}).tobytes() == np.zeros(64, np.float32).tobytes()
    assert expression_from_controls(basis, values, raw).tobytes() == got.tobytes()
    with pytest.raises(ControlsError, match="unknown control 'smile'"):
        expression_from_controls(basis, {"smile": 1.0})
    with pytest.raises(ControlsError, match="NaN"):
        expression_from_controls(basis, np.full(len(basis.names), np.nan))


def test_controls_read_back_from_an_expression(basis):
    values = np.zeros(len(basis.names))
    for name, v in {"jawOpen": 0.7, "mouthSmileLeft": 0.3, "browInnerUp": 1.0}.items():
        values[basis.names.index(name)] = v
    raw = np.zeros(64)
    got, remainder = controls_from_expression(basis, expression_from_controls(basis, values, raw))
    np.testing.assert_allclose(got, values, atol=2e-3)
    assert np.abs(remainder).max() < 1e-2
    assert got.min() >= 0.0 and got.max() <= 1.0


def test_reproducible_bit_for_bit_from_the_same_file(tmp_path, basis):
    path = tmp_path / "BFM_model_front.mat"
    write_face_model_mat(make_synthetic_face_model("full", expressions="actions"), path)
    first = derive_controls(load_face_model(path))
    assert first.directions.tobytes() == derive_controls(load_face_model(path)).directions.tobytes()
    assert first.directions.tobytes() == basis.directions.tobytes()
    script = (
        "import hashlib, sys\n"
        "from neural_face_rig.rig.face_model import load_face_model\n"
        "from neural_face_rig.rig.control_basis import derive_controls\n"
        "d = derive_controls(load_face_model(sys.argv[1])).directions\n"
        "print(hashlib.sha256(d.tobytes()).hexdigest())\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == hashlib.sha256(first.directions.tobytes()).hexdigest()


def test_cache_returns_the_same_bits_and_refuses_damage(tmp_path):
    small = make_synthetic_face_model("tiny", expressions="actions")
    first = load_or_derive_controls(small, tmp_path)
    path = cache_path(tmp_path, model_digest(small))
    assert path.is_file() and path.with_suffix(".json").is_file()
    again = load_or_derive_controls(small, tmp_path)
    assert again.directions.tobytes() == first.directions.tobytes()
    assert again.model_digest == model_digest(small)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ControlsError, match=str(path)):
        read_controls(path)


def test_a_model_that_cannot_make_a_pattern_says_so():
    blobs = make_synthetic_face_model("tiny")  # broad random motions: no local patterns
    basis = derive_controls(blobs)
    neutral = keypoints(blobs, np.zeros(64))
    for i, c in enumerate(CONTROLS):
        target = target_displacement(c, neutral)
        amount = np.linalg.norm(target, axis=1)
        got = keypoints(blobs, basis.directions[i]) - neutral
        miss = np.linalg.norm(got - target, axis=1)
        moved = amount > 0
        assert basis.target_error[i] == pytest.approx((miss[moved] / amount[moved]).max(), 1e-3)
        assert basis.leak[i] == pytest.approx(miss[~moved].max() / amount.max(), 1e-3)
    assert basis.target_error.max() > 0.1


def test_control_cache_is_a_real_safetensors_file(tmp_path, basis):
    import safetensors.numpy

    path = tmp_path / "c.safetensors"
    write_controls(basis, path)
    loaded = safetensors.numpy.load_file(str(path))
    assert loaded["directions"].tobytes() == basis.directions.tobytes()
    # and the numpy reader reads the library's own files
    other = tmp_path / "lib.safetensors"
    safetensors.numpy.save_file({"x": np.arange(6, dtype=np.float32).reshape(2, 3),
                                 "i": np.arange(3, dtype=np.int64)}, str(other),
                                metadata={"k": "v"})
    tensors, meta = read_tensor_file(other)
    assert meta == {"k": "v"} and tensors["x"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert tensors["i"].dtype == np.int64


@pytest.mark.parametrize("damage", ["huge_header", "bad_offsets", "not_json"])
def test_tensor_reader_refuses_damaged_headers(tmp_path, damage):
    import struct

    path = tmp_path / "bad.safetensors"
    header = {"x": {"dtype": "F32", "shape": [1000000], "data_offsets": [0, 4000000]}}
    body = {
        "huge_header": struct.pack("<Q", 1 << 40) + b"{}",
        "bad_offsets": struct.pack("<Q", len(json.dumps(header))) + json.dumps(header).encode(),
        "not_json": struct.pack("<Q", 4) + b"{{{{",
    }[damage]
    path.write_bytes(body)
    with pytest.raises(TensorFileError, match=str(path)):
        read_tensor_file(path)
