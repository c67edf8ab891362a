"""The DiscoFaceGAN engine (the "discofacegan" backend is ``neural.backends.discofacegan``).

``DFGEngine`` runs one DiscoFaceGAN generator on one device; it is a ``ProgressiveEngine``
like the StyleGAN2 engine: ``progressive`` yields the image after every block (the lower
blocks through the progressive-growing ToRGB heads, previews only), cancellation is checked
before each block that has to be computed, and the activations after every step are cached
so that a run whose W+ changed only in later rows resumes where they start (bit-identical to
a full run).

``sefa_matrices``: the style-modulation weights SeFa factorises for each W+ row.
"""

from __future__ import annotations

import numpy as np
import torch

from ...rig.params import RigParams
from ..engine import ProgressiveEngine
from ..stylegan2.generator import GeneratorInputError, NoiseMode, Precision
from .adapter import (
    DEFAULT_CUTOFF,
    dfg_input,
    map_truncated,
    noise_from_seed,
)
from .config import DFGConfig
from .generator import DFGGenerator, DFGSynthesisOptions, check_noise_seeds, check_ws
from .tf_reader import LoadedDFG


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
