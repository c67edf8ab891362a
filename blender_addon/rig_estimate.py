"""The rig values a backend read off a rig's base face (its estimate): what the sliders start
from and what Reset returns to.

StyleRig's DFR reads pose, expression and light off the face its base latent makes;
DiscoFaceGAN's face is its own coefficients. The estimate is stored on the object as ID
properties (saved with the .blend, rolled back by undo) with the key of the base face it
belongs to (backend, model files, seed, truncation), so a changed seed or model asks again.
"""

from __future__ import annotations

import hashlib

import numpy as np
from bpy.types import Object

from .contract import catalogue
from .contract.protocol import RenderJob, dumps
from .properties import HARD_LIMITS
from .rig.params import GROUP_NAMES, RIG_SIZE, RigParams

ESTIMATE_PROP = "nfr_rig_estimate"
KEY_PROP = "nfr_rig_estimate_key"


def estimate_key(job: RenderJob) -> str:
    """Digest of what decides a job's base face (not the rig values edited on top of it)."""
    state = job.state
    data = {"backend": state.backend, "model": job.model_path, "files": job.files,
            "seed": state.seed, "psi": float(state.psi), "cutoff": state.cutoff}
    return hashlib.sha256(dumps(data).encode()).hexdigest()[:32]


def stored_key(ob: Object) -> str:
    return str(ob.get(KEY_PROP, ""))


def store(ob: Object, values: np.ndarray, key: str) -> RigParams:
    """Keep ``values`` [257] (clipped to the properties' hard limits, which Blender would
    otherwise clamp silently) as ``ob``'s estimate; returns them as RigParams."""
    values = np.asarray(values, np.float32).reshape(-1)
    if values.shape != (RIG_SIZE,) or not np.isfinite(values).all():
        raise ValueError(f"rig estimate: expected {RIG_SIZE} finite values, found "
                         f"{values.shape[0]}")
    params = RigParams.from_vector(values)
    for group in GROUP_NAMES:
        limit = np.asarray(HARD_LIMITS[group], np.float32)
        setattr(params, group, np.clip(getattr(params, group), -limit, limit))
    ob[ESTIMATE_PROP] = params.to_vector().tolist()
    ob[KEY_PROP] = key
    return params


def stored(ob: Object) -> RigParams | None:
    """``ob``'s estimate, or None when its backend reads none or none was stored."""
    values = ob.get(ESTIMATE_PROP)
    if values is None or not catalogue.backend(ob.face_rig.backend).estimate:
        return None
    array = np.asarray(list(values), np.float32)
    return RigParams.from_vector(array) if array.shape == (RIG_SIZE,) else None


def reset_values(ob: Object, group: str) -> RigParams:
    """What Reset writes into ``group``: the estimate where the backend honours the group
    and one is stored, neutral values otherwise."""
    estimate = stored(ob)
    if estimate is not None and group in catalogue.backend(ob.face_rig.backend).groups:
        return estimate
    return RigParams.neutral()
