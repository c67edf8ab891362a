"""DiscoFaceGAN's generator: StyleGAN v1 (TF ``networks_stylegan.py`` semantics) in torch.

Mapping: the 286-d input (3DMM coefficients + noise) goes through ``mapping_layers`` dense
layers without pixel norm; equalised learning rate (runtime weight = weight * gain /
sqrt(fan_in) * lrmul, bias * lrmul, gain sqrt(2)); leaky ReLU 0.2 without output gain.

Synthesis, per style layer i (one W+ row each): [conv] -> (+ noise * per-channel strength)
-> + bias -> leaky ReLU -> instance norm (eps 1e-8) -> x * (style_scale + 1) + style_shift,
where (scale, shift) = dense(w_i) with gain 1. Layer 0 starts from the learned constant;
up-sampling layers are conv(nearest 2x) below ``fused_min_res`` and the fused transposed
convolution above it (TF pads the 3x3 kernel and sums its four shifts into a 4x4 stride-2
kernel), each followed by the [1, 2, 1] blur. ToRGB is a 1x1 conv + bias without style.

Both up-sampling variants run as one stride-2 transposed convolution with a 4x4 kernel: for
the fused layers that is TF's own operation; nearest up-sampling followed by a 3x3
convolution equals it with the mirrored kernel (16 instead of 36 multiplications per input
pixel). Instance norm (two-pass, like TF) and style modulation work in place over channels-last
memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..stylegan2.generator import (
    FullyConnected,
    GeneratorInputError,
    NoiseAndPrecision,
    SynthesisState,
    check_shape,
    load_frozen,
    random_noise,
    tensor_version,
)
from .config import DFGConfig, check_state_shapes, expected_state_shapes

LRELU_SLOPE = 0.2
ACT_GAIN = math.sqrt(2.0)
INSTANCE_NORM_EPS = 1e-8
BF16_MIN_RES = 32
"""bf16 synthesis keeps the blocks below this size in float32 (their previews are then the
exact images). Each bf16 layer adds about 0.3 % rms of rounding noise (weights, inputs and
convolution outputs contribute alike; the ToRGB heads little), and every later layer
amplifies it, so the first layers' rounding weighs most in the image: at the released
architecture (random weights, rig-mapped and random W+) the 64 and 128 px previews were
0.8-1.8 % off (max over the image range) with every block in bf16, 0.4-0.8 % with the 4-16 px
blocks in float32, which are 6 % of the synthesis' multiply-adds (8 % of a pass to 128 px)."""

# TF pads the 3x3 kernel by one and sums its four shifts: along each axis the 4 taps are
# (k0, k0 + k1, k1 + k2, k2) = SUM_TAPS @ (k0, k1, k2).
SUM_TAPS = ((1.0, 0.0, 0.0), (1.0, 1.0, 0.0), (0.0, 1.0, 1.0), (0.0, 0.0, 1.0))


def transposed_kernel(weight: torch.Tensor, kind: str) -> torch.Tensor:
    """3x3 kernels [O, I, 3, 3] of an up-sampling layer -> the [I, O, 4, 4] weight of the
    equivalent ``conv_transpose2d(stride=2, padding=1)``.

    "up_fused": TF's padded and summed kernel (conv2d_transpose does not flip it).
    "up" (nearest 2x, then the 3x3 conv): output 2m sees (x[m-1], x[m], x[m]) and 2m + 1 sees
    (x[m], x[m], x[m+1]), which is the transposed convolution with the mirrored summed kernel.
    """
    s = torch.tensor(SUM_TAPS, dtype=torch.float64, device=weight.device)
    k = torch.einsum("ak,oikl,bl->ioab", s, weight.double(), s)
    if kind == "up":
        k = k.flip(2, 3)
    return k.to(weight.dtype)


def blur_kernel(taps: tuple[float, ...], channels: int) -> torch.Tensor:
    """Depthwise normalised outer(f, f): [channels, 1, K, K] float32."""
    f = torch.tensor(taps, dtype=torch.float64)
    k = torch.outer(f, f)
    return (k / k.sum()).float().expand(channels, 1, len(taps), len(taps)).contiguous()


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class MappingNetwork(nn.Module):
    """z [N, z_dim] (coefficients + noise, no normalisation) -> w [N, w_dim]."""

    w_avg: torch.Tensor

    def __init__(self, config: DFGConfig) -> None:
        super().__init__()
        self.config = config
        for i in range(config.mapping_layers):
            fan_in = config.z_dim if i == 0 else config.w_dim
            layer = FullyConnected(fan_in, config.w_dim, config.mapping_lr_multiplier,
                                   gain=ACT_GAIN)
            self.add_module(f"fc{i}", layer)
        self.register_buffer("w_avg", torch.zeros(config.w_dim))

    def forward(self, z: torch.Tensor, batched: bool = False) -> torch.Tensor:
        check_shape("z", z, (None, self.config.z_dim))
        x = z.float()
        for i in range(self.config.mapping_layers):
            x = F.leaky_relu(getattr(self, f"fc{i}")(x, batched), LRELU_SLOPE)
        return x


class StyleLayer(nn.Module):
    """Style layer ``index``: [conv] + noise + bias + lrelu + instance norm + style mod."""

    noise_const: torch.Tensor
    blur: torch.Tensor

    def __init__(self, config: DFGConfig, index: int) -> None:
        super().__init__()
        self.index = index
        self.kind = config.layer_kind(index)
        self.res = config.layer_resolution(index)
        cin, cout = config.layer_channels(index)
        self.channels = cout
        if self.kind != "const":
            self.weight = nn.Parameter(torch.zeros(cout, cin, 3, 3))
            self.weight_gain = ACT_GAIN / math.sqrt(cin * 9)
        self.noise_strength = nn.Parameter(torch.zeros(cout))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.style = FullyConnected(config.w_dim, 2 * cout)
        self.register_buffer("noise_const", torch.zeros(self.res, self.res))
        if self.kind.startswith("up"):
            self.register_buffer(
                "blur", blur_kernel(config.blur_filter, cout), persistent=False
            )
        self._prepared: dict[tuple[object, ...], torch.Tensor] = {}

    def conv_weight(self, dtype: torch.dtype, fmt: torch.memory_format) -> torch.Tensor:
        """Runtime kernel ([O, I, 3, 3], or the [I, O, 4, 4] transposed-convolution weight when
        up-sampling) in ``dtype``/``fmt``, cached until the stored weight changes."""
        key = (self.weight.data_ptr(), tensor_version(self.weight), self.weight.device, dtype,
               fmt)
        cached = self._prepared.get(key)
        if cached is None:
            w = self.weight.detach() * self.weight_gain
            if self.kind != "conv":
                w = transposed_kernel(w, self.kind)
            cached = w.to(dtype).contiguous(memory_format=fmt)
            self._prepared = {key: cached}
        return cached

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise: torch.Tensor | None,
        out_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """One sample: x [1, I, R', R'] (the constant for layer 0) -> [1, O, R, R] in
        ``out_dtype`` (default x's); w [1, w_dim]; noise [1, 1, R, R] unit variance or None.

        In reduced precision the convolution runs in x's dtype and everything after it
        (noise, lrelu, instance norm, style) in float32, rounded once at the end: bf16
        rounding between those passes would be amplified by the normalisation of maps whose
        spread is small next to their mean."""
        out_dtype = out_dtype or x.dtype
        fmt = _memory_format(x)
        bias = self.bias.to(x.dtype)
        # The bias is added by the last linear op: before the noise instead of after it,
        # which changes nothing but the rounding.
        if self.kind == "conv":
            x = F.conv2d(x, self.conv_weight(x.dtype, fmt), bias, padding=1)
        elif self.kind != "const":
            x = F.conv_transpose2d(x, self.conv_weight(x.dtype, fmt), stride=2, padding=1)
            pad = self.blur.shape[-1] // 2
            x = F.conv2d(x, self.blur.to(x.dtype), bias, padding=pad, groups=self.channels)
        else:
            x = (x + bias.view(1, -1, 1, 1)).contiguous(memory_format=fmt)
        if x.dtype != torch.float32:
            x = x.float()  # keeps the memory format
        if noise is not None:
            strength = self.noise_strength.view(1, -1, 1, 1).to(x.dtype)
            x = x.addcmul_(noise.to(x.dtype), strength)
        x = F.leaky_relu_(x, LRELU_SLOPE)
        style = self.style(w.float())[0]
        x = instance_norm_style(x, style[: self.channels] + 1, style[self.channels :])
        return x if x.dtype == out_dtype else x.to(out_dtype)


def instance_norm_style(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """TF instance_norm (eps 1e-8) then style modulation for one sample: x [1, C, H, W],
    scale (= style + 1) and shift [C] -> (x - mean) / sqrt(var + eps) * scale + shift.

    Two passes like TF: the mean first (accumulated in float32), then the variance of the
    centred values. The one-pass E[x^2] - mean^2 loses (mean/std)^2 ulps to cancellation,
    which ruins near-constant maps (a learned constant, a flat region). Works in place on a
    2-D view with the channels contiguous ([H W, C] for channels-last memory, [C, H W]
    otherwise): centre, sum of squares, one affine pass."""
    if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad):
        # Autograd (photo inversion) cannot run the in-place passes: the same maths out of place.
        centred = x - x.mean(dim=(2, 3), keepdim=True, dtype=torch.float32).to(x.dtype)
        var = centred.square().mean(dim=(2, 3), keepdim=True)
        gain = (var + INSTANCE_NORM_EPS).rsqrt() * scale.view(1, -1, 1, 1)
        return centred * gain + shift.view(1, -1, 1, 1)
    channels = x.shape[1]
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        x = x.contiguous()
    if channels > 1 and x.is_contiguous(memory_format=torch.channels_last):
        flat, dim = x.permute(0, 2, 3, 1).reshape(-1, channels), 0
    else:
        flat, dim = x.reshape(channels, -1), 1
    count = flat.shape[dim]
    mean = flat.mean(dim, dtype=torch.float32)
    flat.sub_(mean if dim == 0 else mean[:, None])  # x - mean is exact for near-mean x
    # |x - mean|^2 by the vectorised norm reduction (twice as fast as a dot product here).
    var = torch.linalg.vector_norm(flat, dim=dim, dtype=torch.float32).square() / count
    gain = (var + INSTANCE_NORM_EPS).rsqrt() * scale
    offset = shift
    if dim == 1:
        gain, offset = gain[:, None], offset[:, None]
    torch.addcmul(offset.to(flat.dtype), flat, gain.to(flat.dtype), out=flat)
    return x


class ToRGB(nn.Module):
    """1x1 conv (gain 1, equalised) + bias: features [N, C, R, R] -> float32 image."""

    def __init__(self, config: DFGConfig, res: int) -> None:
        super().__init__()
        channels = config.channels(res)
        self.weight = nn.Parameter(torch.zeros(config.img_channels, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(config.img_channels))
        self.weight_gain = 1.0 / math.sqrt(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        return F.conv2d(x, w, self.bias.to(x.dtype)).float().contiguous()


@dataclass(frozen=True)
class DFGStep:
    """One unit of synthesis: style layer ``layer`` (W+ row ``layer``) or the ToRGB of block
    ``res`` (layer=None). ``index`` is the step's place in execution order."""

    index: int
    res: int
    layer: int | None

    @property
    def w_index(self) -> int | None:
        """The W+ row this step consumes (None: a ToRGB, which has no style)."""
        return self.layer

    @property
    def makes_image(self) -> bool:
        return self.layer is None

    @property
    def starts_block(self) -> bool:
        """Layer 0 (the constant) and every up-sampling layer begin a block."""
        return self.layer is not None and self.layer % 2 == 0


def synthesis_steps(config: DFGConfig) -> tuple[DFGStep, ...]:
    """[layer 0, layer 1, torgb 4, layer 2, layer 3, torgb 8, ...]."""
    steps: list[DFGStep] = []
    for i in range(config.num_ws):
        steps.append(DFGStep(len(steps), config.layer_resolution(i), i))
        if i % 2 == 1:
            steps.append(DFGStep(len(steps), config.layer_resolution(i), None))
    return tuple(steps)


@dataclass(frozen=True)
class DFGSynthesisOptions(NoiseAndPrecision):
    """``NoiseAndPrecision`` for DiscoFaceGAN: noise_mode "const" is the checkpoint's noise
    (DiscoFaceGAN's randomize_noise=False); precision "bf16" (previews on native-bf16
    hardware) runs the layers from BF16_MIN_RES px on in it, "fp16" (CUDA) every layer; the
    image and the statistics of the style dense layers stay float32; channels_last: None =
    on CPU."""

    @property
    def dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
            self.precision
        ]

    def layer_dtype(self, res: int) -> torch.dtype:
        """The compute dtype of the style layers (and ToRGB) of the ``res`` px block."""
        if self.precision == "bf16" and res < BF16_MIN_RES:
            return torch.float32
        return self.dtype

    def memory_format(self, device: torch.device) -> torch.memory_format:
        use_cl = device.type == "cpu" if self.channels_last is None else self.channels_last
        return torch.channels_last if use_cl else torch.contiguous_format


class SynthesisNetwork(nn.Module):
    """W+ [N, num_ws, w_dim] -> image [N, img_channels, R, R] float32 (nominally [-1, 1])."""

    def __init__(self, config: DFGConfig) -> None:
        super().__init__()
        self.config = config
        self.const = nn.Parameter(torch.zeros(config.channels(4), 4, 4))
        for i in range(config.num_ws):
            self.add_module(f"layer{i}", StyleLayer(config, i))
        for res in config.block_resolutions:
            self.add_module(f"torgb{res}", ToRGB(config, res))
        self.steps = synthesis_steps(config)

    def layer(self, index: int) -> StyleLayer:
        layer = getattr(self, f"layer{index}")
        assert isinstance(layer, StyleLayer)
        return layer

    def run_step(
        self, step: DFGStep, state: SynthesisState, ws: torch.Tensor, options: DFGSynthesisOptions
    ) -> SynthesisState:
        """Execute one step on (features, image); never modifies its inputs, so earlier states
        can be kept and resumed from. Samples run one at a time (batch-independent bits)."""
        x, _ = state
        if step.layer is None:
            assert x is not None
            return x, getattr(self, f"torgb{step.res}")(x)
        layer = self.layer(step.layer)
        dtype = options.layer_dtype(step.res)
        if step.layer == 0:
            fmt = options.memory_format(ws.device)
            # The constant stays float32: layer 0 only adds to it and normalises it.
            x = self.const.unsqueeze(0).contiguous(memory_format=fmt)
            inputs = [x] * ws.shape[0]
        else:
            assert x is not None
            # The first bf16 layer rounds its float32 input (a no-op in float32).
            inputs = [x[n : n + 1].to(dtype) for n in range(x.shape[0])]
        outs = [
            layer(inputs[n], ws[n : n + 1, step.layer], self._noise(layer, n, options), dtype)
            for n in range(ws.shape[0])
        ]
        return (outs[0] if len(outs) == 1 else torch.cat(outs)), None

    def _noise(
        self, layer: StyleLayer, sample: int, options: DFGSynthesisOptions
    ) -> torch.Tensor | None:
        if options.noise_mode == "none":
            return None
        if options.noise_mode == "const":
            return layer.noise_const.view(1, 1, layer.res, layer.res)
        seeds = options.noise_seeds
        assert seeds is not None
        seed = seeds[0] if len(seeds) == 1 else seeds[sample]
        return random_noise(seed, layer.index, layer.res).to(layer.noise_const.device)

    def forward(
        self, ws: torch.Tensor, options: DFGSynthesisOptions | None = None
    ) -> torch.Tensor:
        """The final image; intermediate ToRGB heads are skipped."""
        options = options or DFGSynthesisOptions()
        check_ws(self.config, ws)
        check_noise_seeds(options, ws.shape[0])
        state: SynthesisState = (None, None)
        final = self.config.img_resolution
        for step in self.steps:
            if step.layer is not None or step.res == final:
                state = self.run_step(step, state, ws, options)
        assert state[1] is not None
        return state[1]


class DFGGenerator(nn.Module):
    """Mapping + synthesis with the state-dict names of ``config.expected_state_shapes``."""

    def __init__(self, config: DFGConfig) -> None:
        super().__init__()
        self.config = config
        self.mapping = MappingNetwork(config)
        self.synthesis = SynthesisNetwork(config)

    @classmethod
    def from_state_dict(
        cls, config: DFGConfig, state: Mapping[str, torch.Tensor], source: str = "state dict"
    ) -> DFGGenerator:
        """Build from project-named tensors; every key and shape is checked."""
        state = dict(state)
        check_state_shapes(config, state, source)
        return load_frozen(cls(config), state, source)

    def map(self, z: torch.Tensor, batched: bool = False) -> torch.Tensor:
        """z [N, z_dim] -> W+ [N, num_ws, w_dim] (the broadcast mapping output)."""
        w = self.mapping(z, batched)
        return w.unsqueeze(1).repeat(1, self.config.num_ws, 1)

    def forward(
        self, z: torch.Tensor, options: DFGSynthesisOptions | None = None
    ) -> torch.Tensor:
        return self.synthesis(self.map(z), options)


def random_state_dict(config: DFGConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with TF StyleGAN's initialisation (stored weights N(0, 1), mapping
    weights N(0, 1/lrmul^2), constant ones), except that biases, noise strengths, w_avg and
    the constant get small random values so that every term is exercised. Tests, benchmarks."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in expected_state_shapes(config).items():
        value = torch.randn(shape, generator=gen)
        if key.startswith("mapping.fc") and key.endswith("weight"):
            value = value / config.mapping_lr_multiplier
        elif key.endswith(("bias", "noise_strength", "w_avg")):
            value = 0.1 * value
        elif key == "synthesis.const":
            value = 1.0 + 0.1 * value
        state[key] = value
    return state


def check_ws(config: DFGConfig, ws: torch.Tensor) -> None:
    check_shape("W+", ws, (None, config.num_ws, config.w_dim))


def check_noise_seeds(options: DFGSynthesisOptions, batch: int) -> None:
    seeds = options.noise_seeds
    if options.noise_mode == "random" and seeds is not None and len(seeds) not in (1, batch):
        raise GeneratorInputError(f"noise_seeds: expected 1 or {batch} seeds, found {len(seeds)}")

