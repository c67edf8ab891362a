"""DiscoFaceGAN generator files: the released TF1 ``.pkl`` and the project's converted pair.

The release is a pickle of (G, D, Gs), each a ``dnnlib.tflib.network.Network`` state
(version 3: StyleGAN v1), read through the allow-listed unpickler (no TensorFlow, no embedded
code). ``Gs`` is converted: its own variables (``lod``, ``dlatent_avg``) plus those of its
components ``mapping`` (``Dense{i}/weight`` [in, out], ``/bias``) and ``synthesis``
(``4x4/Const/const`` [1, C, 4, 4]; per layer scope ``weight`` [3, 3, in, out],
``Noise/weight`` [C], ``bias`` [C], ``StyleMod/weight`` [w_dim, 2C], ``StyleMod/bias`` [2C];
scopes ``4x4/Const``, ``4x4/Conv``, ``{R}x{R}/Conv0_up``, ``{R}x{R}/Conv1``;
``ToRGB_lod{n}/weight`` [1, 1, C, channels], ``/bias``; ``noise{i}`` [1, 1, R, R]; ``lod``).

Converted files: ``<name>.safetensors`` (the names of ``config.py``) + ``<name>.json``
``{"format": "nfr-discofacegan", "version": 2, "weights_sha256", "config", "source_sha256",
"source_format"}`` (the project's artefact format, ``checkpoints.project_format``).
"""

from __future__ import annotations

import os
import pickletools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...rig.file_limits import CHECKPOINT_MAX_BYTES, open_regular_file
from ..checkpoints import read_checkpoint
from ..checkpoints.limits import check_architecture
from ..checkpoints.loaded import check_finite, float_tensors, plain
from ..checkpoints.project_format import read_converted, save_converted, sidecar_path
from ..checkpoints.safe_pickle import TFNetworkState, load_pickle_file
from ..checkpoints.tf_pkl import (
    PROGRESSIVE_LOD_VARIABLES,
    TFVariables,
    check_static_kwargs,
    collect_variables,
    conv_weight,
    generator_network,
    mapping_state,
)
from ..errors import CheckpointError
from .config import COEFF_DIM, DFGConfig, DFGConfigError, check_state_shapes

FORMAT = "nfr-discofacegan"
VERSION = 2  # 2: the sidecar carries weights_sha256 (project_format)
TF_PKL = "dfg-tf-pkl"
STYLEGAN1_NETWORK_VERSIONS = (2, 3)
# Static kwargs of G_style / G_mapping / G_synthesis whose value does not change the weights'
# meaning (training switches, graph construction, truncation and latent normalisation, both
# commented out in DiscoFaceGAN's networks).
_IGNORED_KWARGS = frozenset({
    "truncation_psi", "truncation_cutoff", "truncation_psi_val", "truncation_cutoff_val",
    "dlatent_avg_beta", "style_mixing_prob", "is_training", "is_validation",
    "is_template_graph", "force_clean_graph", "randomize_noise", "structure",
    "dlatent_broadcast", "normalize_latents",
})
# Kwargs read into the config (fmap_*, mapping_lrmul, fused_scale, blur_filter) or checked
# against the variables' shapes (the others; value = the config field they must equal).
_CONFIG_KWARGS = frozenset({"fmap_base", "fmap_max", "mapping_lrmul", "fused_scale",
                            "blur_filter"})
_SHAPE_KWARGS = {"latent_size": "z_dim", "dlatent_size": "w_dim", "mapping_fmaps": "w_dim",
                 "resolution": "img_resolution", "num_channels": "img_channels",
                 "mapping_layers": "mapping_layers"}
# Kwargs that would describe a network this implementation does not compute.
_REQUIRED: dict[str, object] = {
    "label_size": 0, "fmap_decay": 1.0, "use_styles": True, "const_input_layer": True,
    "use_noise": True, "nonlinearity": "lrelu", "mapping_nonlinearity": "lrelu",
    "use_wscale": True, "use_pixel_norm": False, "use_instance_norm": True, "dtype": "float32",
}
_LAYER_SCOPE = re.compile(r"synthesis/(\d+)x\1/(Const|Conv|Conv0_up|Conv1)/")


@dataclass(frozen=True)
class LoadedDFG:
    """A DiscoFaceGAN generator: config, float32 CPU state dict (``config.py`` names), the
    digest identifying the weights (the source checkpoint's), and reader facts."""

    config: DFGConfig
    state_dict: dict[str, torch.Tensor]
    source_format: str
    sha256: str
    extras: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ TF pickle


def is_stylegan1_tf_pickle(path: str | os.PathLike[str], max_opcodes: int = 400) -> bool:
    """Whether a pickle file is a TF ``Network`` snapshot of version 2/3 (StyleGAN v1, e.g.
    DiscoFaceGAN), from its first opcodes only: nothing is built, no global is resolved."""
    args: list[object] = []  # the strings and ints pushed, in order
    try:
        with open_regular_file(path, "checkpoint", CHECKPOINT_MAX_BYTES, CheckpointError) as stream:
            for n, (op, arg, _) in enumerate(pickletools.genops(stream)):
                if n >= max_opcodes:
                    return False
                if op.name in ("GLOBAL", "STACK_GLOBAL", "SHORT_BINUNICODE", "BINUNICODE",
                               "UNICODE", "BININT1", "BININT2", "BININT", "INT"):
                    args.append(arg)
                if len(args) >= 2 and args[-2] == "version":
                    saw_network = any(
                        isinstance(a, str) and a.startswith("dnnlib.tflib.network") for a in args
                    )
                    return saw_network and args[-1] in STYLEGAN1_NETWORK_VERSIONS
    except (OSError, ValueError, CheckpointError):
        return False  # not a readable regular pickle: the checkpoint reader says why
    return False


def _generator_state(data: object, label: str) -> TFNetworkState:
    gs = generator_network(data, label, "DiscoFaceGAN's TF pickle")
    version = gs.get("version")
    if version not in STYLEGAN1_NETWORK_VERSIONS:
        hint = (" (a StyleGAN2 TF pickle: load it as a StyleGAN2 generator)"
                if isinstance(version, int) and version >= 4 else "")
        raise CheckpointError(
            f"{label}: TF Network state version {version!r}; DiscoFaceGAN (StyleGAN v1) "
            f"pickles have version 2 or 3{hint}"
        )
    components = gs.get("components")
    if not isinstance(components, dict) or set(components) != {"mapping", "synthesis"}:
        found = sorted(components) if isinstance(components, dict) else type(components).__name__
        raise CheckpointError(
            f"{label}: Gs components: expected 'mapping' and 'synthesis' (G_style), found {found}"
        )
    return gs


def _static_kwargs(gs: TFNetworkState, label: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for net in (gs, *gs["components"].values()):
        kwargs = net.get("static_kwargs") or {}
        if not isinstance(kwargs, dict):
            raise CheckpointError(
                f"{label}: TF static_kwargs of {net.get('name')!r} is a "
                f"{type(kwargs).__name__}, not a dict"
            )
        merged.update(kwargs)
    known = _IGNORED_KWARGS | _CONFIG_KWARGS | set(_SHAPE_KWARGS)
    check_static_kwargs(merged, known, _REQUIRED, label,
                        "DiscoFaceGAN's G_style / G_mapping / G_synthesis kwargs")
    return merged


def _fused_min_res(fused_scale: object, resolution: int, label: str) -> int:
    if fused_scale == "auto":
        return 128
    if fused_scale is True:
        return 8
    if fused_scale is False:
        return 2 * resolution
    raise CheckpointError(
        f"{label}: TF kwarg fused_scale={fused_scale!r}; expected 'auto', True or False"
    )


def _config(tf: dict[str, np.ndarray], kwargs: dict[str, Any], label: str) -> DFGConfig:
    dense = sorted(
        int(m.group(1)) for k in tf if (m := re.fullmatch(r"mapping/Dense(\d+)/weight", k))
    )
    if not dense or dense != list(range(len(dense))):
        raise CheckpointError(
            f"{label}: expected mapping variables mapping/Dense0..N/weight, found layers {dense}"
        )
    resolutions = {int(m.group(1)) for k in tf if (m := _LAYER_SCOPE.match(k))}
    if 4 not in resolutions:
        raise CheckpointError(f"{label}: no synthesis/4x4/Const variables; not a StyleGAN v1 Gs")
    resolution = max(resolutions)
    first, last = tf["mapping/Dense0/weight"], tf[f"mapping/Dense{dense[-1]}/weight"]
    torgb = tf.get("synthesis/ToRGB_lod0/weight")
    if torgb is None or torgb.ndim != 4:
        raise CheckpointError(f"{label}: missing TF variable synthesis/ToRGB_lod0/weight")
    z_dim = int(first.shape[0])
    # Without a latent_size kwarg the network was built with G_mapping's default, 254 + 32.
    expected_z = kwargs.get("latent_size", DFGConfig.z_dim)
    if z_dim != expected_z:
        raise CheckpointError(
            f"{label}: the mapping takes {z_dim} inputs; DiscoFaceGAN's takes {expected_z} "
            f"({COEFF_DIM} 3DMM coefficients + noise): not a DiscoFaceGAN generator"
        )
    blur = kwargs.get("blur_filter", [1, 2, 1])
    check_architecture({"fmap_base": kwargs.get("fmap_base"), "fmap_max": kwargs.get("fmap_max"),
                        "resample_kernel": blur, "mapping_layers": len(dense),
                        "img_resolution": resolution, "z_dim": z_dim},
                       f"{label}: not a DiscoFaceGAN generator")
    try:
        config = DFGConfig(
            z_dim=z_dim,
            noise_dim=z_dim - COEFF_DIM,
            w_dim=int(last.shape[1]),
            img_resolution=resolution,
            img_channels=int(torgb.shape[3]),
            mapping_layers=len(dense),
            mapping_lr_multiplier=float(kwargs.get("mapping_lrmul", 0.01)),
            fmap_base=int(kwargs.get("fmap_base", 8192)),
            fmap_max=int(kwargs.get("fmap_max", 512)),
            fused_min_res=_fused_min_res(kwargs.get("fused_scale", "auto"), resolution, label),
            blur_filter=tuple(blur) if blur else (1,),
        )
    except DFGConfigError as exc:
        raise CheckpointError(f"{label}: not a DiscoFaceGAN generator: {exc}") from None
    for kwarg, field_name in _SHAPE_KWARGS.items():
        if kwarg in kwargs and kwargs[kwarg] != getattr(config, field_name):
            raise CheckpointError(
                f"{label}: TF kwarg {kwarg}={kwargs[kwarg]!r} contradicts the variables, which "
                f"give {field_name} = {getattr(config, field_name)}"
            )
    return config


def tf_to_project(
    tf: dict[str, np.ndarray], config: DFGConfig, label: str
) -> dict[str, np.ndarray]:
    """Rename and re-lay TF variables into the project's names; each is used exactly once."""
    variables = TFVariables(tf, label)
    var = variables.take
    out = mapping_state(variables, config.mapping_layers)
    out["synthesis.const"] = var("synthesis/4x4/Const/const", "synthesis.const")[0]
    for i in range(config.num_ws):
        res = config.layer_resolution(i)
        name = ("Const", "Conv")[i] if i < 2 else ("Conv0_up", "Conv1")[i % 2]
        scope, target = f"synthesis/{res}x{res}/{name}", f"synthesis.layer{i}"
        if i > 0:
            out[f"{target}.weight"] = conv_weight(var(f"{scope}/weight", target), flip=False)
        out[f"{target}.noise_strength"] = var(f"{scope}/Noise/weight", target)
        out[f"{target}.bias"] = var(f"{scope}/bias", target)
        out[f"{target}.style.weight"] = var(f"{scope}/StyleMod/weight", target).T
        out[f"{target}.style.bias"] = var(f"{scope}/StyleMod/bias", target)
        noise = var(f"synthesis/noise{i}", target)
        out[f"{target}.noise_const"] = noise.reshape(noise.shape[-2:]) if noise.ndim == 4 else noise
    for res in config.block_resolutions:
        lod = int(np.log2(config.img_resolution // res))
        scope, target = f"synthesis/ToRGB_lod{lod}", f"synthesis.torgb{res}"
        out[f"{target}.weight"] = conv_weight(var(f"{scope}/weight", target), flip=False)
        out[f"{target}.bias"] = var(f"{scope}/bias", target)
    for name in PROGRESSIVE_LOD_VARIABLES & set(tf):
        if np.any(np.asarray(tf[name]) != 0):
            raise CheckpointError(
                f"{label}: TF variable {name} = {float(np.asarray(tf[name]).max()):g}: a snapshot "
                "taken while the network was still growing; only fully grown generators "
                "(lod 0) are supported"
            )
    variables.check_all_taken(
        PROGRESSIVE_LOD_VARIABLES, f"{config.img_resolution} px DiscoFaceGAN generator"
    )
    return out


def _finish(config: DFGConfig, state: dict[str, Any], label: str) -> dict[str, torch.Tensor]:
    tensors = float_tensors(state, label)
    check_state_shapes(config, tensors, label)
    check_finite(tensors, label)
    return tensors


def read_dfg_pickle_data(data: object, label: str, sha256: str) -> LoadedDFG:
    """An unpickled (G, D, Gs) tuple (or a lone Gs) -> LoadedDFG."""
    gs = _generator_state(data, label)
    kwargs = _static_kwargs(gs, label)
    tf = {k: np.asarray(v) for k, v in collect_variables(gs, label).items()}
    config = _config(tf, kwargs, label)
    state = _finish(config, tf_to_project(tf, config, label), label)
    extras = {"network_name": gs.get("name"), "network_version": gs.get("version"),
              "build_func_name": gs.get("build_func_name"), "static_kwargs": plain(kwargs)}
    return LoadedDFG(config, state, TF_PKL, sha256, extras)


# ------------------------------------------------------------------ project format


def save_dfg_project(loaded: LoadedDFG, weights: str | os.PathLike[str]) -> Path:
    """Write ``weights`` (*.safetensors) + sidecar atomically, weights first; returns the
    sidecar path. The source digest is kept as the model's identity."""
    return save_converted(loaded, weights, FORMAT, VERSION)


def read_dfg_project(path: str | os.PathLike[str]) -> LoadedDFG:
    path = Path(path)
    weights, data = read_converted(path, FORMAT, VERSION)
    try:
        config = DFGConfig.from_dict(data.get("config"), f"{sidecar_path(path)} config")
    except DFGConfigError as exc:
        raise CheckpointError(str(exc)) from None
    tensors = _finish(config, weights, str(path))
    extras = {"converted_from": data["source_format"]}
    return LoadedDFG(config, tensors, FORMAT, data["source_sha256"], extras)


def load_dfg_generator(path: str | os.PathLike[str]) -> LoadedDFG:
    """DiscoFaceGAN's TF ``.pkl`` or a converted ``.safetensors``; format from the content."""
    return read_checkpoint(path, DFG_READERS,
                           "DiscoFaceGAN's TF .pkl or a converted .safetensors")


DFG_READERS = {
    "safetensors": lambda path, label: read_dfg_project(path),
    "pickle": lambda path, label: read_dfg_pickle_data(load_pickle_file(path), label, ""),
}
"""DiscoFaceGAN's readers by container, for the checkpoints' one dispatch."""
