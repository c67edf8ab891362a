"""RigParams: layout, JSON schema, bad input, soft ranges, priors, DiscoFaceGAN order."""

import json
import os

import numpy as np
import pytest
import torch
from neural_face_rig.rig.errors import RigParamsError
from neural_face_rig.rig.params import (
    DFG_INDEX,
    GROUP_SLICES,
    GROUPS,
    RIG_SIZE,
    SCHEMA_NAME,
    RangeViolation,
    RigParams,
    split_rig_vector,
)


def distinct_params() -> RigParams:
    """Every coefficient different, so any mix-up of positions shows."""
    return RigParams.from_vector(np.arange(RIG_SIZE, dtype=np.float32) / 100.0 - 1.0)


def test_canonical_layout_is_deep3dfacerecon_order():
    # Deep3DFaceRecon order: id [0:80], exp [80:144], tex [144:224], angles [224:227],
    # gamma [227:254], trans [254:257].
    assert RIG_SIZE == 257
    assert [name for name, _ in GROUPS] == [
        "identity",
        "expression",
        "reflectance",
        "rotation",
        "illumination",
        "translation",
    ]
    spans = {name: (sl.start, sl.stop) for name, sl in GROUP_SLICES.items()}
    assert spans == {
        "identity": (0, 80),
        "expression": (80, 144),
        "reflectance": (144, 224),
        "rotation": (224, 227),
        "illumination": (227, 254),
        "translation": (254, 257),
    }


def test_neutral_is_all_zeros_and_vector_round_trip():
    assert not RigParams.neutral().to_vector().any()
    params = distinct_params()
    vector = params.to_vector()
    assert vector.dtype == np.float32 and vector.shape == (257,)
    assert params.expression[0] == vector[80]
    np.testing.assert_array_equal(RigParams.from_vector(vector).to_vector(), vector)


def test_split_rig_vector_gives_views_of_a_torch_batch():
    batch = torch.arange(2 * 257, dtype=torch.float32).reshape(2, 257)
    groups = split_rig_vector(batch)
    assert groups["rotation"].shape == (2, 3)
    assert groups["rotation"][1, 0].item() == 257 + 224
    groups["translation"][0, 2] = -5.0  # a view: writes reach the batch
    assert batch[0, 256].item() == -5.0
    with pytest.raises(RigParamsError, match="257.*found shape"):
        split_rig_vector(torch.zeros(2, 254))


def test_json_round_trip_is_exact(tmp_path):
    params = RigParams.sample(np.random.default_rng(5))
    text = params.to_json()
    document = json.loads(text)
    assert document["schema"] == SCHEMA_NAME and document["version"] == 1
    np.testing.assert_array_equal(RigParams.from_json(text).to_vector(), params.to_vector())

    path = tmp_path / "pose.json"
    params.write_json(path)
    np.testing.assert_array_equal(RigParams.read_json(path).to_vector(), params.to_vector())
    assert [p.name for p in tmp_path.iterdir()] == ["pose.json"]  # no temporary left behind


def test_json_groups_left_out_are_neutral():
    params = RigParams.from_json(
        json.dumps({"schema": SCHEMA_NAME, "version": 1, "rotation": [0.1, 0.2, 0.3]})
    )
    np.testing.assert_allclose(params.rotation, [0.1, 0.2, 0.3])
    assert not params.identity.any() and not params.translation.any()


def _document(**changes):
    document = RigParams.neutral().to_dict()
    document.update(changes)
    return document


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (
            json.dumps(_document(expression=[0.0] * 63)),
            r"field 'expression': expected 64 numbers, found 63",
        ),
        (
            json.dumps(_document(rotation=[0.0, float("nan"), 0.0])),
            r"field 'rotation': expected finite numbers.*found nan at index 1",
        ),
        (
            json.dumps(_document(translation=[0.0, 0.0, float("inf")])),
            r"field 'translation': expected finite numbers.*found inf at index 2",
        ),
        (
            json.dumps(_document(illumination=[1e300] + [0.0] * 26)),
            r"field 'illumination' index 0 \(SH R 0\): expected a value within ±3, found 1e\+300",
        ),
        (
            json.dumps(_document(identity=["0"] * 80)),
            r"field 'identity': expected a list of 80 numbers, found a list of 80 items of "
            r"type str",
        ),
        (
            json.dumps(_document(identity=[True] * 80)),
            r"field 'identity': expected a list of 80 numbers",
        ),
        (json.dumps(_document(reflectance=3.0)), r"field 'reflectance'.*found float"),
        (json.dumps(_document(expresion=[0.0] * 64)), r"unknown field\(s\) \['expresion'\]"),
        (json.dumps(_document(version=2)), r"field 'version': expected 1 or older, found 2"),
        (json.dumps(_document(version="1")), r"field 'version': expected an integer.*'1'"),
        (json.dumps(_document(schema="other/rig")), r"field 'schema': expected .*'other/rig'"),
        (json.dumps({"version": 1}), r"field 'schema': expected .*found None"),
        (json.dumps([0.0] * 257), r"expected a JSON object, found list"),
        ("{not json", r"expected JSON, found a syntax error"),
    ],
)
def test_bad_json_is_refused_with_field_expected_and_found(text, pattern):
    with pytest.raises(RigParamsError, match=pattern):
        RigParams.from_json(text, source="face.json")
    with pytest.raises(RigParamsError, match="face.json"):
        RigParams.from_json(text, source="face.json")


def test_read_json_names_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_document(version=7)))
    with pytest.raises(RigParamsError, match=r"bad\.json.*version"):
        RigParams.read_json(path)
    with pytest.raises(RigParamsError, match=r"missing\.json: cannot read the rig params: no such"):
        RigParams.read_json(tmp_path / "missing.json")


def test_constructor_and_validate_refuse_bad_arrays():
    groups = {name: np.zeros(size) for name, size in GROUPS}
    with pytest.raises(RigParamsError, match=r"'rotation': expected 3 values, found shape \(4,\)"):
        RigParams(**{**groups, "rotation": np.zeros(4)})
    with pytest.raises(RigParamsError, match=r"'identity': expected 80 values, found shape"):
        RigParams(**{**groups, "identity": np.zeros((2, 40))})
    with pytest.raises(RigParamsError, match=r"'expression': expected finite numbers, found nan"):
        RigParams(**{**groups, "expression": np.full(64, np.nan)})
    with pytest.raises(RigParamsError, match=r"rig vector: expected shape \(257,\), found \(256"):
        RigParams.from_vector(np.zeros(256))

    params = RigParams.neutral()
    params.illumination[4] = np.inf  # an in-place edit after construction
    with pytest.raises(RigParamsError, match=r"'illumination'.*inf at index 4"):
        params.validate()
    with pytest.raises(RigParamsError, match="illumination"):
        params.to_json()


def test_soft_range_violations_list_only_the_offenders():
    assert RigParams.neutral().soft_range_violations() == []
    params = RigParams.neutral()
    params.expression[5] = 3.5
    params.rotation[1] = -1.2  # yaw beyond ±1.0
    params.rotation[0] = 0.59  # pitch inside ±0.6
    params.translation[2] = 2.5
    violations = params.soft_range_violations()
    assert [(v.group, v.index) for v in violations] == [
        ("expression", 5),
        ("rotation", 1),
        ("translation", 2),
    ]
    assert violations[1] == RangeViolation("rotation", 1, pytest.approx(-1.2), -1.0, 1.0)
    params.validate()  # soft violations are not errors


def test_sample_is_deterministic_and_follows_the_priors():
    first = RigParams.sample(np.random.default_rng(11))
    second = RigParams.sample(np.random.default_rng(11))
    np.testing.assert_array_equal(first.to_vector(), second.to_vector())

    draws = np.stack([RigParams.sample(np.random.default_rng(s)).to_vector() for s in range(400)])
    groups = split_rig_vector(draws)
    assert abs(groups["identity"].std() - 1.0) < 0.05
    assert abs(groups["expression"].std() - 1.0) < 0.05
    np.testing.assert_allclose(groups["rotation"].std(axis=0), [0.1, 0.3, 0.05], rtol=0.15)
    assert not groups["translation"].any()
    light = groups["illumination"].reshape(-1, 3, 9)
    # A soft frontal light from above: mean SH[2] (z) = 0.1 and SH[1] (-y) = -0.05 per colour.
    np.testing.assert_allclose(light[..., 2].mean(axis=0), 0.1, atol=0.015)
    np.testing.assert_allclose(light[..., 1].mean(axis=0), -0.05, atol=0.015)
    # Mostly white: the colour channels share their draw, up to a small tint.
    assert np.abs(light[:, 0] - light[:, 1]).std() < 0.05 < light[:, 0].std()


def test_sample_only_some_groups_keeps_the_base():
    base = distinct_params()
    params = RigParams.sample(np.random.default_rng(2), groups=["expression"], base=base)
    changed = params.to_vector() != base.to_vector()
    assert changed[GROUP_SLICES["expression"]].all()
    assert not np.delete(changed, np.r_[GROUP_SLICES["expression"]]).any()
    with pytest.raises(RigParamsError, match=r"sample groups: expected names.*\['pose'\]"):
        RigParams.sample(np.random.default_rng(0), groups=["pose"])


def test_discofacegan_order_and_round_trip():
    params = distinct_params()
    dfg = params.to_dfg_vector()
    # DiscoFaceGAN order: [id 80 | tex 80 | exp 64 | rot 3 | gamma 27] = 254.
    assert dfg.shape == (254,)
    np.testing.assert_array_equal(dfg[0:80], params.identity)
    np.testing.assert_array_equal(dfg[80:160], params.reflectance)
    np.testing.assert_array_equal(dfg[160:224], params.expression)
    np.testing.assert_array_equal(dfg[224:227], params.rotation)
    np.testing.assert_array_equal(dfg[227:254], params.illumination)

    back = RigParams.from_dfg_vector(dfg, translation=params.translation)
    np.testing.assert_array_equal(back.to_vector(), params.to_vector())
    assert not RigParams.from_dfg_vector(dfg).translation.any()

    batch = torch.from_numpy(np.stack([params.to_vector(), -params.to_vector()]))
    np.testing.assert_array_equal(batch[:, DFG_INDEX].numpy(), np.stack([dfg, -dfg]))
    with pytest.raises(RigParamsError, match=r"DiscoFaceGAN vector: expected shape \(254,\)"):
        RigParams.from_dfg_vector(np.zeros(257))



def test_duplicate_keys_huge_ints_and_deep_nesting_are_refused_by_name():
    base = json.dumps(_document())
    duplicate = base[:-1] + ', "identity": [0.0]}'
    with pytest.raises(RigParamsError,
                       match=r"face\.json: expected each key once, found 'identity'"):
        RigParams.from_json(duplicate, source="face.json")
    with pytest.raises(RigParamsError, match=r"face\.json: expected integers of at most 30 digits"):
        RigParams.from_json(base[:-1] + ', "version": ' + "9" * 5000 + "}", source="face.json")
    with pytest.raises(RigParamsError, match=r"face\.json: expected JSON nested at most 32"):
        RigParams.from_json("[" * 100_000 + "]" * 100_000, source="face.json")
    with pytest.raises(RigParamsError, match=r"face\.json: expected JSON nested at most 32"):
        RigParams.from_json("[" * 40 + "]" * 40, source="face.json")


def test_float32_max_values_are_beyond_the_hard_range():
    document = _document(identity=[float(np.finfo(np.float32).max)] * 80)
    with pytest.raises(RigParamsError, match=r"field 'identity' index 0 \(Identity 0\): expected "
                                             r"a value within ±5"):
        RigParams.from_json(json.dumps(document), source="face.json")


def test_read_json_refuses_fifos_devices_and_folders(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    with pytest.raises(RigParamsError, match=r"pipe\.json: expected the rig params as a regular "
                                             r"file, found a FIFO"):
        RigParams.read_json(fifo)
    with pytest.raises(RigParamsError, match=r"/dev/zero: expected the rig params as a regular "
                                             r"file, found a character device"):
        RigParams.read_json("/dev/zero")
    with pytest.raises(RigParamsError, match=r"expected the rig params as a regular file, found "
                                             r"a folder"):
        RigParams.read_json(tmp_path)
    with pytest.raises(RigParamsError, match=r"cannot read the rig params: the folder .*nowhere "
                                             r"does not exist"):
        RigParams.read_json(tmp_path / "nowhere" / "face.json")
