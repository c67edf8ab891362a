"""A key light and an ambient colour as the rig's 27 SH lighting coefficients, and back.

An artist sets a key light (azimuth, elevation in degrees, intensity, linear RGB colour) and
an ambient colour; the face is shaded as if by

    irradiance_c(n) = ambient_c + intensity · colour_c · max(0, n · l)

The SH coefficients are the least-squares fit of that function over the whole sphere of
normals in the rig's own basis (`rig.sh_basis`, the table `rig.sh` shades with), on a
Gauss-Legendre × uniform-longitude quadrature. Three SH bands cannot represent the clamped
cosine's kink: the best fit misses by ~3.6 % of the intensity RMS (~9.4 % at worst).

Directions are in the frame SH lighting is evaluated in: the camera frame of the portrait,
which is the face's own frame when the head is not rotated (x to the subject's left, the
image's right; y up; z towards the camera). Azimuth 0, elevation 0 is a light from the
camera; positive azimuth moves it towards +x, positive elevation upwards:
l = (cos el · sin az, sin el, cos el · cos az).

The inverse (`sh_to_key_light`) reads the dominant light of any 27-vector, e.g. from a photo
fit or a capture: its direction from the linear band (luminance-weighted over the channels),
then ambient and key colours by least squares against the forward fit for that direction.

Numpy only: the Blender add-on evaluates it in its own process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import RigParamsError
from .sh_basis import AMBIENT, SH_CONSTANT, SH_LINEAR, sh_basis_np

_LATITUDES, _LONGITUDES = 64, 128
_LUMINANCE = np.array([0.2126, 0.7152, 0.0722])  # Rec. 709, linear RGB

DEFAULT_AMBIENT = AMBIENT * SH_CONSTANT
"""0.709: the irradiance of the rig's built-in ambient, so KeyLight() is gamma = 0."""


@dataclass(frozen=True)
class KeyLight:
    """A key light plus ambient. Angles in degrees; colours linear RGB (0..1 nominal)."""

    azimuth: float = 0.0
    elevation: float = 0.0
    intensity: float = 0.0
    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ambient: tuple[float, float, float] = (DEFAULT_AMBIENT, DEFAULT_AMBIENT, DEFAULT_AMBIENT)

    @property
    def direction(self) -> np.ndarray:
        """Unit vector [3] towards the light (see the module docstring)."""
        return light_direction(self.azimuth, self.elevation)


def light_direction(azimuth: float, elevation: float) -> np.ndarray:
    """Azimuth, elevation (degrees) -> unit direction [3] float64 towards the light."""
    az, el = math.radians(azimuth), math.radians(elevation)
    return np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])


def direction_angles(direction: np.ndarray) -> tuple[float, float]:
    """Direction [3] (any length > 0) -> (azimuth, elevation) degrees."""
    x, y, z = (float(v) for v in np.asarray(direction, dtype=np.float64))
    return math.degrees(math.atan2(x, z)), math.degrees(math.atan2(y, math.hypot(x, z)))


@lru_cache(maxsize=1)
def _quadrature() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sphere quadrature: normals [M, 3], the SH basis there [M, 9], and the weighted
    least-squares projector P [9, M] (coefficients = P @ samples)."""
    z, w_z = np.polynomial.legendre.leggauss(_LATITUDES)
    phi = (np.arange(_LONGITUDES) + 0.5) * (2.0 * math.pi / _LONGITUDES)
    r = np.sqrt(1.0 - z * z)
    normals = np.stack(
        [np.outer(r, np.cos(phi)), np.outer(r, np.sin(phi)), np.outer(z, np.ones_like(phi))], -1
    ).reshape(-1, 3)
    weights = np.repeat(w_z, _LONGITUDES)
    basis = sh_basis_np(normals)
    weighted = basis * weights[:, None]
    projector = np.linalg.solve(basis.T @ weighted, weighted.T)
    for array in (normals, basis, projector):
        array.flags.writeable = False
    return normals, basis, projector


def _clamped_cosine_fit(direction: np.ndarray) -> np.ndarray:
    """SH fit [9] of max(0, n · direction) (irradiance coefficients, ambient not included)."""
    normals, _, projector = _quadrature()
    return projector @ np.maximum(normals @ direction, 0.0)


def _constant_fit() -> np.ndarray:
    _, _, projector = _quadrature()
    return projector.sum(axis=1)  # the fit of the constant 1


def _rgb(value: tuple[float, float, float], what: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.shape != (3,) or not np.isfinite(array).all():
        raise RigParamsError(f"key light {what}: expected 3 finite numbers (RGB), found {value!r}")
    return array


def key_light_to_sh(light: KeyLight) -> np.ndarray:
    """The 27 SH coefficients [R 9, G 9, B 9] float32 of `light` (rig.params illumination;
    the ambient 0.8 that rig.sh adds is already subtracted)."""
    values = (light.azimuth, light.elevation, light.intensity)
    if not all(math.isfinite(v) for v in values):
        raise RigParamsError(f"key light: azimuth, elevation, intensity must be finite, {values}")
    key = _rgb(light.colour, "colour") * float(light.intensity)
    ambient = _rgb(light.ambient, "ambient")
    fit = _clamped_cosine_fit(light.direction)
    coefficients = ambient[:, None] * _constant_fit() + key[:, None] * fit  # [3, 9]
    coefficients[:, 0] -= AMBIENT
    return coefficients.reshape(27).astype(np.float32)


def sh_to_key_light(gamma: np.ndarray) -> KeyLight:
    """The dominant key light and ambient of any 27 SH coefficients (see module docstring).
    A light with no directional part comes back frontal with intensity 0."""
    g = np.asarray(gamma, dtype=np.float64)
    if g.shape != (27,) or not np.isfinite(g).all():
        raise RigParamsError(f"SH lighting: expected 27 finite numbers, found shape {g.shape}")
    coefficients = g.reshape(3, 9).copy()
    coefficients[:, 0] += AMBIENT
    # Linear band: irradiance a1c1 (-g1 y + g2 z - g3 x) per channel.
    linear = SH_LINEAR * np.stack(
        [-coefficients[:, 3], -coefficients[:, 1], coefficients[:, 2]], axis=1
    )  # [3 channels, xyz]
    pooled = _LUMINANCE @ linear
    if np.linalg.norm(pooled) < 1e-9:
        ambient = coefficients[:, 0] / _constant_fit()[0]
        return KeyLight(0.0, 0.0, 0.0, (1.0, 1.0, 1.0), _triple(ambient))
    direction = pooled / np.linalg.norm(pooled)
    design = np.stack([_constant_fit(), _clamped_cosine_fit(direction)], axis=1)  # [9, 2]
    solved, *_ = np.linalg.lstsq(design, coefficients.T, rcond=None)  # [2, 3]
    ambient, key = solved[0], np.maximum(solved[1], 0.0)
    intensity = float(key.max())
    colour = key / intensity if intensity > 0 else np.ones(3)
    azimuth, elevation = direction_angles(direction)
    return KeyLight(azimuth, elevation, intensity, _triple(colour), _triple(ambient))


def _triple(values: np.ndarray) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))


def key_light_irradiance(light: KeyLight, normals: np.ndarray) -> np.ndarray:
    """The target the fit approximates: ambient + intensity · colour · max(0, n · l), for
    unit normals [M, 3] -> [M, 3] linear RGB."""
    cosine = np.maximum(np.asarray(normals, dtype=np.float64) @ light.direction, 0.0)
    key = np.asarray(light.colour) * float(light.intensity)
    return np.asarray(light.ambient)[None] + cosine[:, None] * key[None]
