"""StyleGAN2 building blocks in plain torch (no custom CUDA): FIR filters, 2x up-sampling,
weight (de)modulation, bias + activation. Formulas: docs/REFERENCE.md §1.2 and §1.3.

The convolution kernels are folded so that every layer is one library convolution plus at
most two in-place passes over its output (noise, leaky ReLU): per-sample modulation and
demodulation, the activation gain and the FIR gain all live in the (small) weights. A fused
oneDNN variant (bottom of this file) removes those passes too, for CPU inference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import kernels
from .config import ACTIVATIONS as ACTIVATION_NAMES

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
DEMOD_EPS = 1e-8
UP_GAIN = 4.0  # FIR gain after 2x zero-insertion: up ** 2


ActFn = Callable[[torch.Tensor, bool], torch.Tensor]
"""(x, may work in place) -> activation(x)."""


@dataclass(frozen=True)
class Activation:
    """One of NVIDIA's bias_act activations: ``func`` (in place where ``inplace``), its
    default ``gain``, and whether it is positively homogeneous (act(a x) = a act(x) for
    a > 0), which lets the gain be folded into the weights, bias and noise before it.
    ``onednn_slope``: the leaky-ReLU slope oneDNN's fused convolution computes it with
    (None: oneDNN has no fused form)."""

    func: ActFn
    gain: float
    homogeneous: bool
    onednn_slope: float | None = None


def _pure(f: Callable[[torch.Tensor], torch.Tensor]) -> ActFn:
    return lambda x, inplace: f(x)


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, inplace: x, 1.0, True),
    "relu": Activation(lambda x, inplace: F.relu_(x) if inplace else F.relu(x), LRELU_GAIN, True,
                       0.0),
    "lrelu": Activation(
        lambda x, inplace: F.leaky_relu_(x, LRELU_SLOPE) if inplace
        else F.leaky_relu(x, LRELU_SLOPE),
        LRELU_GAIN, True, LRELU_SLOPE,
    ),
    "tanh": Activation(_pure(torch.tanh), 1.0, False),
    "sigmoid": Activation(_pure(torch.sigmoid), 1.0, False),
    "elu": Activation(_pure(F.elu), 1.0, False),
    "selu": Activation(_pure(F.selu), 1.0, False),
    "softplus": Activation(_pure(F.softplus), 1.0, False),
    "swish": Activation(_pure(lambda x: torch.sigmoid(x) * x), LRELU_GAIN, False),
}
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES


def bias_act(
    x: torch.Tensor, bias: torch.Tensor | None, act: str, gain: float = 1.0
) -> torch.Tensor:
    """NVIDIA's bias_act for [N, C] or [N, C, H, W]: act(x + bias) * gain (gain multiplies
    the activation's default gain)."""
    if bias is not None:
        x = x + bias.reshape([-1 if i == 1 else 1 for i in range(x.dim())])
    spec = ACTIVATIONS[act]
    x = spec.func(x, False)
    total = spec.gain * gain
    return x if total == 1.0 else x * total


def resample_filter(kernel: Sequence[float]) -> torch.Tensor:
    """NVIDIA's ``resample_filter`` buffer: outer(k, k) normalised to sum 1, [K, K] float32."""
    k = torch.as_tensor(kernel, dtype=torch.float64)
    f = torch.outer(k, k)
    return (f / f.sum()).to(torch.float32)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) over dim 1 ([N, C])."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def upsample_2x(x: torch.Tensor, fir: torch.Tensor) -> torch.Tensor:
    """Zero-insertion 2x up-sampling + FIR with gain 4 (NVIDIA ``upsample2d``, pads
    (K/2, K/2 - 1)): [N, C, H, W] -> [N, C, 2H, 2W].

    A depthwise stride-2 transposed convolution with the (symmetric) filter computes exactly
    that sum without materialising the zeros.
    """
    channels, k = x.shape[1], fir.shape[-1]
    weight = _depthwise_fir(fir, x)
    return F.conv_transpose2d(x, weight, stride=2, padding=k // 2 - 1, groups=channels)


def _depthwise_fir(fir: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """FIR [K, K] with gain 4 as a depthwise weight [C, 1, K, K] for ``like`` [N, C, H, W]."""
    k = fir.shape[-1]
    weight = (fir * UP_GAIN).to(like.dtype).expand(like.shape[1], 1, k, k)
    return weight.contiguous(memory_format=memory_format_of(like))


def tap_energy(weight: torch.Tensor) -> torch.Tensor:
    """sum over the kernel taps of W^2: weight [O, I, kh, kw] -> [O, I] float32. With it the
    demodulation of any style vector s is rsqrt(tap_energy @ s^2 + eps), without forming
    the modulated weight first."""
    return weight.float().square().sum(dim=(2, 3))


def modulation_scales(
    styles: torch.Tensor, energy: torch.Tensor | None, gain: float = 1.0
) -> torch.Tensor:
    """Per-sample factors of the modulated weight W[o,i,k] * scale[n,o,i]:
    scale = s[n,i] * d[n,o] * gain, d[n,o] = 1/sqrt(sum_i,k (W[o,i,k] s[n,i])^2 + 1e-8)
    (``energy`` from ``tap_energy``; None = no demodulation). styles [N, I] -> [N, O, I]."""
    styles = styles.float()
    if energy is None:
        return (styles * gain).unsqueeze(1)
    rows = [
        (torch.mv(energy, s.square()) + DEMOD_EPS).rsqrt().mul(gain).outer(s)
        for s in styles  # one matrix-vector product per sample: batch-independent rounding
    ]
    return torch.stack(rows)


def modulated_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    scales: torch.Tensor,
    bias: torch.Tensor | None,
    up_fir: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Modulated convolution, one sample at a time (a sample's result does not depend on
    the batch). x [N, I, H, W]; scales [N, O, I] from ``modulation_scales``; bias [O].

    - 3x3 or 1x1 same-size: weight [O, I, k, k] -> [N, O, H, W].
    - up_fir [K, K] given: 2x up-sampling (NVIDIA conv2d_resample, up=2): weight given
      transposed, [I, O, 3, 3]; stride-2 transposed conv (unflipped), then the FIR with gain 4
      and pads K/2 - 1, then the bias -> [N, O, 2H, 2W].
    - noise [N or 1, 1, H_out, W_out] in x's dtype: added to the output inside the last
      convolution; only where ``noise_fusion_available(x)``.

    Weights should be stored in x's memory format (channels-last for oneDNN's fast path).
    """
    outs = []
    b = None if bias is None else bias.to(x.dtype)
    onednn = up_fir is None and memory_format_of(x) == torch.channels_last and fusion_available(x)
    for n in range(x.shape[0]):
        xn = x[n : n + 1]
        into = None if noise is None else noise_buffer(noise[n : n + 1] if noise.shape[0] > 1
                                                       else noise, weight, up_fir is not None)
        if up_fir is None:
            w = (weight * scales[n][:, :, None, None]).to(x.dtype)
            if into is not None:
                outs.append(kernels.conv_add_(into, xn, w, b, weight.shape[-1] // 2))
            elif onednn:  # torch's own dispatch picks a slower kernel for 1x1 -> 3 channels
                outs.append(onednn_conv(xn, w, b, lrelu=False))
            else:
                outs.append(F.conv2d(xn, w, b, padding=weight.shape[-1] // 2))
        else:
            w = (weight * scales[n].t()[:, :, None, None]).to(x.dtype)
            y = F.conv_transpose2d(xn, w, stride=2)
            outs.append(fir_filter(y, up_fir, b, into))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def noise_fusion_available(x: torch.Tensor) -> bool:
    """Whether ``modulated_conv`` can add noise inside oneDNN's convolution for x: reduced
    precision (one bfloat16 rounding instead of two; float32 keeps its separate addition and
    its bits), channels-last, ``fusion_available`` and ``kernels.conv_add_supported``."""
    return (
        x.dtype != torch.float32
        and memory_format_of(x) == torch.channels_last
        and fusion_available(x)
        and kernels.conv_add_supported(x.dtype)
    )


def noise_buffer(noise: torch.Tensor, weight: torch.Tensor, transposed: bool) -> torch.Tensor:
    """A convolution's output buffer holding its noise: noise [1, 1, H, W] repeated over the
    output channels of ``weight`` ([O, I, k, k], or [I, O, k, k] when ``transposed``) ->
    [1, O, H, W] channels-last, in noise's dtype."""
    channels = weight.shape[1 if transposed else 0]
    out = torch.empty(
        (1, channels, *noise.shape[2:]),
        dtype=noise.dtype,
        device=noise.device,
        memory_format=torch.channels_last,
    )
    return out.copy_(noise.expand(out.shape))


def fir_filter(
    y: torch.Tensor,
    fir: torch.Tensor,
    bias: torch.Tensor | None,
    into: torch.Tensor | None = None,
) -> torch.Tensor:
    """Depthwise FIR [K, K] with gain 4 and pads K/2 - 1 each side, plus a per-channel bias:
    [N, C, H, W] -> [N, C, H - 1, W - 1] (the 2R + 1 output of a stride-2 transposed 3x3
    conv -> 2R). ``into`` [1, C, H - 1, W - 1] channels-last (N = 1; only where
    ``kernels.conv_add_supported``): the result is added to it in place, rounded once."""
    channels, k = y.shape[1], fir.shape[-1]
    weight = _depthwise_fir(fir, y)
    if into is not None:
        return kernels.conv_add_(into, y, weight, bias, k // 2 - 1, groups=channels)
    return F.conv2d(y, weight, bias, padding=k // 2 - 1, groups=channels)


def add_noise_act_clamp(
    x: torch.Tensor,
    noise: torch.Tensor | None,
    act: str,
    post_gain: float,
    clamp: float | None,
) -> torch.Tensor:
    """x (+ noise, broadcast [N or 1, 1, H, W]) -> activation ``act`` -> * ``post_gain`` ->
    clamp to +-clamp (NVIDIA's bias_act order: gain before clamp).

    In place when no gradient is recorded. For a homogeneous activation the caller folds its
    gain into x and passes post_gain 1 (the bias is already in x)."""
    inplace = not (torch.is_grad_enabled() and x.requires_grad)
    if noise is not None:
        x = x.add_(noise) if inplace else x + noise
    x = ACTIVATIONS[act].func(x, inplace)
    if post_gain != 1.0:
        x = x.mul_(post_gain) if inplace else x * post_gain
    if clamp is not None:
        x = x.clamp_(-clamp, clamp) if inplace else x.clamp(-clamp, clamp)
    return x


# ---------------------------------------------------------------------------------------
# Fused CPU inference path (oneDNN): convolution + bias + leaky ReLU in one pass, the noise
# entering as extra input channels (weight 1 on the centre tap) instead of a separate pass,
# and 2x up-convolutions in polyphase form: the stride-2 transposed conv followed by the FIR
# equals one 3x3 convolution at the input resolution with 4 x Cout outputs (one per output
# pixel phase; 4x the multiply-adds of the transposed conv, but a far faster kernel in bf16),
# whose pixel shuffle is written straight into the next layer's input buffer.

def fusion_available(x: torch.Tensor) -> bool:
    """Whether the oneDNN fused ops can run on x: CPU, gradient recording off (the ops have
    no autograd formula; styles carry gradients even when x does not), and the probe says
    oneDNN has a working kernel for x's dtype on this CPU (``kernels``)."""
    return (
        x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and kernels.pointwise_conv_supported(x.dtype)
    )


def onednn_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lrelu: bool
) -> torch.Tensor:
    """Same-size k x k convolution + bias (+ leaky ReLU(0.2)) in one oneDNN call, where
    ``fusion_available``. x [1, I, H, W] channels-last, weight [O, I, k, k] -> [1, O, H, W]."""
    slope = LRELU_SLOPE if lrelu else None
    return kernels.pointwise_conv(x, weight, bias, weight.shape[-1] // 2, slope)


def polyphase_up_kernel(weight: torch.Tensor, fir: torch.Tensor) -> torch.Tensor:
    """The 2x up-convolution (stride-2 transposed conv, then FIR with gain 4 and pads K/2 - 1)
    as a 3x3 correlation at the input resolution: weight [O, I, 3, 3] -> [4 O, I, 3, 3]
    giving output pixel (2 q + a, 2 r + b) of every channel o.

    In 1-D the composite kernel is the full convolution K = fir * w (6 taps for K = 4) and
    phase a reads input q - 1, q, q + 1 with taps K[4 + a], K[2 + a], K[a]. K must be 4.
    Output channels are phase-major: p O + o holds phase p = 2 a + b of channel o."""
    out_ch, in_ch = weight.shape[:2]
    k = fir.shape[-1]
    if k != 4:
        raise ValueError(f"the polyphase up-convolution supports 4-tap FIRs, found {k}")
    taps = weight.reshape(out_ch * in_ch, 1, 3, 3)
    flipped = (fir.to(weight.dtype) * UP_GAIN).flip(0, 1)[None, None]  # full conv = correlation
    composite = F.conv2d(F.pad(taps, (3, 3, 3, 3)), flipped)  # [O*I, 1, 6, 6]
    composite = composite.reshape(out_ch, in_ch, 6, 6)
    phases = [
        composite[:, :, [4 + a, 2 + a, a]][:, :, :, [4 + b, 2 + b, b]]
        for a in (0, 1)
        for b in (0, 1)
    ]
    return torch.stack(phases).reshape(4 * out_ch, in_ch, 3, 3)


def noise_slots(phases: int) -> int:
    """Input channels reserved for ``phases`` noise maps: rounded up to an even count
    (oneDNN is much slower on odd channel counts)."""
    return phases + phases % 2


def noise_input_weights(
    out_channels: int, inputs: int, phases: int, like: torch.Tensor
) -> torch.Tensor:
    """Weights [out_channels, inputs, 3, 3] that copy noise input channel p (centre tap) to
    the output channels of phase p (phase-major: o // (out_channels / phases) == p); inputs
    beyond ``phases`` are zero padding."""
    w = torch.zeros(out_channels, inputs, 3, 3, dtype=like.dtype, device=like.device)
    rows = torch.arange(out_channels, device=like.device)
    w[rows, rows // (out_channels // phases), 1, 1] = 1.0
    return w


def with_noise_channels(x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    """[1, C, H, W] + noise [1, k, H, W] -> channels-last [1, C + noise_slots(k), H, W]
    (padding channels zero; x itself when noise is None)."""
    if noise is None:
        return x.contiguous(memory_format=torch.channels_last)
    channels, phases = x.shape[1], noise.shape[1]
    out = torch.empty(
        (1, channels + noise_slots(phases), *x.shape[2:]),
        dtype=x.dtype,
        device=x.device,
        memory_format=torch.channels_last,
    )
    out[:, :channels] = x
    out[:, channels : channels + phases] = noise
    out[:, channels + phases :] = 0
    return out


def fused_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    scales: torch.Tensor,
    bias: torch.Tensor,
    phases: int,
    dtype: torch.dtype,
    slope: float | None = LRELU_SLOPE,
) -> torch.Tensor:
    """Modulated 3x3 conv + bias + leaky ReLU(slope; None: none) for one sample, noise
    already in the input.

    x [1, I + noise_slots(phases), H, W] (phases = 0: no noise); weight [O, I, 3, 3] (or a
    polyphase kernel) in float32; scales [O, I]; bias [O] -> [1, O, H, W] in ``dtype``."""
    w = weight * scales[:, :, None, None]
    if phases:
        w = torch.cat([w, noise_input_weights(w.shape[0], noise_slots(phases), phases, w)], 1)
    w = w.to(dtype).contiguous(memory_format=torch.channels_last)
    return kernels.pointwise_conv(x, w, bias.to(dtype), 1, slope)


def pixel_shuffle_into(out: torch.Tensor, y: torch.Tensor) -> None:
    """Write the pixel shuffle of y [1, 4 C, h, w] (phase-major channels, see
    ``polyphase_up_kernel``) into out [1, C', 2h, 2w] channels-last (C' >= C; channels
    beyond C untouched). Both sides are addressed as their memory layout, so the copy moves
    runs of C contiguous values."""
    channels, h, w = y.shape[1] // 4, y.shape[2], y.shape[3]
    dst = out.permute(0, 2, 3, 1).reshape(h, 2, w, 2, -1)
    assert dst.data_ptr() == out.data_ptr()  # a view, not a copy
    src = y.permute(0, 2, 3, 1).view(h, w, 2, 2, channels).permute(0, 2, 1, 3, 4)
    dst[..., :channels].copy_(src)


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last if x [N, C, H, W] is laid out so (C > 1), else contiguous."""
    if x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
