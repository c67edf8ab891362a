"""rosinality/stylegan2-pytorch checkpoints.

Two shapes of file, both ``torch.save`` dicts read by the bounded torch-file reader:
converted weights ``{'g_ema', 'latent_avg'}`` (``convert_weight.py``) and training
checkpoints ``{'g', 'd', 'g_ema', 'g_optim', 'd_optim', 'args', 'ada_aug_p'}`` whose
``args`` is an ``argparse.Namespace`` - read as a checked stand-in. Training checkpoints
carry no ``latent_avg``; ``mapping.w_avg`` is then estimated by running the mapping network
on seeded z (recorded in ``extras['w_avg_source']``).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import CheckpointError
from ..stylegan2.config import StyleGAN2Config, expected_state_shapes
from ..stylegan2.generator import MappingNetwork
from ..stylegan2.ops import resample_filter
from .loaded import ReadResult, finish, make_config, plain, with_resample_filters
from .torch_file import read_torch_file

W_AVG_SAMPLES = 10_000
W_AVG_SEED = 0


def load_torch_checkpoint(path: str | os.PathLike[str]) -> Any:
    """A ``torch.save`` file (zip or legacy) through the bounded, allow-listed torch-file
    reader (``torch_file.read_torch_file``); only ``argparse.Namespace`` is added to the
    weights-file types, as a checked stand-in."""
    return read_torch_file(path)


@dataclass(frozen=True)
class KeyEntry:
    """One tensor: its NVIDIA name, rosinality name and rosinality shape."""

    nvidia: str
    rosinality: str
    shape: tuple[int, ...]


def key_table(config: StyleGAN2Config) -> list[KeyEntry]:
    """Every NVIDIA state key (except w_avg and resample filters) with its rosinality twin.

    Rosinality adds leading 1-dims: conv weights [1,O,I,k,k], the const [1,C,4,4], noise
    strength [1], ToRGB bias [1,3,1,1], noise buffers [1,1,R,R].
    """
    nv = expected_state_shapes(config)
    table: list[KeyEntry] = []

    def add(nvidia: str, rosinality: str, lead: tuple[int, ...] = ()) -> None:
        table.append(KeyEntry(nvidia, rosinality, lead + nv[nvidia]))

    def layer(nvidia: str, rosinality: str, noise: int | None) -> None:
        add(f"{nvidia}.weight", f"{rosinality}.conv.weight", (1,))
        add(f"{nvidia}.affine.weight", f"{rosinality}.conv.modulation.weight")
        add(f"{nvidia}.affine.bias", f"{rosinality}.conv.modulation.bias")
        if noise is None:  # ToRGB
            table.append(KeyEntry(f"{nvidia}.bias", f"{rosinality}.bias",
                                  (1, config.img_channels, 1, 1)))
            return
        add(f"{nvidia}.bias", f"{rosinality}.activate.bias")
        table.append(KeyEntry(f"{nvidia}.noise_strength", f"{rosinality}.noise.weight", (1,)))
        add(f"{nvidia}.noise_const", f"noises.noise_{noise}", (1, 1))

    for i in range(config.mapping_layers):
        add(f"mapping.fc{i}.weight", f"style.{i + 1}.weight")
        add(f"mapping.fc{i}.bias", f"style.{i + 1}.bias")
    add("synthesis.b4.const", "input.input", (1,))
    layer("synthesis.b4.conv1", "conv1", 0)
    layer("synthesis.b4.torgb", "to_rgb1", None)
    for k, res in enumerate(config.block_resolutions[1:]):
        layer(f"synthesis.b{res}.conv0", f"convs.{2 * k}", 2 * k + 1)
        layer(f"synthesis.b{res}.conv1", f"convs.{2 * k + 1}", 2 * k + 2)
        layer(f"synthesis.b{res}.torgb", f"to_rgbs.{k}", None)
    return table


def _blur_keys(config: StyleGAN2Config) -> dict[str, torch.Tensor]:
    """rosinality's rebuilt FIR buffers: the NVIDIA filter times up-sampling gain 4."""
    f = resample_filter(config.resample_kernel) * 4
    out = {}
    for k in range(len(config.block_resolutions) - 1):
        out[f"convs.{2 * k}.conv.blur.kernel"] = f
        out[f"to_rgbs.{k}.upsample.kernel"] = f
    return out


def _shape(state: dict[str, Any], key: str, label: str, ndim: int) -> tuple[int, ...]:
    value = state.get(key)
    if not isinstance(value, torch.Tensor) or value.ndim != ndim:
        found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise CheckpointError(f"{label}: {key}: expected a {ndim}-D tensor, found {found}")
    return tuple(value.shape)


def infer_config(state: dict[str, Any], label: str) -> StyleGAN2Config:
    """Architecture of a rosinality Generator from its tensor shapes."""
    mapping_layers = 0
    while f"style.{mapping_layers + 1}.weight" in state:
        mapping_layers += 1
    if mapping_layers == 0:
        raise CheckpointError(f"{label}: no mapping layer style.1.weight in the generator")
    w_dim, z_dim = _shape(state, "style.1.weight", label, 2)
    blocks = 0
    while f"to_rgbs.{blocks}.conv.weight" in state:
        blocks += 1
    img_resolution = 4 * 2**blocks
    channels = {4: _shape(state, "input.input", label, 4)[1]}
    for k in range(blocks):
        channels[8 * 2**k] = _shape(state, f"convs.{2 * k}.conv.weight", label, 5)[1]
    channel_max = max(channels.values())
    below = [res * c for res, c in sorted(channels.items()) if c < channel_max]
    channel_base = below[0] if below else channel_max * img_resolution
    return make_config(
        label,
        z_dim=z_dim,
        w_dim=w_dim,
        img_resolution=img_resolution,
        img_channels=_shape(state, "to_rgb1.conv.weight", label, 5)[1],
        mapping_layers=mapping_layers,
        channel_base=channel_base,
        channel_max=channel_max,
    )


def rosinality_to_nvidia(
    state: dict[str, Any], config: StyleGAN2Config, label: str, prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Rename/reshape a rosinality Generator state (keys optionally behind ``prefix``) into
    NVIDIA names, without ``mapping.w_avg``. Errors name the file's own key."""
    out: dict[str, torch.Tensor] = {}
    nv = expected_state_shapes(config)
    for entry in key_table(config):
        key = prefix + entry.rosinality
        value = state.get(key)
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{label}: missing key {key} (shape {entry.shape}) for a "
                f"{config.img_resolution} px generator with {config.mapping_layers} mapping layers"
            )
        if tuple(value.shape) != entry.shape:
            raise CheckpointError(
                f"{label}: key {key}: expected shape {entry.shape}, found {tuple(value.shape)}"
            )
        out[entry.nvidia] = value.reshape(nv[entry.nvidia])
    blur = _blur_keys(config)
    known = {prefix + e.rosinality for e in key_table(config)} | {prefix + k for k in blur}
    unexpected = sorted(k for k in state if k.startswith(prefix) and k not in known)
    if unexpected:
        raise CheckpointError(
            f"{label}: unexpected key(s) for a {config.img_resolution} px rosinality generator: "
            + ", ".join(unexpected[:6])
            + (f" and {len(unexpected) - 6} more" if len(unexpected) > 6 else "")
        )
    for key, expected in blur.items():
        found = state.get(prefix + key)
        if isinstance(found, torch.Tensor) and not torch.allclose(found.float(), expected):
            raise CheckpointError(
                f"{label}: {prefix + key} is not the [1, 3, 3, 1] blur kernel this reader supports"
            )
    return out


def estimate_w_avg(config: StyleGAN2Config, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean of mapping(z) over W_AVG_SAMPLES seeded z: the w_avg a file did not store. [w_dim]"""
    mapping = MappingNetwork(config)
    prefix = "mapping."
    mapping.load_state_dict(
        {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        | {"w_avg": torch.zeros(config.w_dim)}
    )
    seeded = torch.Generator().manual_seed(W_AVG_SEED)
    z = torch.randn(W_AVG_SAMPLES, config.z_dim, generator=seeded)
    with torch.no_grad():
        return mapping(z).mean(dim=0)


def generator_with_w_avg(
    g_state: dict[str, Any],
    latent_avg: object,
    label: str,
    prefix: str = "",
    extras: dict[str, Any] | None = None,
) -> ReadResult:
    """Shared by the rosinality and e4e readers: generator keys + an optional latent_avg of
    shape [w_dim] or [n, w_dim] (e4e repeats it per W+ row)."""
    inner = {k[len(prefix):]: v for k, v in g_state.items() if k.startswith(prefix)}
    config = infer_config(inner, label)
    state = with_resample_filters(rosinality_to_nvidia(g_state, config, label, prefix), config)
    extras = dict(extras or {})
    if latent_avg is None:
        state["mapping.w_avg"] = estimate_w_avg(config, state)
        extras["w_avg_source"] = (
            f"estimated: mean of mapping(z) over {W_AVG_SAMPLES} z (seed {W_AVG_SEED}); "
            "the file stores no latent_avg"
        )
    elif isinstance(latent_avg, torch.Tensor) and tuple(latent_avg.shape[-1:]) == (config.w_dim,) \
            and latent_avg.ndim == 2:
        rows_equal = bool((latent_avg == latent_avg[:1]).all())
        state["mapping.w_avg"] = latent_avg[0] if rows_equal else latent_avg.float().mean(dim=0)
        extras["w_avg_source"] = (
            f"latent_avg row 0 (all {latent_avg.shape[0]} rows equal)" if rows_equal
            else f"mean of the {latent_avg.shape[0]} differing latent_avg rows"
        )
    elif isinstance(latent_avg, torch.Tensor) and tuple(latent_avg.shape) == (config.w_dim,):
        state["mapping.w_avg"] = latent_avg
        extras["w_avg_source"] = "latent_avg"
    else:
        found = (
            tuple(latent_avg.shape) if isinstance(latent_avg, torch.Tensor)
            else type(latent_avg).__name__
        )
        raise CheckpointError(
            f"{label}: latent_avg: expected shape ({config.w_dim},) or (num_ws, {config.w_dim}), "
            f"found {found}"
        )
    return finish(config, state, label, extras)


def read_rosinality(ckpt: object, label: str) -> ReadResult:
    """A loaded rosinality checkpoint dict -> config + NVIDIA state dict."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("g_ema"), dict):
        raise CheckpointError(f"{label}: expected a rosinality checkpoint dict with 'g_ema'")
    args = ckpt.get("args")
    training = "g_optim" in ckpt or args is not None
    extras: dict[str, Any] = {"kind": "training" if training else "converted"}
    if isinstance(args, argparse.Namespace):
        extras["args"] = plain(vars(args))
    return generator_with_w_avg(ckpt["g_ema"], ckpt.get("latent_avg"), label, "", extras)
