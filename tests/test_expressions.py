"""Expression library: presets defined by the named controls, blended with a weight."""

import numpy as np
import pytest
from neural_face_rig.rig.control_basis import derive_controls, expression_from_controls
from neural_face_rig.rig.controls import CONTROL_NAMES
from neural_face_rig.rig.expressions import (
    PRESET_NAMES,
    PRESETS,
    blend_preset,
    preset,
    preset_vector,
)
from neural_face_rig.rig.synthetic import make_synthetic_face_model


def test_presets_use_only_named_controls_in_range():
    assert {"neutral", "smile", "laugh", "surprise", "anger", "disgust", "sadness", "fear",
            "blink", "pout"} <= set(PRESET_NAMES)
    assert len(set(PRESET_NAMES)) == len(PRESETS)
    for p in PRESETS:
        assert set(p.values) <= set(CONTROL_NAMES), p.name
        assert all(0.0 <= v <= 1.0 for v in p.values.values())
        assert "\n" not in p.description
    assert not preset("neutral").values
    with pytest.raises(KeyError, match="known: neutral"):
        preset("joy")


def test_blend_weight_mixes_from_current_to_preset():
    current = {"jawOpen": 1.0, "eyeBlinkLeft": 0.4}
    smile = preset("smile")
    assert blend_preset(current, smile, 0.0) == {n: current.get(n, 0.0) for n in CONTROL_NAMES}
    full = blend_preset(current, smile, 1.0)
    assert full == dict(zip(CONTROL_NAMES, preset_vector(smile), strict=True))
    half = blend_preset(current, smile, 0.5)
    assert half["jawOpen"] == 0.5 and half["mouthSmileLeft"] == pytest.approx(0.4)
    assert blend_preset(current, smile, 7.0) == full  # clamped
    assert all(v == 0.0 for v in blend_preset(current, preset("neutral"), 1.0).values())


def test_a_smile_preset_raises_both_mouth_corners_on_the_face():
    model = make_synthetic_face_model("tiny", expressions="actions")
    basis = derive_controls(model)
    expression = expression_from_controls(basis, preset("smile").values)
    shape = (model.mean_shape + model.exp_base @ expression).reshape(-1, 3)
    neutral = model.mean_shape.reshape(-1, 3)
    lift = shape[model.keypoints[[48, 54]], 1] - neutral[model.keypoints[[48, 54]], 1]
    assert (lift > 0.03).all()
    assert np.abs(lift[0] - lift[1]) < 0.005  # symmetric preset, symmetric result
