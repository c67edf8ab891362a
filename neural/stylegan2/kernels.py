"""Which CPU kernels this process may use: CPU feature probes (dtype x instruction set) and,
for the private oneDNN ops the fused paths call, a real call at first use (cached).

torch's public convolutions pick a working kernel on every CPU (oneDNN, or ATen's own when
oneDNN lacks one). ``torch.ops.mkldnn._convolution_pointwise`` does not: it raises when the
CPU (or oneDNN capped by ``ONEDNN_MAX_CPU_ISA``) has no kernel for the dtype, e.g. float16
without AVX512-FP16 / AVX-NE-CONVERT, or bfloat16 on an AVX2-only oneDNN. Callers ask
``pointwise_conv_supported(dtype)`` (``conv_add_supported(dtype)`` for the in-place
convolution + addition) and fall back to ``torch.nn.functional`` otherwise.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_POINTWISE: Callable[..., torch.Tensor] | None = getattr(
    getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None
)
_POINTWISE_ADD_: Callable[..., torch.Tensor] | None = getattr(
    getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise_", None), "binary", None
)

# Instruction sets oneDNN needs for a native kernel of each reduced-precision dtype (any one).
NATIVE_FEATURES: dict[torch.dtype, tuple[str, ...]] = {
    torch.bfloat16: ("avx512_bf16", "amx_bf16", "avx_ne_convert"),
    torch.float16: ("avx512_fp16", "amx_fp16", "avx_ne_convert"),
}


@dataclass(frozen=True)
class CpuFeatures:
    """What the CPU offers and what torch dispatches to.

    capability: ATen's vector ISA (``torch.backends.cpu.get_cpu_capability()``: "AVX2",
    "AVX512", ...; ``ATEN_CPU_CAPABILITY`` lowers it); flags: the relevant /proc/cpuinfo
    flags (plus torch's own probes where it has them); onednn: oneDNN is built in."""

    capability: str
    flags: frozenset[str]
    onednn: bool

    def has_native(self, dtype: torch.dtype) -> bool:
        """Whether the CPU has an instruction set for native ``dtype`` convolutions
        (float32: always)."""
        wanted = NATIVE_FEATURES.get(dtype)
        return wanted is None or any(f in self.flags for f in wanted)

    def missing(self, dtype: torch.dtype) -> str:
        """The instruction sets a native ``dtype`` kernel needs, named for a skip or error."""
        return " or ".join(NATIVE_FEATURES.get(dtype, ()))


def read_cpu_features() -> CpuFeatures:
    """The CPU's features now (uncached; ``cpu_features`` caches them for the process).
    torch's own probes decide the flags they cover; /proc/cpuinfo the others."""
    flags: set[str] = set()
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("flags"):
                        flags.update(line.split(":", 1)[1].split())
                        break
        except OSError:
            pass
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported",
              "amx_fp16": "_is_amx_fp16_supported"}
    for flag, name in probes.items():
        probe = getattr(torch.cpu, name, None)
        if callable(probe):
            (flags.add if probe() else flags.discard)(flag)
    relevant = {f for f in flags if f.startswith(("avx", "amx", "fma", "f16c"))}
    return CpuFeatures(
        capability=torch.backends.cpu.get_cpu_capability(),
        flags=frozenset(relevant),
        onednn=bool(torch.backends.mkldnn.is_available()),
    )


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """``read_cpu_features`` once per process."""
    return read_cpu_features()


@functools.cache
def pointwise_conv_supported(dtype: torch.dtype) -> bool:
    """Whether oneDNN's fused convolution (``_convolution_pointwise``: conv + bias + leaky
    ReLU, channels-last) runs in ``dtype`` here: the op exists, the CPU has the dtype's
    instruction set (``CpuFeatures.has_native``), and a real call on a small problem
    succeeds and agrees with ``F.conv2d`` in float32 (a capped or broken oneDNN fails it).
    Asked once per dtype and process."""
    features = cpu_features()
    if _POINTWISE is None or not features.onednn or not features.has_native(dtype):
        return False
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 6, 6, generator=gen)
    w = torch.randn(8, 16, 3, 3, generator=gen) * 0.25
    b = torch.randn(8, generator=gen)
    try:
        with torch.no_grad():
            xl = x.to(dtype).contiguous(memory_format=torch.channels_last)
            wl = w.to(dtype).contiguous(memory_format=torch.channels_last)
            y = _POINTWISE(xl, wl, b.to(dtype), [1, 1], [1, 1], [1, 1], 1, "leaky_relu", [0.2], "")
            ref = F.leaky_relu(F.conv2d(x, w, b, padding=1), 0.2)
    except (RuntimeError, TypeError, ValueError, NotImplementedError):
        return False
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    scale = float(ref.abs().max())
    return y.shape == ref.shape and float((y.float() - ref).abs().max()) <= tol * scale


def pointwise_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: int,
    lrelu_slope: float | None,
) -> torch.Tensor:
    """oneDNN's conv + bias (+ leaky ReLU) in one call; only where
    ``pointwise_conv_supported(x.dtype)``. x [1, I, H, W] channels-last, weight [O, I, k, k]
    -> [1, O, H, W]."""
    assert _POINTWISE is not None
    attr, scalars = ("leaky_relu", [lrelu_slope]) if lrelu_slope is not None else ("none", [])
    pads = [padding, padding]
    return _POINTWISE(x, weight, bias, pads, [1, 1], [1, 1], 1, attr, scalars, "")


@functools.cache
def conv_add_supported(dtype: torch.dtype) -> bool:
    """Whether oneDNN's in-place convolution + addition (``_convolution_pointwise_.binary``
    "add": out += conv(x) + bias as a sum post-op, rounded once) runs in ``dtype`` here: the
    op exists, ``pointwise_conv_supported(dtype)``, and real calls on small plain and
    depthwise problems write into ``out`` and agree with ``F.conv2d`` + out in float32.
    Asked once per dtype and process."""
    if _POINTWISE_ADD_ is None or not pointwise_conv_supported(dtype):
        return False
    gen = torch.Generator().manual_seed(1)
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    for groups in (1, 8):
        x = torch.randn(1, 8, 7, 7, generator=gen)
        w = torch.randn(8, 8 // groups, 3, 3, generator=gen) * 0.25
        b = torch.randn(8, generator=gen)
        other = torch.randn(1, 8, 7, 7, generator=gen)
        try:
            with torch.no_grad():
                out = _channels_last(other, dtype).clone()  # other stays the reference
                y = conv_add_(out, _channels_last(x, dtype), _channels_last(w, dtype),
                              b.to(dtype), 1, groups)
                ref = F.conv2d(x, w, b, padding=1, groups=groups) + other
        except (RuntimeError, TypeError, ValueError, NotImplementedError):
            return False
        scale = float(ref.abs().max())
        if y.data_ptr() != out.data_ptr() or float((y.float() - ref).abs().max()) > tol * scale:
            return False
    return True


def conv_add_(
    out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: int,
    groups: int = 1,
) -> torch.Tensor:
    """out += conv(x) + bias in one oneDNN call (accumulated in float32, rounded once); only
    where ``conv_add_supported(x.dtype)``. out [1, O, H, W] and x [1, I, H', W'] channels-last
    in one dtype, weight [O, I / groups, k, k] -> out."""
    assert _POINTWISE_ADD_ is not None
    pads = [padding, padding]
    return _POINTWISE_ADD_(out, x, weight, bias, pads, [1, 1], [1, 1], groups, "add", None,
                           None, [], "")


def _channels_last(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.to(dtype).contiguous(memory_format=torch.channels_last)


@functools.lru_cache(maxsize=1)
def cpu_model_name() -> str:
    """The CPU's model name as lscpu prints it ("Model name"), or /proc/cpuinfo's, or
    the platform's processor string."""
    import platform
    import shutil
    import subprocess

    if shutil.which("lscpu"):
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        for line in out.splitlines():
            if line.strip().lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe() -> str:
    """One line for logs and benchmarks: ATen capability, native reduced-precision ISAs and
    which dtypes the fused oneDNN convolution runs in."""
    f = cpu_features()
    native = [n for n in ("avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16", "avx_ne_convert")
              if n in f.flags]
    dtypes = (torch.float32, torch.bfloat16, torch.float16)
    fused = [str(d).removeprefix("torch.") for d in dtypes if pointwise_conv_supported(d)]
    adds = [str(d).removeprefix("torch.") for d in dtypes if conv_add_supported(d)]
    return (
        f"ATen {f.capability}; native {'/'.join(native) or 'none'}; "
        f"fused oneDNN conv: {', '.join(fused) or 'none'}; conv + add: {', '.join(adds) or 'none'}"
    )
