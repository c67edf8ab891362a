"""Backends: a rig state -> W+ -> image, one module per way of driving a generator.

The catalogue (contract/catalogue.py) names the backends; this registry maps each id to its
module here (``stylegan2``, ``discofacegan``, ``stylerig``), whose ``load(model_path, device,
files)`` returns a ready backend (``base.Backend``). A module is imported when its backend
is first loaded, so the registry itself imports no model code, and no backend module
imports this one's registry: the import graph has no cycle (base <- stylegan2 <- the rest).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from ...contract import catalogue
from .base import Backend, BackendError, BackendLoader, DirectionsFor, checked_latent
from .stylegan2 import StyleGAN2Backend

__all__ = [
    "BACKEND_LOADERS",
    "Backend",
    "BackendError",
    "BackendLoader",
    "DirectionsFor",
    "StyleGAN2Backend",
    "checked_latent",
    "load_backend",
]


def _module_loader(backend_id: str) -> BackendLoader:
    def load(model_path: str, device: str, files: Mapping[str, str]) -> Backend:
        module = importlib.import_module(f"{__name__}.{backend_id}")
        backend: Backend = module.load(model_path, device, files)
        return backend

    load.__name__ = f"load_{backend_id}"
    return load


BACKEND_LOADERS: dict[str, BackendLoader] = {
    backend_id: _module_loader(backend_id) for backend_id in catalogue.BACKENDS
}
"""Catalogue id (``RigState.backend``) -> loader: (model file, torch device, other files by
catalogue role) -> backend. The worker dispatches every job through it."""


def load_backend(backend_id: str, model_path: str, device: str,
                 files: Mapping[str, str]) -> Backend:
    """The backend ``backend_id`` with its model loaded; BackendError for an unknown id."""
    loader = BACKEND_LOADERS.get(backend_id)
    if loader is None:
        raise BackendError(f"backend {backend_id!r} is not available; available: "
                           f"{', '.join(sorted(BACKEND_LOADERS))}")
    return loader(model_path, device, files)
