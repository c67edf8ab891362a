"""Second-order spherical-harmonics shading, Deep3DFaceRecon's convention (docs/REFERENCE.md §4.4).

Each colour channel has 9 coefficients (gamma [27] = R 9, G 9, B 9). An ambient 0.8 is added
to every channel's first coefficient inside `sh_shade`, so gamma = 0 means ambient light
only. The basis already contains the Lambertian convolution factors a0..a2, so
colour = albedo · (basis(n) · gamma): no further 1/pi.
"""

from __future__ import annotations

import torch

from .sh_basis import AMBIENT, MONOMIAL_TO_BASIS, SH_CONSTANT, SH_LINEAR, SH_QUADRATIC

__all__ = ["AMBIENT", "SH_CONSTANT", "SH_LINEAR", "SH_QUADRATIC", "sh_basis", "sh_shade"]

# The basis as a linear map of [1, x, y, z, xy, yz, xz, xx, yy, zz] (rig.sh_basis): one
# matmul instead of nine products over a trailing size-9 axis.
_MONOMIAL_TO_BASIS = torch.from_numpy(MONOMIAL_TO_BASIS.copy())


def _monomial_planes(normals: torch.Tensor) -> torch.Tensor:
    """Normals [B, N, 3] -> monomials [B, 9, N] (x, y, z, xy, yz, xz, xx, yy, zz)."""
    x, y, z = normals.unbind(-1)
    return torch.stack([x, y, z, x * y, y * z, x * z, x * x, y * y, z * z], dim=1)


def _basis_matrix(like: torch.Tensor) -> torch.Tensor:
    return _MONOMIAL_TO_BASIS.to(dtype=like.dtype, device=like.device)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """Unit normals [..., 3] -> the 9 irradiance basis values [..., 9]:
    [a0c0, -a1c1 y, a1c1 z, -a1c1 x, a2c2 xy, -a2c2 yz, a2c2/(2√3) (3z² - 1), -a2c2 xz,
    a2c2/2 (x² - y²)]."""
    matrix = _basis_matrix(normals)
    planes = _monomial_planes(normals.reshape(1, -1, 3))[0]  # [9, M]
    values = torch.addmm(matrix[0, :, None], matrix[1:].T, planes)  # [9, M]
    return values.T.reshape(*normals.shape[:-1], 9)


def sh_shade(normals: torch.Tensor, albedo: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Shade albedo [B, N, 3] (0..1) lit by gamma [B, 27] on normals [B, N, 3] -> colours
    [B, N, 3], unclipped."""
    coefficients = gamma.reshape(gamma.shape[0], 3, 9)
    ambient = torch.zeros(9, dtype=gamma.dtype, device=gamma.device)
    ambient[0] = AMBIENT
    # Fold the basis into the lighting: irradiance = lighting · [1, monomials].
    lighting = (coefficients + ambient) @ _basis_matrix(gamma).T  # [B, 3, 10]
    irradiance = torch.baddbmm(lighting[..., :1], lighting[..., 1:], _monomial_planes(normals))
    return irradiance.transpose(1, 2) * albedo
