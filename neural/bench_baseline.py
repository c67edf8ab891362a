"""Plain-torch baselines for ``nfr bench``: the same generator modules (same weights, same
maths) written the textbook way, channels-last, run eagerly and through ``torch.compile``.
The project's synthesis is compared with them in the same run.

StyleGAN2: per layer the modulated, demodulated weight is formed explicitly and used in one
(transposed) convolution, then the FIR, noise, bias, activation with its gain and the clamp
as separate ops. DiscoFaceGAN: nearest up-sampling followed by the 3x3 convolution (or TF's
fused transposed convolution), blur, noise, bias, leaky ReLU, two-pass instance norm and
style modulation as separate ops. Noise is each layer's constant noise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from .bench_timing import interleaved_best_ms
from .discofacegan.generator import DFGGenerator, transposed_kernel
from .stylegan2 import ops
from .stylegan2.generator import FullyConnected, Generator, SynthesisLayer

Synthesis = Callable[[torch.Tensor], torch.Tensor]
"""W+ [1, num_ws, w_dim] -> image [1, C, R, R] float32."""

CL = torch.channels_last


def _fir(x: torch.Tensor, fir: torch.Tensor, pad: int, gain: float) -> torch.Tensor:
    """Depthwise FIR x gain with ``pad`` zeros each side: [N, C, H, W] -> [N, C, H', W']."""
    channels = x.shape[1]
    k = fir.shape[-1]
    weight = (fir * gain).expand(channels, 1, k, k).contiguous(memory_format=CL)
    return F.conv2d(F.pad(x, (pad, pad, pad, pad)), weight, groups=channels)


def _dense(fc: FullyConnected, x: torch.Tensor) -> torch.Tensor:
    """The dense layer's maths inline (no caches, so torch.compile traces one graph)."""
    y = torch.addmm(fc.bias * fc.bias_gain, x, (fc.weight * fc.weight_gain).t())
    return y if fc.activation == "linear" else ops.bias_act(y, None, fc.activation)


def _sg2_layer(layer: SynthesisLayer, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    styles = _dense(layer.affine, w)[0]  # [I]
    weight = layer.weight * styles[None, :, None, None]
    weight = weight * (weight.square().sum(dim=(1, 2, 3), keepdim=True) + ops.DEMOD_EPS).rsqrt()
    if layer.up:
        y = F.conv_transpose2d(x, weight.transpose(0, 1).contiguous(memory_format=CL), stride=2)
        k = layer.resample_filter.shape[-1]
        y = _fir(y, layer.resample_filter, k // 2 - 1, ops.UP_GAIN)
    else:
        y = F.conv2d(x, weight.contiguous(memory_format=CL), padding=1)
    y = y + layer.noise_const * layer.noise_strength
    spec = ops.ACTIVATIONS[layer.activation]
    y = spec.func(y + layer.bias.view(1, -1, 1, 1), False) * spec.gain
    if layer.act_clamp is not None:
        y = y.clamp(-layer.act_clamp, layer.act_clamp)
    return y


def stylegan2_baseline(gen: Generator) -> Synthesis:
    """The textbook StyleGAN2 skip-architecture synthesis over ``gen``'s modules."""
    net = gen.synthesis

    def run(ws: torch.Tensor) -> torch.Tensor:
        x = net.block(4).const[None].contiguous(memory_format=CL)
        img: torch.Tensor | None = None
        for k, res in enumerate(net.config.block_resolutions):
            block = net.block(res)
            if res == 4:
                x = _sg2_layer(block.conv1, x, ws[:, 0])
                w_rgb = ws[:, 1]
            else:
                x = _sg2_layer(block.conv0, x, ws[:, 2 * k - 1])
                x = _sg2_layer(block.conv1, x, ws[:, 2 * k])
                w_rgb = ws[:, 2 * k + 1]
            styles = _dense(block.torgb.affine, w_rgb)[0] * block.torgb.style_gain
            rgb_w = (block.torgb.weight * styles[None, :, None, None]).contiguous(memory_format=CL)
            y = F.conv2d(x, rgb_w, block.torgb.bias)
            if block.torgb.clamp is not None:
                y = y.clamp(-block.torgb.clamp, block.torgb.clamp)
            if img is not None:
                zeros = img.new_zeros(1, img.shape[1], 2 * img.shape[2], 2 * img.shape[3])
                zeros[:, :, ::2, ::2] = img  # zero insertion, then the FIR with gain 4
                img = y + _pad_upsampled(zeros, block.resample_filter)
            else:
                img = y
        assert img is not None
        return img.float().contiguous()

    return run


def _pad_upsampled(zeros: torch.Tensor, fir: torch.Tensor) -> torch.Tensor:
    """NVIDIA upsample2d of an already zero-inserted image: pads (K/2, K/2 - 1), FIR x 4."""
    k = fir.shape[-1]
    padded = F.pad(zeros, (k // 2, k // 2 - 1, k // 2, k // 2 - 1))
    channels = zeros.shape[1]
    weight = (fir * ops.UP_GAIN).expand(channels, 1, k, k)
    return F.conv2d(padded, weight, groups=channels)


def dfg_baseline(gen: DFGGenerator) -> Synthesis:
    """The textbook TF StyleGAN v1 synthesis of DiscoFaceGAN over ``gen``'s modules."""
    net = gen.synthesis
    cfg = net.config

    def run(ws: torch.Tensor) -> torch.Tensor:
        x = net.const[None].contiguous(memory_format=CL)
        for i in range(cfg.num_ws):
            layer = net.layer(i)
            if layer.kind == "conv":
                x = F.conv2d(x, (layer.weight * layer.weight_gain).contiguous(memory_format=CL),
                             padding=1)
            elif layer.kind == "up":
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
                x = F.conv2d(x, (layer.weight * layer.weight_gain).contiguous(memory_format=CL),
                             padding=1)
            elif layer.kind == "up_fused":
                kernel = transposed_kernel(layer.weight * layer.weight_gain, "up_fused")
                x = F.conv_transpose2d(x, kernel.contiguous(memory_format=CL), stride=2,
                                       padding=1)
            if layer.kind.startswith("up"):
                pad = layer.blur.shape[-1] // 2
                x = F.conv2d(x, layer.blur, padding=pad, groups=layer.channels)
            x = x + layer.noise_const * layer.noise_strength.view(1, -1, 1, 1)
            x = F.leaky_relu(x + layer.bias.view(1, -1, 1, 1), 0.2)
            x = x - x.mean(dim=(2, 3), keepdim=True)
            x = x * (x.square().mean(dim=(2, 3), keepdim=True) + 1e-8).rsqrt()
            style = _dense(layer.style, ws[:, i])[0]
            c = layer.channels
            x = x * (style[:c] + 1).view(1, -1, 1, 1) + style[c:].view(1, -1, 1, 1)
        rgb = getattr(net, f"torgb{cfg.img_resolution}")
        weight = (rgb.weight * rgb.weight_gain).contiguous(memory_format=CL)
        return F.conv2d(x, weight, rgb.bias).float().contiguous()

    return run


def compiled(fn: Synthesis, example: torch.Tensor) -> tuple[Synthesis, float]:
    """``torch.compile(fn)`` (inductor, static shapes) and its compile time in seconds (the
    first call)."""
    fast = torch.compile(fn, dynamic=False)
    start = time.perf_counter()
    with torch.inference_mode():
        fast(example)
    return fast, time.perf_counter() - start


def inference(fn: Synthesis) -> Synthesis:
    def run(ws: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return fn(ws)

    return run


def compare(
    report: Any,
    prefix: str,
    ours: Synthesis,
    ws: torch.Tensor,
    baseline: Synthesis,
    gflop: float,
    peak_gflops: Callable[[], float],
    rounds: int = 4,
) -> None:
    """Time the project's synthesis ``ours``, the eager ``baseline`` and its compiled form
    on ``ws`` in interleaved rounds (with the fp32 matmul peak between them: the machine may
    be shared, so each keeps its best time of the run), and report times, speed-ups and
    fractions of the peak."""
    eager = inference(baseline)
    mine, ref = ours(ws), eager(ws)
    span = float(mine.max() - mine.min())
    report.add(f"{prefix}_baseline_max_diff", float((ref - mine).abs().max()) / span,
               "of image range")
    runs: dict[str, Synthesis] = {"ours": ours, "eager": eager}
    try:
        fast, seconds = compiled(baseline, ws)
        runs["compiled"] = inference(fast)
        report.notes[f"{prefix}_baseline_compile_seconds"] = round(seconds, 1)
    except Exception as exc:  # inductor needs a C++ toolchain; report, do not fail the suite
        report.notes[f"{prefix}_baseline_compiled"] = f"torch.compile failed: {exc!s:.200}"
    peaks: list[float] = []
    best = interleaved_best_ms({name: partial(fn, ws) for name, fn in runs.items()}, rounds,
                               lambda: peaks.append(peak_gflops()))
    peak = max(peaks)
    report.add(f"{prefix}_same_run_peak_gflops", peak, "GFLOP/s")
    for name, ms in best.items():
        label = "" if name == "ours" else f"_baseline_{name}"
        report.add(f"{prefix}{label}_same_run_ms", ms, "ms")
        report.add(f"{prefix}{label}_same_run_efficiency", gflop / (ms / 1e3) / peak, "of peak")
        if name != "ours":
            report.add(f"{prefix}_vs_baseline_{name}", ms / best["ours"], "x faster")
