"""The "stylerig" backend: a base W+ (seed or latent) edited by RigNet to the rig's targets.

Per request: DFR reads the base W+ (its rig values p), RigNet turns W+ and the change asked
of pose, expression and illumination (target from ``RigState.rig`` minus p) into the edited
W+, SeFa offsets follow as in the plain StyleGAN2 backend. Identity, reflectance and
translation in ``RigState.rig`` are ignored: the base latent owns them. ``extras
["stylerig_controls"]`` may list a subset of the catalogue's CONTROLS to drive (default: all
three); a request asking no change returns the base W+ itself, bit for bit. ``estimate`` is
the DFR's reading of the base face: what the sliders start from.

The trained file (DFR + RigNet, ``neural.stylerig.backend``) comes as the job's "rignet" file
or is looked up by the generator's sha256.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...contract.catalogue import ROLE_RIGNET, STYLERIG
from ...contract.state import RigState
from ...rig.params import RIG_SIZE
from ..stylerig import StyleRigError
from ..stylerig.backend import (
    MissingRigNetError,
    StyleRigModel,
    find_stylerig,
    load_stylerig,
    missing_rignet_message,
    search_folders,
)
from ..stylerig.rignet import CONTROLS, control_mask
from .base import BackendError, DirectionsFor
from .stylegan2 import StyleGAN2Backend

if TYPE_CHECKING:
    from ..checkpoints import LoadedGenerator
    from ..engine import StyleGAN2Engine


class StyleRigBackend(StyleGAN2Backend):
    """Base latent (seed or latent, as the StyleGAN2 backend) -> RigNet edit -> SeFa."""

    name = STYLERIG.id

    def __init__(
        self,
        engine: StyleGAN2Engine,
        model_id: str,
        stylerig: StyleRigModel,
        directions_for: DirectionsFor | None = None,
    ) -> None:
        super().__init__(engine, model_id, directions_for)
        if model_id and stylerig.setup.generator_sha256 != model_id:
            raise BackendError(
                f"{stylerig.path}: trained for generator {stylerig.setup.generator_sha256[:16]}, "
                f"not {model_id[:16]}"
            )
        expected = (engine.config.num_ws, engine.config.w_dim)
        found = (stylerig.rignet.config.num_ws, stylerig.rignet.config.w_dim)
        if found != expected:
            raise BackendError(f"{stylerig.path}: RigNet edits W+ {list(found)}, the generator "
                               f"has {list(expected)}")
        self.stylerig = stylerig.to(engine.device)

    @classmethod
    def from_loaded(  # type: ignore[override]
        cls,
        loaded: LoadedGenerator,
        device: str = "cpu",
        sefa_cache_dir: Any = None,
        stylerig_dirs: Iterable[str | os.PathLike[str]] = (),
        weights_path: str | os.PathLike[str] | None = None,
        stylerig_file: str | os.PathLike[str] | None = None,
        **engine_kwargs: Any,
    ) -> StyleRigBackend:
        """Backend for a loaded generator with the StyleRig file ``stylerig_file``, or else
        the one for its sha256 in the search folders; raises MissingRigNetError (naming the
        training commands) when there is none."""
        folders = search_folders(stylerig_dirs, weights_path)
        path = Path(stylerig_file) if stylerig_file else find_stylerig(loaded.sha256, folders)
        if path is None:
            raise MissingRigNetError(missing_rignet_message(loaded.sha256, folders, weights_path))
        plain = StyleGAN2Backend.from_loaded(loaded, device, sefa_cache_dir, **engine_kwargs)
        return cls(plain.engine, loaded.sha256, load_stylerig(path, device),
                   plain._directions_for)

    def estimate(self, state: RigState) -> np.ndarray:
        """The DFR's rig values [257] of the state's base latent (what sliders start from)."""
        with torch.no_grad():
            rig = self.stylerig.dfr(super().base_latents(state))
        return rig[0].cpu().numpy().astype(np.float32)

    def base_latents(self, state: RigState) -> torch.Tensor:
        """The base W+ [1, num_ws, w_dim] edited to the state's rig targets."""
        base = super().base_latents(state)
        if state.rig is None:
            return base
        target = np.asarray(state.rig, dtype=np.float32)
        if target.shape != (RIG_SIZE,) or not np.isfinite(target).all():
            raise BackendError(f"rig: expected {RIG_SIZE} finite values, found shape "
                               f"{list(target.shape)}")
        controls = state.extras.get("stylerig_controls", CONTROLS)
        try:
            mask = torch.from_numpy(control_mask(controls)).to(base.device)
        except StyleRigError as exc:
            raise BackendError(f"extras['stylerig_controls']: {exc}") from None
        dfr, rignet = self.stylerig.dfr, self.stylerig.rignet
        with torch.no_grad():
            estimate = dfr(base)
            wanted = torch.from_numpy(target).to(base.device)[None]
            delta = rignet.control_change(estimate, wanted, mask)
            if not bool(delta.any()):
                return base
            return rignet(base, delta)


def load(model_path: str, device: str, files: Mapping[str, str]) -> StyleRigBackend:
    """The worker's loader signature: generator file, device, other files by catalogue role
    (ROLE_RIGNET, "rignet": an explicit StyleRig file; else looked up by the generator's sha256)."""
    from ..checkpoints import load_generator

    return StyleRigBackend.from_loaded(load_generator(model_path), device,
                                       weights_path=model_path,
                                       stylerig_file=files.get(ROLE_RIGNET) or None)

