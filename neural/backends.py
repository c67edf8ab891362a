"""Backends: a rig state -> W+ -> image, one class per way of driving a generator.

The Blender side builds a :class:`RigState` (plain data: numpy and builtins only, so it can
be made in Blender's process and sent to the worker); a backend turns it into W+ and renders
it through the engine. Backends share one interface, so the worker and the CLI drive the
StyleGAN2, DiscoFaceGAN and StyleRig backends alike (``BACKEND_LOADERS``: the registry):

- ``latents(state)`` -> W+ [1, num_ws, w_dim] float32 (the rig mapping + SeFa offsets);
- ``render(state, cancel)`` -> image [1, C, R, R] float32 in nominally [-1, 1];
- ``render_progressive(state, cancel)`` -> the image after every block up to the state's
  resolution (the worker streams these to Blender).

Torch is imported lazily: this module's data classes load in Blender's own process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..contract import catalogue
from ..contract.state import RigState
from .errors import NeuralError

if TYPE_CHECKING:
    import torch

    from .checkpoints import LoadedGenerator
    from .engine import BlockImage, Cancel, StyleGAN2Engine

class BackendError(NeuralError):
    """A rig state cannot be rendered by this backend (missing latent, bad slider, ...)."""


class Backend:
    """Interface of every backend; subclasses implement ``latents``."""

    name = "base"

    def __init__(self, engine: StyleGAN2Engine, model_id: str) -> None:
        self.engine = engine
        self.model_id = model_id

    def latents(self, state: RigState) -> torch.Tensor:
        raise NotImplementedError

    def render(self, state: RigState, cancel: Cancel = None) -> torch.Tensor:
        """Image [1, C, R, R]; raises ``SynthesisCancelled`` when ``cancel`` fires."""
        blocks = list(self.render_progressive(state, cancel))
        return blocks[-1].image

    def render_progressive(self, state: RigState, cancel: Cancel = None) -> Iterator[BlockImage]:
        self._check_model(state)
        return self.engine.progressive(
            self.latents(state),
            stop_res=state.resolution,
            cancel=cancel,
            noise_mode=state.noise_mode,
            noise_seed=state.noise_seed,
        )

    def _check_model(self, state: RigState) -> None:
        if state.backend != self.name:
            raise BackendError(f"rig state is for backend {state.backend!r}, not {self.name!r}")
        if state.model_id and self.model_id and state.model_id != self.model_id:
            raise BackendError(
                f"rig state is for model {state.model_id}, this backend runs {self.model_id}"
            )


def checked_latent(
    state: RigState, shapes: Mapping[str, tuple[int, ...]], spaces: str
) -> torch.Tensor:
    """The state's explicit ``latent`` as a float32 tensor of the shape ``shapes`` gives for
    its ``latent_space``; ``spaces`` (e.g. "expected 'z' or 'w+'") names the accepted ones."""
    import torch

    latent = torch.as_tensor(np.asarray(state.latent, dtype=np.float32))
    expected = shapes.get(state.latent_space)
    if expected is None:
        raise BackendError(f"latent_space: {spaces}, found {state.latent_space!r}")
    if tuple(latent.shape) != expected:
        raise BackendError(
            f"latent ({state.latent_space}): expected shape {list(expected)}, "
            f"found {list(latent.shape)}"
        )
    return latent


DirectionsFor = Callable[[tuple[int, ...]], np.ndarray]
"""W+ rows -> SeFa directions [K, w_dim] (row j = direction j) factorised from those rows."""


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
        from .engine import StyleGAN2Engine
        from .sefa import factorize_cached

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
        from .sefa import apply_direction

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


# ------------------------------------------------------------------ registry

BackendLoader = Callable[[str, str, Mapping[str, str]], Backend]
"""(model file, torch device, other files by role) -> a ready backend."""


def _load_stylegan2(model_path: str, device: str, files: Mapping[str, str]) -> Backend:
    """Any StyleGAN2 checkpoint ``load_generator`` reads; SeFa directions on demand."""
    from .checkpoints import load_generator

    return StyleGAN2Backend.from_loaded(load_generator(model_path), device)


def _load_discofacegan(model_path: str, device: str, files: Mapping[str, str]) -> Backend:
    from .discofacegan.backend import load_backend

    return load_backend(model_path, device, files)


def _load_stylerig(model_path: str, device: str, files: Mapping[str, str]) -> Backend:
    from .stylerig.backend import load_backend

    return load_backend(model_path, device, files)


BACKEND_LOADERS: dict[str, BackendLoader] = {
    catalogue.STYLEGAN2.id: _load_stylegan2,
    catalogue.DISCOFACEGAN.id: _load_discofacegan,
    catalogue.STYLERIG.id: _load_stylerig,
}
"""The backends: name (``RigState.backend``) -> loader. A loader imports its backend (and
torch) when called, so the registry itself loads in Blender's process."""
