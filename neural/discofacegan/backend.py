"""The DiscoFaceGAN backend: rig state -> 286-d input -> truncated W+ -> progressive image.

``DFGEngine`` runs one DiscoFaceGAN generator on one device with the StyleGAN2 engine's
contract: ``progressive`` yields the image after every block (the lower blocks through the
progressive-growing ToRGB heads, previews only), cancellation is checked before each block
that has to be computed, and the activations after every step are cached so that a run
whose W+ changed only in later rows resumes where they start (bit-identical to a full run).

``DiscoFaceGANBackend`` maps a ``RigState``: its rig vector gives the coefficients, its
``seed`` the 32-d noise (hair, background: what the rig does not cover), ``psi``/``cutoff``
the attribute-preserving truncation (cutoff None = the official 8 rows); an explicit
``latent`` in "z" (the 286-d input) or "w+" replaces the rig. SeFa sliders factorise this
generator's style-modulation weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...rig.params import RIG_SIZE, RigParams
from ..backends import BACKENDS, BackendError, RigState, StyleGAN2Backend
from ..engine import (
    BlockImage,
    Cancel,
    RunStats,
    SynthesisCancelled,
    _cancel_requested,
    check_precision,
)
from ..stylegan2.generator import GeneratorInputError, NoiseMode, Precision
from .adapter import DEFAULT_CUTOFF, dfg_input, map_truncated, noise_from_seed
from .config import DFGConfig
from .generator import (
    DFGGenerator,
    DFGStep,
    DFGSynthesisOptions,
    SynthesisState,
    check_noise_seeds,
    check_ws,
)
from .tf_reader import LoadedDFG

BACKEND_NAME = "discofacegan"


@dataclass
class _Cache:
    key: tuple[Any, ...]
    ws: torch.Tensor
    states: list[SynthesisState]  # states[i] = state after step i


class DFGEngine:
    """Runs a DiscoFaceGAN generator; not thread-safe (one engine per worker thread)."""

    def __init__(
        self,
        generator: DFGGenerator,
        w_avg_id: np.ndarray | torch.Tensor | None,
        device: torch.device | str = "cpu",
        precision: Precision = "fp32",
        noise_mode: NoiseMode = "const",
        cache: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.generator = generator.to(self.device).eval().requires_grad_(False)
        self.config: DFGConfig = generator.config
        self.w_avg_id: torch.Tensor | None = None
        if w_avg_id is not None:
            avg = torch.as_tensor(np.asarray(w_avg_id, dtype=np.float32))
            expected = (self.config.num_ws, self.config.w_dim)
            if tuple(avg.shape) != expected:
                raise GeneratorInputError(
                    f"w_avg_id: expected shape {list(expected)}, found {list(avg.shape)}"
                )
            self.w_avg_id = avg.to(self.device)
        check_precision(self.device, precision)
        self.precision: Precision = precision
        self.noise_mode: NoiseMode = noise_mode
        self.use_cache = cache
        self._cache: _Cache | None = None
        self.last_run: RunStats | None = None
        self._steps: tuple[DFGStep, ...] = self.generator.synthesis.steps

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

    def synthesize(self, ws: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """W+ -> image [N, C, R, R] float32 (R = ``stop_res`` or the full resolution)."""
        return list(self.progressive(ws, **kwargs))[-1].image

    def progressive(
        self,
        ws: torch.Tensor,
        *,
        stop_res: int | None = None,
        cancel: Cancel = None,
        precision: Precision | None = None,
        noise_mode: NoiseMode | None = None,
        noise_seed: int | Sequence[int] | None = None,
    ) -> Iterator[BlockImage]:
        """Yield the image after every block up to ``stop_res``; raises SynthesisCancelled
        before a block that has to be computed when ``cancel`` is set."""
        options = self._options(precision, noise_mode, noise_seed)
        ws = ws.to(device=self.device, dtype=torch.float32)
        check_ws(self.config, ws)
        check_noise_seeds(options, ws.shape[0])
        stop_res = self._check_stop_res(stop_res)
        last = max(s.position for s in self._steps if s.res == stop_res)
        states = self._reusable_states(ws, options)
        resume, executed = len(states), 0
        net = self.generator.synthesis
        try:
            with torch.inference_mode():
                for step in self._steps[: last + 1]:
                    if step.position >= resume:
                        starts_block = step.position == resume or (
                            step.layer is not None and step.layer % 2 == 0
                        )
                        if starts_block and _cancel_requested(cancel):
                            raise SynthesisCancelled(f"cancelled before the {step.res} px block")
                        prev = states[-1] if states else (None, None)
                        states.append(net.run_step(step, prev, ws, options))
                        executed += 1
                    if step.layer is None:
                        image = states[step.position][1]
                        assert image is not None
                        final = step.res == self.config.img_resolution
                        yield BlockImage(step.res, image.clone(), final=final)
        finally:
            self.last_run = RunStats(min(resume, last + 1), executed, len(self._steps))

    def clear_cache(self) -> None:
        self._cache = None

    def _options(
        self,
        precision: Precision | None,
        noise_mode: NoiseMode | None,
        noise_seed: int | Sequence[int] | None,
    ) -> DFGSynthesisOptions:
        precision = precision or self.precision
        check_precision(self.device, precision)
        seeds = None if noise_seed is None else (
            (int(noise_seed),) if isinstance(noise_seed, int) else tuple(map(int, noise_seed))
        )
        return DFGSynthesisOptions(
            noise_mode=noise_mode or self.noise_mode, noise_seeds=seeds, precision=precision
        )

    def _check_stop_res(self, stop_res: int | None) -> int:
        if stop_res is None:
            return self.config.img_resolution
        if stop_res not in self.config.block_resolutions:
            raise GeneratorInputError(
                f"stop_res: expected one of {', '.join(map(str, self.config.block_resolutions))}"
                f", found {stop_res}"
            )
        return stop_res

    def _reusable_states(
        self, ws: torch.Tensor, options: DFGSynthesisOptions
    ) -> list[SynthesisState]:
        """States of the cached run still valid for ``ws``; re-arms the cache for ``ws``."""
        if not self.use_cache:
            return []
        key = (options, tuple(ws.shape), self.device)
        cache = self._cache
        states: list[SynthesisState] = []
        if cache is not None and cache.key == key:
            changed = {r for r in range(self.num_ws) if not torch.equal(ws[:, r], cache.ws[:, r])}
            first_dirty = min(
                (s.position for s in self._steps if s.layer in changed), default=len(self._steps)
            )
            states = cache.states[:first_dirty]
        self._cache = _Cache(key, ws.clone(), states)
        return states


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
            latent = torch.as_tensor(np.asarray(state.latent, dtype=np.float32))
            expected = {"z": (cfg.z_dim,), "w+": (cfg.num_ws, cfg.w_dim)}.get(state.latent_space)
            if expected is None:
                raise BackendError(
                    f"latent_space: DiscoFaceGAN takes 'z' (the {cfg.z_dim}-d input) or 'w+', "
                    f"found {state.latent_space!r}"
                )
            if tuple(latent.shape) != expected:
                raise BackendError(
                    f"latent ({state.latent_space}): expected shape {list(expected)}, "
                    f"found {list(latent.shape)}"
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


BACKENDS.setdefault(DiscoFaceGANBackend.name, DiscoFaceGANBackend)
