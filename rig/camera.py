"""The rig's pinhole camera (Deep3DFaceRecon / DiscoFaceGAN conventions).

World frame (decimetres): x right, y up, +z towards the camera, which sits at (0, 0, distance)
looking down -z. A point (x, y, z) projects to screen coordinates

    z' = distance - z                       depth, > 0 in front of the camera
    u  = focal * x / z' + center            pixels, right
    v  = focal * y / z' + center            pixels, UP

and to image coordinates x_img = u, y_img = size - 1 - v (row index, down), Deep3DFaceRecon's
landmark convention. Positive yaw (rotation about +y, see rig.geometry) brings the nose tip
(+z) towards +x, i.e. to the right of the image.

The module imports torch only inside functions, so Blender's process can read the cameras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Camera:
    """A square pinhole camera: focal and center in pixels, size in pixels, distance in dm."""

    focal: float
    center: float
    size: int
    distance: float = 10.0

    @property
    def fov(self) -> float:
        """Full field of view across the image, radians (2·atan(size / 2 / focal))."""
        return 2.0 * math.atan(0.5 * self.size / self.focal)


CAMERA_224 = Camera(focal=1015.0, center=112.0, size=224)
"""Deep3DFaceRecon's R-Net crop (fov 12.59°)."""

CAMERA_256 = Camera(focal=1015.0 * 1.22, center=128.0, size=256)
"""DiscoFaceGAN's generator crop (fov 11.80°)."""


def project(camera: Camera, vertices: torch.Tensor) -> torch.Tensor:
    """Camera-frame vertices [..., N, 3] (dm, after the rigid transform) -> screen [..., N, 3]:
    (u px right, v px up, depth z' = distance - z in dm)."""
    import torch

    depth = camera.distance - vertices[..., 2:3]
    uv = camera.focal * vertices[..., :2] / depth + camera.center
    return torch.cat([uv, depth], dim=-1)


def to_image_xy(uv: torch.Tensor, camera: Camera) -> torch.Tensor:
    """Screen (u, v up) [..., 2] -> image (x right, y down) [..., 2]: x = u, y = size - 1 - v."""
    import torch

    return torch.stack([uv[..., 0], (camera.size - 1) - uv[..., 1]], dim=-1)
