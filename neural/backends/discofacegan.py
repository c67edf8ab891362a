"""The "discofacegan" backend: rig state -> 286-d input -> truncated W+ -> progressive image.

Its rig vector gives the coefficients, its ``seed`` the 32-d noise (hair, background: what
the rig does not cover), ``psi``/``cutoff`` the attribute-preserving truncation (cutoff None =
the official 8 rows); an explicit ``latent`` in "z" (the 286-d input) or "w+" replaces the
rig. SeFa sliders factorise this generator's style-modulation weights. The engine is
``neural.discofacegan.backend.DFGEngine``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...contract.catalogue import DISCOFACEGAN, ROLE_AVERAGE_W
from ...contract.state import RigState
from ...rig.params import RIG_SIZE, RigParams
from ..discofacegan.adapter import DEFAULT_CUTOFF, load_average_w_id, split_dfg_input
from ..discofacegan.backend import DFGEngine, sefa_matrices
from ..discofacegan.generator import DFGGenerator
from ..discofacegan.tf_reader import LoadedDFG, load_dfg_generator
from .base import BackendError, checked_latent
from .stylegan2 import StyleGAN2Backend

AVERAGE_W_NAMES = ("{stem}-average_w_id.txt", "{stem}_average_w_id.txt", "average_w_id.txt")


class DiscoFaceGANBackend(StyleGAN2Backend):
    """Rig-driven DiscoFaceGAN; SeFa sliders as in the StyleGAN2 backend."""

    name = DISCOFACEGAN.id
    engine: DFGEngine  # type: ignore[assignment]

    @classmethod
    def from_dfg(
        cls,
        loaded: LoadedDFG,
        w_avg_id: np.ndarray | None,
        device: str = "cpu",
        sefa_cache_dir: Any = None,
        **engine_kwargs: Any,
    ) -> DiscoFaceGANBackend:
        """Backend for a generator read by ``load_dfg_generator`` and its identity-average W
        (None: only psi 1 renders)."""
        from ..sefa import affine_key, factorize_cached
        from ..stylegan2.config import StyleGAN2Config

        generator = DFGGenerator.from_state_dict(loaded.config, loaded.state_dict)
        engine = DFGEngine(generator, w_avg_id, device, **engine_kwargs)
        # SeFa's factorisation is keyed by StyleGAN2 state names; hand it this generator's
        # style weights under the names it looks up for the same W+ rows.
        proxy = StyleGAN2Config(
            w_dim=loaded.config.w_dim, img_resolution=loaded.config.img_resolution
        )
        proxy_state = {affine_key(proxy, i): w for i, w in sefa_matrices(loaded).items()}

        def directions_for(layers: tuple[int, ...]) -> np.ndarray:
            factors = factorize_cached(proxy, proxy_state, layers, loaded.sha256, sefa_cache_dir)
            return factors.directions

        return cls(engine, loaded.sha256, directions_for)  # type: ignore[arg-type]

    def estimate(self, state: RigState) -> np.ndarray | None:
        """DiscoFaceGAN's face is its own coefficients: the rig vector [257] of the state
        (translation 0: the generator's camera is fixed), or the coefficients of an explicit
        "z" latent; None for a "w+" latent (no coefficients to read)."""
        if state.latent is not None:
            if state.latent_space != "z":
                return None
            cfg = self.engine.config
            z = checked_latent(state, {"z": (cfg.z_dim,)}, "DiscoFaceGAN takes 'z'")
            coefficients, _noise = split_dfg_input(z.numpy())
            return coefficients.to_vector().astype(np.float32)
        if state.rig is None:
            return None
        rig = np.asarray(state.rig, dtype=np.float32)
        if rig.shape != (RIG_SIZE,):
            raise BackendError(f"rig: expected {RIG_SIZE} values, found shape {list(rig.shape)}")
        params = RigParams.from_vector(rig)
        params.translation[:] = 0.0
        return params.to_vector().astype(np.float32)

    def base_latents(self, state: RigState) -> torch.Tensor:
        """W+ [1, num_ws, w_dim]: from the rig and seed, or the state's explicit latent."""
        engine, cfg = self.engine, self.engine.config
        cutoff = DEFAULT_CUTOFF if state.cutoff is None else state.cutoff
        if state.latent is not None:
            shapes = {"z": (cfg.z_dim,), "w+": (cfg.num_ws, cfg.w_dim)}
            latent = checked_latent(
                state, shapes, f"DiscoFaceGAN takes 'z' (the {cfg.z_dim}-d input) or 'w+'"
            )
            if state.latent_space == "z":
                return engine.map(latent[None], state.psi, cutoff)
            return latent[None].to(engine.device)
        if state.rig is None:
            raise BackendError("rig state has neither a rig vector nor a latent")
        rig = np.asarray(state.rig, dtype=np.float32)
        if rig.shape != (RIG_SIZE,):
            raise BackendError(f"rig: expected {RIG_SIZE} values, found shape {list(rig.shape)}")
        seed = 0 if state.seed is None else state.seed
        z = engine.input_from_rig(RigParams.from_vector(rig), seed)
        return engine.map(z, state.psi, cutoff)


def load(model_path: str, device: str, files: Mapping[str, str]) -> DiscoFaceGANBackend:
    """The worker's loader signature: DiscoFaceGAN's TF .pkl or converted .safetensors, plus
    its identity-average W: ``files["average_w_id"]`` or an ``average_w_id.txt`` beside the
    model (none: psi 1 only)."""
    loaded = load_dfg_generator(model_path)
    average = files.get(ROLE_AVERAGE_W) or _average_w_beside(model_path)
    w_avg_id = load_average_w_id(average, loaded.config) if average else None
    return DiscoFaceGANBackend.from_dfg(loaded, w_avg_id, device)


def _average_w_beside(model_path: str) -> str:
    path = Path(model_path)
    for pattern in AVERAGE_W_NAMES:
        candidate = path.with_name(pattern.format(stem=path.stem))
        if candidate.is_file():
            return str(candidate)
    return ""
