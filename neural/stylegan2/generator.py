"""StyleGAN2 generator (mapping + skip-architecture synthesis) as torch modules whose state
dict has exactly NVIDIA stylegan2-ada-pytorch's names and shapes (docs/REFERENCE.md §1).

Synthesis runs as a flat list of steps (one per conv layer and per ToRGB), each consuming one
W+ row; the engine uses the same steps for progressive output and for resuming from cached
activations, so a resumed run executes exactly the operations of a full one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...contract.catalogue import NOISE_MODES, PRECISIONS, NoiseMode, Precision
from ..errors import CheckpointError, NeuralError
from . import kernels, ops
from .config import (
    DEFAULT_RESAMPLE_KERNEL,
    StyleGAN2Config,
    check_state_shapes,
    expected_state_shapes,
)

# Below this resolution bfloat16 is no faster (a layer's time goes to modulating its weights,
# not to its convolution), and float32 there keeps rounding out of every later block.
BF16_MIN_RES = 16
ModuleT = TypeVar("ModuleT", bound=nn.Module)


class GeneratorInputError(NeuralError, ValueError):
    """A latent, label or option passed to the generator has the wrong shape or value."""


class FullyConnected(nn.Module):
    """Dense layer with equalised learning rate (NVIDIA's FullyConnectedLayer, TF's ``dense``
    + ``apply_bias``): weight [out, in], runtime weight = weight * gain * lr_multiplier /
    sqrt(in_features), runtime bias = bias * lr_multiplier, then ``activation`` (a name of
    ``ops.ACTIVATIONS``) times its default gain, as NVIDIA's bias_act."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        lr_multiplier: float = 1.0,
        activation: str = "linear",
        gain: float = 1.0,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = gain * lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activation = activation
        self._frozen = _FrozenWeights()

    def forward(self, x: torch.Tensor, batched: bool = False) -> torch.Tensor:
        """x [N, in] -> [N, out] (float32). Unless ``batched``, rows are multiplied one at a
        time: a BLAS call's rounding may depend on the batch size, and a sample's result must
        not."""
        weight_t = self._frozen.scaled_t(self.weight, self.weight_gain)
        bias = self.bias * self.bias_gain
        if batched:
            x = torch.addmm(bias, x, weight_t)
        else:
            rows = [torch.addmm(bias, x[n : n + 1], weight_t) for n in range(x.shape[0])]
            x = rows[0] if len(rows) == 1 else torch.cat(rows)
        if self.activation != "linear":
            x = ops.bias_act(x, None, self.activation)
        return x


class MappingNetwork(nn.Module):
    """z [N, z_dim] (+ c [N, c_dim]) -> w [N, w_dim]; ``w_avg`` buffer for truncation.

    Conditional models (c_dim > 0) work as in NVIDIA's code: c goes through ``embed`` (linear),
    is 2nd-moment normalised and concatenated to the normalised z before ``fc0``."""

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.config = config
        if config.c_dim > 0:
            self.embed = FullyConnected(config.c_dim, config.w_dim)
        fan_in = config.z_dim + (config.w_dim if config.c_dim > 0 else 0)
        for i in range(config.mapping_layers):
            layer = FullyConnected(
                fan_in if i == 0 else config.w_dim,
                config.w_dim,
                config.mapping_lr_multiplier,
                activation=config.mapping_activation,
            )
            self.add_module(f"fc{i}", layer)
        self.w_avg: torch.Tensor
        self.register_buffer("w_avg", torch.zeros(config.w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        check_shape("z", z, (None, cfg.z_dim))
        x = ops.normalize_2nd_moment(z.float())
        if cfg.c_dim > 0:
            if c is None:
                raise GeneratorInputError(
                    f"this generator is conditional (c_dim={cfg.c_dim}); pass a class/label "
                    f"vector c of shape [N, {cfg.c_dim}]"
                )
            check_shape("c", c, (z.shape[0], cfg.c_dim))
            y = ops.normalize_2nd_moment(self.embed(c.float()))
            x = torch.cat([x, y], dim=1)
        elif c is not None:
            raise GeneratorInputError("this generator is unconditional (c_dim=0); do not pass c")
        for i in range(cfg.mapping_layers):
            x = getattr(self, f"fc{i}")(x)
        return x


WeightLayout = Literal["conv", "transposed", "polyphase"]


def tensor_version(t: torch.Tensor) -> int:
    """t's in-place modification counter; -1 for an inference tensor (made in inference
    mode), which keeps none: such weights are taken as frozen."""
    return -1 if t.is_inference() else t._version


class _FrozenWeights:
    """Tensors derived from a conv weight (layouts, tap energy), cached while the weight is
    unchanged and frozen; a trainable weight is re-derived on every call so gradients reach
    it."""

    def __init__(self) -> None:
        self._version: tuple[object, ...] | None = None
        self._cache: dict[tuple[object, ...], torch.Tensor] = {}

    def _derive(self, weight: torch.Tensor, key: tuple[object, ...], make: Any) -> torch.Tensor:
        if weight.requires_grad:
            return make()
        version = (weight.data_ptr(), tensor_version(weight), weight.device)
        if version != self._version:
            self._version, self._cache = version, {}
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def layout(
        self,
        weight: torch.Tensor,
        kind: WeightLayout,
        fmt: torch.memory_format,
        fir: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """float32 weight as the convolution wants it: "conv" [O, I, k, k], "transposed"
        [I, O, k, k], "polyphase" [4 O, I, 3, 3] (needs ``fir``), in memory format ``fmt``."""

        def make() -> torch.Tensor:
            w = weight.float()
            if kind == "transposed":
                w = w.transpose(0, 1)
            elif kind == "polyphase":
                assert fir is not None
                w = ops.polyphase_up_kernel(w, fir)
            return w.contiguous(memory_format=fmt)

        return self._derive(weight, (kind, fmt), make)

    def energy(self, weight: torch.Tensor) -> torch.Tensor:
        return self._derive(weight, ("energy",), lambda: ops.tap_energy(weight))

    def scaled_t(self, weight: torch.Tensor, gain: float) -> torch.Tensor:
        """(weight * gain).t() of a dense layer [in, out] (a view of the cached product)."""
        return self._derive(weight, ("scaled", gain), lambda: weight * gain).t()


class SynthesisLayer(nn.Module):
    """Modulated + demodulated 3x3 conv (optionally 2x up-sampling), noise, bias, activation
    (``config.synthesis_activation``, default lrelu) times its gain, clamp at ``conv_clamp``
    (NVIDIA's ``conv_clamp * gain`` with the skip architecture's layer gain 1).

    The gain of a positively homogeneous activation (linear, relu, lrelu) is folded into
    weights, bias and noise, so a layer is one convolution plus in-place noise and activation
    passes, or on the fused path a single oneDNN call; other activations are applied, then
    multiplied by their gain.
    """

    def __init__(
        self, config: StyleGAN2Config, in_channels: int, out_channels: int, res: int, up: bool
    ) -> None:
        super().__init__()
        self.up = up
        self.res = res
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = config.synthesis_activation
        act = ops.ACTIVATIONS[self.activation]
        self.fold_gain = act.gain if act.homogeneous else 1.0
        self.post_gain = 1.0 if act.homogeneous else act.gain
        self.act_clamp = config.conv_clamp
        self.resample_filter: torch.Tensor
        self.noise_const: torch.Tensor
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, 3, 3))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        # NVIDIA hands the configured FIR to up-sampling layers only.
        kernel = config.resample_kernel if up else DEFAULT_RESAMPLE_KERNEL
        self.register_buffer("resample_filter", ops.resample_filter(kernel))
        self.register_buffer("noise_const", torch.zeros(res, res))
        self.affine = FullyConnected(config.w_dim, in_channels)
        self._frozen = _FrozenWeights()

    def scaled_noise(self, noise: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        """Unit noise [N or 1, 1, R, R] -> the term this layer adds (strength x folded gain)."""
        if noise is None:
            return None
        return (noise * (self.noise_strength * self.fold_gain)).to(dtype)

    @property
    def fusable(self) -> bool:
        """Whether ``forward_fused`` can run this layer: oneDNN fuses linear, relu and lrelu,
        and the polyphase up-convolution needs a 4-tap FIR."""
        return ops.ACTIVATIONS[self.activation].homogeneous and (
            not self.up or self.resample_filter.shape[-1] == 4
        )

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """x [N, I, R', R'] -> [N, O, R, R]; w [N, w_dim]; noise [N or 1, 1, R, R] unit noise
        or None."""
        x = x[:, : self.in_channels]  # drop a noise channel prepared for the fused path
        fmt = ops.memory_format_of(x)
        energy = self._frozen.energy(self.weight)
        scales = ops.modulation_scales(self.affine(w), energy, self.fold_gain)
        bias = self.bias * self.fold_gain
        added = self.scaled_noise(noise, x.dtype)
        inside = added if added is not None and ops.noise_fusion_available(x) else None
        if self.up:
            weight = self._frozen.layout(self.weight, "transposed", fmt)
            y = ops.modulated_conv(x, weight, scales, bias, self.resample_filter, inside)
        else:
            weight = self._frozen.layout(self.weight, "conv", fmt)
            y = ops.modulated_conv(x, weight, scales, bias, noise=inside)
        after = added if inside is None else None
        return ops.add_noise_act_clamp(y, after, self.activation, self.post_gain, self.act_clamp)

    def forward_fused(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise: torch.Tensor | None,
        next_noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The fused oneDNN path (CPU inference): same result as ``forward`` up to rounding.

        x [N, I, R', R'], or [N, I + 2, R, R] whose channel I is this layer's scaled noise
        (written by the previous up-layer; channel I + 1 is zero padding). An up-layer writes
        its output into such a buffer [N, O + 2, R, R] holding ``next_noise`` (the next
        layer's scaled noise, [N or 1, 1, R, R]) when given, else returns [N, O, R, R].
        """
        dtype = x.dtype
        assert self.fusable
        slope = ops.ACTIVATIONS[self.activation].onednn_slope
        energy = self._frozen.energy(self.weight)
        scales = ops.modulation_scales(self.affine(w), energy, self.fold_gain)
        bias = self.bias * self.fold_gain
        own_noise = self.scaled_noise(noise, dtype)
        batch = x.shape[0]
        if self.up:
            weight = self._frozen.layout(
                self.weight, "polyphase", torch.contiguous_format, self.resample_filter
            )
            bias = bias.repeat(4)  # phase-major output channels
            extra = 0 if next_noise is None else ops.noise_slots(1)
            out = torch.empty(
                (batch, self.out_channels + extra, self.res, self.res),
                dtype=dtype,
                device=x.device,
                memory_format=torch.channels_last,
            )
            for n in range(batch):
                phases = None if own_noise is None else F.pixel_unshuffle(_sample(own_noise, n), 2)
                xin = ops.with_noise_channels(x[n : n + 1, : self.in_channels], phases)
                scale4 = scales[n].repeat(4, 1)
                y = ops.fused_conv(
                    xin, weight, scale4, bias, 0 if phases is None else 4, dtype, slope
                )
                if self.act_clamp is not None:
                    y = y.clamp_(-self.act_clamp, self.act_clamp)
                ops.pixel_shuffle_into(out[n : n + 1], y)
                if next_noise is not None:
                    out[n : n + 1, self.out_channels] = _sample(next_noise, n)[:, 0]
                    out[n : n + 1, self.out_channels + 1 :] = 0
            return out
        weight = self._frozen.layout(self.weight, "conv", torch.contiguous_format)
        outs = []
        for n in range(batch):
            xn = x[n : n + 1]
            if xn.shape[1] == self.in_channels and own_noise is not None:
                xn = ops.with_noise_channels(xn, _sample(own_noise, n))
            else:
                xn = xn.contiguous(memory_format=torch.channels_last)
            noise_maps = 0 if xn.shape[1] == self.in_channels else 1
            y = ops.fused_conv(xn, weight, scales[n], bias, noise_maps, dtype, slope)
            if self.act_clamp is not None:
                y = y.clamp_(-self.act_clamp, self.act_clamp)
            outs.append(y)
        return outs[0] if batch == 1 else torch.cat(outs).contiguous(
            memory_format=torch.channels_last
        )


def _sample(t: torch.Tensor, n: int) -> torch.Tensor:
    """Row n of a per-sample tensor, or its only row when it is shared by the batch."""
    return t[n : n + 1] if t.shape[0] > 1 else t


class ToRGB(nn.Module):
    """Modulated 1x1 conv without demodulation (styles * 1/sqrt(Cin)), bias, clamp."""

    def __init__(self, config: StyleGAN2Config, in_channels: int) -> None:
        super().__init__()
        self.clamp = config.conv_clamp
        self.weight = nn.Parameter(torch.zeros(config.img_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(config.img_channels))
        self.affine = FullyConnected(config.w_dim, in_channels)
        self.style_gain = 1.0 / math.sqrt(in_channels)
        self._frozen = _FrozenWeights()

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x [N, C, R, R], w [N, w_dim] -> float32 [N, img_channels, R, R]."""
        weight = self._frozen.layout(self.weight, "conv", ops.memory_format_of(x))
        scales = ops.modulation_scales(self.affine(w), None, self.style_gain)
        y = ops.modulated_conv(x, weight, scales, self.bias).float()
        if self.clamp is not None:
            y = y.clamp(-self.clamp, self.clamp)
        return y


class SynthesisBlock(nn.Module):
    """Block of resolution R: (const | 2x up-conv) -> conv -> ToRGB (skip architecture)."""

    def __init__(self, config: StyleGAN2Config, res: int) -> None:
        super().__init__()
        out_ch = config.channels(res)
        self.resample_filter: torch.Tensor
        if res == 4:
            self.const = nn.Parameter(torch.zeros(out_ch, 4, 4))
        self.register_buffer("resample_filter", ops.resample_filter(config.resample_kernel))
        if res > 4:
            self.conv0 = SynthesisLayer(config, config.channels(res // 2), out_ch, res, up=True)
        self.conv1 = SynthesisLayer(config, out_ch, out_ch, res, up=False)
        self.torgb = ToRGB(config, out_ch)


@dataclass(frozen=True)
class SynthesisStep:
    """One unit of synthesis work: a conv layer or a ToRGB of block ``res``, consuming W+ row
    ``w_index``. ``index`` is its position in execution order."""

    index: int
    res: int
    layer: Literal["conv0", "conv1", "torgb"]
    w_index: int

    @property
    def makes_image(self) -> bool:
        """Whether the block's image exists after this step (its ToRGB)."""
        return self.layer == "torgb"

    @property
    def starts_block(self) -> bool:
        """Whether this is the block's first step (where cancellation is checked)."""
        return self.layer == "conv0" or (self.res == 4 and self.layer == "conv1")


def synthesis_steps(config: StyleGAN2Config) -> tuple[SynthesisStep, ...]:
    """Steps in execution order; block 4 uses rows 0, 1 and block 2^(k+2) rows 2k-1, 2k, 2k+1
    (docs/REFERENCE.md §1.4)."""
    steps: list[SynthesisStep] = []
    for k, res in enumerate(config.block_resolutions):
        layers: list[tuple[Literal["conv0", "conv1", "torgb"], int]]
        if res == 4:
            layers = [("conv1", 0), ("torgb", 1)]
        else:
            layers = [("conv0", 2 * k - 1), ("conv1", 2 * k), ("torgb", 2 * k + 1)]
        for layer, w_index in layers:
            steps.append(SynthesisStep(len(steps), res, layer, w_index))
    return tuple(steps)


@dataclass(frozen=True)
class NoiseAndPrecision:
    """Synthesis options every StyleGAN generator takes (the base of ``SynthesisOptions``
    and DiscoFaceGAN's options).

    noise_mode: "const" (the checkpoint's noise_const buffers), "none", or "random" (unit
    Gaussian noise drawn on the CPU from ``noise_seeds``: one seed per sample, or one for
    all; the same seed gives the same noise on every device and in every batch).
    precision: "fp32", "fp16" or "bf16" (what runs in it is the generator's choice).
    channels_last: activation layout; None = the generator's default.
    """

    noise_mode: NoiseMode = "const"
    noise_seeds: tuple[int, ...] | None = None
    precision: Precision = "fp32"
    channels_last: bool | None = None

    def __post_init__(self) -> None:
        if self.noise_mode not in NOISE_MODES:
            raise GeneratorInputError(
                f"noise_mode: expected one of {', '.join(NOISE_MODES)}, found {self.noise_mode!r}"
            )
        if self.precision not in PRECISIONS:
            raise GeneratorInputError(
                f"precision: expected one of {', '.join(PRECISIONS)}, found {self.precision!r}"
            )
        if self.noise_mode == "random" and not self.noise_seeds:
            raise GeneratorInputError(
                "noise_mode 'random' needs noise_seeds (one per sample, or one)"
            )


@dataclass(frozen=True)
class SynthesisOptions(NoiseAndPrecision):
    """How to run StyleGAN2 synthesis (not what): noise, precision and memory layout
    (``NoiseAndPrecision``), and the fused path.

    precision: "fp32"; "fp16" = the blocks the config marks fp16 (``num_fp16_res``) in
    float16, the rest float32 (NVIDIA's inference); "bf16" = the blocks of at least
    ``BF16_MIN_RES`` px in bfloat16, the smaller ones in float32 (reduced-precision previews).
    Styles, weight modulation and the RGB image stay float32.
    channels_last: None = channels-last on CPU (oneDNN's fast path) and for reduced
    precision on CUDA.
    fused: the fused oneDNN path (``SynthesisLayer.forward_fused``; CPU inference only) on
    every block, or never (the default). It is slower than the default path in both float32
    and bfloat16 on AVX512-BF16 CPUs (docs/CPU_KERNELS.md, Reduced precision): its polyphase
    up-convolutions cost 4x the multiply-adds of the transposed conv + FIR they replace, and
    oneDNN runs both at the same rate, while the passes it saves (noise, leaky ReLU) take a
    few per cent of a layer.
    """

    fused: bool = False

    def block_dtype(self, config: StyleGAN2Config, res: int) -> torch.dtype:
        if self.precision == "bf16":
            return torch.bfloat16 if res >= BF16_MIN_RES else torch.float32
        if self.precision == "fp16" and config.uses_fp16(res):
            return torch.float16
        return torch.float32

    def use_fused(self, config: StyleGAN2Config, x: torch.Tensor) -> bool:
        """Whether the blocks run ``forward_fused`` on x; raises where ``fused`` asks for it
        and it cannot run."""
        if not self.fused:
            return False
        if not ops.fusion_available(x):
            raise GeneratorInputError(
                "fused: the fused path needs CPU tensors, no autograd and oneDNN's fused "
                f"convolution in {x.dtype} (here: {kernels.describe()})"
            )
        if not fusable(config):
            raise GeneratorInputError(
                "fused: the fused path needs a linear, relu or lrelu synthesis activation "
                f"and a 4-tap resample_kernel, found {config.synthesis_activation!r} and "
                f"{list(config.resample_kernel)}"
            )
        return True

    def memory_format(self, device: torch.device, dtype: torch.dtype) -> torch.memory_format:
        use_cl = self.channels_last
        if use_cl is None:
            use_cl = device.type == "cpu" or dtype != torch.float32
        return torch.channels_last if use_cl else torch.contiguous_format


def fusable(config: StyleGAN2Config) -> bool:
    """Whether every layer of ``config`` can run ``SynthesisLayer.forward_fused``."""
    act = ops.ACTIVATIONS[config.synthesis_activation]
    return act.homogeneous and len(config.resample_kernel) == 4


SynthesisState = tuple[torch.Tensor | None, torch.Tensor | None]
"""(x [N, C, R, R] features, img [N, img_channels, R, R] float32; None until made) between
steps."""


class SynthesisNetwork(nn.Module):
    """W+ [N, num_ws, w_dim] -> image [N, img_channels, R, R] (float32, nominally [-1, 1])."""

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.config = config
        for res in config.block_resolutions:
            self.add_module(f"b{res}", SynthesisBlock(config, res))
        self.steps = synthesis_steps(config)

    def block(self, res: int) -> SynthesisBlock:
        block = getattr(self, f"b{res}")
        assert isinstance(block, SynthesisBlock)
        return block

    def run_step(
        self,
        step: SynthesisStep,
        state: SynthesisState,
        ws: torch.Tensor,
        options: SynthesisOptions,
    ) -> SynthesisState:
        """Execute one step on (x, img); returns the new state. Never modifies its inputs,
        so earlier states can be kept and resumed from."""
        x, img = state
        block = self.block(step.res)
        w = ws[:, step.w_index].float()
        if step.layer == "torgb":
            assert x is not None
            y = block.torgb(x, w)
            if img is None:
                return x, y
            up = ops.upsample_2x(img, block.resample_filter)
            return x, (y.add_(up) if not y.requires_grad else y + up)
        dtype = options.block_dtype(self.config, step.res)
        if step.res == 4:
            x = block.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        assert x is not None
        if step.layer == "conv0" or step.res == 4:  # entering the block: its dtype and layout
            x = x.to(dtype=dtype, memory_format=options.memory_format(x.device, dtype))
        layer: SynthesisLayer = getattr(block, step.layer)
        noise = self._noise(layer, step, ws.shape[0], options)
        if not options.use_fused(self.config, x):
            return layer(x, w, noise), img
        next_noise = None
        if step.layer == "conv0" and noise is not None:  # conv1's noise rides along in x
            conv1_step = self.steps[step.index + 1]
            next_noise = block.conv1.scaled_noise(
                self._noise(block.conv1, conv1_step, ws.shape[0], options), dtype
            )
        return layer.forward_fused(x, w, noise, next_noise), img

    def _noise(
        self, layer: SynthesisLayer, step: SynthesisStep, batch: int, options: SynthesisOptions
    ) -> torch.Tensor | None:
        if options.noise_mode == "none":
            return None
        if options.noise_mode == "const":
            return layer.noise_const.reshape(1, 1, layer.res, layer.res)
        assert options.noise_seeds is not None
        seeds = options.noise_seeds
        if len(seeds) not in (1, batch):
            raise GeneratorInputError(
                f"noise_seeds: expected 1 or {batch} seeds, found {len(seeds)}"
            )
        per_sample = [seeds[0]] * batch if len(seeds) == 1 else list(seeds)
        noise = torch.cat([random_noise(s, step.index, layer.res) for s in per_sample])
        return noise.to(layer.noise_const.device)

    def forward(self, ws: torch.Tensor, options: SynthesisOptions | None = None) -> torch.Tensor:
        options = options or SynthesisOptions()
        _check_ws(self.config, ws)
        state: SynthesisState = (None, None)
        for step in self.steps:
            state = self.run_step(step, state, ws, options)
        assert state[1] is not None
        return state[1].contiguous()


def random_noise(seed: int, step_index: int, res: int) -> torch.Tensor:
    """Unit Gaussian noise [1, 1, res, res] for one sample and layer, drawn on the CPU from a
    generator seeded by (seed, step_index) so that it is device- and batch-independent."""
    state = np.random.SeedSequence([int(seed), int(step_index)]).generate_state(1, np.uint64)
    gen = torch.Generator().manual_seed(int(state[0]))
    return torch.randn(1, 1, res, res, generator=gen)


class Generator(nn.Module):
    """Mapping + synthesis, with NVIDIA's state-dict names (``mapping.*``, ``synthesis.*``)."""

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.config = config
        self.synthesis = SynthesisNetwork(config)
        self.mapping = MappingNetwork(config)

    @classmethod
    def from_state_dict(
        cls,
        config: StyleGAN2Config,
        state: Mapping[str, torch.Tensor],
        source: str = "state dict",
    ) -> Generator:
        """Build from NVIDIA-named tensors, checking every key and shape (``CheckpointError``)."""
        state = dict(state)
        check_state_shapes(config, state, source)
        for key, value in state.items():
            if not key.endswith("resample_filter"):
                continue
            kernel = config.layer_resample_kernel(key)
            if not torch.allclose(
                value.float().cpu(), ops.resample_filter(kernel), rtol=1e-5, atol=1e-7
            ):
                what = "NVIDIA's default" if kernel != config.resample_kernel else "the config's"
                raise CheckpointError(
                    f"{source}: key {key} holds a FIR filter that is not {what} "
                    f"resample kernel {list(kernel)}"
                )
        return load_frozen(cls(config), state, source)

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        options: SynthesisOptions | None = None,
    ) -> torch.Tensor:
        """z [N, z_dim] -> image [N, img_channels, R, R]."""
        ws = self.map(z, c, truncation_psi, truncation_cutoff)
        return self.synthesis(ws, options)

    def map(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """z [N, z_dim] -> W+ [N, num_ws, w_dim], truncated towards ``mapping.w_avg`` on rows
        [0, cutoff) (None: all rows) as w_avg + psi * (w - w_avg)."""
        w = self.mapping(z, c)
        ws = w.unsqueeze(1).repeat(1, self.config.num_ws, 1)
        return truncate(ws, self.mapping.w_avg, truncation_psi, truncation_cutoff)


def load_frozen(module: ModuleT, state: Mapping[str, torch.Tensor], source: str) -> ModuleT:
    """``module`` with every tensor of ``state`` loaded (float only, as float32), in eval mode
    and without gradients: a generator ready for inference."""
    for key, value in state.items():
        if not value.is_floating_point():
            raise CheckpointError(f"{source}: key {key} has dtype {value.dtype}, expected float")
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return module.eval().requires_grad_(False)


def truncate(
    ws: torch.Tensor, w_avg: torch.Tensor, psi: float, cutoff: int | None = None
) -> torch.Tensor:
    """W+ [N, num_ws, w_dim] -> a copy with rows [0, cutoff) moved to w_avg + psi*(w - w_avg)."""
    ws = ws.clone()
    if psi != 1.0:
        rows = slice(0, cutoff)
        ws[:, rows] = w_avg.to(ws.dtype).lerp(ws[:, rows], psi)
    return ws


def random_state_dict(config: StyleGAN2Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with NVIDIA's initialisation (stored weights N(0,1)/lr_multiplier, affine
    biases 1, noise_const N(0,1)), except that biases, noise strengths and w_avg are drawn
    small but non-zero, so every term of every formula is exercised. For tests and benchmarks.
    """
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in expected_state_shapes(config).items():
        if key.endswith("resample_filter"):
            state[key] = ops.resample_filter(config.layer_resample_kernel(key))
            continue
        value = torch.randn(shape, generator=gen)
        if key.startswith("mapping.fc") and key.endswith("weight"):
            value = value / config.mapping_lr_multiplier
        elif key.endswith("affine.bias"):
            value = 1.0 + 0.1 * value
        elif key.endswith(("bias", "noise_strength")):
            value = 0.1 * value
        elif key == "mapping.w_avg":
            value = 0.1 * value
        state[key] = value
    return state


def check_shape(name: str, t: torch.Tensor, shape: Sequence[int | None]) -> None:
    """Raise GeneratorInputError unless t has ``shape`` (None: any size, shown as N)."""
    if t.dim() != len(shape) or any(
        s is not None and s != d for s, d in zip(shape, t.shape, strict=True)
    ):
        want = "[" + ", ".join("N" if s is None else str(s) for s in shape) + "]"
        raise GeneratorInputError(f"{name}: expected shape {want}, found {list(t.shape)}")


def _check_ws(config: StyleGAN2Config, ws: torch.Tensor) -> None:
    check_shape("W+", ws, (None, config.num_ws, config.w_dim))
