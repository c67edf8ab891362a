"""Second-order spherical-harmonics shading, Deep3DFaceRecon's convention (METHODS §4.4).

Each colour channel has 9 coefficients (gamma [27] = R 9, G 9, B 9). An ambient 0.8 is added
to every channel's first coefficient inside `sh_shade`, so gamma = 0 means ambient light
only. The basis already contains the Lambertian convolution factors a0..a2, so
colour = albedo · (basis(n) · gamma): no further 1/pi.
"""

from __future__ import annotations

import math

import torch

AMBIENT = 0.8
"""Added to each channel's constant SH coefficient."""

_A0, _A1, _A2 = math.pi, 2.0 * math.pi / math.sqrt(3.0), 2.0 * math.pi / math.sqrt(8.0)
_C0 = 1.0 / math.sqrt(4.0 * math.pi)
_C1 = math.sqrt(3.0) / math.sqrt(4.0 * math.pi)
_C2 = 3.0 * math.sqrt(5.0) / math.sqrt(12.0 * math.pi)

SH_CONSTANT = _A0 * _C0  # 0.8862
SH_LINEAR = _A1 * _C1  # 1.7725
SH_QUADRATIC = _A2 * _C2  # 2.4270


# The 9 basis functions as a linear map of the monomials [x, y, z, xy, yz, xz, xx, yy, zz]
# plus a constant: one matmul instead of nine products over a trailing size-9 axis.
# Rows: constant, then the monomials; columns: basis functions Y0..Y8.
_MONOMIAL_TO_BASIS = torch.zeros(10, 9, dtype=torch.float64)
_MONOMIAL_TO_BASIS[0, 0] = SH_CONSTANT
_MONOMIAL_TO_BASIS[2, 1] = -SH_LINEAR  # -y
_MONOMIAL_TO_BASIS[3, 2] = SH_LINEAR  # z
_MONOMIAL_TO_BASIS[1, 3] = -SH_LINEAR  # -x
_MONOMIAL_TO_BASIS[4, 4] = SH_QUADRATIC  # xy
_MONOMIAL_TO_BASIS[5, 5] = -SH_QUADRATIC  # -yz
_MONOMIAL_TO_BASIS[9, 6] = SH_QUADRATIC * 3.0 / (2.0 * math.sqrt(3.0))  # (3zz - 1) / (2√3)
_MONOMIAL_TO_BASIS[0, 6] = -SH_QUADRATIC / (2.0 * math.sqrt(3.0))
_MONOMIAL_TO_BASIS[6, 7] = -SH_QUADRATIC  # -xz
_MONOMIAL_TO_BASIS[7, 8] = SH_QUADRATIC / 2.0  # (xx - yy) / 2
_MONOMIAL_TO_BASIS[8, 8] = -SH_QUADRATIC / 2.0


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
