"""What determines one frame: plain data made in Blender's process and read by the worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .catalogue import DEFAULT_BACKEND, DEFAULT_NOISE_MODE

LatentSpace = Literal["z", "w", "w+"]
NoiseMode = Literal["const", "none", "random"]


@dataclass(frozen=True)
class SefaSlider:
    """One SeFa slider: ``value`` x direction ``direction`` (an index into the directions
    factorised from the W+ rows ``layers``), added to those same rows."""

    direction: int
    value: float
    layers: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class RigState:
    """Everything that determines one frame (plain data).

    backend: a catalogue id (``catalogue.BACKENDS``). rig: the canonical 257-vector
    (rig/params.py order) or None; backends without a rig mapping (plain StyleGAN2) ignore
    it. Base latent: ``latent`` in ``latent_space`` ([z_dim], [w_dim] or [num_ws, w_dim]) or
    else ``seed`` (NVIDIA's seed convention); ``psi``/``cutoff`` truncate z- and seed-based
    latents. ``resolution``: the block to stop at in pixels (None = full).
    """

    backend: str = DEFAULT_BACKEND
    model_id: str = ""
    rig: np.ndarray | None = None
    seed: int | None = None
    latent: np.ndarray | None = None
    latent_space: LatentSpace = "z"
    psi: float = 1.0
    cutoff: int | None = None
    sefa: tuple[SefaSlider, ...] = ()
    resolution: int | None = None
    noise_mode: NoiseMode = DEFAULT_NOISE_MODE  # type: ignore[assignment]
    noise_seed: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)
