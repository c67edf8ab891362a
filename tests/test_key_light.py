"""Key light -> SH: fitted in the rig's own basis, shaded by the renderer's own sh_shade."""

import math

import numpy as np
import pytest
import torch
from neural_face_rig.rig.errors import RigParamsError
from neural_face_rig.rig.key_light import (
    KeyLight,
    direction_angles,
    key_light_irradiance,
    key_light_to_sh,
    light_direction,
    sh_to_key_light,
)
from neural_face_rig.rig.sh import sh_basis, sh_shade
from neural_face_rig.rig.sh_basis import sh_basis_np


def sphere(count: int = 20000) -> np.ndarray:
    """Fibonacci-lattice unit normals [count, 3]: not the fit's own quadrature."""
    i = np.arange(count) + 0.5
    z = 1.0 - 2.0 * i / count
    phi = math.pi * (1.0 + 5.0**0.5) * i
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def shade(gamma: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """What the renderer shows: rig.sh.sh_shade on white albedo -> [M, 3]."""
    n = torch.as_tensor(normals, dtype=torch.float64)[None]
    g = torch.as_tensor(gamma, dtype=torch.float64)[None]
    return sh_shade(n, torch.ones_like(n), g)[0].numpy()


LIGHTS = [
    KeyLight(0.0, 0.0, 1.0),
    KeyLight(35.0, 25.0, 0.7, (1.0, 0.85, 0.6), (0.1, 0.12, 0.2)),
    KeyLight(-120.0, -40.0, 1.5, (0.3, 0.5, 1.0), (0.0, 0.0, 0.0)),
    KeyLight(90.0, 80.0, 0.4, (1.0, 1.0, 1.0), (0.5, 0.4, 0.3)),
]


def test_numpy_basis_is_the_renderers_basis():
    normals = sphere(500)
    np.testing.assert_allclose(
        sh_basis_np(normals), sh_basis(torch.as_tensor(normals)).numpy(), atol=1e-12
    )


@pytest.mark.parametrize("light", LIGHTS)
def test_fitted_sh_shades_a_sphere_like_the_key_light(light):
    normals = sphere()
    gamma = key_light_to_sh(light)
    assert gamma.shape == (27,) and gamma.dtype == np.float32
    error = shade(gamma, normals) - key_light_irradiance(light, normals)
    key = np.asarray(light.colour) * light.intensity
    rms = np.sqrt(np.mean(error**2, axis=0))
    # The best three-band fit of a clamped cosine misses by 3.6 % RMS, 9.4 % at worst.
    assert (rms <= 0.04 * key + 1e-6).all(), rms / key
    assert (rms >= 0.03 * key).all()  # not better than the theoretical limit: it is a real fit
    assert (np.abs(error).max(axis=0) <= 0.10 * key + 1e-6).all()


def test_no_key_light_is_the_rigs_default_ambient():
    np.testing.assert_allclose(key_light_to_sh(KeyLight()), np.zeros(27), atol=1e-6)
    lit = shade(key_light_to_sh(KeyLight(0.0, 0.0, 0.0, ambient=(0.2, 0.3, 0.4))), sphere(50))
    np.testing.assert_allclose(lit, np.broadcast_to([0.2, 0.3, 0.4], lit.shape), atol=1e-6)


def test_angles_follow_the_documented_frame():
    np.testing.assert_allclose(light_direction(0, 0), [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(light_direction(90, 0), [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(light_direction(0, 90), [0, 1, 0], atol=1e-12)
    assert direction_angles(light_direction(-70.0, 33.0)) == pytest.approx((-70.0, 33.0))
    # A light from the image's right (+x) brightens normals facing +x.
    gamma = key_light_to_sh(KeyLight(90.0, 0.0, 1.0, ambient=(0, 0, 0)))
    right, left = shade(gamma, np.array([[1.0, 0, 0], [-1.0, 0, 0]]))
    assert right[0] > 0.9 and abs(left[0]) < 0.1


@pytest.mark.parametrize("light", LIGHTS)
def test_inverse_recovers_the_light(light):
    back = sh_to_key_light(key_light_to_sh(light))
    cos = float(back.direction @ light.direction)
    assert math.degrees(math.acos(min(1.0, cos))) < 2.0
    assert back.intensity * np.asarray(back.colour) == pytest.approx(
        light.intensity * np.asarray(light.colour), abs=1e-3
    )
    assert back.ambient == pytest.approx(light.ambient, abs=1e-3)


def test_inverse_of_a_noisy_vector_still_finds_the_direction():
    light = KeyLight(-30.0, 20.0, 0.8, (1.0, 0.9, 0.8), (0.2, 0.2, 0.2))
    noisy = key_light_to_sh(light) + np.random.default_rng(0).normal(scale=0.002, size=27)
    back = sh_to_key_light(noisy)
    assert math.degrees(math.acos(min(1.0, float(back.direction @ light.direction)))) < 2.0


def test_bad_input_is_refused_by_name():
    with pytest.raises(RigParamsError, match="27 finite numbers"):
        sh_to_key_light(np.zeros(26))
    with pytest.raises(RigParamsError, match="colour"):
        key_light_to_sh(KeyLight(0, 0, 1, (1.0, float("nan"), 1.0)))
    assert sh_to_key_light(np.zeros(27)).intensity == 0.0
