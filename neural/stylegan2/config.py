"""StyleGAN2 generator architecture description and the NVIDIA state-dict layout it implies.

Every checkpoint reader produces a ``StyleGAN2Config`` plus a float32 state dict named exactly
as NVIDIA's stylegan2-ada-pytorch ``G_ema.state_dict()`` (docs/REFERENCE.md §1.1), and checks
it against ``expected_state_shapes(config)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..config_json import config_from_dict
from ..errors import CheckpointError, NeuralError

SUPPORTED_ARCHITECTURES = ("skip",)
# NVIDIA's bias_act activations (stylegan2-ada-pytorch and TF stylegan2 alike); their functions
# and default gains live in ``ops.ACTIVATIONS``.
ACTIVATIONS = ("linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish")
# NVIDIA never passes the configured FIR to a block's conv1 (it does not resample), so its
# ``resample_filter`` buffer always holds this default kernel.
DEFAULT_RESAMPLE_KERNEL: tuple[int, ...] = (1, 3, 3, 1)


class GeneratorConfigError(NeuralError):
    """A generator configuration is invalid or describes an unsupported architecture."""


class ResolutionLadder:
    """Blocks of 4, 8, ..., ``img_resolution`` px and their W+ rows: the same in StyleGAN v1
    (DiscoFaceGAN) and v2, mixed into both generator configs."""

    img_resolution: int

    @property
    def num_ws(self) -> int:
        """Number of W+ rows (style layers): 2 * log2(img_resolution) - 2 (18 at 1024)."""
        return 2 * int(math.log2(self.img_resolution)) - 2

    @property
    def block_resolutions(self) -> tuple[int, ...]:
        """Output resolutions of the synthesis blocks: 4, 8, ..., img_resolution."""
        return tuple(2**i for i in range(2, int(math.log2(self.img_resolution)) + 1))


def require_int(name: str, value: Any, minimum: int, error: type[NeuralError]) -> None:
    """Raise ``error`` unless config field ``name`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"field {name}: expected an integer, found {value!r}")
    if value < minimum:
        raise error(f"field {name}: expected >= {minimum}, found {value}")


def shape_mismatch(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, Any]) -> str:
    """What keeps ``state`` from having exactly the keys and shapes of ``expected`` (missing,
    unexpected, mis-shaped: "key X: expected shape A, found B"; the first 8), or ''."""
    problems = [f"missing key {k} (shape {expected[k]})" for k in expected if k not in state]
    problems += [f"unexpected key {k}" for k in state if k not in expected]
    for k, shape in expected.items():
        if k in state and tuple(state[k].shape) != shape:
            problems.append(f"key {k}: expected shape {shape}, found {tuple(state[k].shape)}")
    more = f"; and {len(problems) - 8} more" if len(problems) > 8 else ""
    return "; ".join(problems[:8]) + more


@dataclass(frozen=True)
class StyleGAN2Config(ResolutionLadder):
    """Architecture of a StyleGAN2 generator (NVIDIA stylegan2-ada-pytorch naming).

    Defaults are FFHQ-1024 config-f. ``channel_base`` follows the PyTorch convention
    (= 2 x TF ``fmap_base``); channels of the block at resolution R are
    ``min(channel_base // R, channel_max)``.
    """

    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 0
    img_resolution: int = 1024
    img_channels: int = 3
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 0
    conv_clamp: float | None = None
    architecture: str = "skip"
    resample_kernel: tuple[int | float, ...] = DEFAULT_RESAMPLE_KERNEL
    w_avg_beta: float = 0.995
    mapping_activation: str = "lrelu"
    synthesis_activation: str = "lrelu"

    def __post_init__(self) -> None:
        # JSON gives lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "resample_kernel", tuple(self.resample_kernel))
        _validate(self)

    def layer_resample_kernel(self, key: str) -> tuple[int | float, ...]:
        """The FIR kernel of state-dict buffer ``key`` (``synthesis.b{R}[.conv0|.conv1]
        .resample_filter``): the configured one, except conv1's (NVIDIA's default)."""
        return DEFAULT_RESAMPLE_KERNEL if ".conv1." in key else self.resample_kernel

    def channels(self, res: int) -> int:
        """Feature channels of the block at resolution ``res``."""
        if res not in self.block_resolutions:
            raise GeneratorConfigError(
                f"resolution {res} is not a block of this generator "
                f"(blocks: {', '.join(map(str, self.block_resolutions))})"
            )
        return min(self.channel_base // res, self.channel_max)

    @property
    def fp16_resolution(self) -> int:
        """Smallest block resolution that runs in fp16 on CUDA (NVIDIA's rule, at least 8)."""
        return max(2 ** (int(math.log2(self.img_resolution)) + 1 - self.num_fp16_res), 8)

    def uses_fp16(self, res: int) -> bool:
        """Whether the block at ``res`` is marked fp16 (honoured on CUDA only)."""
        return self.num_fp16_res > 0 and res >= self.fp16_resolution

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resample_kernel"] = list(self.resample_kernel)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> StyleGAN2Config:
        """Build from a dict; unknown keys are an error, missing keys take the defaults."""
        return config_from_dict(cls, data, source, GeneratorConfigError, "generator")

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> StyleGAN2Config:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GeneratorConfigError(f"{source}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source)


def _require_int(name: str, value: Any, minimum: int) -> None:
    require_int(name, value, minimum, GeneratorConfigError)


def _require_positive_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise GeneratorConfigError(f"field {name}: expected a positive number, found {value!r}")


def _validate(c: StyleGAN2Config) -> None:
    _require_int("z_dim", c.z_dim, 1)
    _require_int("w_dim", c.w_dim, 1)
    _require_int("c_dim", c.c_dim, 0)
    _require_int("img_resolution", c.img_resolution, 4)
    if c.img_resolution & (c.img_resolution - 1):
        raise GeneratorConfigError(
            f"field img_resolution: expected a power of two >= 4, found {c.img_resolution}"
        )
    _require_int("img_channels", c.img_channels, 1)
    _require_int("mapping_layers", c.mapping_layers, 1)
    _require_positive_float("mapping_lr_multiplier", c.mapping_lr_multiplier)
    _require_int("channel_base", c.channel_base, 1)
    _require_int("channel_max", c.channel_max, 1)
    _require_int("num_fp16_res", c.num_fp16_res, 0)
    if c.conv_clamp is not None:
        _require_positive_float("conv_clamp", c.conv_clamp)
    if c.architecture not in SUPPORTED_ARCHITECTURES:
        raise GeneratorConfigError(
            f"field architecture: only {', '.join(SUPPORTED_ARCHITECTURES)!s} generators are "
            f"supported (progressive per-block RGB outputs), found {c.architecture!r}"
        )
    k = c.resample_kernel
    if (
        len(k) < 2
        or len(k) % 2
        or any(isinstance(v, bool) or not isinstance(v, int | float) for v in k)
        or sum(k) <= 0
        or k != k[::-1]
    ):
        raise GeneratorConfigError(
            "field resample_kernel: expected a symmetric 1-D FIR kernel with an even number of "
            f"taps and a positive sum (e.g. [1, 3, 3, 1]), found {list(k)}"
        )
    _require_positive_float("w_avg_beta", c.w_avg_beta)
    for name in ("mapping_activation", "synthesis_activation"):
        value = getattr(c, name)
        if value not in ACTIVATIONS:
            raise GeneratorConfigError(
                f"field {name}: expected one of {', '.join(ACTIVATIONS)} (NVIDIA's bias_act "
                f"activations), found {value!r}"
            )
    smallest = c.channel_base // c.img_resolution
    if smallest < 1:
        raise GeneratorConfigError(
            f"field channel_base: {c.channel_base} gives 0 channels at {c.img_resolution} px "
            f"(channels = min(channel_base // R, channel_max)); expected >= {c.img_resolution}"
        )


def expected_state_shapes(config: StyleGAN2Config) -> dict[str, tuple[int, ...]]:
    """Every key of the NVIDIA generator state dict (no ``G_ema.`` prefix) -> its shape.

    Includes the buffers (``mapping.w_avg``, ``*.noise_const``, ``*.resample_filter``), in
    NVIDIA's registration order (synthesis, then mapping).
    """
    c = config
    k = len(c.resample_kernel)
    shapes: dict[str, tuple[int, ...]] = {}

    def layer(prefix: str, cin: int, cout: int, res: int) -> None:
        kl = len(c.layer_resample_kernel(f"{prefix}.resample_filter"))
        shapes[f"{prefix}.weight"] = (cout, cin, 3, 3)
        shapes[f"{prefix}.noise_strength"] = ()
        shapes[f"{prefix}.bias"] = (cout,)
        shapes[f"{prefix}.resample_filter"] = (kl, kl)
        shapes[f"{prefix}.noise_const"] = (res, res)
        shapes[f"{prefix}.affine.weight"] = (cin, c.w_dim)
        shapes[f"{prefix}.affine.bias"] = (cin,)

    for res in c.block_resolutions:
        block = f"synthesis.b{res}"
        cout = c.channels(res)
        if res == 4:
            shapes[f"{block}.const"] = (cout, 4, 4)
        shapes[f"{block}.resample_filter"] = (k, k)
        if res > 4:
            layer(f"{block}.conv0", c.channels(res // 2), cout, res)
        layer(f"{block}.conv1", cout, cout, res)
        shapes[f"{block}.torgb.weight"] = (c.img_channels, cout, 1, 1)
        shapes[f"{block}.torgb.bias"] = (c.img_channels,)
        shapes[f"{block}.torgb.affine.weight"] = (cout, c.w_dim)
        shapes[f"{block}.torgb.affine.bias"] = (cout,)

    shapes["mapping.w_avg"] = (c.w_dim,)
    if c.c_dim > 0:
        shapes["mapping.embed.weight"] = (c.w_dim, c.c_dim)
        shapes["mapping.embed.bias"] = (c.w_dim,)
    for i in range(c.mapping_layers):
        fan_in = (c.z_dim + (c.w_dim if c.c_dim > 0 else 0)) if i == 0 else c.w_dim
        shapes[f"mapping.fc{i}.weight"] = (c.w_dim, fan_in)
        shapes[f"mapping.fc{i}.bias"] = (c.w_dim,)
    return shapes


def check_state_shapes(
    config: StyleGAN2Config, state: dict[str, Any], source: str = "state dict"
) -> None:
    """Raise ``CheckpointError`` unless ``state`` has exactly the keys and shapes of
    ``expected_state_shapes(config)``; the message lists what is missing, unexpected or
    mis-shaped ("key X: expected shape A, found B")."""
    problems = shape_mismatch(expected_state_shapes(config), state)
    if problems:
        raise CheckpointError(
            f"{source}: does not match the generator config "
            f"({config.img_resolution} px, {config.mapping_layers} mapping layers, "
            f"channel_base {config.channel_base}): {problems}"
        )
