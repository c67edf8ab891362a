"""Landmarks of a clip -> per-frame head pose and expression, identity and camera held.

The clip's camera: the video is a pinhole camera with its principal point at the frame's
centre and one focal length for the whole clip; its landmarks are rescaled into the rig's
square camera (``rig_camera``, 224 px by default) by ``ClipCamera``, which keeps the field of
view, so rig rotation and translation mean what they mean for the rig. The focal length is
the caller's (a known lens) or solved once over the clip (``solve_focal``: the lens under
which the joint fit below has the lowest MAP energy, searched over 4°..40° fields of view).

Identity is solved once over the clip: a joint maximum a posteriori fit over ``key_frames``
frames spread over the clip (one shared identity [80], per frame pose [6] and expression [64];
Gaussian priors as in ``rig.fitting``; Levenberg-Marquardt through the Schur complement of the
per-frame blocks, the exact Jacobian). A single frame cannot separate identity from
expression (144 unknowns, 136 landmark coordinates); a dozen frames can. Every frame is then
fitted with that identity held fixed (``rig.fitting.fit_landmarks``, batched), and frames whose
landmark confidence is below ``min_confidence`` are left to the smoother to bridge.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ...rig.camera import CAMERA_224, Camera
from ...rig.face_model import FaceModel
from ...rig.fitting import _LandmarkProblem, fit_landmarks
from ...rig.geometry import TorchFaceModel
from ...rig.params import GROUP_SLICES, RIG_SIZE
from . import CaptureCancelled, CaptureError

N_ID, N_EXP = 80, 64
FOCAL_KEY_FRAMES = 6  # frames the focal-length search fits (each trial is a joint fit)
_LOCAL = 6 + N_EXP  # per-frame unknowns: angles 3, translation 3, expression 64


@dataclass(frozen=True)
class ClipCamera:
    """Video pixels -> the rig camera's pixels: ``rig = (video - video_centre) · scale +
    rig_centre``. ``camera`` is the rig-side pinhole (focal in rig px)."""

    camera: Camera
    scale: float
    video_centre: tuple[float, float]

    @property
    def rig_centre(self) -> tuple[float, float]:
        return (self.camera.center, self.camera.size - 1 - self.camera.center)

    def to_rig(self, landmarks: np.ndarray) -> np.ndarray:
        """[..., 2] video px -> rig camera px."""
        return (np.asarray(landmarks, np.float64) - self.video_centre) * self.scale + np.array(
            self.rig_centre
        )


def clip_camera(
    video_size: tuple[int, int], focal: float | None = None, rig_camera: Camera = CAMERA_224
) -> ClipCamera:
    """The ClipCamera of a ``video_size`` (width, height) clip with focal length ``focal``
    video px (default: the rig camera's field of view across the frame's longer side). The
    principal point sits where the rig camera's sits, scaled: for a clip rendered by the rig
    camera itself the mapping is the identity."""
    width, height = video_size
    side = float(max(width, height))
    scale = rig_camera.size / side
    if focal is None:
        focal = rig_camera.focal / scale
    if not (np.isfinite(focal) and focal > 0):
        raise CaptureError(f"focal length: expected a positive number of pixels, found {focal!r}")
    ratio = rig_camera.center / rig_camera.size
    centre = (ratio * width, height - 1 - ratio * height)
    camera = Camera(
        focal=float(focal) * scale, center=rig_camera.center, size=rig_camera.size,
        distance=rig_camera.distance,
    )
    return ClipCamera(camera, scale, centre)


@dataclass
class ClipFit:
    """Per-frame results, N frames: ``rotation`` [N, 3] rad, ``translation`` [N, 3] dm,
    ``expression`` [N, 64] σ, ``fitted`` [N] bool (False: left to the smoother), the clip's
    ``identity`` [80] σ and ``camera``, and ``rms_px`` [N] the landmark RMS error in video px."""

    rotation: np.ndarray
    translation: np.ndarray
    expression: np.ndarray
    fitted: np.ndarray
    identity: np.ndarray
    camera: ClipCamera
    rms_px: np.ndarray


class _KeypointModel:
    """rig.fitting's landmark projection and its exact Jacobian, in this module's parameter
    order (params [K, 150]: identity 80 | angles 3 | translation 3 | expression 64), results
    in float64: image landmarks [K, 68, 2] rig px, d image / d params [K, 136, 150]."""

    def __init__(self, tm: TorchFaceModel, camera: Camera) -> None:
        dtype, device = tm.mean_shape.dtype, tm.mean_shape.device
        self._problem = _LandmarkProblem(
            tm, camera, torch.zeros(1, 68, 2, dtype=dtype, device=device), 1.0,
            torch.zeros(N_ID + _LOCAL, dtype=dtype, device=device),
            torch.ones(N_ID + _LOCAL, dtype=torch.bool, device=device),
        )
        self._dtype, self._device = dtype, device

    def _solver_order(self, params: torch.Tensor) -> torch.Tensor:
        """-> rig.fitting's [angles 3 | translation 3 | identity 80 | expression 64]."""
        pose = params[:, N_ID : N_ID + 6]
        ordered = torch.cat([pose, params[:, :N_ID], params[:, N_ID + 6 :]], dim=1)
        return ordered.to(self._dtype).to(self._device)

    def image(self, params: torch.Tensor) -> torch.Tensor:
        return self._problem.project(self._solver_order(params))[0].double().cpu()

    def jacobian(self, params: torch.Tensor) -> torch.Tensor:
        jac = self._problem.jacobian(self._solver_order(params))[1].double().cpu()
        return torch.cat([jac[..., 6 : 6 + N_ID], jac[..., :6], jac[..., 6 + N_ID :]], dim=-1)


def solve_identity(
    tm: TorchFaceModel,
    landmarks: np.ndarray,
    camera: Camera,
    *,
    landmark_sigma: float = 2.0,
    expression_prior: float = 1.0,
    identity_prior: float = 1.0,
    steps: int = 30,
    start: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Joint fit over K frames (module docstring): ``landmarks`` [K, 68, 2] rig camera px ->
    (identity [80], per-frame [K, 70] angles | translation | expression, the energy at the
    optimum: data + prior, the MAP objective). Float64. ``start``: (identity, local, focal)
    of an earlier fit of the same frames through another focal length, to start from (depths
    rescaled to the new focal) instead of from per-frame fits."""
    k = len(landmarks)
    target = torch.as_tensor(landmarks, dtype=torch.float64).reshape(k, -1)
    if start is None:
        first = fit_landmarks(
            tm, target.reshape(k, -1, 2).to(tm.mean_shape.dtype), camera,
            landmark_sigma=landmark_sigma, expression_prior=expression_prior, steps=steps,
        )
        assert isinstance(first, torch.Tensor)
        first = first.double().cpu()
        local = torch.cat(
            [first[:, GROUP_SLICES["rotation"]], first[:, GROUP_SLICES["translation"]],
             first[:, GROUP_SLICES["expression"]]], dim=1,
        )
        identity = torch.zeros(N_ID, dtype=torch.float64)
    else:
        identity = torch.as_tensor(start[0], dtype=torch.float64).clone()
        local = torch.as_tensor(start[1], dtype=torch.float64).clone()
        # The same image size through a longer lens means a proportionally farther head.
        depth = camera.distance - local[:, 5]
        local[:, 5] = camera.distance - depth * (camera.focal / start[2])
    keypoints = _KeypointModel(tm, camera)
    local_prior = np.r_[np.zeros(6), np.full(N_EXP, expression_prior)]  # [70] per frame

    def pack(identity: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        return torch.cat([identity.expand(k, N_ID), local], dim=1)

    def cost(identity: torch.Tensor, local: torch.Tensor) -> float:
        residual = keypoints.image(pack(identity, local)).reshape(k, -1) - target
        prior = identity_prior * float(identity.square().sum()) + float(
            (local_prior * local.numpy() ** 2).sum()
        )
        return 0.5 * float((residual / landmark_sigma).square().sum()) + 0.5 * prior

    # Normal equations [[A, B], [Bᵀ, D]], D block-diagonal per frame: solved through the
    # 80x80 Schur complement of D, so a step costs K small solves, not one (80 + 70K)² solve.
    damping = 1e-3
    current = cost(identity, local)
    eye = np.eye(_LOCAL)
    for _ in range(steps):
        params = pack(identity, local)
        residual = ((keypoints.image(params).reshape(k, -1) - target) / landmark_sigma).numpy()
        jac = (keypoints.jacobian(params) / landmark_sigma).numpy()  # [K, 136, 150]
        j_id, j_local = jac[..., :N_ID], jac[..., N_ID:]
        j_id_t, j_local_t = j_id.transpose(0, 2, 1), j_local.transpose(0, 2, 1)
        a_block = (j_id_t @ j_id).sum(axis=0) + identity_prior * np.eye(N_ID)
        b_blocks = j_id_t @ j_local  # [K, 80, 70]
        d_blocks = j_local_t @ j_local + local_prior * eye
        g_id = (j_id_t @ residual[..., None]).sum(axis=0)[:, 0] + identity_prior * identity.numpy()
        g_local = (j_local_t @ residual[..., None])[..., 0] + local_prior * local.numpy()
        improved = False
        while damping < 1e8:
            a_damped = a_block + np.diag(damping * (np.diag(a_block) + 1e-9))
            diag_d = np.diagonal(d_blocks, axis1=1, axis2=2)
            d_damped = d_blocks + (damping * (diag_d + 1e-9))[:, :, None] * eye
            d_inv = np.linalg.inv(d_damped)  # [K, 70, 70], symmetric positive definite
            d_inv_bt = d_inv @ b_blocks.transpose(0, 2, 1)  # [K, 70, 80]
            d_inv_g = (d_inv @ g_local[..., None])[..., 0]  # [K, 70]
            schur = a_damped - (b_blocks @ d_inv_bt).sum(axis=0)
            rhs = -g_id + (b_blocks @ d_inv_g[..., None]).sum(axis=0)[:, 0]
            step_id = np.linalg.solve(schur, rhs)
            step_local: np.ndarray = -d_inv_g - d_inv_bt @ step_id
            trial_identity = identity + torch.from_numpy(step_id)
            trial_local = local + torch.from_numpy(step_local)
            trial = cost(trial_identity, trial_local)
            if trial < current:
                # Stop once a step gains less than a millionth: far below landmark noise.
                improved = current - trial > 1e-6 * current
                identity, local, current = trial_identity, trial_local, trial
                damping = max(damping * 0.3, 1e-9)
                break
            damping *= 10.0
        if not improved:
            break
    return identity.numpy(), local.numpy(), current


FOV_RANGE = (math.radians(4.0), math.radians(40.0))
"""Lenses a focal-length search considers: 4° (long tele) to 40° (wide) across the frame."""


def solve_focal(
    tm: TorchFaceModel,
    landmarks: np.ndarray,
    camera: Camera,
    *,
    landmark_sigma: float,
    expression_prior: float = 1.0,
    identity_prior: float = 1.0,
    steps: int = 10,
) -> float:
    """The focal length (rig px) of ``camera`` under which the joint fit of ``landmarks``
    [K, 68, 2] has the lowest MAP energy: a bounded Brent search on log focal over FOV_RANGE.
    Perspective is what tells lenses apart: the same head, turning, foreshortens differently
    through a wide and a long lens."""
    from scipy.optimize import minimize_scalar

    previous: list[tuple[np.ndarray, np.ndarray, float]] = []

    def energy(log_focal: float) -> float:
        trial = Camera(math.exp(log_focal), camera.center, camera.size, camera.distance)
        identity, local, value = solve_identity(
            tm, landmarks, trial, landmark_sigma=landmark_sigma,
            expression_prior=expression_prior, identity_prior=identity_prior, steps=steps,
            start=previous[-1] if previous else None,
        )
        previous.append((identity, local, trial.focal))
        return value

    low, high = (math.log(0.5 * camera.size / math.tan(0.5 * fov)) for fov in FOV_RANGE[::-1])
    result = minimize_scalar(energy, bounds=(low, high), method="bounded",
                             options={"xatol": 0.01})
    return float(math.exp(result.x))


def key_frame_indices(usable: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` indices of usable frames spread evenly over the clip."""
    candidates = np.flatnonzero(usable)
    if len(candidates) <= count:
        return candidates
    picks = np.linspace(0, len(candidates) - 1, count).round().astype(int)
    return candidates[np.unique(picks)]


def fit_clip(
    model: FaceModel | TorchFaceModel,
    landmarks: np.ndarray,
    confidence: np.ndarray,
    video_size: tuple[int, int],
    *,
    focal: float | None = None,
    rig_camera: Camera = CAMERA_224,
    landmark_sigma: float = 2.0,
    expression_prior: float = 1.0,
    identity_prior: float = 1.0,
    key_frames: int = 12,
    min_confidence: float = 0.3,
    steps: int = 30,
    frame_steps: int = 15,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ClipFit:
    """Fit a clip (module docstring). ``landmarks`` [N, 68, 2] video px, ``confidence`` [N];
    ``landmark_sigma`` is in video px; ``focal`` the lens in video px (None: solved).
    ``steps`` / ``frame_steps``: Levenberg-Marquardt iterations of the joint identity fit /
    of each frame's fit (from the affine start, 12-15 reach convergence at landmark noise of
    a pixel). ``progress(done, N)`` after each batch, ``cancel()`` before each
    (CaptureCancelled)."""
    points = np.asarray(landmarks, np.float64)
    conf = np.asarray(confidence, np.float64)
    n = len(points)
    if points.shape != (n, 68, 2) or conf.shape != (n,):
        raise CaptureError(
            f"landmarks [N, 68, 2] and confidence [N] expected, found {points.shape} and "
            f"{conf.shape}"
        )
    usable = (conf >= min_confidence) & np.isfinite(points).all(axis=(1, 2))
    if not usable.any():
        raise CaptureError("no frame has a face with confidence >= min_confidence")
    tm = model if isinstance(model, TorchFaceModel) else TorchFaceModel.from_face_model(model)
    mapping = clip_camera(video_size, focal, rig_camera)
    rig_points = mapping.to_rig(np.where(usable[:, None, None], points, 0.0))
    sigma = landmark_sigma * mapping.scale
    keys = key_frame_indices(usable, key_frames)
    if focal is None:
        solved = solve_focal(
            tm, rig_points[key_frame_indices(usable, FOCAL_KEY_FRAMES)], mapping.camera,
            landmark_sigma=sigma, expression_prior=expression_prior,
            identity_prior=identity_prior,
        )
        mapping = clip_camera(video_size, solved / mapping.scale, rig_camera)
    identity, _, _ = solve_identity(
        tm, rig_points[keys], mapping.camera, landmark_sigma=sigma,
        expression_prior=expression_prior, identity_prior=identity_prior, steps=steps,
    )
    rig = np.zeros((n, RIG_SIZE))
    rms = np.full(n, np.nan)
    todo = np.flatnonzero(usable)
    dtype = tm.mean_shape.dtype
    for start in range(0, len(todo), batch_size):
        if cancel is not None and cancel():
            raise CaptureCancelled("fitting cancelled")
        chunk = todo[start : start + batch_size]
        result = fit_landmarks(
            tm, torch.as_tensor(rig_points[chunk], dtype=dtype), mapping.camera,
            identity=torch.as_tensor(identity, dtype=dtype), landmark_sigma=sigma,
            expression_prior=expression_prior, steps=frame_steps,
        )
        assert isinstance(result, torch.Tensor)
        rig[chunk] = result.double().cpu().numpy()
        if progress is not None:
            progress(min(start + batch_size, len(todo)), len(todo))
    rms[todo] = _reprojection_rms(tm, rig[todo], rig_points[todo], mapping) if len(todo) else []
    return ClipFit(
        rotation=rig[:, GROUP_SLICES["rotation"]].copy(),
        translation=rig[:, GROUP_SLICES["translation"]].copy(),
        expression=rig[:, GROUP_SLICES["expression"]].copy(),
        fitted=usable,
        identity=identity,
        camera=mapping,
        rms_px=rms,
    )


def _reprojection_rms(
    tm: TorchFaceModel, rig: np.ndarray, rig_points: np.ndarray, mapping: ClipCamera
) -> np.ndarray:
    """Landmark RMS error [M] in video px of fitted rig vectors [M, 257]."""
    keypoints = _KeypointModel(tm, mapping.camera)
    params = torch.cat(
        [torch.as_tensor(rig[:, GROUP_SLICES["identity"]]),
         torch.as_tensor(rig[:, GROUP_SLICES["rotation"]]),
         torch.as_tensor(rig[:, GROUP_SLICES["translation"]]),
         torch.as_tensor(rig[:, GROUP_SLICES["expression"]])], dim=1,
    )
    projected = keypoints.image(params).numpy()
    error = np.linalg.norm(projected - rig_points, axis=-1)
    return np.sqrt((error**2).mean(axis=1)) / mapping.scale
