"""Original TensorFlow StyleGAN2 ``.pkl`` files, read without TensorFlow.

The pickle is a 3-tuple (G, D, Gs) of ``dnnlib.tflib.network.Network`` states; ``Gs`` (the
moving-average generator) is converted. Its variables are numpy arrays under TF scope names;
each is renamed, transposed and (for the up-sampling conv) spatially flipped into NVIDIA's
PyTorch layout. StyleGAN1 pickles (Network state version 3) are refused by name.

The Network-state helpers (``generator_network``, ``collect_variables``,
``check_static_kwargs``, ``TFVariables``, ``mapping_state``, ``conv_weight``) serve the
StyleGAN v1 reader of DiscoFaceGAN too: both generations share the Network pickle, the
mapping's variable names and TF's kernel layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..errors import CheckpointError
from ..stylegan2.config import StyleGAN2Config
from .loaded import ReadResult, finish, make_config, plain, with_resample_filters
from .safe_pickle import TFNetworkState

MIN_NETWORK_VERSION = 4
# Top-level Gs variables with no PyTorch counterpart (progressive-growing level of detail).
PROGRESSIVE_LOD_VARIABLES = frozenset({"lod", "synthesis/lod"})
# Static kwargs that change nothing in the weights (truncation, training switches, graph
# construction choices).
_IGNORED_KWARGS = frozenset({
    "truncation_psi", "truncation_cutoff", "truncation_psi_val", "truncation_cutoff_val",
    "style_mixing_prob", "structure", "is_training", "is_validation", "return_dlatents",
    "is_template_graph", "randomize_noise", "dtype", "fused_modconv", "conditioning",
    "mapping_func", "synthesis_func",
})
# Static kwargs whose non-default values describe networks this project does not implement.
_REQUIRED_DEFAULTS: dict[str, object] = {
    "label_size": 0, "label_fmaps": None, "mapping_nonlinearity": "lrelu",
    "nonlinearity": "lrelu", "use_noise": True, "fmap_decay": 1.0, "fmap_min": 1,
    "normalize_latents": True,
}


def generator_network(data: object, label: str, expected: str) -> TFNetworkState:
    """``Gs`` of an unpickled TF snapshot (G, D, Gs), or a lone Network; ``expected`` names
    the file kind in the error."""
    if isinstance(data, tuple) and len(data) == 3 and all(
        isinstance(net, TFNetworkState) for net in data
    ):
        return data[2]
    if isinstance(data, TFNetworkState):
        return data
    raise CheckpointError(
        f"{label}: expected {expected} (a tuple G, D, Gs of dnnlib Networks), "
        f"found {type(data).__name__}"
    )


def collect_variables(net: TFNetworkState, label: str, prefix: str = "") -> dict[str, Any]:
    """All variables of a Network and its components, named ``component/scope/var``."""
    variables = net.get("variables")
    components = net.get("components", {})
    if not isinstance(variables, list) or not isinstance(components, dict):
        raise CheckpointError(
            f"{label}: TF Network {prefix or net.get('name')!r} has no variables list / "
            "components dict"
        )
    out: dict[str, Any] = {}
    for item in variables:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise CheckpointError(f"{label}: TF variable entry {item!r:.60} is not (name, array)")
        name, value = item
        if not isinstance(value, np.ndarray | np.generic):
            raise CheckpointError(
                f"{label}: TF variable {prefix + name} is a {type(value).__name__}, "
                "expected a numpy array"
            )
        out[prefix + name] = np.asarray(value)
    for key, component in components.items():
        if not isinstance(component, TFNetworkState):
            raise CheckpointError(f"{label}: TF component {prefix + key} is not a Network")
        out.update(collect_variables(component, label, f"{prefix}{key}/"))
    return out


def check_static_kwargs(
    kwargs: Mapping[str, Any],
    known: Iterable[str],
    required: Mapping[str, object],
    label: str,
    reader: str,
) -> None:
    """Refuse kwargs outside ``known`` | ``required`` and ``required`` kwargs whose value is
    not their default; ``reader`` names the kwargs the reader knows."""
    unknown = sorted(set(kwargs) - set(known) - set(required))
    if unknown:
        raise CheckpointError(
            f"{label}: unknown TF generator kwarg(s) {', '.join(unknown)}; this reader knows "
            f"{reader}"
        )
    for name, default in required.items():
        if kwargs.get(name, default) != default:
            raise CheckpointError(
                f"{label}: TF kwarg {name}={kwargs[name]!r} is not supported (expected {default!r})"
            )


def conv_weight(kernel: np.ndarray, flip: bool) -> np.ndarray:
    """TF [kh, kw, in, out] -> PyTorch [out, in, kh, kw]; TF stores the transposed
    (up-sampling) conv's kernel flipped."""
    if flip:
        kernel = kernel[::-1, ::-1]
    return kernel.transpose(3, 2, 0, 1)


class TFVariables:
    """TF variables by name, taken one by one into a state dict: each must be there, and in
    the end every one must have been taken (``check_all_taken``)."""

    def __init__(self, tf: Mapping[str, np.ndarray], label: str) -> None:
        self.tf = tf
        self.label = label
        self._taken: set[str] = set()

    def take(self, name: str, needed_for: str) -> np.ndarray:
        if name not in self.tf:
            raise CheckpointError(
                f"{self.label}: missing TF variable {name} (needed for {needed_for})"
            )
        self._taken.add(name)
        return self.tf[name]

    def check_all_taken(self, ignored: frozenset[str], generator: str) -> None:
        """Raise unless every variable outside ``ignored`` was taken; ``generator`` describes
        the network they were read for."""
        left = sorted(set(self.tf) - self._taken - ignored)
        if left:
            shown = ", ".join(f"{k} {tuple(np.shape(self.tf[k]))}" for k in left[:6])
            raise CheckpointError(
                f"{self.label}: unexpected TF variable(s) for a {generator}: {shown}"
                + (f" and {len(left) - 6} more" if len(left) > 6 else "")
            )


def mapping_state(variables: TFVariables, mapping_layers: int) -> dict[str, np.ndarray]:
    """``mapping.w_avg`` (TF ``dlatent_avg``) and ``mapping.fc{i}.weight`` [out, in] /
    ``.bias`` (TF ``mapping/Dense{i}``): the same in StyleGAN v1 and v2 snapshots."""
    out = {"mapping.w_avg": variables.take("dlatent_avg", "mapping.w_avg")}
    for i in range(mapping_layers):
        out[f"mapping.fc{i}.weight"] = variables.take(f"mapping/Dense{i}/weight",
                                                      f"mapping.fc{i}").T
        out[f"mapping.fc{i}.bias"] = variables.take(f"mapping/Dense{i}/bias", f"mapping.fc{i}")
    return out


def _config_from_static_kwargs(kwargs: dict[str, Any], label: str) -> StyleGAN2Config:
    known = {
        "latent_size", "dlatent_size", "resolution", "num_channels", "mapping_layers",
        "mapping_fmaps", "mapping_lrmul", "w_avg_beta", "dlatent_avg_beta", "fmap_base",
        "fmap_max", "num_fp16_res", "conv_clamp", "architecture", "resample_kernel",
    } | _IGNORED_KWARGS
    check_static_kwargs(kwargs, known, _REQUIRED_DEFAULTS, label,
                        "the StyleGAN2 G_main / stylegan2-ada TF kwargs only")
    w_dim = kwargs.get("dlatent_size", 512)
    if kwargs.get("mapping_fmaps", w_dim) != w_dim:
        raise CheckpointError(
            f"{label}: TF kwarg mapping_fmaps={kwargs['mapping_fmaps']} differs from "
            f"dlatent_size={w_dim}; only mapping layers as wide as W are supported"
        )
    beta = kwargs.get("w_avg_beta", kwargs.get("dlatent_avg_beta", 0.995))
    return make_config(
        label,
        z_dim=kwargs.get("latent_size", 512),
        w_dim=w_dim,
        img_resolution=kwargs.get("resolution", 1024),
        img_channels=kwargs.get("num_channels", 3),
        mapping_layers=kwargs.get("mapping_layers", 8),
        mapping_lr_multiplier=kwargs.get("mapping_lrmul", 0.01),
        channel_base=kwargs.get("fmap_base", 16384) * 2,
        channel_max=kwargs.get("fmap_max", 512),
        num_fp16_res=kwargs.get("num_fp16_res", 0),
        conv_clamp=kwargs.get("conv_clamp"),
        architecture=kwargs.get("architecture", "skip"),
        resample_kernel=tuple(kwargs.get("resample_kernel") or (1, 3, 3, 1)),
        w_avg_beta=1.0 if beta is None else beta,
    )


def tf_to_nvidia(tf: dict[str, Any], config: StyleGAN2Config, label: str) -> dict[str, Any]:
    """Rename and re-lay TF variables (``mapping/...``, ``synthesis/...``, ``dlatent_avg``)
    into NVIDIA state-dict entries. Every TF variable must be used exactly once."""
    variables = TFVariables(tf, label)
    var = variables.take

    def modulated(scope: str, target: str, flip: bool, noise_index: int | None) -> None:
        out[f"{target}.weight"] = conv_weight(var(f"{scope}/weight", target), flip)
        out[f"{target}.bias"] = var(f"{scope}/bias", target)
        out[f"{target}.affine.weight"] = var(f"{scope}/mod_weight", target).T
        # TF adds the style bias' constant 1 in the graph; PyTorch stores it in the bias.
        out[f"{target}.affine.bias"] = var(f"{scope}/mod_bias", target) + 1
        if noise_index is not None:
            out[f"{target}.noise_strength"] = var(f"{scope}/noise_strength", target)
            out[f"{target}.noise_const"] = var(f"synthesis/noise{noise_index}", target)[0, 0]

    out: dict[str, Any] = mapping_state(variables, config.mapping_layers)
    out["synthesis.b4.const"] = var("synthesis/4x4/Const/const", "synthesis.b4.const")[0]
    for res in config.block_resolutions:
        log2 = int(np.log2(res))
        scope, block = f"synthesis/{res}x{res}", f"synthesis.b{res}"
        if res == 4:
            modulated(f"{scope}/Conv", f"{block}.conv1", False, 0)
        else:
            modulated(f"{scope}/Conv0_up", f"{block}.conv0", True, 2 * log2 - 5)
            modulated(f"{scope}/Conv1", f"{block}.conv1", False, 2 * log2 - 4)
        modulated(f"{scope}/ToRGB", f"{block}.torgb", False, None)
    variables.check_all_taken(
        PROGRESSIVE_LOD_VARIABLES, f"{config.img_resolution} px {config.architecture} generator"
    )
    return out


def read_tf_pkl(data: object, label: str) -> ReadResult:
    """An unpickled TF snapshot (G, D, Gs) or a lone Gs -> config + NVIDIA state dict."""
    gs = generator_network(data, label, "a TF StyleGAN2 pickle")
    version = gs.get("version")
    if not isinstance(version, int) or version < MIN_NETWORK_VERSION:
        family = "a StyleGAN (v1) pickle" if version == 3 else "an unknown Network state"
        raise CheckpointError(
            f"{label}: TF Network state version {version!r} is {family}; StyleGAN2 pickles "
            f"have version >= {MIN_NETWORK_VERSION}. StyleGAN1 generators (e.g. DiscoFaceGAN's) "
            "are not StyleGAN2 and cannot be read as one"
        )
    kwargs = gs.get("static_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{label}: TF static_kwargs is a {type(kwargs).__name__}, not a dict")
    kwargs = plain(kwargs)  # numpy scalars -> Python numbers for the config checks
    config = _config_from_static_kwargs(kwargs, label)
    tf = collect_variables(gs, label)
    if any(name.split("/")[-2].startswith("ToRGB_lod") for name in tf if name.count("/") >= 2):
        raise CheckpointError(
            f"{label}: this TF generator has progressive ToRGB_lod layers (architecture "
            "'orig', StyleGAN2 configs B-D); only the 'skip' generator (configs E-F) is supported"
        )
    state = with_resample_filters(tf_to_nvidia(tf, config, label), config)
    extras = {"network_name": gs.get("name"), "network_version": version,
              "static_kwargs": kwargs}
    return finish(config, state, label, extras)
