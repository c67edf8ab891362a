"""The Blender half of ``nfr bench --suite live`` (neural/bench_live.py runs it in a child
interpreter where Blender is the ``bpy`` module; neural/ never imports bpy).

For each generator: enable the extension, Add Face Rig, then time slider changes end to end,
exactly as the artist's edit travels: the seed property's update callback -> the live
listener -> a worker request -> progressive images -> ``live.poll_once`` writing pixels.
``poll_once`` is called every POLL_PERIOD seconds, like Blender's timer. Every W+ row changes
with the seed, so each edit is a full synthesis (the worst case of a slider).

Input: one JSON argument {"models": {label: path}, "edits": n}; output: one JSON line.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from typing import Any

import numpy as np

from .neural.bench_timing import times_ms

POLL_PERIOD = 1.0 / 120.0
UPLOAD_REPEATS = 50
EDIT_TIMEOUT = 600.0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(run_stage(json.loads(args[0]))))
    return 0


def run_stage(config: dict[str, Any]) -> dict[str, Any]:
    import bpy

    addon_utils = importlib.import_module("addon_utils")
    package = __package__ or "neural_face_rig"
    addon_utils.enable(package, default_set=True)
    live = importlib.import_module(f"{package}.live")
    face_image = importlib.import_module(f"{package}.face_image")
    prefs = bpy.context.preferences.addons[package].preferences
    prefs.device = "CPU"
    results: dict[str, Any] = {}
    try:
        for label, path in config["models"].items():
            prefs.stylegan2_generator_path = path
            results[label] = _edits(bpy, live, config["edits"])
        results["upload_1024"] = _upload_ms(bpy, face_image, 1024)
        results["poll"] = live.poll_statistics()
    finally:
        live.stop_worker()
        addon_utils.disable(package, default_set=True)
    return results


def _edits(bpy, live, count: int) -> dict[str, Any]:
    """Cold start, then ``count`` seed edits: ms to the first preview and to the final."""
    bpy.ops.wm.read_homefile(use_empty=True)
    start = time.perf_counter()
    bpy.ops.nfr.add_rig(backend="stylegan2")
    card = bpy.context.object
    card.face_rig.preview_resolution = "FULL"
    name = card.face_rig.image_name
    _wait(live, lambda: bool(live._shown.get(name)) and not live._requests)
    cold = (time.perf_counter() - start) * 1e3
    first, final = [], []
    for edit in range(count):
        uploads = len(live.UPLOAD_SECONDS)
        start = time.perf_counter()
        card.face_rig.seed = edit + 1
        seen_first = None
        while True:
            live.poll_once()
            if seen_first is None and len(live.UPLOAD_SECONDS) > uploads:
                seen_first = time.perf_counter()
            if live._shown.get(name) and not live._requests:
                break
            if time.perf_counter() - start > EDIT_TIMEOUT:
                raise RuntimeError(f"no final face after {EDIT_TIMEOUT} s")
            time.sleep(POLL_PERIOD)
        done = time.perf_counter()
        first.append(((seen_first or done) - start) * 1e3)
        final.append((done - start) * 1e3)
    return {
        "size": bpy.data.images[name].size[0],
        "cold_start_ms": cold,
        "first_preview_ms": float(np.median(first)),
        "final_ms": float(np.median(final)),
        "first_block": live.STREAM_FROM,
    }


def _wait(live, done) -> None:
    deadline = time.perf_counter() + EDIT_TIMEOUT
    while not done():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"no face after {EDIT_TIMEOUT} s: {live._status}")
        live.poll_once()
        time.sleep(POLL_PERIOD)


def _upload_ms(bpy, face_image, size: int) -> dict[str, float]:
    """face_image.write_pixels (foreach_set + update) on a float image of size²."""
    image = face_image.ensure_face_image("bench upload", size)
    pixels = np.random.default_rng(0).random(size * size * 4, dtype=np.float32)
    times = times_ms(lambda: face_image.write_pixels(image, pixels, size), UPLOAD_REPEATS)
    bpy.data.images.remove(image)
    return {"median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95))}


if __name__ == "__main__":
    sys.exit(main())
