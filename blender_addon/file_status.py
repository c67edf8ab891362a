"""What the panels show about model files, without touching the disk while drawing.

Panels redraw many times a second; ``model_status`` stats and opens files. Here its answers
are kept per (backend, path fields) and looked at again only when a setting or a rig's model
changes (``invalidate``, from the properties' update callbacks) or after ``MAX_AGE`` seconds
(files appear in the models folder without Blender knowing), so a redraw reads no file.
"""

from __future__ import annotations

import time
from typing import Any

from .model_files import ModelFileStatus
from .model_files import model_status as _model_status

MAX_AGE = 2.0  # seconds a status is trusted without looking at the files again

_cache: dict[tuple, tuple[float, list[ModelFileStatus]]] = {}


def _key(prefs: Any, backend: str, generator_path: str) -> tuple:
    fields = tuple(getattr(prefs, name, "") for name in (
        "models_dir", "face_model_path", "stylegan2_generator_path", "dfg_generator_path",
        "dfg_average_w_path", "dfg_vae_dir", "rignet_path"))
    return (backend, generator_path, fields)


def model_status(prefs: Any, backend: str, generator_path: str = "") -> list[ModelFileStatus]:
    """``model_files.model_status``, remembered for MAX_AGE seconds or until invalidated."""
    key = _key(prefs, backend, generator_path)
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and now - hit[0] < MAX_AGE:
        return hit[1]
    statuses = _model_status(prefs, backend, generator_path)
    if len(_cache) > 64:
        _cache.clear()
    _cache[key] = (now, statuses)
    return statuses


def invalidate() -> None:
    """A path changed: the next draw looks at the files again."""
    _cache.clear()
