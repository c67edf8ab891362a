"""The DiscoFaceGAN backend: rig state -> 286-d input -> truncated W+ -> progressive image.

``DFGEngine`` runs one DiscoFaceGAN generator on one device; it is a ``ProgressiveEngine``
like the StyleGAN2 engine: ``progressive`` yields the image after every block (the lower
blocks through the progressive-growing ToRGB heads, previews only), cancellation is checked
before each block that has to be computed, and the activations after every step are cached
so that a run whose W+ changed only in later rows resumes where they start (bit-identical to
a full run).

``DiscoFaceGANBackend`` maps a ``RigState``: its rig vector gives the coefficients, its
``seed`` the 32-d noise (hair, background: what the rig does not cover), ``psi``/``cutoff``
the attribute-preserving truncation (cutoff None = the official 8 rows); an explicit
``latent`` in "z" (the 286-d input) or "w+" replaces the rig. SeFa sliders factorise this
generator's style-modulation weights.
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
from ..backends import BackendError, StyleGAN2Backend, checked_latent
from ..engine import ProgressiveEngine
from ..stylegan2.generator import GeneratorInputError, NoiseMode, Precision
from .adapter import (
    DEFAULT_CUTOFF,
    dfg_input,
    load_average_w_id,
    map_truncated,
    noise_from_seed,
)
from .config import DFGConfig
from .generator import DFGGenerator, DFGSynthesisOptions, check_noise_seeds, check_ws
from .tf_reader import LoadedDFG, load_dfg_generator

BACKEND_NAME = DISCOFACEGAN.id
AVERAGE_W_NAMES = ("{stem}-average_w_id.txt", "{stem}_average_w_id.txt", "average_w_id.txt")


class DFGEngine(ProgressiveEngine):
    """Runs a DiscoFaceGAN generator; not thread-safe (one engine per worker thread)."""

    options_type = DFGSynthesisOptions

    def __init__(
        self,
        generator: DFGGenerator,
        w_avg_id: np.ndarray | torch.Tensor | None,
        device: torch.device | str = "cpu",
        precision: Precision = "fp32",
        noise_mode: NoiseMode = "const",
        cache: bool = True,
    ) -> None:
        dev = torch.device(device)
        self.generator = generator.to(dev).eval().requires_grad_(False)
        self.config: DFGConfig = generator.config
        self.w_avg_id: torch.Tensor | None = None
        if w_avg_id is not None:
            avg = torch.as_tensor(np.asarray(w_avg_id, dtype=np.float32))
            expected = (self.config.num_ws, self.config.w_dim)
            if tuple(avg.shape) != expected:
                raise GeneratorInputError(
                    f"w_avg_id: expected shape {list(expected)}, found {list(avg.shape)}"
                )
            self.w_avg_id = avg.to(dev)
        synthesis = self.generator.synthesis
        super().__init__(synthesis.steps, synthesis.run_step, dev, precision, noise_mode, None,
                         cache)

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    # -------------------------------------------------------------- mapping

    def input_from_rig(self, rig: RigParams, seed: int) -> torch.Tensor:
        """[1, z_dim] float32: the rig's coefficients + the seed's noise."""
        z = dfg_input(rig, noise_from_seed(seed, self.config.noise_dim))
        return torch.from_numpy(z)[None].to(self.device)

    def map(
        self, z: torch.Tensor, psi: float = 0.7, cutoff: int | None = DEFAULT_CUTOFF
    ) -> torch.Tensor:
        """z [N, z_dim] -> W+ [N, num_ws, w_dim] with attribute-preserving truncation
        (psi 1: none, and no identity-average W needed)."""
        cutoff = DEFAULT_CUTOFF if cutoff is None else cutoff
        if self.w_avg_id is None:
            if psi != 1.0:
                raise GeneratorInputError(
                    f"truncation psi {psi} needs the identity-average W: load the model's "
                    "average_w_id text file (or make it with `nfr dfg average-w`), or use psi 1"
                )
            with torch.inference_mode():
                return self.generator.map(z.to(self.device))
        return map_truncated(self.generator, z.to(self.device), self.w_avg_id, psi, cutoff)

    # -------------------------------------------------------------- synthesis

    def _prepare_ws(self, ws: torch.Tensor, options: DFGSynthesisOptions) -> torch.Tensor:
        ws = ws.to(device=self.device, dtype=torch.float32)
        check_ws(self.config, ws)
        check_noise_seeds(options, ws.shape[0])
        return ws


def sefa_matrices(loaded: LoadedDFG) -> dict[int, torch.Tensor]:
    """W+ row -> the style-modulation weight [2 C, w_dim] SeFa factorises for it (scale and
    shift rows, like genforce's StyleGAN v1 ``style.weight``)."""
    return {
        i: loaded.state_dict[f"synthesis.layer{i}.style.weight"]
        for i in range(loaded.config.num_ws)
    }


class DiscoFaceGANBackend(StyleGAN2Backend):
    """Rig-driven DiscoFaceGAN; SeFa sliders as in the StyleGAN2 backend."""

    name = BACKEND_NAME
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


def load_backend(model_path: str, device: str, files: Mapping[str, str]) -> DiscoFaceGANBackend:
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
