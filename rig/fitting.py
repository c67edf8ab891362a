"""Fit the rig to 2D landmarks: pose, expression and optionally identity.

Maximum a posteriori under Gaussian landmark noise and Gaussian coefficient priors:

    E = 1/2 Σ_k ||x_k(p) - l_k||² / σ²  +  1/2 w_exp ||exp||²  +  1/2 w_id ||id||²

x_k are the projected 68 keypoints (rig.geometry, rig.camera), l_k the target landmarks in
image pixels (x right, y down), σ the landmark noise in pixels; coefficients are in units of
their standard deviation, so w = 1 is the model's own prior. The start comes from an affine
camera fitted to the keypoints of the (given) identity, turned into rotation and translation;
batched Levenberg-Marquardt with the exact Jacobian (chain rule through the pinhole camera,
the rotation and the linear shape model) then minimises E, each batch row independently.
Deterministic for a given input, device and dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .camera import Camera, project, to_image_xy
from .errors import RigError
from .face_model import N_LANDMARKS, FaceModel
from .geometry import TorchFaceModel, axis_rotations, rotation_matrix, shape_vertices
from .params import GROUP_SIZES, RIG_SIZE, RigParams, split_rig_vector

_N_ID, _N_EXP = GROUP_SIZES["identity"], GROUP_SIZES["expression"]
# Parameter layout inside the solver: [angles 3 | translation 3 | identity 80 | expression 64],
# the coefficient part in the order of TorchFaceModel.shape_basis.
_ANGLES = slice(0, 3)
_TRANSLATION = slice(3, 6)
_POSE = slice(0, 6)
_IDENTITY = slice(6, 6 + _N_ID)
_EXPRESSION = slice(6 + _N_ID, 6 + _N_ID + _N_EXP)
_N_PARAMS = 6 + _N_ID + _N_EXP


class LandmarkFitError(RigError):
    """Landmarks (or a fixed identity) given to the fitter have the wrong shape or NaN/inf."""


def fit_landmarks(
    model: FaceModel | TorchFaceModel,
    landmarks: np.ndarray | torch.Tensor,
    camera: Camera,
    *,
    fit_identity: bool = False,
    identity: np.ndarray | torch.Tensor | None = None,
    landmark_sigma: float = 2.0,
    expression_prior: float = 1.0,
    identity_prior: float = 1.0,
    steps: int = 50,
) -> RigParams | torch.Tensor:
    """Fit rotation, translation and expression (and identity if `fit_identity`) to
    `landmarks` [68, 2] or [B, 68, 2] in image pixels of `camera`.

    identity: [80] or [B, 80] σ units, held fixed unless fitted (then the start value);
    default zeros. landmark_sigma: expected landmark noise, px. expression_prior,
    identity_prior: weights of the Gaussian priors (0 disables). steps: maximum
    Levenberg-Marquardt iterations.
    Returns RigParams for one face, or rig vectors [B, 257] on the model's device for a batch;
    reflectance and illumination are neutral. Pass a TorchFaceModel to reuse its tensors
    across calls (a FaceModel is converted each time).
    """
    tm = model if isinstance(model, TorchFaceModel) else TorchFaceModel.from_face_model(model)
    dtype, device = tm.mean_shape.dtype, tm.mean_shape.device
    single = np.ndim(landmarks) == 2
    target = torch.as_tensor(landmarks, dtype=dtype, device=device)
    target = _batched(target, (N_LANDMARKS, 2), "landmarks")
    batch = target.shape[0]
    if identity is None:
        start_identity = target.new_zeros(batch, _N_ID)
    else:
        given = torch.as_tensor(identity, dtype=dtype, device=device)
        start_identity = _batched(given, (_N_ID,), "identity", batch)

    params = target.new_zeros(batch, _N_PARAMS)
    params[:, _POSE] = _pose_from_affine_camera(tm, start_identity, target, camera)
    params[:, _IDENTITY] = start_identity
    prior = target.new_zeros(_N_PARAMS)
    prior[_EXPRESSION] = expression_prior
    prior[_IDENTITY] = identity_prior if fit_identity else 0.0
    free = torch.ones(_N_PARAMS, dtype=torch.bool, device=device)
    free[_IDENTITY] = fit_identity
    problem = _LandmarkProblem(tm, camera, target, landmark_sigma, prior, free)
    params = problem.solve(params, steps)

    rig = target.new_zeros(batch, RIG_SIZE)
    groups = split_rig_vector(rig)
    groups["rotation"].copy_(params[:, _ANGLES])
    groups["translation"].copy_(params[:, _TRANSLATION])
    groups["identity"].copy_(params[:, _IDENTITY])
    groups["expression"].copy_(params[:, _EXPRESSION])
    if single:
        return RigParams.from_vector(rig[0].cpu().numpy())
    return rig


def _batched(
    value: torch.Tensor, shape: tuple[int, ...], what: str, batch: int | None = None
) -> torch.Tensor:
    """`value` of `shape` or [B, *shape] (B = `batch` when given) -> [B, *shape], finite."""
    if tuple(value.shape) == shape:
        value = value.unsqueeze(0).expand(batch or 1, *shape)
    elif value.ndim != len(shape) + 1 or tuple(value.shape[1:]) != shape or (
        batch is not None and value.shape[0] != batch
    ):
        dims = ", ".join(map(str, shape))
        batch_note = f" with B = {batch}" if batch is not None else ""
        raise LandmarkFitError(
            f"{what}: expected shape [{dims}] or [B, {dims}]{batch_note}, "
            f"found {list(value.shape)}"
        )
    if not torch.isfinite(value).all():
        raise LandmarkFitError(f"{what}: expected finite numbers, found NaN or inf")
    return value


def _pose_from_affine_camera(
    tm: TorchFaceModel, identity: torch.Tensor, target: torch.Tensor, camera: Camera
) -> torch.Tensor:
    """Initial [angles 3 | translation 3] [B, 6] from a least-squares affine camera
    u ≈ A X + b (weak perspective), its rows orthonormalised into a rotation."""
    expression = identity.new_zeros(identity.shape[0], _N_EXP)
    points = shape_vertices(tm, identity, expression, tm.keypoints)  # [B, 68, 3]
    # Back to screen coordinates (v up): to_image_xy is its own inverse.
    uv = to_image_xy(target, camera)
    points_mean, uv_mean = points.mean(dim=1, keepdim=True), uv.mean(dim=1, keepdim=True)
    centred, uv_centred = points - points_mean, uv - uv_mean
    # Normal equations, not torch.linalg.lstsq: MKL's lstsq result depends on memory alignment
    # (not bit-reproducible); the 3x3 system is well conditioned for a face.
    gram, moments = centred.transpose(1, 2) @ centred, centred.transpose(1, 2) @ uv_centred
    affine = torch.stack(
        [spd_solve(gram, moments[..., i]) for i in range(moments.shape[-1])], dim=1
    )  # [B, 2, 3]
    scale = affine.norm(dim=2).mean(dim=1)  # [B], px per dm at the face's depth
    u, _, vh = torch.linalg.svd(affine, full_matrices=False)
    rows = u @ vh  # nearest 2x3 matrix with orthonormal rows
    rotation = torch.cat([rows, torch.linalg.cross(rows[:, 0], rows[:, 1])[:, None]], dim=1)
    # R = Rz·Ry·Rx: R[2, 0] = -sin y, R[2, 1] = cos y sin x, R[1, 0] = sin z cos y.
    angles = torch.stack(
        [
            torch.atan2(rotation[:, 2, 1], rotation[:, 2, 2]),
            torch.asin((-rotation[:, 2, 0]).clamp(-1.0, 1.0)),
            torch.atan2(rotation[:, 1, 0], rotation[:, 0, 0]),
        ],
        dim=1,
    )
    centre = (rotation @ points_mean.transpose(1, 2))[..., 0]  # [B, 3]
    translation = torch.stack(
        [
            (uv_mean[:, 0, 0] - camera.center) / scale - centre[:, 0],
            (uv_mean[:, 0, 1] - camera.center) / scale - centre[:, 1],
            camera.distance - camera.focal / scale - centre[:, 2],
        ],
        dim=1,
    )
    return torch.cat([angles, translation], dim=1)


def spd_solve(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """x with matrix x = rhs, for symmetric positive (semi-)definite matrix [B, n, n] and
    rhs [B, n] -> x [B, n] in rhs's dtype, by a float64 Cholesky factorisation.

    Written with elementwise products and last-axis sums only, no LAPACK: MKL's batched
    getrf in torch 2.13 hangs under some thread counts ("Parameter 6 was incorrect on entry
    to DLASWP" at set_num_threads(2)), and its threaded factorisations round differently per
    thread count. Each sum runs over a contiguous last axis, so every result is computed in
    one order whatever the threads. Pivots are floored at 1e-12 of the diagonal's scale: a
    singular direction gives a huge step, which Levenberg-Marquardt rejects and damps."""
    batch, n = rhs.shape
    # Factor [[A, .], [y^T, .]]: row n of its factor is z = L^-1 y (the forward pass for free).
    a = matrix.new_zeros((batch, n + 1, n + 1), dtype=torch.float64)
    a[:, :n, :n] = matrix
    a[:, n, :n] = rhs
    floor = (torch.diagonal(a, dim1=1, dim2=2).abs().amax(dim=1) * 1e-12).clamp_min(1e-300)
    lower = torch.zeros_like(a)  # L, rows contiguous
    for j in range(n):
        col = a[:, j:, j] - (lower[:, j:, :j] * lower[:, j : j + 1, :j]).sum(-1)  # [B, n+1-j]
        pivot = torch.maximum(col[:, 0], floor).sqrt()
        lower[:, j:, j] = col / pivot[:, None]
        lower[:, j, j] = pivot
    z = lower[:, n, :n]
    upper = lower[:, :n, :n].transpose(1, 2).contiguous()  # L^T, rows contiguous
    x = torch.zeros_like(z)
    for i in range(n - 1, -1, -1):  # L^T x = z
        x[:, i] = (z[:, i] - (upper[:, i, i + 1 :] * x[:, i + 1 :]).sum(-1)) / upper[:, i, i]
    return x.to(rhs.dtype)


def _rotation_derivatives(angles: torch.Tensor) -> torch.Tensor:
    """dR/d angle_j [B, 3 (j), 3, 3] of R = Rz·Ry·Rx. An axis rotation's derivative is its
    generator times itself (d/dθ R_a = G_a R_a, G_a v = e_a × v)."""
    rx, ry, rz = axis_rotations(angles)
    gx, gy, gz = (
        torch.tensor(g, dtype=angles.dtype, device=angles.device)
        for g in (
            [[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]],
            [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 0.0]],
            [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        )
    )
    return torch.stack([rz @ ry @ gx @ rx, rz @ gy @ ry @ rx, gz @ rz @ ry @ rx], dim=1)


@dataclass(frozen=True)
class _LandmarkProblem:
    """The energy of the module docstring for a batch; params [B, 150] in the solver layout."""

    tm: TorchFaceModel
    camera: Camera
    target: torch.Tensor  # [B, 68, 2] image px
    sigma: float
    prior: torch.Tensor  # [150] prior weight per parameter (0 for the pose and fixed ones)
    free: torch.Tensor  # [150] bool, parameters the solver moves

    def project(self, params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Image landmarks [B, 68, 2], with the unposed keypoints X [B, 68, 3], the rotation
        R [B, 3, 3] and the posed keypoints Y = R X + t [B, 68, 3] behind them."""
        unposed = shape_vertices(
            self.tm, params[:, _IDENTITY], params[:, _EXPRESSION], self.tm.keypoints
        )
        rotation = rotation_matrix(params[:, _ANGLES])
        posed = unposed @ rotation.transpose(1, 2) + params[:, None, _TRANSLATION]
        image = to_image_xy(project(self.camera, posed)[..., :2], self.camera)
        return image, unposed, rotation, posed

    def cost(self, params: torch.Tensor) -> torch.Tensor:
        """E per batch row [B]."""
        residual = (self.project(params)[0] - self.target) / self.sigma
        data = residual.square().sum(dim=(1, 2))
        return 0.5 * (data + (self.prior * params.square()).sum(dim=1))

    def jacobian(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Whitened data residuals r [B, 136] and dr/dparams [B, 136, 150]."""
        image, unposed, rotation, posed = self.project(params)
        f, depth = self.camera.focal, self.camera.distance - posed[..., 2]  # [B, 68]
        # d(x, y)/dY with x = f Yx / z' + c, y = size - 1 - (f Yy / z' + c), z' = d - Yz.
        zero = torch.zeros_like(depth)
        d_image = torch.stack(
            [
                torch.stack([f / depth, zero, f * posed[..., 0] / depth**2], dim=-1),
                torch.stack([zero, -f / depth, -f * posed[..., 1] / depth**2], dim=-1),
            ],
            dim=-2,
        )  # [B, 68, 2, 3]
        # Y = R X + t: dY/d angle_j = dR_j X, dY/dt = I, dY/d coefficient_c = R basis_c.
        d_rotation = _rotation_derivatives(params[:, _ANGLES])
        d_angles = torch.einsum("bkrm,bjmn,bkn->bkrj", d_image, d_rotation, unposed)
        basis = self.tm.shape_basis.index_select(1, self.tm.keypoints)  # [144, 68, 3]
        d_coefficients = torch.einsum("bkrm,bmn,ckn->bkrc", d_image, rotation, basis)
        jacobian = torch.cat([d_angles, d_image, d_coefficients], dim=-1) / self.sigma
        batch = params.shape[0]
        residual = (image - self.target) / self.sigma
        return residual.reshape(batch, -1), jacobian.reshape(batch, -1, _N_PARAMS)

    def solve(self, params: torch.Tensor, steps: int) -> torch.Tensor:
        """Levenberg-Marquardt (Marquardt's diagonal scaling) per batch row from params."""
        free = self.free.nonzero()[:, 0]
        prior = self.prior[free]
        damping = params.new_full((params.shape[0],), 1e-3)
        cost = self.cost(params)
        for _ in range(steps):
            residual, jacobian = self.jacobian(params)
            jacobian = jacobian[..., free]
            normal = jacobian.transpose(1, 2) @ jacobian + torch.diag(prior)
            gradient = (jacobian.transpose(1, 2) @ residual[..., None])[..., 0]
            gradient = gradient + prior * params[:, free]
            diagonal = torch.diagonal(normal, dim1=1, dim2=2) + 1e-9
            damped = normal + torch.diag_embed(damping[:, None] * diagonal)
            trial = params.clone()
            trial[:, free] += spd_solve(damped, -gradient)
            trial_cost = self.cost(trial)
            better = trial_cost < cost
            converged = (better & (cost - trial_cost <= 1e-12 * cost)) | (
                ~better & (damping >= 1e6)
            )
            params = torch.where(better[:, None], trial, params)
            cost = torch.where(better, trial_cost, cost)
            damping = torch.where(better, damping * 0.3, damping * 10.0).clamp(1e-9, 1e9)
            if bool(converged.all()):
                break
        return params
