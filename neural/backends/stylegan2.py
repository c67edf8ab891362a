"""The "stylegan2" backend: a seed or latent plus SeFa slider offsets (no rig mapping)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ...contract import catalogue
from ...contract.state import RigState
from .base import Backend, BackendError, DirectionsFor, checked_latent

if TYPE_CHECKING:
    import torch

    from ..checkpoints import LoadedGenerator
    from ..engine import StyleGAN2Engine


class StyleGAN2Backend(Backend):
    """Plain StyleGAN2: a seed or latent plus SeFa slider offsets (no rig mapping)."""

    name = catalogue.STYLEGAN2.id

    def __init__(
        self,
        engine: StyleGAN2Engine,
        model_id: str = "",
        directions_for: DirectionsFor | None = None,
    ) -> None:
        super().__init__(engine, model_id)
        self._directions_for = directions_for
        self._directions: dict[tuple[int, ...], np.ndarray] = {}

    @classmethod
    def from_loaded(
        cls,
        loaded: LoadedGenerator,
        device: str = "cpu",
        sefa_cache_dir: Any = None,
        **engine_kwargs: Any,
    ) -> StyleGAN2Backend:
        """Backend for a checkpoint read by ``neural.checkpoints.load_generator``; SeFa
        directions are factorised on first use and cached on disk per (model, layers)."""
        from ..engine import StyleGAN2Engine
        from ..sefa import factorize_cached

        engine = StyleGAN2Engine.from_state_dict(
            loaded.config, loaded.state_dict, device, **engine_kwargs
        )

        def directions_for(layers: tuple[int, ...]) -> np.ndarray:
            factors = factorize_cached(
                loaded.config, loaded.state_dict, layers, loaded.sha256, sefa_cache_dir
            )
            return factors.directions

        return cls(engine, loaded.sha256, directions_for)

    def base_latents(self, state: RigState) -> torch.Tensor:
        """W+ [1, num_ws, w_dim] of the state's latent or seed, truncated for z and seeds."""
        engine, cfg = self.engine, self.engine.config
        if state.latent is not None:
            shapes = {"z": (cfg.z_dim,), "w": (cfg.w_dim,), "w+": (cfg.num_ws, cfg.w_dim)}
            latent = checked_latent(state, shapes, "expected 'z', 'w' or 'w+'")
            if state.latent_space == "z":
                return engine.map(latent[None], psi=state.psi, cutoff=state.cutoff)
            ws = engine.broadcast(latent[None])
            return engine.truncate(ws, state.psi, state.cutoff) if state.psi != 1.0 else ws
        if state.seed is None:
            raise BackendError("rig state has neither a latent nor a seed")
        return engine.w_from_seed(state.seed, psi=state.psi, cutoff=state.cutoff)

    def latents(self, state: RigState) -> torch.Tensor:
        from ..sefa import apply_direction

        ws = self.base_latents(state)
        num_ws = self.engine.num_ws
        for slider in state.sefa:
            if slider.value == 0.0:
                continue
            if not slider.layers or not all(0 <= r < num_ws for r in slider.layers):
                raise BackendError(
                    f"SeFa slider {slider.direction}: layers {list(slider.layers)} must be a "
                    f"non-empty subset of 0..{num_ws - 1}"
                )
            directions = self.directions(slider.layers)
            if not 0 <= slider.direction < directions.shape[0]:
                raise BackendError(
                    f"SeFa slider: direction {slider.direction} is outside "
                    f"0..{directions.shape[0] - 1}"
                )
            ws = apply_direction(ws, directions[slider.direction], slider.layers, slider.value)
        return ws

    def directions(self, layers: tuple[int, ...]) -> np.ndarray:
        """SeFa directions [K, w_dim] for a layer set (memoised)."""
        if self._directions_for is None:
            raise BackendError("this backend has no SeFa directions (no model file given)")
        key = tuple(sorted(layers))
        if key not in self._directions:
            self._directions[key] = np.asarray(self._directions_for(key), dtype=np.float32)
        return self._directions[key]




def load(model_path: str, device: str, files: Mapping[str, str]) -> StyleGAN2Backend:
    """Any StyleGAN2 checkpoint ``load_generator`` reads; SeFa directions on demand."""
    from ..checkpoints import load_generator

    return StyleGAN2Backend.from_loaded(load_generator(model_path), device)
