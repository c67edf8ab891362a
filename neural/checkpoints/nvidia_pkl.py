"""NVIDIA PyTorch ``.pkl`` snapshots (stylegan2-ada-pytorch, stylegan3 repo's StyleGAN2).

The snapshot dict's ``G_ema`` is a tree of :class:`PersistentRecord`. Its
tensors are collected into NVIDIA's flat ``state_dict()`` names; the architecture comes from
the constructor kwargs recorded in the pickle (ada nests ``mapping_kwargs`` /
``synthesis_kwargs``; the stylegan3 repo passes synthesis kwargs flat), falling back on the
modules' own attributes, then on the defaults of the repository that wrote the file.
StyleGAN3 alias-free generators are recognised and refused.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from .loaded import ReadResult, finish, make_config, plain
from .safe_pickle import PersistentRecord

_GENERATOR_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs")
# Defaults of the two repositories' SynthesisNetwork/SynthesisBlock/MappingNetwork
# (stylegan2-ada-pytorch and the stylegan3 repository).
_ADA_DEFAULTS: dict[str, Any] = {"num_fp16_res": 0, "conv_clamp": None, "w_avg_beta": 0.995}
_SG3_DEFAULTS: dict[str, Any] = {"num_fp16_res": 4, "conv_clamp": 256, "w_avg_beta": 0.998}
_SG3_KEY = re.compile(r"synthesis\.(input\.|L\d+_)")
_SG3_CLASSES = {"SynthesisInput"}


def _field(record: PersistentRecord, name: str, kind: type, where: str, label: str) -> Any:
    value = record.state.get(name, kind())
    if not isinstance(value, kind):
        raise CheckpointError(
            f"{label}: {where or 'G_ema'} ({record.class_name}) field {name} is a "
            f"{type(value).__name__}, expected {kind.__name__}"
        )
    return value


def flatten_record(record: PersistentRecord, label: str, prefix: str = "") -> dict[str, Any]:
    """Parameters and persistent buffers of a module tree under dotted names, as
    ``nn.Module.state_dict()`` would name them."""
    where = prefix.rstrip(".")
    out: dict[str, Any] = {}
    for group in ("_parameters", "_buffers", "_modules"):
        names = _field(record, group, dict, where, label)
        bad = next((k for k in names if not isinstance(k, str)), None)
        if bad is not None:
            raise CheckpointError(
                f"{label}: {where or 'G_ema'} ({record.class_name}) {group}: expected names "
                f"(strings), found the {type(bad).__name__} {bad!r:.40}"
            )
    for name, tensor in _field(record, "_parameters", dict, where, label).items():
        if tensor is not None:
            out[prefix + name] = tensor
    skipped = _field(record, "_non_persistent_buffers_set", set, where, label)
    for name, tensor in _field(record, "_buffers", dict, where, label).items():
        if tensor is not None and name not in skipped:
            out[prefix + name] = tensor
    for name, child in _field(record, "_modules", dict, where, label).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise CheckpointError(
                f"{label}: module {prefix + name} is a {type(child).__name__}, expected a "
                "persistent NVIDIA network object"
            )
        out.update(flatten_record(child, label, f"{prefix}{name}."))
    return out


def _child(record: PersistentRecord, path: str) -> PersistentRecord | None:
    for name in path.split("."):
        modules = record.state.get("_modules")
        child = modules.get(name) if isinstance(modules, dict) else None
        if not isinstance(child, PersistentRecord):
            return None
        record = child
    return record


def _class_names(record: PersistentRecord) -> set[str]:
    names = {record.class_name}
    modules = record.state.get("_modules")
    for child in modules.values() if isinstance(modules, dict) else ():
        if isinstance(child, PersistentRecord):
            names |= _class_names(child)
    return names


def refuse_stylegan3(g_ema: PersistentRecord, keys: list[str], label: str) -> None:
    """Raise if the generator is StyleGAN3's alias-free network."""
    evidence = sorted(_class_names(g_ema) & _SG3_CLASSES)
    evidence += [k for k in keys if _SG3_KEY.match(k)][:3]
    if evidence:
        raise CheckpointError(
            f"{label}: this is a StyleGAN3 (alias-free) generator (found {', '.join(evidence)}); "
            "only StyleGAN2 generators are supported: StyleGAN3's layers and W+ indexing differ, "
            "so SeFa directions and RigNets do not transfer"
        )


def _init_kwargs(record: PersistentRecord, label: str = "checkpoint") -> dict[str, Any]:
    kwargs = record.state.get("_init_kwargs") or {}
    args = record.state.get("_init_args") or ()
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs) \
            or not isinstance(args, (tuple, list)):
        raise CheckpointError(
            f"{label}: {record.class_name} _init_kwargs / _init_args: expected a dict of names "
            f"and a tuple, found {type(kwargs).__name__} and {type(args).__name__}"
        )
    kwargs = dict(kwargs)
    kwargs.update(zip(_GENERATOR_ARGS, args, strict=False))
    return kwargs


def _attr(record: PersistentRecord | None, name: str) -> tuple[bool, Any]:
    if record is None or name not in record.state:
        return False, None
    value = record.state[name]
    return True, value.item() if isinstance(value, np.generic) else value


def _count_mapping_layers(state: dict[str, Any]) -> int:
    count = 0
    while f"mapping.fc{count}.weight" in state:
        count += 1
    return count


def _config_fields(
    g_ema: PersistentRecord, state: dict[str, Any], label: str = "checkpoint"
) -> tuple[dict[str, Any], str]:
    kwargs = _init_kwargs(g_ema, label)
    nested = isinstance(kwargs.get("synthesis_kwargs"), dict)
    if nested:
        synthesis = dict(kwargs["synthesis_kwargs"])
        defaults, flavour = _ADA_DEFAULTS, "stylegan2-ada-pytorch"
    else:
        synthesis = {k: v for k, v in kwargs.items() if k not in _GENERATOR_ARGS}
        defaults, flavour = _SG3_DEFAULTS, "stylegan3 (networks_stylegan2)"
    mapping = dict(kwargs.get("mapping_kwargs") or {})

    # Explicit kwargs first, then the attribute the module stored (its effective value),
    # then the writing repository's default.
    def pick(kwarg: tuple[dict[str, Any], str], attr: tuple[str, str], default: Any) -> Any:
        source, key = kwarg
        if key in source:
            return source[key]
        found, value = _attr(_child(g_ema, attr[0]) if attr[0] else g_ema, attr[1])
        return value if found else default

    blocks = [b for i in range(2, 16) if (b := _child(g_ema, f"synthesis.b{2**i}")) is not None]
    fp16_blocks = sum(1 for b in blocks if b.state.get("use_fp16") is True)
    fields = {
        "z_dim": pick((kwargs, "z_dim"), ("", "z_dim"), 512),
        "w_dim": pick((kwargs, "w_dim"), ("", "w_dim"), 512),
        "c_dim": pick((kwargs, "c_dim"), ("", "c_dim"), 0),
        "img_resolution": pick((kwargs, "img_resolution"), ("", "img_resolution"), 1024),
        "img_channels": pick((kwargs, "img_channels"), ("", "img_channels"), 3),
        "mapping_layers": _count_mapping_layers(state),
        "mapping_lr_multiplier": pick(
            (mapping, "lr_multiplier"), ("mapping.fc0", "bias_gain"), 0.01
        ),
        "w_avg_beta": pick(
            (mapping, "w_avg_beta"), ("mapping", "w_avg_beta"), defaults["w_avg_beta"]
        ),
        "channel_base": synthesis.get("channel_base", 32768),
        "channel_max": synthesis.get("channel_max", 512),
        "num_fp16_res": synthesis.get(
            "num_fp16_res", fp16_blocks if blocks else defaults["num_fp16_res"]
        ),
        "conv_clamp": pick(
            (synthesis, "conv_clamp"), ("synthesis.b4.conv1", "conv_clamp"), defaults["conv_clamp"]
        ),
        "architecture": pick(
            (synthesis, "architecture"), ("synthesis.b4", "architecture"), "skip"
        ),
        "resample_kernel": synthesis.get("resample_filter", (1, 3, 3, 1)),
        # bias_act names; an unknown one is refused by the config check, by name.
        "mapping_activation": pick((mapping, "activation"), ("mapping.fc0", "activation"), "lrelu"),
        "synthesis_activation": pick(
            (synthesis, "activation"), ("synthesis.b4.conv1", "activation"), "lrelu"
        ),
    }
    # numpy scalars -> Python numbers, EasyDicts/lists -> plain data, for the config checks.
    return {name: plain(value) for name, value in fields.items()}, flavour


def read_nvidia_pkl(data: object, label: str) -> ReadResult:
    """The ``G_ema`` of an unpickled NVIDIA snapshot dict -> config + NVIDIA state dict."""
    if not isinstance(data, dict) or "G_ema" not in data:
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"{label}: expected an NVIDIA snapshot dict with a 'G_ema' network, found {found}"
        )
    g_ema = data["G_ema"]
    if not isinstance(g_ema, PersistentRecord):
        raise CheckpointError(
            f"{label}: 'G_ema' is a {type(g_ema).__name__}, expected a persistent NVIDIA network"
        )
    state = flatten_record(g_ema, label)
    refuse_stylegan3(g_ema, list(state), label)
    if g_ema.class_name != "Generator":
        raise CheckpointError(f"{label}: 'G_ema' is a {g_ema.class_name}, expected a Generator")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        kind = type(state[bad[0]]).__name__
        raise CheckpointError(f"{label}: {bad[0]} is a {kind}, expected a tensor")
    fields, flavour = _config_fields(g_ema, state, label)
    config = make_config(label, **fields)
    extras = {
        "writer": flavour,
        "persistence_version": g_ema.version,
        "init_kwargs": plain(_init_kwargs(g_ema, label)),
        "training_set_kwargs": plain(data.get("training_set_kwargs")),
    }
    return finish(config, state, label, extras)
