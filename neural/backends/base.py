"""The interface every backend implements: a rig state -> W+ -> image.

- ``latents(state)`` -> W+ [1, num_ws, w_dim] float32 (the rig mapping + SeFa offsets);
- ``render(state, cancel)`` -> image [1, C, R, R] float32 in nominally [-1, 1];
- ``render_progressive(state, cancel)`` -> the image after every block up to the state's
  resolution (the worker streams these to Blender);
- ``estimate(state)`` -> the rig values [257] of the state's base face (the face without rig
  edits: what sliders start from), or None for backends without a rig reading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import numpy as np

from ...contract.state import RigState
from ..errors import NeuralError

if TYPE_CHECKING:
    import torch

    from ..engine import BlockImage, Cancel, StyleGAN2Engine


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

    def render_progressive(
        self, state: RigState, cancel: Cancel = None, shown_from: int | None = None
    ) -> Iterator[BlockImage]:
        """``shown_from``: the smallest block the caller shows (``engine.progressive``)."""
        self._check_model(state)
        return self.engine.progressive(
            self.latents(state),
            stop_res=state.resolution,
            cancel=cancel,
            noise_mode=state.noise_mode,
            noise_seed=state.noise_seed,
            shown_from=shown_from,
        )

    def estimate(self, state: RigState) -> np.ndarray | None:
        """The rig values [257] (canonical order) of the state's base face, or None: this
        backend has no reading of rig values (catalogue ``estimate``)."""
        return None

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



BackendLoader = Callable[[str, str, Mapping[str, str]], Backend]
"""(model file, torch device, other files by catalogue role) -> a ready backend."""
