"""Inference engine for StyleGAN2 generators: seeds and latents to images.

- ``map``: z [N, z_dim] -> W+ [N, num_ws, w_dim] with truncation (psi, cutoff).
- ``synthesize``: W+ -> image [N, C, R, R] float32 in nominally [-1, 1].
- ``progressive``: yields the skip-architecture image after every block (4 px, 8 px, ...),
  stops at a preview resolution, is cancellable between blocks.
- Incremental re-synthesis: the activations after every step of the last run are kept; when
  only some W+ rows change, synthesis resumes at the first step consuming a changed row. A
  resumed run executes exactly the operations of a full one, so its bits are identical.
  (``ProgressiveEngine`` holds this contract; DiscoFaceGAN's engine is one too.)
- Determinism: the same inputs give the same bits on the same device and precision; every
  sample is computed on its own, so a frame's pixels do not depend on its batch.

Precisions: "fp32" (final renders), "fp16" (CUDA: the blocks the config marks fp16, like
NVIDIA's own inference), "bf16" (previews on CPUs with native bf16 or CUDA; channels-last).

Live previews: an fp32 engine asked for progressive images without an explicit precision runs
preview blocks (blocks before the last one asked for) in bf16, then the remaining blocks
in fp32, when the device has native bf16 (``bf16_supported``). Which blocks: those up to
the largest resolution whose bf16 image, and every smaller one, differed from the fp32 image
by at most ``PREVIEW_TOLERANCE`` of the image range, and which the bf16 pass reached sooner
than the fp32 one (else a bf16 preview would only delay the exact images) within
``PREVIEW_DELAY_BUDGET_MS`` (the preview pass delays the final image by its own time). All are
measured once, right after the engine's first progressive run (``preview_errors``,
``preview_speedups``). The last image is always the exact fp32 one.
Process-wide settings (allocator, threads, cuDNN determinism) belong to the process that owns
the engine: see ``configure_inference_process``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .errors import NeuralError
from .stylegan2 import kernels
from .stylegan2.config import StyleGAN2Config
from .stylegan2.generator import (
    Generator,
    GeneratorInputError,
    NoiseMode,
    Precision,
    SynthesisOptions,
    SynthesisState,
    truncate,
)


class EngineError(NeuralError):
    """The engine cannot run as asked (e.g. a precision this device does not support)."""


class SynthesisCancelled(Exception):
    """Raised between blocks when the caller's cancel signal is set (not an error)."""


class CancelSignal(Protocol):
    def is_set(self) -> bool: ...


Cancel = Callable[[], bool] | CancelSignal | None


@dataclass(frozen=True)
class BlockImage:
    """The image after block ``res``: raw [N, C, res, res] float32 (a copy, safe to keep);
    ``precision``: what computed it ("bf16" for live previews, else the run's)."""

    res: int
    image: torch.Tensor
    final: bool
    precision: str = "fp32"

    def upscaled(self, size: int) -> torch.Tensor:
        """The image resized to [N, C, size, size] for display (bilinear)."""
        return upscale(self.image, size)


@dataclass(frozen=True)
class RunStats:
    """What the last synthesis did: steps executed out of ``total_steps``, where it resumed."""

    resumed_at_step: int
    steps_executed: int
    total_steps: int


@dataclass
class _Cache:
    key: tuple[Any, ...]
    ws: torch.Tensor  # the W+ the states were computed from
    states: list[SynthesisState]  # states[i] = state after step i, for i < len(states)


class ProgressiveStep(Protocol):
    """What the engine needs of a synthesis step (StyleGAN2's and DiscoFaceGAN's steps)."""

    @property
    def index(self) -> int: ...  # position in execution order

    @property
    def res(self) -> int: ...

    @property
    def w_index(self) -> int | None: ...  # the W+ row it consumes, if any

    @property
    def makes_image(self) -> bool: ...

    @property
    def starts_block(self) -> bool: ...


RunStep = Callable[[Any, SynthesisState, torch.Tensor, Any], SynthesisState]
"""(step, state, ws, options) -> the state after the step; never modifies its inputs."""


# ------------------------------------------------------------------ device capabilities


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """Whether bfloat16 convolutions run natively (fast) on ``device``.

    CPU: needs AVX512-BF16 or AMX instructions, asked from torch's CPU feature probes (or
    /proc/cpuinfo where those are unavailable), on a build whose oneDNN has bf16 kernels.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    features = kernels.read_cpu_features()
    if "AVX512" not in features.capability or not features.has_native(torch.bfloat16):
        return False
    mkldnn_probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(mkldnn_probe() if mkldnn_probe is not None else False)


def default_precision(device: torch.device | str, config: StyleGAN2Config) -> Precision:
    """NVIDIA's inference precision: fp16 blocks on CUDA when the config marks some, else fp32."""
    if torch.device(device).type == "cuda" and config.num_fp16_res > 0:
        return "fp16"
    return "fp32"


PREVIEW_TOLERANCE = 0.01
"""Largest bf16 preview error accepted for live previews: max |bf16 - fp32| / (max - min of
the fp32 image), over every preview block of the measured run."""


PREVIEW_MIN_SPEEDUP = 1.0
"""A block is previewed in bf16 only if the bf16 pass reached its image this much sooner."""

PREVIEW_DELAY_BUDGET_MS = 50.0
"""The bf16 preview pass runs before the exact pass, so it delays the final image by its own
compute time: blocks are previewed only while the bf16 pass reaches them within this budget
(the bridge overhead an artist accepts on the final face)."""


def check_precision(device: torch.device, precision: str) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise EngineError(f"precision 'fp16' runs on CUDA only; this engine is on {device}")
    if precision == "bf16" and not bf16_supported(device):
        raise EngineError(
            f"precision 'bf16' needs native bfloat16 support (AVX512-BF16/AMX CPUs or CUDA); "
            f"{device} ({torch.backends.cpu.get_cpu_capability()}) has none: use 'fp32'"
        )


# M_TRIM_THRESHOLD, M_MMAP_MAX (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def configure_inference_process(threads: int | None = None) -> dict[str, Any]:
    """Process-wide settings for an inference process (CLI, benchmark, worker), not applied
    at import. glibc serves every large tensor with a fresh mmap and unmaps it on free, so a
    1024 px render spends about half its time in page faults: keep freed memory in the heap
    instead (no mmap for large blocks, no trimming). Also makes cuDNN deterministic.
    Returns what was applied."""
    applied: dict[str, Any] = {}
    if sys.platform.startswith("linux"):
        libc_name = ctypes.util.find_library("c")
        if libc_name:
            libc = ctypes.CDLL(libc_name)
            if hasattr(libc, "mallopt"):
                ok_mmap = libc.mallopt(_M_MMAP_MAX, 0)
                ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
                applied["malloc_tuned"] = bool(ok_mmap and ok_trim)
    if threads is not None:
        torch.set_num_threads(threads)
        applied["threads"] = threads
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    return applied


# ------------------------------------------------------------------ latent helpers


def z_from_seed(seed: int, z_dim: int) -> np.ndarray:
    """z exactly as NVIDIA's generate script: RandomState(seed).randn(1, z_dim), float64."""
    if not 0 <= seed < 2**32:
        raise GeneratorInputError(f"seed: expected an integer in [0, 2**32), found {seed}")
    return np.random.RandomState(seed).randn(1, z_dim)


def offset_rows(
    ws: torch.Tensor, offset: torch.Tensor, rows: Iterable[int] | slice | None = None
) -> torch.Tensor:
    """Per-layer W+ edit: a copy of ws [N, num_ws, w_dim] with ``offset`` added to the given
    rows (None: all). offset [w_dim] (same for every row) or [len(rows), w_dim]."""
    out = ws.clone()
    index: slice | list[int] = slice(None) if rows is None else (
        rows if isinstance(rows, slice) else list(rows)
    )
    out[:, index] += offset.to(device=ws.device, dtype=ws.dtype)
    return out


def upscale(image: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of a preview image [N, C, r, r] -> [N, C, size, size] for display."""
    if image.shape[-1] == size:
        return image
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)


def cancel_requested(cancel: Cancel) -> bool:
    """Whether a cancel signal (an Event-like ``is_set`` or a callable) is set."""
    if cancel is None:
        return False
    is_set = getattr(cancel, "is_set", None)
    if callable(is_set):
        return bool(is_set())
    assert callable(cancel)
    return bool(cancel())


# ------------------------------------------------------------------ engine


class ProgressiveEngine:
    """Progressive, cancellable, resumable synthesis over a generator's flat list of steps:
    the contract shared by the StyleGAN2 and DiscoFaceGAN engines.

    Subclasses pass their synthesis network's steps and ``run_step``, build their options in
    ``_options`` and check W+ in ``_prepare_ws``. The activations after every step of the last
    run are kept; a run whose W+ changed only in some rows resumes at the first step that
    consumes one of them. Not thread-safe: one engine per worker thread.
    """

    options_type: Callable[..., Any]
    """Builds the synthesis options (noise_mode=, noise_seeds=, precision=)."""

    def __init__(
        self,
        steps: Sequence[ProgressiveStep],
        run_step: RunStep,
        device: torch.device,
        precision: Precision,
        noise_mode: NoiseMode,
        noise_seed: int | Sequence[int] | None,
        cache: bool,
    ) -> None:
        self.device = device
        check_precision(self.device, precision)
        self.precision: Precision = precision
        self.noise_mode: NoiseMode = noise_mode
        self.noise_seed = noise_seed
        self.use_cache = cache
        self.last_run: RunStats | None = None
        self._steps = tuple(steps)
        self._run_step = run_step
        self._resolutions = tuple(sorted({s.res for s in self._steps}))
        self._caches: dict[tuple[Any, ...], _Cache] = {}  # one per options (fp32, bf16 previews)
        self.preview_candidate: Precision | None = (
            "bf16" if precision == "fp32" and bf16_supported(device) else None
        )
        """The live-preview precision this engine may use (None: previews stay in the run's
        precision); ``previews_enabled`` once measured."""
        self.preview_errors: dict[int, float] | None = None
        """Measured preview error per block resolution (see ``PREVIEW_TOLERANCE``); None
        until measured."""
        self.preview_speedups: dict[int, float] | None = None
        """Per block resolution: fp32 compute time to reach that block's image / the preview
        precision's; measured with ``preview_errors``."""
        self.preview_times_ms: dict[int, float] | None = None
        """Per block resolution: the preview precision's compute time to reach that block's
        image (ms), measured with ``preview_errors``."""
        self._options(None, None, None)  # validate the defaults now

    @property
    def preview_error(self) -> float | None:
        """The largest measured preview error over the measured blocks (None: not yet)."""
        return None if not self.preview_errors else max(self.preview_errors.values())

    @property
    def preview_max_res(self) -> int | None:
        """The largest block resolution previewed in ``preview_candidate``: every measured
        block up to it met the tolerance and the delay budget, and its image came sooner than
        in fp32 (None: no such block, or not measured yet)."""
        if self.preview_candidate is None or not self.preview_errors:
            return None
        speedups = self.preview_speedups or {}
        times = self.preview_times_ms or {}
        accepted = None
        for res in sorted(self.preview_errors):
            if not self.preview_errors[res] <= PREVIEW_TOLERANCE:
                break
            if times.get(res, float("inf")) > PREVIEW_DELAY_BUDGET_MS:  # or never timed
                break
            if speedups.get(res, 0.0) > PREVIEW_MIN_SPEEDUP:
                accepted = res
        return accepted

    @property
    def previews_enabled(self) -> bool:
        """Whether progressive runs now compute some previews in ``preview_candidate``."""
        return self.preview_max_res is not None

    def synthesize(
        self,
        ws: torch.Tensor,
        *,
        stop_res: int | None = None,
        cancel: Cancel = None,
        precision: Precision | None = None,
        noise_mode: NoiseMode | None = None,
        noise_seed: int | Sequence[int] | None = None,
    ) -> torch.Tensor:
        """W+ [N, num_ws, w_dim] -> image [N, C, R, R] float32, R = ``stop_res`` or the full
        resolution. Raises ``SynthesisCancelled`` when cancelled."""
        blocks = self.progressive(
            ws,
            stop_res=stop_res,
            cancel=cancel,
            precision=precision,
            noise_mode=noise_mode,
            noise_seed=noise_seed,
            previews=False,
        )
        return list(blocks)[-1].image

    def progressive(
        self,
        ws: torch.Tensor,
        *,
        stop_res: int | None = None,
        cancel: Cancel = None,
        precision: Precision | None = None,
        noise_mode: NoiseMode | None = None,
        noise_seed: int | Sequence[int] | None = None,
        previews: bool | None = None,
        shown_from: int | None = None,
    ) -> Iterator[BlockImage]:
        """The image after every block up to ``stop_res``, as an iterator (arguments are
        checked now, synthesis runs as it is consumed). Blocks already cached for these W+
        rows come from the cache. The cancel signal is checked before each block that has
        to be computed.

        previews: None = the engine's live-preview policy (module docstring) when no
        ``precision`` is given; False = every image in the run's precision. The last image
        (``stop_res``) is always computed in the run's precision. shown_from: the smallest
        block the caller shows (the worker streams from 32 px): previews that stop short of
        it would only delay the exact images, so they are not computed, and a caller that
        shows only the last image (``shown_from`` >= ``stop_res``: final renders) neither
        computes previews nor pays for their calibration."""
        options = self._options(precision, noise_mode, noise_seed)
        ws = self._prepare_ws(ws, options)
        stop_res = self._check_stop_res(stop_res)
        last_step = max(s.index for s in self._steps if s.res == stop_res)
        preview_options = None
        preview_last = -1
        shown_from = shown_from or 0
        if (precision is None and previews is not False and self.preview_candidate is not None
                and shown_from < stop_res):
            preview_options = self._options(self.preview_candidate, noise_mode, noise_seed)
            below = [s.index for s in self._steps if s.res < stop_res]
            preview_last = max(below, default=-1)
        limit = self.preview_max_res
        unseen = limit is not None and limit < shown_from  # no bf16 preview would be shown
        if preview_options is None or preview_last < 0 or unseen:
            return self._blocks(ws, options, last_step, cancel)
        if limit is not None:
            bf16_last = max(s.index for s in self._steps[: preview_last + 1] if s.res <= limit)
            return self._previewed(ws, options, preview_options, bf16_last, last_step, cancel)
        if self.preview_errors is None:
            return self._measuring(ws, options, preview_options, preview_last, last_step, cancel)
        return self._blocks(ws, options, last_step, cancel)

    def clear_cache(self) -> None:
        self._caches = {}

    # -------------------------------------------------------------- for subclasses

    def _prepare_ws(self, ws: torch.Tensor, options: Any) -> torch.Tensor:
        """W+ on the engine's device as float32, shape-checked; raises GeneratorInputError."""
        raise NotImplementedError

    def _options(
        self,
        precision: Precision | None,
        noise_mode: NoiseMode | None,
        noise_seed: int | Sequence[int] | None,
    ) -> Any:
        precision = precision or self.precision
        check_precision(self.device, precision)
        seed = self.noise_seed if noise_seed is None else noise_seed
        seeds = None if seed is None else (
            (int(seed),) if isinstance(seed, int) else tuple(int(s) for s in seed)
        )
        return self.options_type(
            noise_mode=noise_mode or self.noise_mode, noise_seeds=seeds, precision=precision
        )

    # -------------------------------------------------------------- internals

    def _previewed(
        self, ws: torch.Tensor, options: Any, preview_options: Any, preview_last: int,
        last_step: int, cancel: Cancel,
    ) -> Iterator[BlockImage]:
        """Blocks up to step ``preview_last`` in the preview precision, then the others (the
        last image included) in the run's."""
        label = str(preview_options.precision)
        done = 0
        for block in self._blocks(ws, preview_options, preview_last, cancel):
            done = block.res
            yield BlockImage(block.res, block.image, False, label)
        for block in self._blocks(ws, options, last_step, cancel):
            if block.res > done:
                yield block

    def _measuring(
        self, ws: torch.Tensor, options: Any, preview_options: Any, preview_last: int,
        last_step: int, cancel: Cancel,
    ) -> Iterator[BlockImage]:
        """A plain run, then (once the caller has taken every image) the preview blocks in the
        preview precision, compared with this run's images: sets ``preview_errors``; then
        both precisions again from scratch, uncached and warmed up (the first run of a
        precision also pays for kernel creation), for ``preview_speedups``. The timed passes
        stop at the first block past ``PREVIEW_DELAY_BUDGET_MS`` in the preview precision (no
        later block can be previewed): at 1024 px the calibration then costs one preview
        pass, not three, and the worker is free for the next slider move that much sooner."""
        exact: dict[int, torch.Tensor] = {}
        for block in self._blocks(ws, options, last_step, cancel):
            exact[block.res] = block.image
            yield block
        stats = self.last_run
        try:
            errors: dict[int, float] = {}
            for block in self._blocks(ws, preview_options, preview_last, None):
                ref = exact[block.res]
                spread = float(ref.max() - ref.min()) or 1.0
                err = float((block.image - ref).abs().max()) / spread
                errors[block.res] = err if err == err else float("inf")  # NaN: never
            preview_ms: dict[int, float] = {}
            exact_ms: dict[int, float] = {}
            timed_last = preview_last
            for block in self._blocks(ws, preview_options, preview_last, None, preview_ms,
                                      cached=False):
                if preview_ms[block.res] > PREVIEW_DELAY_BUDGET_MS:
                    timed_last = max(s.index for s in self._steps if s.res == block.res)
                    break
            for _ in self._blocks(ws, options, timed_last, None, exact_ms, cached=False):
                pass
            self.preview_speedups = {
                r: exact_ms[r] / max(preview_ms[r], 1e-9) for r in preview_ms if r in exact_ms
            }
            self.preview_times_ms = dict(preview_ms)
            self.preview_errors = errors
        finally:
            self.last_run = stats

    def _blocks(
        self,
        ws: torch.Tensor,
        options: Any,
        last_step: int,
        cancel: Cancel,
        timings: dict[int, float] | None = None,
        cached: bool = True,
    ) -> Iterator[BlockImage]:
        """Run (or resume) the steps up to ``last_step``, yielding each block's image.
        ``timings``: filled with the process CPU milliseconds spent up to each image (CPU
        time, not wall time: on a shared machine the load would decide otherwise; steps
        taken from the cache cost nothing). ``cached=False``: neither read nor fill the
        cache."""
        states = self._reusable_states(ws, options) if cached else []
        resume = len(states)
        spent = 0.0
        state: SynthesisState = states[-1] if states else (None, None)
        executed = 0
        final_res = self._resolutions[-1]
        try:
            for step in self._steps[: last_step + 1]:
                if step.index < resume:
                    state = states[step.index]
                else:
                    starts_work = step.index == resume or step.starts_block
                    if starts_work and cancel_requested(cancel):
                        raise SynthesisCancelled(f"cancelled before the {step.res} px block")
                    # Grad mode is set per step: a context held across ``yield`` would leak
                    # into the caller's code.
                    start = time.process_time() if timings is not None else 0.0
                    with torch.no_grad():
                        state = self._run_step(step, state, ws, options)
                    if timings is not None:
                        spent += time.process_time() - start
                    if self.use_cache and cached:
                        states.append(state)
                    executed += 1
                if step.makes_image:
                    img = state[1]
                    assert img is not None
                    if timings is not None:
                        timings[step.res] = spent * 1e3
                    final = step.res == final_res
                    yield BlockImage(
                        step.res, img.contiguous().clone(), final, str(options.precision)
                    )
        finally:
            self.last_run = RunStats(min(resume, last_step + 1), executed, len(self._steps))

    def _check_stop_res(self, stop_res: int | None) -> int:
        if stop_res is None:
            return self._resolutions[-1]
        if stop_res not in self._resolutions:
            raise GeneratorInputError(
                f"stop_res: expected one of {', '.join(map(str, self._resolutions))}"
                f", found {stop_res}"
            )
        return stop_res

    def _reusable_states(self, ws: torch.Tensor, options: Any) -> list[SynthesisState]:
        """States of the cached run with these options still valid for ``ws``; re-arms that
        cache for ``ws``. Two option sets are cached at most (the run's and the previews')."""
        if not self.use_cache:
            return []
        key = (options, tuple(ws.shape), self.device)
        cache = self._caches.pop(key, None)
        while len(self._caches) >= 2:
            self._caches.pop(next(iter(self._caches)))
        states: list[SynthesisState] = []
        if cache is not None:
            changed = {r for r in range(ws.shape[1]) if not torch.equal(ws[:, r], cache.ws[:, r])}
            first_dirty = min(
                (s.index for s in self._steps if s.w_index in changed), default=len(self._steps)
            )
            states = cache.states[:first_dirty]
        # The list is shared with the cache: steps appended during this run extend it.
        self._caches[key] = _Cache(key, ws.clone(), states)
        return states


class StyleGAN2Engine(ProgressiveEngine):
    """Runs one StyleGAN2 generator on one device."""

    options_type = SynthesisOptions

    def __init__(
        self,
        generator: Generator,
        device: torch.device | str = "cpu",
        precision: Precision | None = None,
        noise_mode: NoiseMode = "const",
        noise_seed: int | Sequence[int] | None = None,
        cache: bool = True,
    ) -> None:
        dev = torch.device(device)
        self.generator = generator.to(dev).eval().requires_grad_(False)
        self.config: StyleGAN2Config = generator.config
        synthesis = self.generator.synthesis
        super().__init__(
            synthesis.steps, synthesis.run_step, dev,
            precision or default_precision(dev, self.config), noise_mode, noise_seed, cache,
        )

    @classmethod
    def from_state_dict(
        cls,
        config: StyleGAN2Config,
        state: dict[str, torch.Tensor],
        device: torch.device | str = "cpu",
        **kwargs: Any,
    ) -> StyleGAN2Engine:
        return cls(Generator.from_state_dict(config, state), device, **kwargs)

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    # -------------------------------------------------------------- mapping

    def z_from_seed(self, seed: int) -> torch.Tensor:
        """[1, z_dim] float32 on the engine's device (NVIDIA's seed convention)."""
        z = z_from_seed(seed, self.config.z_dim)
        return torch.from_numpy(z).to(device=self.device, dtype=torch.float32)

    def map(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        psi: float = 1.0,
        cutoff: int | None = None,
    ) -> torch.Tensor:
        """z [N, z_dim] (c [N, c_dim]) -> W+ [N, num_ws, w_dim] float32."""
        with torch.no_grad():
            z = z.to(self.device)
            c = None if c is None else c.to(self.device)
            return self.generator.map(z, c, psi, cutoff)

    def w_from_seed(self, seed: int, psi: float = 1.0, cutoff: int | None = None) -> torch.Tensor:
        """W+ [1, num_ws, w_dim] of a seed (unconditional models)."""
        return self.map(self.z_from_seed(seed), psi=psi, cutoff=cutoff)

    def truncate(self, ws: torch.Tensor, psi: float, cutoff: int | None = None) -> torch.Tensor:
        """Move W+ rows [0, cutoff) towards the generator's w_avg."""
        w_avg = self.generator.mapping.w_avg
        return truncate(ws.to(self.device), w_avg, psi, cutoff)

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        """w [N, w_dim] -> W+ [N, num_ws, w_dim]; W+ passes through unchanged."""
        if w.dim() == 2:
            return w.unsqueeze(1).repeat(1, self.num_ws, 1)
        return w

    # -------------------------------------------------------------- synthesis

    def render_sequence(
        self, frames: Iterable[torch.Tensor], batch_size: int = 1, **kwargs: Any
    ) -> Iterator[torch.Tensor]:
        """Images [C, R, R] of a sequence of W+ [num_ws, w_dim] (or w [w_dim]) frames, in
        order, synthesised ``batch_size`` at a time (consecutive batches reuse the cache)."""
        if batch_size < 1:
            raise GeneratorInputError(f"batch_size: expected >= 1, found {batch_size}")
        batch: list[torch.Tensor] = []
        for frame in frames:
            batch.append(frame)
            if len(batch) == batch_size:
                yield from self.synthesize(torch.stack(batch), **kwargs)
                batch = []
        if batch:
            yield from self.synthesize(torch.stack(batch), **kwargs)

    def _prepare_ws(self, ws: torch.Tensor, options: SynthesisOptions) -> torch.Tensor:
        """Also accepts w [N, w_dim] (broadcast to every row)."""
        ws = self.broadcast(ws).to(device=self.device, dtype=torch.float32)
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.config.w_dim):
            raise GeneratorInputError(
                f"W+: expected shape [N, {self.num_ws}, {self.config.w_dim}], "
                f"found {list(ws.shape)}"
            )
        return ws
