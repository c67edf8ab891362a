"""``nfr bench --suite dfg``: DiscoFaceGAN inference speed at the released architecture
(256 px, 14 style layers, fmap_base 8192) with random weights, batch 1, 2 threads.

FLOPs are counted twice: "executed" (what this implementation multiplies: the up-sampling
layers as stride-2 transposed convolutions with 4x4 kernels) and "textbook" (the nearest
up-sampling layers as a 3x3 convolution at the output resolution). Efficiency compares the
executed FLOPs per second with the fp32 matmul peak measured in the same run. Target:
``dfg256_full_ms`` <= 300.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..rig.params import RigParams
from .bench_baseline import compare, dfg_baseline
from .bench_stylegan2 import fine_edit_ms, live_metrics, matmul_peak_gflops
from .bench_timing import best_ms
from .discofacegan.backend import DFGEngine
from .discofacegan.config import DFGConfig
from .discofacegan.generator import DFGGenerator, random_state_dict
from .engine import bf16_supported, configure_inference_process

THREADS = 2
TARGET_MS = 300.0


def synthesis_gflop(config: DFGConfig, textbook: bool = False) -> dict[int, float]:
    """GFLOP per block (2 x multiply-adds of the convolutions, the blur and the final ToRGB;
    element-wise work and the style dense layers are negligible and not counted)."""
    out: dict[int, float] = {}
    for res in config.block_resolutions:
        c = config.channels(res)
        macs = 9 * c * c * res * res  # the block's same-size 3x3 conv
        if res > 4:
            c_in = config.channels(res // 2)
            if textbook and res < config.fused_min_res:
                macs += 9 * c_in * c * res * res  # nearest 2x, then 3x3 at the output size
            else:
                macs += 16 * c_in * c * (res // 2) ** 2  # 4x4 transposed conv, stride 2
            macs += len(config.blur_filter) ** 2 * c * res * res
        if res == config.img_resolution:
            macs += config.img_channels * c * res * res
        out[res] = 2 * macs / 1e9
    return out


def run(report: Any) -> None:
    report.notes["dfg_process"] = configure_inference_process(threads=THREADS)
    config = DFGConfig()
    executed, textbook = synthesis_gflop(config), synthesis_gflop(config, textbook=True)
    report.notes["dfg256_gflop_per_block"] = {r: round(v, 2) for r, v in executed.items()}
    generator = DFGGenerator.from_state_dict(config, random_state_dict(config, seed=0))
    w_avg_id = np.zeros((config.num_ws, config.w_dim), np.float32)
    engine = DFGEngine(generator, w_avg_id, cache=False)
    rig = RigParams.sample(np.random.default_rng(0))
    z = engine.input_from_rig(rig, seed=1)
    ws = engine.map(z)

    peak = matmul_peak_gflops()
    full = best_ms(lambda: engine.synthesize(ws))
    peak = max(peak, matmul_peak_gflops())
    total = sum(executed.values())
    report.add("fp32_matmul_peak_gflops", peak, "GFLOP/s")
    report.add("dfg256_full_ms", full, "ms")
    report.add("dfg256_gflop", total, "GFLOP")
    report.add("dfg256_gflop_textbook", sum(textbook.values()), "GFLOP")
    report.add("dfg256_efficiency", total / (full / 1e3) / peak, "of peak")
    report.notes["dfg256_meets_target"] = full <= TARGET_MS
    report.add("dfg256_map_ms", best_ms(lambda: engine.map(z)), "ms")
    report.add("dfg256_preview64_ms", best_ms(lambda: engine.synthesize(ws, stop_res=64)), "ms")

    cached = DFGEngine(generator, w_avg_id, cache=True)
    report.add("dfg256_fine_edit_ms", fine_edit_ms(cached, ws, first_row=10), "ms")

    reference = engine.synthesize(ws)
    compare(report, "dfg256", engine.synthesize, ws, dfg_baseline(generator), total,
            matmul_peak_gflops)

    if bf16_supported("cpu"):
        live_metrics(report, "dfg256", DFGEngine(generator, w_avg_id, cache=True), ws)
        report.add("dfg256_bf16_ms", best_ms(lambda: engine.synthesize(ws, precision="bf16")),
                   "ms")
        err = (engine.synthesize(ws, precision="bf16") - reference).abs()
        span = float(reference.max() - reference.min())
        report.add("dfg256_bf16_mean_error", float(err.mean()) / span, "of image range")
    else:
        report.notes["dfg256_bf16"] = "skipped: this CPU has no native bf16"

