"""Landmarks of a clip -> per-frame head pose and expression, identity and camera held.

The clip's camera: the video is a pinhole camera with its principal point at the frame's
centre and one focal length for the whole clip; its landmarks are rescaled into the rig's
square camera (``rig_camera``, 224 px by default) by ``ClipCamera``, which keeps the field of
view, so rig rotation and translation mean what they mean for the rig. The focal length is
the caller's (a known lens) or, by default, the rig camera's field of view.

Identity is solved once over the clip: a joint maximum a posteriori fit over ``key_frames``
frames spread over the clip (one shared identity [80], per frame pose [6] and expression [64];
Gaussian priors as in ``rig.fitting``; Levenberg-Marquardt on the dense normal equations, the
Jacobian by forward-mode automatic differentiation). A single frame cannot separate identity from
expression (144 unknowns, 136 landmark coordinates); a dozen frames can. Every frame is then
fitted with that identity held fixed (``rig.fitting.fit_landmarks``, batched), and frames whose
landmark confidence is below ``min_confidence`` are left to the smoother to bridge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ...rig.camera import CAMERA_224, Camera, project, to_image_xy
from ...rig.face_model import FaceModel
from ...rig.fitting import fit_landmarks
from ...rig.geometry import TorchFaceModel, rotation_matrix
from ...rig.params import GROUP_SLICES, RIG_SIZE
from . import CaptureCancelled, CaptureError

N_ID, N_EXP = 80, 64
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


def _projector(tm: TorchFaceModel, camera: Camera) -> Callable[[torch.Tensor], torch.Tensor]:
    """params [150] (identity 80 | angles 3 | translation 3 | expression 64) -> the 68 image
    landmarks [136] rig px, float64 (the keypoints' rows of the linear shape model)."""
    ids = tm.keypoints
    mean = tm.mean_shape.index_select(0, ids).double()  # [68, 3]
    basis = tm.shape_basis.index_select(1, ids).double().reshape(N_ID + N_EXP, -1)  # [144, 204]

    def image(params: torch.Tensor) -> torch.Tensor:
        identity, local = params[:N_ID], params[N_ID:]
        coefficients = torch.cat([identity, local[6:]])
        unposed = (mean.reshape(-1) + coefficients @ basis).reshape(1, -1, 3)
        rotation = rotation_matrix(local[None, :3])
        posed = unposed @ rotation.transpose(1, 2) + local[None, None, 3:6]
        return to_image_xy(project(camera, posed)[..., :2], camera).reshape(-1)

    return image


def solve_identity(
    tm: TorchFaceModel,
    landmarks: np.ndarray,
    camera: Camera,
    *,
    landmark_sigma: float = 2.0,
    expression_prior: float = 1.0,
    identity_prior: float = 1.0,
    steps: int = 30,
) -> tuple[np.ndarray, np.ndarray]:
    """Joint fit over K frames (module docstring): ``landmarks`` [K, 68, 2] rig camera px ->
    (identity [80], per-frame [K, 70] angles | translation | expression). Float64."""
    k = len(landmarks)
    target = torch.as_tensor(landmarks, dtype=torch.float64).reshape(k, -1)
    start = fit_landmarks(
        tm, target.reshape(k, -1, 2).to(tm.mean_shape.dtype), camera,
        landmark_sigma=landmark_sigma, expression_prior=expression_prior, steps=steps,
    )
    assert isinstance(start, torch.Tensor)
    start = start.double().cpu()
    local = torch.cat(
        [start[:, GROUP_SLICES["rotation"]], start[:, GROUP_SLICES["translation"]],
         start[:, GROUP_SLICES["expression"]]], dim=1,
    )
    identity = torch.zeros(N_ID, dtype=torch.float64)
    image = _projector(tm, camera)
    jacobian = torch.func.vmap(torch.func.jacfwd(image))  # 150 inputs: forward mode is ~7x faster
    batched_image = torch.func.vmap(image)
    # Unknowns: [identity 80 | frame 0 local 70 | frame 1 local 70 | ...].
    per_frame = np.r_[np.zeros(6), np.full(N_EXP, expression_prior)]
    prior = np.concatenate([np.full(N_ID, identity_prior), np.tile(per_frame, k)])

    def pack(identity: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        return torch.cat([identity.expand(k, N_ID), local], dim=1)

    def cost(identity: torch.Tensor, local: torch.Tensor) -> float:
        residual = (batched_image(pack(identity, local)) - target) / landmark_sigma
        theta = np.concatenate([identity.numpy(), local.reshape(-1).numpy()])
        return 0.5 * float(residual.square().sum()) + 0.5 * float((prior * theta**2).sum())

    damping = 1e-3
    current = cost(identity, local)
    for _ in range(steps):
        params = pack(identity, local)
        residual = ((batched_image(params) - target) / landmark_sigma).numpy()  # [K, 136]
        jac = (jacobian(params) / landmark_sigma).numpy()  # [K, 136, 150]
        size = N_ID + _LOCAL * k
        normal = np.zeros((size, size))
        gradient = np.zeros(size)
        for f in range(k):
            j_id, j_local = jac[f][:, :N_ID], jac[f][:, N_ID:]
            rows = slice(N_ID + _LOCAL * f, N_ID + _LOCAL * (f + 1))
            normal[:N_ID, :N_ID] += j_id.T @ j_id
            normal[:N_ID, rows] = j_id.T @ j_local
            normal[rows, :N_ID] = normal[:N_ID, rows].T
            normal[rows, rows] = j_local.T @ j_local
            gradient[:N_ID] += j_id.T @ residual[f]
            gradient[rows] = j_local.T @ residual[f]
        theta = np.concatenate([identity.numpy(), local.reshape(-1).numpy()])
        normal[np.diag_indices(size)] += prior
        gradient += prior * theta
        improved = False
        while damping < 1e8:
            damped = normal + np.diag(damping * (np.diag(normal) + 1e-9))
            step = np.linalg.solve(damped, -gradient)
            trial_identity = identity + torch.from_numpy(step[:N_ID])
            trial_local = local + torch.from_numpy(step[N_ID:].reshape(k, _LOCAL))
            trial = cost(trial_identity, trial_local)
            if trial < current:
                improved = current - trial > 1e-10 * current
                identity, local, current = trial_identity, trial_local, trial
                damping = max(damping * 0.3, 1e-9)
                break
            damping *= 10.0
        if not improved:
            break
    return identity.numpy(), local.numpy()


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
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ClipFit:
    """Fit a clip (module docstring). ``landmarks`` [N, 68, 2] video px, ``confidence`` [N];
    ``landmark_sigma`` is in video px. ``progress(done, N)`` after each batch, ``cancel()``
    before each (CaptureCancelled)."""
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
    identity, _ = solve_identity(
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
            expression_prior=expression_prior, steps=steps,
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
    image = torch.func.vmap(_projector(tm, mapping.camera))
    params = torch.cat(
        [torch.as_tensor(rig[:, GROUP_SLICES["identity"]]),
         torch.as_tensor(rig[:, GROUP_SLICES["rotation"]]),
         torch.as_tensor(rig[:, GROUP_SLICES["translation"]]),
         torch.as_tensor(rig[:, GROUP_SLICES["expression"]])], dim=1,
    )
    projected = image(params).numpy().reshape(len(rig), -1, 2)
    error = np.linalg.norm(projected - rig_points, axis=-1)
    return np.sqrt((error**2).mean(axis=1)) / mapping.scale
