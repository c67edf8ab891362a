"""What the panels show about files, without touching the disk while drawing.

Panels redraw many times a second; model-file checks stat and open files, the worker-Python
check stats its path. Here their answers are kept per key (the path fields they depend on)
and looked at again only when a setting or a rig's model changes (``invalidate``, from the
properties' update callbacks) or after ``MAX_AGE`` seconds (files appear in the models folder
without Blender knowing), so a redraw reads no file. Imports nothing at load time: the
modules that use it import it first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

MAX_AGE = 2.0  # seconds an answer is trusted without looking at the files again
MAX_ENTRIES = 64

_cache: dict[tuple, tuple[float, Any, BaseException | None]] = {}
_PATH_FIELDS = ("models_dir", "face_model_path", "stylegan2_generator_path",
                "dfg_generator_path", "dfg_average_w_path", "dfg_vae_dir", "rignet_path")


def remembered(key: tuple, compute: Callable[[], T], remember: type[BaseException] = Exception
               ) -> T:
    """``compute()``, or its answer (value, or an exception of type ``remember``, raised again)
    from the last MAX_AGE seconds for the same ``key``."""
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is None or now - hit[0] >= MAX_AGE:
        try:
            hit = (now, compute(), None)
        except remember as exc:
            hit = (now, None, exc)
        if len(_cache) >= MAX_ENTRIES:
            _cache.clear()
        _cache[key] = hit
    if hit[2] is not None:
        raise hit[2]
    return hit[1]


def model_status(prefs: Any, backend: str, generator_path: str = "") -> list:
    """``model_files.model_status`` (a list of ModelFileStatus), remembered."""
    from .model_files import model_status as check

    fields = tuple(getattr(prefs, name, "") for name in _PATH_FIELDS)
    return remembered(("model_status", backend, generator_path, fields),
                      lambda: check(prefs, backend, generator_path))


def invalidate() -> None:
    """A path changed: the next draw looks at the files again."""
    _cache.clear()
