"""Deep3DFaceRecon R-Net from a fixture in the official epoch_20.pth layout (against a float64
reference written here from torchvision's ResNet-50 definition), and the landmark-fit
fallback on the full synthetic face model."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from neural_face_rig.neural.errors import CheckpointError
from neural_face_rig.neural.landmarks.align import apply_affine, invert_affine
from neural_face_rig.neural.photo.align import D3DCrop, align_d3d, standard_points
from neural_face_rig.neural.photo.rig_values import photo_rig, rig_from_landmarks
from neural_face_rig.neural.photo.rnet import crop_tensor, load_rnet, rig_from_crop
from neural_face_rig.rig.camera import CAMERA_224
from neural_face_rig.rig.geometry import TorchFaceModel, evaluate_rig
from neural_face_rig.rig.params import RigParams
from neural_face_rig.rig.synthetic import make_synthetic_face_model
from skimage import data

HEADS = (80, 64, 80, 3, 27, 2, 1)  # id, exp, tex, angles, gamma, (tx, ty), tz


def official_state(seed=0):
    """``net_recon`` keys as ReconNetWrapper.state_dict() names them (torchvision ResNet-50
    under ``backbone.``, heads under ``final_layers.``), random but well-scaled."""
    g = torch.Generator().manual_seed(seed)
    state = {}

    def conv(name, out, inp, k):
        state[f"{name}.weight"] = torch.randn(out, inp, k, k, generator=g) * math.sqrt(
            2.0 / (inp * k * k))

    def bn(name, c, gamma=1.0):
        state[f"{name}.weight"] = gamma * (0.5 + torch.rand(c, generator=g))
        state[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)
        state[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=g)
        state[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=g)
        state[f"{name}.num_batches_tracked"] = torch.tensor(12345)

    conv("backbone.conv1", 64, 3, 7)
    bn("backbone.bn1", 64)
    inplanes = 64
    for layer, (units, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True), 1):
        for unit in range(units):
            p = f"backbone.layer{layer}.{unit}"
            conv(f"{p}.conv1", planes, inplanes, 1)
            bn(f"{p}.bn1", planes)
            conv(f"{p}.conv2", planes, planes, 3)
            bn(f"{p}.bn2", planes)
            conv(f"{p}.conv3", 4 * planes, planes, 1)
            bn(f"{p}.bn3", 4 * planes, gamma=0.3)
            if unit == 0:
                conv(f"{p}.downsample.0", 4 * planes, inplanes, 1)
                bn(f"{p}.downsample.1", 4 * planes)
            inplanes = 4 * planes
    for k, n in enumerate(HEADS):
        state[f"final_layers.{k}.weight"] = 0.02 * torch.randn(n, 2048, 1, 1, generator=g)
        state[f"final_layers.{k}.bias"] = 0.1 * torch.randn(n, generator=g)
    return state


def write_epoch_20(path, state):
    """torch.save of base_model.save_networks: net_recon, Adam and scheduler state."""
    names = list(state)
    adam = {
        "state": {i: {"step": torch.tensor(20.0), "exp_avg": torch.zeros(1),
                      "exp_avg_sq": torch.zeros(1)} for i in range(3)},
        "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0,
                          "amsgrad": False, "params": list(range(len(names)))}],
    }
    scheduler = {"step_size": 10, "gamma": 0.2, "base_lrs": [1e-4], "last_epoch": 20,
                 "_step_count": 21, "verbose": False, "_last_lr": [2e-5]}
    torch.save({"net_recon": state, "opt_00": adam, "sched_00": scheduler}, path)


def reference_forward(state, x):
    """ReconNetWrapper.forward in float64, straight from torchvision's ResNet definition."""
    s = {k: v.double() for k, v in state.items()}

    def bn(x, name):
        return F.batch_norm(x, s[f"{name}.running_mean"], s[f"{name}.running_var"],
                            s[f"{name}.weight"], s[f"{name}.bias"], False, 0.0, 1e-5)

    x = F.relu(bn(F.conv2d(x, s["backbone.conv1.weight"], stride=2, padding=3), "backbone.bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    for layer, units in enumerate((3, 4, 6, 3), 1):
        for unit in range(units):
            p = f"backbone.layer{layer}.{unit}"
            stride = 2 if unit == 0 and layer > 1 else 1
            out = F.relu(bn(F.conv2d(x, s[f"{p}.conv1.weight"]), f"{p}.bn1"))
            out = F.relu(bn(F.conv2d(out, s[f"{p}.conv2.weight"], stride=stride, padding=1),
                            f"{p}.bn2"))
            out = bn(F.conv2d(out, s[f"{p}.conv3.weight"]), f"{p}.bn3")
            if unit == 0:
                x = bn(F.conv2d(x, s[f"{p}.downsample.0.weight"], stride=stride),
                       f"{p}.downsample.1")
            x = F.relu(out + x)
    x = F.adaptive_avg_pool2d(x, 1)
    heads = [F.conv2d(x, s[f"final_layers.{k}.weight"], s[f"final_layers.{k}.bias"])
             for k in range(len(HEADS))]
    return torch.flatten(torch.cat(heads, dim=1), 1)


@pytest.fixture(scope="module")
def astronaut_crop():
    from neural_face_rig.neural.photo.detect import default_detector, detect_face

    photo = data.astronaut()
    found, _ = detect_face(photo, default_detector("dlib"))
    return align_d3d(photo, found.landmarks, standard_points(make_synthetic_face_model("tiny")))


def test_rnet_reads_official_layout_and_matches_float64_reference(tmp_path, astronaut_crop):
    state = official_state()
    path = tmp_path / "epoch_20.pth"
    write_epoch_20(path, state)
    net = load_rnet(path)
    rig = rig_from_crop(net, astronaut_crop.image)
    reference = reference_forward(state, crop_tensor(astronaut_crop.image).double())[0]
    assert rig.shape == (257,) and rig.dtype == np.float32
    assert reference.abs().max() > 0.1  # the heads see real, non-vanishing features
    np.testing.assert_allclose(rig, reference.numpy(), atol=1e-5, rtol=0)
    result = photo_rig(astronaut_crop, rnet=net)
    assert result.source == "rnet"
    np.testing.assert_array_equal(result.rig.to_vector(), rig)
    # The canonical order is R-Net's own: angles are outputs 224:227, tz is the last.
    np.testing.assert_allclose(result.rig.rotation, reference[224:227].numpy(), atol=1e-5)
    np.testing.assert_allclose(result.rig.translation[2], reference[256].item(), atol=1e-5)


def test_rnet_refuses_other_layouts_by_name(tmp_path):
    state = official_state(1)
    cases = {
        "fc.pth": ({**state, "backbone.fc.weight": torch.zeros(257, 2048)}, "use_last_fc=True"),
        "missing.pth": ({k: v for k, v in state.items() if "final_layers.6" not in k},
                        "missing ['net_recon.final_layers.6.weight'"),
        "shape.pth": ({**state, "final_layers.1.weight": torch.zeros(63, 2048, 1, 1)},
                      "net_recon.final_layers.1.weight: expected shape [64, 2048, 1, 1]"),
        "nan.pth": ({**state, "backbone.bn1.bias": torch.full((64,), float("nan"))},
                    "expected finite float values"),
    }
    for name, (bad, message) in cases.items():
        write_epoch_20(tmp_path / name, bad)
        with pytest.raises(CheckpointError, match=message.replace("[", r"\[")):
            load_rnet(tmp_path / name)
    torch.save({"model": state}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="a dict with 'net_recon'"):
        load_rnet(tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no such R-Net file"):
        load_rnet(tmp_path / "absent.pth")


@pytest.fixture(scope="module")
def full_model():
    return TorchFaceModel.from_face_model(make_synthetic_face_model("full"))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_landmarks_recover_pose_and_expression_of_the_full_model(full_model, seed):
    """The fallback without an R-Net: landmarks rendered by the full synthetic face model in
    the rig camera, carried into a 'photo' by a crop transform and back, fitted."""
    truth = RigParams.sample(np.random.default_rng(seed), groups=["expression"])
    truth.rotation[:] = [0.12, -0.3, 0.05]
    truth.translation[:] = [0.03, -0.02, 0.3]
    crop_points = evaluate_rig(full_model, torch.from_numpy(truth.to_vector()[None]),
                               CAMERA_224).landmarks[0].double().numpy()
    matrix = np.array([[0.61, 0.0, -12.0], [0.0, 0.61, 31.5]])  # photo -> crop
    photo_points = apply_affine(invert_affine(matrix), crop_points)
    crop = D3DCrop(np.zeros((224, 224, 3), np.uint8), matrix, np.zeros(5),
                   apply_affine(matrix, photo_points))
    # Rendered landmarks are exact: a small landmark sigma lets the data outweigh the prior.
    fit = rig_from_landmarks(full_model, crop.landmarks, fit_identity=False,
                             landmark_sigma=1e-3)
    np.testing.assert_allclose(fit.rotation, truth.rotation, atol=2e-3)  # radians
    np.testing.assert_allclose(fit.expression, truth.expression, atol=0.1)  # σ
    default = photo_rig(crop, model=full_model)  # photo default: identity fitted too
    assert default.source == "landmarks" and default.rig.identity.any()
    rendered = evaluate_rig(full_model, torch.from_numpy(default.rig.to_vector()[None]),
                            CAMERA_224).landmarks[0].numpy()
    assert np.abs(rendered - crop_points).max() < 2.0  # px, within the prior's pull
