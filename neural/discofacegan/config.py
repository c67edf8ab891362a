"""DiscoFaceGAN generator architecture (StyleGAN v1 as DiscoFaceGAN trains it,
docs/REFERENCE.md §3) and the state-dict layout the project stores it in.

Names (ours; the TF reader maps the released variables onto them):

- ``mapping.fc{i}.weight`` [out, in], ``mapping.fc{i}.bias`` [out]; ``mapping.w_avg`` [w_dim]
  (TF ``dlatent_avg``; DiscoFaceGAN's own truncation uses the identity-average W instead).
- ``synthesis.const`` [C4, 4, 4]: the learned constant input.
- ``synthesis.layer{i}.*`` for W+ row i (= TF noise index): ``weight`` [out, in, 3, 3] (absent
  for layer 0, the constant), ``noise_strength`` [out], ``bias`` [out], ``style.weight``
  [2 out, w_dim], ``style.bias`` [2 out], ``noise_const`` [R, R]. Layer 1 is the 4x4 conv;
  layers 2k and 2k+1 are Conv0_up and Conv1 of the block at 2^(k+2) px.
- ``synthesis.torgb{R}.weight`` [img_channels, C_R, 1, 1], ``.bias``: TF ``ToRGB_lod{n}``
  with R = img_resolution / 2^n. Only the last one makes the final image; the others are
  the progressive-growing heads, used for low-resolution previews.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from ..config_json import config_from_dict
from ..errors import CheckpointError, NeuralError
from ..stylegan2.config import ResolutionLadder, require_int, shape_mismatch

COEFF_DIM = 254  # [id 80 | tex 80 | exp 64 | rot 3 | gamma 27]


class DFGConfigError(NeuralError):
    """A DiscoFaceGAN generator configuration is invalid."""


@dataclass(frozen=True)
class DFGConfig(ResolutionLadder):
    """Architecture of a DiscoFaceGAN (StyleGAN v1) generator; defaults are the release.

    Channels at resolution R follow TF's ``nf(log2(R) - 1) = min(fmap_base * 2 / R,
    fmap_max)``. Up-sampling convolutions whose output is ``fused_min_res`` px or larger are
    fused transposed convolutions (TF ``fused_scale='auto'``: 128); below that they are
    nearest-neighbour up-sampling followed by a 3x3 convolution.
    """

    z_dim: int = COEFF_DIM + 32
    noise_dim: int = 32
    w_dim: int = 512
    img_resolution: int = 256
    img_channels: int = 3
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    fmap_base: int = 8192
    fmap_max: int = 512
    fused_min_res: int = 128
    blur_filter: tuple[float, ...] = (1, 2, 1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blur_filter", tuple(self.blur_filter))
        _validate(self)

    def channels(self, res: int) -> int:
        if res not in self.block_resolutions:
            raise DFGConfigError(
                f"resolution {res} is not a block of this generator "
                f"(blocks: {', '.join(map(str, self.block_resolutions))})"
            )
        return min(self.fmap_base * 2 // res, self.fmap_max)

    def layer_resolution(self, index: int) -> int:
        """Output resolution of style layer ``index`` (0, 1 -> 4; 2k, 2k+1 -> 2^(k+2))."""
        return 2 ** (index // 2 + 2)

    def layer_kind(self, index: int) -> str:
        """'const' | 'conv' | 'up' (nearest + conv) | 'up_fused' (transposed conv)."""
        if index == 0:
            return "const"
        if index % 2 == 1:
            return "conv"
        return "up_fused" if self.layer_resolution(index) >= self.fused_min_res else "up"

    def layer_channels(self, index: int) -> tuple[int, int]:
        """(in, out) channels of style layer ``index``."""
        res = self.layer_resolution(index)
        out = self.channels(res)
        return (self.channels(res // 2) if index % 2 == 0 and index > 0 else out), out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blur_filter"] = list(self.blur_filter)
        return d

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> DFGConfig:
        """Build from a JSON object; unknown keys are an error, missing keys take defaults."""
        return config_from_dict(cls, data, source, DFGConfigError, "DiscoFaceGAN")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _validate(c: DFGConfig) -> None:
    for name, minimum in (("z_dim", 1), ("noise_dim", 0), ("w_dim", 1), ("img_resolution", 8),
                          ("img_channels", 1), ("mapping_layers", 1), ("fmap_base", 1),
                          ("fmap_max", 1), ("fused_min_res", 1)):
        require_int(name, getattr(c, name), minimum, DFGConfigError)
    if c.img_resolution & (c.img_resolution - 1):
        raise DFGConfigError(
            f"field img_resolution: expected a power of two >= 8, found {c.img_resolution}"
        )
    if c.z_dim - c.noise_dim != COEFF_DIM:
        raise DFGConfigError(
            f"fields z_dim/noise_dim: DiscoFaceGAN's input is {COEFF_DIM} 3DMM coefficients "
            f"followed by the noise, so z_dim - noise_dim must be {COEFF_DIM}; found "
            f"{c.z_dim} - {c.noise_dim}"
        )
    lr = c.mapping_lr_multiplier
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
        raise DFGConfigError(f"field mapping_lr_multiplier: expected > 0, found {lr!r}")
    f = c.blur_filter
    if not f or any(isinstance(v, bool) or not isinstance(v, int | float) for v in f) or (
        sum(f) <= 0 or len(f) % 2 == 0 or f != f[::-1]
    ):
        raise DFGConfigError(
            "field blur_filter: expected a symmetric 1-D kernel with an odd number of taps "
            f"and a positive sum (e.g. [1, 2, 1]), found {list(f)}"
        )
    if c.fmap_base * 2 // c.img_resolution < 1:
        raise DFGConfigError(
            f"field fmap_base: {c.fmap_base} gives 0 channels at {c.img_resolution} px "
            "(channels = min(2 fmap_base / R, fmap_max))"
        )


def expected_state_shapes(config: DFGConfig) -> dict[str, tuple[int, ...]]:
    """Every key of the generator's state dict (module docstring) -> its shape."""
    c = config
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(c.mapping_layers):
        shapes[f"mapping.fc{i}.weight"] = (c.w_dim, c.z_dim if i == 0 else c.w_dim)
        shapes[f"mapping.fc{i}.bias"] = (c.w_dim,)
    shapes["mapping.w_avg"] = (c.w_dim,)
    shapes["synthesis.const"] = (c.channels(4), 4, 4)
    for i in range(c.num_ws):
        cin, cout = c.layer_channels(i)
        res = c.layer_resolution(i)
        prefix = f"synthesis.layer{i}"
        if i > 0:
            shapes[f"{prefix}.weight"] = (cout, cin, 3, 3)
        shapes[f"{prefix}.noise_strength"] = (cout,)
        shapes[f"{prefix}.bias"] = (cout,)
        shapes[f"{prefix}.style.weight"] = (2 * cout, c.w_dim)
        shapes[f"{prefix}.style.bias"] = (2 * cout,)
        shapes[f"{prefix}.noise_const"] = (res, res)
    for res in c.block_resolutions:
        shapes[f"synthesis.torgb{res}.weight"] = (c.img_channels, c.channels(res), 1, 1)
        shapes[f"synthesis.torgb{res}.bias"] = (c.img_channels,)
    return shapes


def check_state_shapes(config: DFGConfig, state: dict[str, Any], source: str) -> None:
    """Raise CheckpointError unless ``state`` has exactly the keys and shapes of the config."""
    problems = shape_mismatch(expected_state_shapes(config), state)
    if problems:
        raise CheckpointError(
            f"{source}: does not match the DiscoFaceGAN config ({config.img_resolution} px, "
            f"z_dim {config.z_dim}, w_dim {config.w_dim}): {problems}"
        )
