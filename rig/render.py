"""Render the face rig: evaluate the rig, rasterise its mesh and shade every pixel.

The image is the per-vertex SH-shaded colour interpolated perspective-correctly (Gouraud
shading, as in Deep3DFaceRecon's renderer), so a loss on it reaches every rig group: shape,
expression and pose through the barycentrics of the visible triangles, reflectance and
illumination through the vertex colours. Coverage itself is not differentiable (no
antialiasing): silhouettes do not move under gradient descent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .camera import Camera
from .geometry import TorchFaceModel, evaluate_rig
from .raster import interpolate, rasterize


@dataclass
class FaceRender:
    """A rendered batch. B = batch, H = W = camera.size.

    image      [B, 3, H, W] RGB 0..1 (clamped), the background where the face is absent
    mask       [B, 1, H, W] 1.0 where the face covers the pixel, else 0.0 (image dtype)
    depth      [B, 1, H, W] depth z' in decimetres where covered, 0 elsewhere
    landmarks  [B, 68, 2] image (x right, y down) pixels of the 68 keypoints
    """

    image: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    landmarks: torch.Tensor


def render_face(
    tm: TorchFaceModel,
    rig: torch.Tensor,
    camera: Camera,
    background: float | torch.Tensor = 0.0,
) -> FaceRender:
    """Render canonical rig vectors [B, 257] (see rig.params) through `camera`.

    background: a value, or a tensor broadcastable to [B, 3, H, W] (e.g. an RGB colour
    [3, 1, 1] or a batch of images); it shows wherever the face does not.
    """
    evaluation = evaluate_rig(tm, rig, camera)
    fragments = rasterize(evaluation.screen, tm.triangles, camera.size)
    colours = interpolate(evaluation.colours, tm.triangles, fragments).permute(0, 3, 1, 2)
    covered = fragments.mask[:, None]
    backdrop = torch.as_tensor(background, dtype=colours.dtype, device=colours.device)
    image = torch.where(covered, colours, backdrop).clamp(0.0, 1.0)
    depth = torch.where(covered, fragments.depth[:, None], 0.0)
    return FaceRender(
        image=image,
        mask=covered.to(colours.dtype),
        depth=depth,
        landmarks=evaluation.landmarks,
    )
