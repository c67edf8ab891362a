"""Landmark fitting: recovers the pose and expression that rendered the landmarks."""

import numpy as np
import pytest
import torch
from neural_face_rig.rig.camera import CAMERA_224, CAMERA_256
from neural_face_rig.rig.fitting import LandmarkFitError, _LandmarkProblem, fit_landmarks
from neural_face_rig.rig.geometry import TorchFaceModel, evaluate_rig
from neural_face_rig.rig.params import GROUP_SLICES, RigParams
from neural_face_rig.rig.synthetic import make_synthetic_face_model


@pytest.fixture(scope="module")
def face_model():
    return make_synthetic_face_model("tiny")


@pytest.fixture(scope="module")
def tm(face_model):
    return TorchFaceModel.from_face_model(face_model)


def posed_params(seed: int, identity: bool = False) -> RigParams:
    groups = ["expression", "identity"] if identity else ["expression"]
    params = RigParams.sample(np.random.default_rng(seed), groups=groups)
    params.rotation[:] = [0.15, -0.35, 0.08]
    params.translation[:] = [0.05, -0.03, 0.4]
    return params


def render_landmarks(tm, params: RigParams, camera=CAMERA_224) -> torch.Tensor:
    rig = torch.from_numpy(params.to_vector()[None])
    return evaluate_rig(tm, rig, camera).landmarks[0]


def reprojection_error(tm, params: RigParams, landmarks: torch.Tensor, camera=CAMERA_224):
    """Largest landmark distance, pixels."""
    return (render_landmarks(tm, params, camera) - landmarks).norm(dim=-1).max().item()


def test_recovers_pose_and_expression(tm):
    truth = posed_params(3)
    landmarks = render_landmarks(tm, truth)
    # Noise-free landmarks: a tiny landmark sigma makes the prior's pull negligible.
    fit = fit_landmarks(tm, landmarks, CAMERA_224, landmark_sigma=0.01)
    assert isinstance(fit, RigParams)
    np.testing.assert_allclose(fit.rotation, truth.rotation, atol=2e-3)  # radians
    np.testing.assert_allclose(fit.translation, truth.translation, atol=2e-3)  # decimetres
    np.testing.assert_allclose(fit.expression, truth.expression, atol=0.05)  # σ units
    assert reprojection_error(tm, fit, landmarks) < 0.01
    assert not fit.identity.any() and not fit.reflectance.any() and not fit.illumination.any()


def test_initialisation_is_already_close(tm):
    truth = posed_params(3)
    truth.expression[:] = 0.0  # the affine start ignores expression
    start = fit_landmarks(tm, render_landmarks(tm, truth), CAMERA_224, steps=0)
    np.testing.assert_allclose(start.rotation, truth.rotation, atol=0.05)
    assert abs(start.translation[2] - truth.translation[2]) < 0.3


def test_fixed_identity_is_used_and_kept(tm):
    truth = posed_params(5, identity=True)
    landmarks = render_landmarks(tm, truth)
    fit = fit_landmarks(tm, landmarks, CAMERA_224, identity=truth.identity, landmark_sigma=0.01)
    np.testing.assert_array_equal(fit.identity, truth.identity)
    np.testing.assert_allclose(fit.rotation, truth.rotation, atol=2e-3)
    assert reprojection_error(tm, fit, landmarks) < 0.01


def test_fit_identity_reprojects_from_a_numpy_model(face_model, tm):
    truth = posed_params(7, identity=True)
    landmarks = render_landmarks(tm, truth, CAMERA_256)
    fit = fit_landmarks(
        face_model, landmarks.numpy(), CAMERA_256, fit_identity=True, landmark_sigma=0.01
    )
    assert fit.identity.any()
    assert reprojection_error(tm, fit, landmarks, CAMERA_256) < 0.05


def test_batch_matches_single_fits_and_is_deterministic(tm):
    truths = [posed_params(3), posed_params(4)]
    truths[1].rotation[:] = [-0.1, 0.5, -0.05]
    landmarks = torch.stack([render_landmarks(tm, p) for p in truths])
    batch = fit_landmarks(tm, landmarks, CAMERA_224, landmark_sigma=0.01)
    assert isinstance(batch, torch.Tensor) and batch.shape == (2, 257)
    again = fit_landmarks(tm, landmarks, CAMERA_224, landmark_sigma=0.01)
    assert torch.equal(batch, again)
    for row, truth in zip(batch, truths, strict=True):
        rotation = row[GROUP_SLICES["rotation"]].numpy()
        np.testing.assert_allclose(rotation, truth.rotation, atol=2e-3)


def test_strong_prior_pulls_expression_to_neutral(tm):
    truth = posed_params(3)
    landmarks = render_landmarks(tm, truth)
    free = fit_landmarks(tm, landmarks, CAMERA_224, landmark_sigma=0.01)
    held = fit_landmarks(tm, landmarks, CAMERA_224, expression_prior=1e8)
    assert np.abs(held.expression).max() < 0.01 < np.abs(free.expression).max()
    # Without expression freedom the landmarks can no longer be met exactly.
    assert reprojection_error(tm, held, landmarks) > 10 * reprojection_error(tm, free, landmarks)


def test_bad_landmarks_are_refused(tm):
    with pytest.raises(
        LandmarkFitError, match=r"landmarks: expected shape \[68, 2\].*found \[67, 2\]"
    ):
        fit_landmarks(tm, np.zeros((67, 2)), CAMERA_224)
    landmarks = np.full((68, 2), 100.0)
    landmarks[3, 1] = np.nan
    with pytest.raises(LandmarkFitError, match="landmarks: expected finite numbers"):
        fit_landmarks(tm, landmarks, CAMERA_224)
    with pytest.raises(LandmarkFitError, match=r"identity: expected shape \[80\].*found \[2, 80\]"):
        fit_landmarks(tm, np.full((68, 2), 100.0), CAMERA_224, identity=np.zeros((2, 80)))


def test_analytic_jacobian_matches_autograd():
    model = TorchFaceModel.from_face_model(make_synthetic_face_model("tiny"), dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    params = 0.2 * torch.randn(2, 150, generator=generator, dtype=torch.float64)
    target = torch.full((2, 68, 2), 100.0, dtype=torch.float64)
    prior = torch.zeros(150, dtype=torch.float64)
    free = torch.ones(150, dtype=torch.bool)
    problem = _LandmarkProblem(model, CAMERA_224, target, 1.5, prior, free)
    _, analytic = problem.jacobian(params)
    numeric = torch.autograd.functional.jacobian(lambda p: problem.jacobian(p)[0], params)
    per_row = torch.stack([numeric[b, :, b] for b in range(2)])  # rows are independent
    torch.testing.assert_close(analytic, per_row)


def test_spd_solve_matches_a_float64_solve_and_survives_singular_systems():
    from neural_face_rig.rig.fitting import spd_solve

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 20, 20, generator=gen, dtype=torch.float64)
    spd = a @ a.transpose(1, 2) + 0.1 * torch.eye(20, dtype=torch.float64)
    b = torch.randn(3, 20, generator=gen, dtype=torch.float64)
    expected = np.linalg.solve(spd.numpy(), b.numpy()[..., None])[..., 0]
    np.testing.assert_allclose(spd_solve(spd, b).numpy(), expected, rtol=1e-9, atol=1e-9)
    x32 = spd_solve(spd.float(), b.float())
    assert x32.dtype == torch.float32
    singular = torch.zeros(1, 4, 4)
    singular[0, 0, 0] = 1.0
    assert torch.isfinite(spd_solve(singular, torch.ones(1, 4))).all()


_FIT_SCRIPT = r"""
import hashlib, sys
import torch
torch.set_num_threads(2)
sys.path.insert(0, sys.argv[1])
from test_fitting import posed_params, render_landmarks, reprojection_error
from neural_face_rig.rig.camera import CAMERA_224
from neural_face_rig.rig.fitting import fit_landmarks
from neural_face_rig.rig.geometry import TorchFaceModel
from neural_face_rig.rig.params import RigParams
from neural_face_rig.rig.synthetic import make_synthetic_face_model
tm = TorchFaceModel.from_face_model(make_synthetic_face_model("tiny"))
truths = [posed_params(s, identity=True) for s in range(4)]
landmarks = torch.stack([render_landmarks(tm, p) for p in truths])
fit = fit_landmarks(tm, landmarks, CAMERA_224, fit_identity=True, landmark_sigma=0.01)
worst = max(reprojection_error(tm, RigParams.from_vector(row.numpy()), lm)
            for row, lm in zip(fit, landmarks))
print(hashlib.sha256(fit.numpy().tobytes()).hexdigest(), worst)
"""


def test_batched_identity_fit_runs_under_two_threads_and_reproduces():
    """The [4, 150, 150] normal equations of a batched identity fit, in a fresh process at
    torch.set_num_threads(2) (where torch 2.13's batched LAPACK solve hangs): it finishes,
    fits, and two processes give the same bits."""
    import os
    import subprocess
    import sys

    tests = os.path.dirname(os.path.abspath(__file__))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", _FIT_SCRIPT, tests], env=env, text=True,
                              capture_output=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "DLASWP" not in done.stderr and "SLASWP" not in done.stderr
        digest, worst = done.stdout.split()
        assert float(worst) < 0.05  # pixels
        runs.append(digest)
    assert runs[0] == runs[1]
