"""``nfr bench --suite stylegan2``: StyleGAN2 inference speed on random weights.

FFHQ-1024 config-f architecture (and a 256 px, channel_base 16384 model), batch 1, 2
threads, fp32 unless named bf16. Efficiency compares analytic FLOPs with the fp32 matmul
peak measured in the same run, right before the timed renders (the machine is shared, so
the peak moves with its load).
"""

from __future__ import annotations

from itertools import cycle
from typing import Any

import torch

from . import bench_nvidia
from .bench_baseline import compare, stylegan2_baseline
from .bench_timing import best_ms, interleaved_best_ms
from .engine import (
    ProgressiveEngine,
    StyleGAN2Engine,
    bf16_supported,
    configure_inference_process,
)
from .stylegan2.config import StyleGAN2Config
from .stylegan2.generator import Generator, random_state_dict

THREADS = 2


def synthesis_gflop(config: StyleGAN2Config, stop_res: int | None = None) -> dict[int, float]:
    """GFLOP per block (2 x multiply-adds of the convolutions, the up-sampling FIRs and
    ToRGB; element-wise work and modulation are negligible and not counted)."""
    out: dict[int, float] = {}
    k2 = len(config.resample_kernel) ** 2
    rgb = config.img_channels
    for res in config.block_resolutions:
        if stop_res is not None and res > stop_res:
            break
        c = config.channels(res)
        macs = c * c * 9 * res * res + rgb * c * res * res
        if res > 4:
            c_in = config.channels(res // 2)
            macs += c * c_in * 9 * (res // 2) ** 2  # stride-2 transposed conv, at input size
            macs += k2 * c * res * res  # FIR after it
            macs += (k2 // 4) * rgb * res * res  # image up-sampling (polyphase taps)
        out[res] = 2 * macs / 1e9
    return out


def matmul_peak_gflops(size: int = 2048, repeats: int = 4) -> float:
    """fp32 matmul throughput right now (best of ``repeats``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = best_ms(lambda: a @ b, repeats) / 1e3
    return 2 * size**3 / best / 1e9


def fine_edit_ms(engine: ProgressiveEngine, ws: torch.Tensor, first_row: int) -> float:
    """Best time of a re-synthesis after an edit of W+ rows >= ``first_row`` only: a caching
    ``engine`` resumes mid-network (checked on every call)."""
    edits = [ws.clone() for _ in range(2)]
    for i, edited in enumerate(edits):
        edited[:, first_row:] += 0.5 * (i + 1)
    engine.synthesize(ws)
    alternating = cycle(edits)

    def edit() -> None:
        engine.synthesize(next(alternating))
        assert engine.last_run is not None and engine.last_run.resumed_at_step > 0

    return best_ms(edit, repeats=4)


def progressive_ms(
    engine: ProgressiveEngine, ws: torch.Tensor, previews: bool, repeats: int = 3
) -> tuple[float, float]:
    """Best (first image, last image) milliseconds of a progressive run from scratch (the
    cache cleared), with the engine's live previews or without."""
    import time

    first = final = float("inf")
    for _ in range(repeats + 1):  # the first run warms up (and measures the previews)
        engine.clear_cache()
        start = time.perf_counter()
        seen = None
        for _block in engine.progressive(ws, previews=None if previews else False):
            seen = (time.perf_counter() - start) * 1e3 if seen is None else seen
        end = (time.perf_counter() - start) * 1e3
        if engine.preview_errors is not None or not previews:
            first, final = min(first, seen or end), min(final, end)
    return first, final


def live_metrics(report: Any, prefix: str, engine: ProgressiveEngine, ws: torch.Tensor) -> None:
    """Progressive first/last image times with and without bf16 live previews, and which
    blocks the engine previews in bf16 (per-block errors in the notes)."""
    list(engine.progressive(ws))  # the first run measures the bf16 preview error
    assert engine.preview_errors is not None
    report.add(f"{prefix}_bf16_preview_error", engine.preview_error or 0.0, "of image range")
    report.notes[f"{prefix}_live_previews"] = {
        "bf16_up_to_px": engine.preview_max_res,
        "errors_by_block": {r: round(e, 5) for r, e in engine.preview_errors.items()},
        "bf16_speedup_by_block": {
            r: round(v, 3) for r, v in (engine.preview_speedups or {}).items()
        },
    }
    for label, previews in (("fp32", False), ("live", True)):
        first, final = progressive_ms(engine, ws, previews)
        report.add(f"{prefix}_progressive_{label}_first_ms", first, "ms")
        report.add(f"{prefix}_progressive_{label}_final_ms", final, "ms")


def _engine(config: StyleGAN2Config, **kwargs: Any) -> StyleGAN2Engine:
    gen = Generator.from_state_dict(config, random_state_dict(config, seed=0))
    return StyleGAN2Engine(gen, "cpu", **kwargs)


def _full_ms(config: StyleGAN2Config) -> float:
    engine = _engine(config, cache=False)
    ws = engine.w_from_seed(1, psi=0.7)
    return best_ms(lambda: engine.synthesize(ws))


def _sefa_all_layers_ms(config: StyleGAN2Config) -> float:
    """SeFa over every W+ row of ``config`` (uncached: the factorisation itself)."""
    from .sefa import factorize, parse_layers

    state = random_state_dict(config, seed=0)
    layers = parse_layers("all", config.num_ws)
    return best_ms(lambda: factorize(config, state, layers))


def run(report: Any, nvidia_repo: bench_nvidia.NvidiaRepo | None = None) -> None:
    applied = configure_inference_process(threads=THREADS)
    report.notes["stylegan2_process"] = applied
    ffhq = StyleGAN2Config()
    g256 = StyleGAN2Config(img_resolution=256, channel_base=16384)
    flops = synthesis_gflop(ffhq)
    report.notes["stylegan2_gflop_per_block_1024"] = {r: round(v, 2) for r, v in flops.items()}

    engine = _engine(ffhq, cache=False)
    ws = engine.w_from_seed(1, psi=0.7)

    peak = matmul_peak_gflops()
    full = best_ms(lambda: engine.synthesize(ws))
    peak = max(peak, matmul_peak_gflops())
    report.add("fp32_matmul_peak_gflops", peak, "GFLOP/s")
    report.add("g1024_full_ms", full, "ms")
    report.add("g1024_full_gflop", sum(flops.values()), "GFLOP")
    report.add("g1024_full_efficiency", sum(flops.values()) / (full / 1e3) / peak, "of peak")
    report.add("g1024_first64_ms", best_ms(lambda: engine.synthesize(ws, stop_res=64)), "ms")
    report.add(
        "g1024_preview256_ms", best_ms(lambda: engine.synthesize(ws, stop_res=256)), "ms"
    )
    reference = engine.synthesize(ws)
    compare(report, "g1024", engine.synthesize, ws, stylegan2_baseline(engine.generator),
            sum(flops.values()), matmul_peak_gflops)

    fine_edit = fine_edit_ms(_engine(ffhq, cache=True), ws, first_row=12)
    report.add("g1024_fine_edit_ms", fine_edit, "ms")
    report.add("g1024_fine_edit_vs_full", fine_edit / full, "x")
    report.add("g256_full_ms", _full_ms(g256), "ms")
    report.add("sefa_all_layers_ms", _sefa_all_layers_ms(ffhq), "ms")

    if bf16_supported("cpu"):
        fast = _engine(ffhq, cache=False, precision="bf16")
        report.add("g1024_bf16_ms", best_ms(lambda: fast.synthesize(ws)), "ms")
        report.add(
            "g1024_preview256_bf16_ms",
            best_ms(lambda: fast.synthesize(ws, stop_res=256)),
            "ms",
        )
        err = (fast.synthesize(ws) - reference).abs()
        span = float(reference.max() - reference.min())
        report.add("g1024_bf16_max_error", float(err.max()) / span, "of image range")
        report.add("g1024_bf16_mean_error", float(err.mean()) / span, "of image range")
        same_run = interleaved_best_ms(
            {"fp32": lambda: engine.synthesize(ws), "bf16": lambda: fast.synthesize(ws)})
        report.add("g1024_bf16_vs_fp32_speedup", same_run["fp32"] / same_run["bf16"],
                   "x faster")
        report.notes["g1024_bf16_vs_fp32_same_run_ms"] = {
            name: round(ms, 1) for name, ms in same_run.items()
        }
        live_metrics(report, "g1024", _engine(ffhq, cache=True), ws)
    else:
        report.notes["stylegan2_bf16"] = "skipped: this CPU has no native bf16"

    if nvidia_repo is None:
        report.notes["stylegan2_nvidia"] = bench_nvidia.NOT_RUN
    else:
        bench_nvidia.run(report, nvidia_repo, {"g1024": ffhq, "g256": g256},
                         lambda config: _engine(config, cache=False))
