"""New identities: DiscoFaceGAN's identity VAE when its files are set, else the rig prior.

The VAE (rig/dfg_vae.py, numpy only) decodes a N(0, I) draw of its "id" factor
into identity shape and reflectance, the way DiscoFaceGAN samples faces; without it the
identity group is drawn from the rig's Gaussian prior. Expression, pose and light are never
touched.
"""

from __future__ import annotations

import os

import numpy as np
from bpy.types import Object

from .rig_props import randomise_group, read_rig_params, set_rig_params

_VAES: dict[str, object] = {}


def vae_folder() -> str:
    """The DiscoFaceGAN VAE folder of the preferences (or the models folder), '' if none."""
    import bpy

    from .model_files import model_paths
    from .preferences import addon_preferences

    try:
        path = model_paths(addon_preferences(bpy.context), "discofacegan").get("vae", "")
    except (KeyError, AttributeError):
        return ""
    return path if path and os.path.isdir(path) else ""


def new_identity(ob: Object, seed: int) -> str:
    """Draw a new identity for ``ob`` with ``seed``; returns "vae" or "prior" (what drew it)."""
    folder = vae_folder()
    if not folder:
        randomise_group(ob, "identity", seed)
        return "prior"
    from .rig.dfg_vae import FACTOR_GROUPS, DFGVae

    vae = _VAES.get(folder)
    if vae is None:
        vae = _VAES[folder] = DFGVae.load(folder)
    assert isinstance(vae, DFGVae)
    params = vae.sample(np.random.default_rng(seed), base=read_rig_params(ob), factors=("id",))
    set_rig_params(ob, params, FACTOR_GROUPS["id"])
    return "vae"
