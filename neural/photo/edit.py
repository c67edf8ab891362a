"""Edit an inverted photo with the rig's sliders and render it.

``--set NAME=VALUE`` names: the named expression controls of ``rig.controls`` (ARKit names,
0..1; they need the face model the rig uses, whose control directions are derived from it),
raw coefficients ``exp_N``, ``id_N``, ``tex_N``, ``light_N`` (SH gamma, 0..26) in σ units /
SH units, and the head's ``pitch``, ``yaw``, ``roll`` in radians. Named controls start at the
photo's values (read back from its expression), so jawOpen=0.6 sets the jaw, not a change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ...rig.face_model import FaceModel
from ...rig.params import GROUP_SIZES, RigParams
from . import PhotoError
from .face_file import FaceFile

_RAW = re.compile(r"^(exp|id|tex|light)_(\d+)$")
_RAW_GROUPS = {"exp": "expression", "id": "identity", "tex": "reflectance",
               "light": "illumination"}
_ANGLES = {"pitch": 0, "yaw": 1, "roll": 2}


def parse_sets(pairs: Sequence[str]) -> dict[str, float]:
    """["jawOpen=0.6", ...] -> {"jawOpen": 0.6}; a malformed pair is a one-line error."""
    values: dict[str, float] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not sep or not name or not np.isfinite(value):
            raise PhotoError(f"--set {pair!r}: expected NAME=NUMBER, e.g. jawOpen=0.6")
        values[name.strip()] = value
    return values


def edited_rig(face: FaceFile, sets: Mapping[str, float], model: FaceModel | None = None
               ) -> np.ndarray:
    """The face's start rig [257] with ``sets`` applied (module docstring)."""
    from ...rig.controls import CONTROL_NAMES

    rig = RigParams.from_vector(face.rig.copy())
    named = {k: v for k, v in sets.items() if k in CONTROL_NAMES}
    if named:
        if model is None:
            raise PhotoError(
                f"named control(s) {', '.join(named)} need the face model the rig uses (give "
                "--face-model BFM_model_front.mat, or invert with it), or use raw exp_N=VALUE"
            )
        from ...rig.control_basis import (
            controls_from_expression,
            derive_controls,
            expression_from_controls,
        )

        basis = derive_controls(model)
        values, remainder = controls_from_expression(basis, rig.expression)
        for name, value in named.items():
            values[basis.names.index(name)] = value
        rig.expression[:] = expression_from_controls(basis, values, remainder)
    for name, value in sets.items():
        if name in named:
            continue
        if name in _ANGLES:
            rig.rotation[_ANGLES[name]] = value
            continue
        match = _RAW.match(name)
        if match is None:
            raise PhotoError(
                f"--set {name}: unknown name; expected a named control ({CONTROL_NAMES[0]}, "
                "...), exp_N, id_N, tex_N, light_N, pitch, yaw or roll"
            )
        group, index = _RAW_GROUPS[match[1]], int(match[2])
        if index >= GROUP_SIZES[group]:
            raise PhotoError(f"--set {name}: index {index} is outside 0..{GROUP_SIZES[group] - 1}")
        getattr(rig, group)[index] = value
    return rig.to_vector()


def render_edit(face: FaceFile, rig: np.ndarray, weights: str | None = None,
                device: str = "cpu") -> torch.Tensor:
    """Render the face with rig values ``rig`` through its backend: [1, 3, R, R] in [-1, 1].
    The plain StyleGAN2 backend has no rig mapping: edits there are refused."""
    from ..backends import load_backend

    if face.backend == "stylegan2" and not np.array_equal(rig, face.rig):
        raise PhotoError(
            "this face was inverted into a plain StyleGAN2 (no RigNet for its generator): rig "
            "edits need StyleRig (train one with nfr train, then invert again) or DiscoFaceGAN"
        )
    model = face.meta.get("model", {})
    path = weights or model.get("path")
    if not path:
        raise PhotoError("the face file names no generator: give --weights")
    backend = load_backend(face.backend, str(path), device, dict(model.get("files", {})))
    return backend.render(face.rig_state(rig))
