"""The second-order SH irradiance basis of the rig, in numpy: the one home of its constants.

Deep3DFaceRecon's convention: 9 functions per colour channel with the Lambertian convolution
factors a0..a2 already folded in, so irradiance = basis(n) · (gamma + ambient). `rig.sh`
(torch, batched shading) and `rig.key_light` (numpy, usable in Blender's own process) both
build on this table, so their conventions cannot drift apart.
"""

from __future__ import annotations

import math

import numpy as np

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
# plus a constant. Rows: constant, then the monomials; columns: basis functions Y0..Y8.
MONOMIAL_TO_BASIS = np.zeros((10, 9), dtype=np.float64)
MONOMIAL_TO_BASIS[0, 0] = SH_CONSTANT
MONOMIAL_TO_BASIS[2, 1] = -SH_LINEAR  # -y
MONOMIAL_TO_BASIS[3, 2] = SH_LINEAR  # z
MONOMIAL_TO_BASIS[1, 3] = -SH_LINEAR  # -x
MONOMIAL_TO_BASIS[4, 4] = SH_QUADRATIC  # xy
MONOMIAL_TO_BASIS[5, 5] = -SH_QUADRATIC  # -yz
MONOMIAL_TO_BASIS[9, 6] = SH_QUADRATIC * 3.0 / (2.0 * math.sqrt(3.0))  # (3zz - 1) / (2√3)
MONOMIAL_TO_BASIS[0, 6] = -SH_QUADRATIC / (2.0 * math.sqrt(3.0))
MONOMIAL_TO_BASIS[6, 7] = -SH_QUADRATIC  # -xz
MONOMIAL_TO_BASIS[7, 8] = SH_QUADRATIC / 2.0  # (xx - yy) / 2
MONOMIAL_TO_BASIS[8, 8] = -SH_QUADRATIC / 2.0
MONOMIAL_TO_BASIS.flags.writeable = False


def sh_basis_np(normals: np.ndarray) -> np.ndarray:
    """Unit normals [..., 3] -> the 9 irradiance basis values [..., 9] float64 (see rig.sh)."""
    n = np.asarray(normals, dtype=np.float64)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    monomials = np.stack(
        [np.ones_like(x), x, y, z, x * y, y * z, x * z, x * x, y * y, z * z], axis=-1
    )
    return monomials @ MONOMIAL_TO_BASIS
