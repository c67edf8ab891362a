"""StyleRig's losses (docs/REFERENCE.md §5; weights and additions argued in docs/STYLERIG.md).

Render loss of rig values p against a generator image I (both at the rig camera):

    L_render = w_photo · mean over covered pixels of ||I - R(p)||_2       (RGB, 0..1)
             + w_land  · mean over the 68 points of weight_k ||x_k(p) - l_k||²   (224-px units)

The photometric term is Deep3DFaceRecon's (Euclidean colour distance, not squared: robust to
hair and glasses over the face); R(p) is rig.render.render_face, its coverage the mask. The
landmark weights are 20 on the nose ridge's end and the inner lips, 1 elsewhere, distances
measured as if the frame were 224 px so the weight is the same at any camera size; images
whose landmarks were not detected have no landmark term. The DFR adds the statistical
regularisation: Gaussian priors on identity, expression and reflectance (weights 1, 0.8,
0.017 inside, Deep3DFaceRecon's) and the monochrome-light prior on the SH coefficients.

RigNet's two-way cycle, with v another sample, τ the edited coefficients (a mask per sample):
    L_rec     = mean ||(RigNet(w, 0) - w) / σ_row||²
    L_edit    = L_render(I_v, [p_v on ¬τ, F(ŵ) on τ]) + w_param · mean_τ ((F(ŵ) - p_v) / σ)²
    L_consist = L_render(I_w, [F(ŵ) on ¬τ, p_w on τ]) + w_param · mean_¬τ ((F(ŵ) - p_w) / σ)²
where ŵ = RigNet(w, Δp) with Δp asking for p_v on τ. The parameter terms (the project's
addition) reach what the renderer cannot see (coefficients whose effect is below a pixel,
occluded parts) and give a well-conditioned gradient from the first step.

Rendering always runs in float32 outside autocast: barycentrics need the precision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ...rig.camera import Camera
from ...rig.geometry import TorchFaceModel
from ...rig.params import split_rig_vector
from ...rig.render import render_face
from ..config_json import config_from_dict
from . import StyleRigError
from .data import Batch
from .dfr import DFR
from .rignet import unwrap

_REFERENCE_SIZE = 224  # landmark distances are measured in pixels of a 224 px frame

LANDMARK_WEIGHTS = np.ones(68, np.float32)
LANDMARK_WEIGHTS[28:31] = 20.0
LANDMARK_WEIGHTS[-8:] = 20.0

_PRIOR_WEIGHTS = {"identity": 1.0, "expression": 0.8, "reflectance": 1.7e-2}


@dataclass(frozen=True)
class LossWeights:
    """Weights of every loss term (defaults: Deep3DFaceRecon's for the render loss and the
    priors; StyleRig's equal weights for the three RigNet terms)."""

    photometric: float = 1.92
    landmark: float = 1.6e-3
    prior: float = 3e-4
    monochrome_light: float = 10.0
    reconstruction: float = 1.0
    edit: float = 1.0
    consistency: float = 1.0
    parameters: float = 1.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"loss weight {name}: expected a number >= 0, found {value!r}")

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Any, source: str = "loss weights") -> LossWeights:
        return config_from_dict(cls, data, source, StyleRigError, "loss")


def photometric_loss(
    rendered: torch.Tensor, mask: torch.Tensor, images: torch.Tensor
) -> torch.Tensor:
    """Mean RGB distance [B] over covered pixels: rendered, images [B, 3, H, W] 0..1, mask
    [B, 1, H, W]. The 1e-8 keeps the square root differentiable at zero."""
    distance = torch.sqrt(1e-8 + (rendered - images).square().sum(dim=1, keepdim=True))
    return (distance * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp_min(1.0)


def landmark_loss(
    predicted: torch.Tensor, target: torch.Tensor, found: torch.Tensor, camera: Camera
) -> torch.Tensor:
    """Weighted mean squared distance [B] of predicted vs target landmarks [B, 68, 2] (camera
    px), in 224-px units; 0 where ``found`` [B] is False."""
    weights = torch.as_tensor(LANDMARK_WEIGHTS, device=predicted.device)
    scale = _REFERENCE_SIZE / camera.size
    squared = ((predicted - target) * scale).square().sum(dim=-1)
    per_sample = (squared * weights).mean(dim=-1)
    return torch.where(found, per_sample, torch.zeros_like(per_sample))


def prior_loss(rig: torch.Tensor) -> torch.Tensor:
    """Gaussian priors [B] of identity, expression and reflectance (σ units)."""
    groups = split_rig_vector(rig)
    return sum(w * groups[name].square().sum(dim=-1) for name, w in _PRIOR_WEIGHTS.items())


def monochrome_light_loss(rig: torch.Tensor) -> torch.Tensor:
    """Mean squared deviation [B] of each colour's SH coefficients from their grey mean."""
    gamma = split_rig_vector(rig)["illumination"].reshape(-1, 3, 9)
    return (gamma - gamma.mean(dim=1, keepdim=True)).square().mean(dim=(1, 2))


def render_loss(
    tm: TorchFaceModel,
    camera: Camera,
    rig: torch.Tensor,
    images: torch.Tensor,
    landmarks: torch.Tensor,
    found: torch.Tensor,
    weights: LossWeights,
) -> dict[str, torch.Tensor]:
    """L_render per sample: {"photometric", "landmark", "render"} each [B] (render = the
    weighted sum) for rig vectors [B, 257] against images and landmarks at ``camera``."""
    with torch.autocast(rig.device.type, enabled=False):
        face = render_face(tm, rig.float(), camera)
        photo = photometric_loss(face.image, face.mask, images.float())
        land = landmark_loss(face.landmarks, landmarks.float(), found, camera)
    return {
        "photometric": photo,
        "landmark": land,
        "render": weights.photometric * photo + weights.landmark * land,
    }


def dfr_loss(
    dfr: nn.Module, batch: Batch, tm: TorchFaceModel, camera: Camera, weights: LossWeights
) -> dict[str, torch.Tensor]:
    """DFR training loss (scalars; "total" is optimised) on one batch."""
    rig = dfr(batch.ws).float()
    terms = render_loss(tm, camera, rig, batch.images, batch.landmarks, batch.found, weights)
    prior, light = prior_loss(rig), monochrome_light_loss(rig)
    total = terms["render"] + weights.prior * prior + weights.monochrome_light * light
    return {
        "total": total.mean(),
        "photometric": terms["photometric"].mean(),
        "landmark": terms["landmark"].mean(),
        "prior": prior.mean(),
        "light": light.mean(),
    }


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean [B] of values [B, K] over the set entries of mask [B, K] (0 where none is set)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(dim=-1) / mask.sum(dim=-1).clamp_min(1.0)


def rignet_loss(
    rignet: nn.Module,
    dfr: DFR,
    batch: Batch,
    edit_mask: torch.Tensor,
    tm: TorchFaceModel,
    camera: Camera,
    weights: LossWeights,
) -> dict[str, torch.Tensor]:
    """RigNet training loss (scalars; "total" is optimised). Sample i is edited towards
    sample i + 1 (mod B) on the coefficients where ``edit_mask`` [B, 257] is set. ``dfr`` is
    frozen; ``rignet`` may be DDP-wrapped (it is called once, on the reconstruction and the
    edit inputs stacked, as DDP expects one forward per backward)."""
    net = unwrap(rignet)
    ws = batch.ws
    size = ws.shape[0]
    if size < 2:
        raise ValueError("RigNet training pairs samples within a batch: batch size must be >= 2")
    with torch.no_grad():
        p_w = dfr(ws).float()
    p_v = p_w.roll(-1, dims=0)
    images_v, landmarks_v, found_v = (
        t.roll(-1, dims=0) for t in (batch.images, batch.landmarks, batch.found)
    )
    target = torch.where(edit_mask, p_v, p_w)
    delta = net.control_change(p_w, target, edit_mask)
    out = rignet(torch.cat([ws, ws]), torch.cat([torch.zeros_like(delta), delta]))
    reconstructed, edited_ws = out[:size], out[size:]
    rec = (net.normalizer(reconstructed) - net.normalizer(ws)).square().mean()

    p_hat = dfr(edited_ws).float()
    scale = dfr.prior_scale
    edited = torch.where(edit_mask, p_hat, p_v)
    kept = torch.where(edit_mask, p_w, p_hat)
    edit_render = render_loss(tm, camera, edited, images_v, landmarks_v, found_v, weights)
    keep_render = render_loss(
        tm, camera, kept, batch.images, batch.landmarks, batch.found, weights
    )
    edit_params = _masked_mean(((p_hat - p_v) / scale).square(), edit_mask)
    keep_params = _masked_mean(((p_hat - p_w) / scale).square(), ~edit_mask)
    edit = edit_render["render"] + weights.parameters * edit_params
    consist = keep_render["render"] + weights.parameters * keep_params
    total = (
        weights.reconstruction * rec
        + weights.edit * edit.mean()
        + weights.consistency * consist.mean()
    )
    return {
        "total": total,
        "reconstruction": rec,
        "edit": edit.mean(),
        "consistency": consist.mean(),
        "edit_params": edit_params.mean(),
        "keep_params": keep_params.mean(),
    }

