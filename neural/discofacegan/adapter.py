"""Canonical rig -> DiscoFaceGAN latents (docs/REFERENCE.md §3, §4.2).

- Input: z = [id 80 | tex 80 | exp 64 | rot 3 | gamma 27 | noise 32] (286): the rig's
  coefficients in DiscoFaceGAN order (``RigParams.to_dfg_vector``; translation is not an
  input, the generator's crop is centred) followed by the noise that stands for everything the
  rig does not describe (hair, background, clothes). The noise comes from the backend's seed.
- Attribute-preserving truncation (``generate_images.py: truncate_generation``):
  w = map(z), w_id = map([id, tex, 0 x 126]), and on W+ rows [0, cutoff) (8 of 14)
  w_trunc = w + (w_avg_id - w_id) (1 - psi). Only identity moves towards the average, so
  expression, light and pose keep their full strength.
- ``w_avg_id`` [num_ws, w_dim]: the identity-average W, the mean of
  map([VAE id+tex, 0 x 94, random noise]) over 50 000 draws (the ``-average_w_id.txt`` file
  distributed with the model, or :func:`compute_average_w_id`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ...rig.atomic import atomic_open
from ...rig.dfg_vae import FactorVAE
from ...rig.file_limits import TEXT_MAX_BYTES, read_regular_file
from ...rig.params import RigParams
from ..errors import CheckpointError
from ..stylegan2.generator import GeneratorInputError
from .config import COEFF_DIM, DFGConfig
from .generator import DFGGenerator

IDENTITY_DIM = 160  # id 80 + tex 80: the coefficients the identity term keeps
DEFAULT_PSI = 0.7
DEFAULT_CUTOFF = 8
AVERAGE_SAMPLES = 50_000
AVERAGE_SEED = 1  # generate_images.py seeds numpy's global RNG with 1
_LATENTS = 128 + 32 + 16 + 3  # the official script draws all Gaussian factors per sample



def noise_from_seed(seed: int, noise_dim: int = 32) -> np.ndarray:
    """The 32-d noise of a seed: RandomState(seed).randn(noise_dim), float32."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise GeneratorInputError(f"seed: expected an integer in [0, 2**32), found {seed!r}")
    return np.random.RandomState(seed).randn(noise_dim).astype(np.float32)


def dfg_input(rig: RigParams, noise: np.ndarray) -> np.ndarray:
    """One face's generator input [COEFF_DIM + noise_dim] float32."""
    noise = np.asarray(noise, np.float32)
    if noise.ndim != 1:
        raise GeneratorInputError(f"noise: expected a vector, found shape {list(noise.shape)}")
    return np.concatenate([rig.to_dfg_vector(), noise]).astype(np.float32)


def split_dfg_input(z: np.ndarray) -> tuple[RigParams, np.ndarray]:
    """Inverse of :func:`dfg_input`: (rig with zero translation, noise)."""
    z = np.asarray(z, np.float32)
    if z.ndim != 1 or z.shape[0] <= COEFF_DIM:
        raise GeneratorInputError(
            f"DiscoFaceGAN input: expected a vector of {COEFF_DIM} coefficients + noise, found "
            f"shape {list(z.shape)}"
        )
    return RigParams.from_dfg_vector(z[:COEFF_DIM]), z[COEFF_DIM:].copy()


def identity_input(z: torch.Tensor) -> torch.Tensor:
    """[N, z_dim] -> the same with everything but id and tex zeroed (w_id's input)."""
    out = torch.zeros_like(z)
    out[:, :IDENTITY_DIM] = z[:, :IDENTITY_DIM]
    return out


def identity_term(
    ws_id: torch.Tensor, w_avg_id: torch.Tensor, psi: float, cutoff: int
) -> torch.Tensor:
    """(w_avg_id - w_id) (1 - psi) on rows [0, cutoff), zero elsewhere: [N, num_ws, w_dim]."""
    term = torch.zeros_like(ws_id)
    rows = slice(0, cutoff)
    term[:, rows] = (w_avg_id.to(ws_id)[rows] - ws_id[:, rows]) * (1.0 - psi)
    return term


def attribute_truncation(
    ws: torch.Tensor,
    ws_id: torch.Tensor,
    w_avg_id: torch.Tensor,
    psi: float = DEFAULT_PSI,
    cutoff: int = DEFAULT_CUTOFF,
) -> torch.Tensor:
    """w + (w_avg_id - w_id)(1 - psi) on rows [0, cutoff); ws, ws_id [N, num_ws, w_dim],
    w_avg_id [num_ws, w_dim]."""
    if not 0 <= cutoff <= ws.shape[1]:
        raise GeneratorInputError(f"cutoff: expected 0..{ws.shape[1]}, found {cutoff}")
    return ws + identity_term(ws_id, w_avg_id, psi, cutoff)


def map_truncated(
    generator: DFGGenerator,
    z: torch.Tensor,
    w_avg_id: torch.Tensor,
    psi: float = DEFAULT_PSI,
    cutoff: int = DEFAULT_CUTOFF,
) -> torch.Tensor:
    """z [N, z_dim] -> truncated W+ [N, num_ws, w_dim] float32."""
    with torch.inference_mode():
        ws = generator.map(z)
        if psi == 1.0:
            return ws
        ws_id = generator.map(identity_input(z))
        return attribute_truncation(ws, ws_id, w_avg_id.to(ws.device), psi, cutoff)


# ------------------------------------------------------------------ identity-average W


def load_average_w_id(path: str | os.PathLike[str], config: DFGConfig) -> np.ndarray:
    """The ``average_w_id`` text file (numbers separated by white space, as np.savetxt
    writes [14, 512]) -> float32 [num_ws, w_dim]."""
    label = os.fspath(path)
    data = read_regular_file(label, "identity-average W", TEXT_MAX_BYTES, CheckpointError)
    try:
        values = np.loadtxt(io.BytesIO(data), dtype=np.float64, ndmin=1)
    except (ValueError, UnicodeDecodeError):
        # numpy's message quotes the text it could not parse: never echo a file's content.
        raise CheckpointError(
            f"{label}: expected a text file of numbers (the model's average_w_id.txt), "
            f"found text that is not numbers ({len(data)} bytes)"
        ) from None
    expected = config.num_ws * config.w_dim
    if values.size != expected:
        raise CheckpointError(
            f"{label}: expected {config.num_ws} x {config.w_dim} = {expected} values for this "
            f"generator, found {values.size} (shape {list(values.shape)}); is it the "
            "average_w_id file of another model?"
        )
    if not np.isfinite(values).all():
        raise CheckpointError(f"{label}: holds non-finite values (NaN or inf)")
    return values.reshape(config.num_ws, config.w_dim).astype(np.float32)


def save_average_w_id(path: str | os.PathLike[str], w_avg_id: np.ndarray) -> None:
    """Write [num_ws, w_dim] in the distributed text layout (one row per line), atomically."""
    with atomic_open(Path(path), "w", encoding="ascii") as out:
        np.savetxt(out, np.asarray(w_avg_id, np.float64))


def official_draws(samples: int, seed: int = AVERAGE_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The official script's random stream: per sample 179 latents then 32 noise values from
    numpy's legacy normal generator seeded with ``seed`` -> (z_id [samples, 128], noise
    [samples, 32]). One batched draw continues the stream exactly like the per-sample calls."""
    draws = np.random.RandomState(seed).normal(size=(samples, _LATENTS + 32))
    return draws[:, :128], draws[:, _LATENTS:]


def compute_average_w_id(
    generator: DFGGenerator,
    id_vae: FactorVAE,
    samples: int = AVERAGE_SAMPLES,
    seed: int = AVERAGE_SEED,
    chunk: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Mean of map([decode_id(z_id), 0 x 94, noise]) over ``samples`` official draws ->
    float32 [num_ws, w_dim]. ``progress(done, total)`` is called after every chunk."""
    config = generator.config
    if samples < 1:
        raise GeneratorInputError(f"samples: expected >= 1, found {samples}")
    if id_vae.spec.coeff_dim != IDENTITY_DIM:
        raise GeneratorInputError(
            f"id VAE: expected {IDENTITY_DIM} coefficients, found {id_vae.spec.coeff_dim}"
        )
    z_id, noise = official_draws(samples, seed)
    noise = noise[:, : config.noise_dim]
    device = generator.mapping.w_avg.device
    total = np.zeros(config.w_dim, np.float64)
    for start in range(0, samples, chunk):
        stop = min(start + chunk, samples)
        z = np.zeros((stop - start, config.z_dim), np.float32)
        z[:, :IDENTITY_DIM] = id_vae.decode(z_id[start:stop])
        z[:, COEFF_DIM:] = noise[start:stop]
        with torch.inference_mode():
            w = generator.mapping(torch.from_numpy(z).to(device), batched=True)
        total += w.double().sum(dim=0).cpu().numpy()
        if progress is not None:
            progress(stop, samples)
    mean = (total / samples).astype(np.float32)
    return np.repeat(mean[None], config.num_ws, axis=0)
