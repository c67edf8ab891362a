"""The Blender half of ``nfr bench --suite live`` (neural/bench_live.py runs it in a child
interpreter where Blender is the ``bpy`` module; neural/ never imports bpy).

For each model: enable the extension, set the backend's model files in the preferences, Add
Face Rig with that backend (cold start: model load included, until the first final face),
one untimed warm-up edit (it waits for what the worker does after the first face: the bf16
preview calibration, the rig-value estimate), then time slider edits end to end, exactly as
the artist's edit travels: the property's update callback -> the live listener -> a worker
request -> progressive images -> ``live.poll_once`` writing pixels. ``poll_once`` is called
every POLL_PERIOD seconds, like Blender's timer.

Edits ("edit" of a model): "seed" (StyleGAN2: every W+ row changes with the seed) or
"expression" (DiscoFaceGAN: the first expression coefficient, ``expression.c000``; the
mapping sees every coefficient, so every W+ row changes too). Either way each edit is a full
synthesis, the worst case of a slider; bench_live.py checks that from the jobs reported.

Input: one JSON argument {"models": [{"label", "backend", "files": {role: path}, "edit"}],
"edits": n}; output: one JSON line {label: {cold_start_ms, first_preview_ms, final_ms, ...,
"jobs": [the render job of the face before the timed edits, then after each edit]},
"upload_1024": ..., "poll": ...}.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .contract import protocol
from .neural.bench_timing import times_ms

POLL_PERIOD = 1.0 / 120.0
UPLOAD_REPEATS = 50
EDIT_TIMEOUT = 600.0
EXPRESSION_STEP = 0.5  # expression.c000 of edit i: +-(i + 1) x this, alternating in sign


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
    model_files = importlib.import_module(f"{package}.model_files")
    prefs = bpy.context.preferences.addons[package].preferences
    prefs.device = "CPU"
    results: dict[str, Any] = {}
    try:
        for model in config["models"]:
            for spec in model_files.MODEL_SETS[model["backend"]]:
                setattr(prefs, spec.pref, model["files"].get(spec.role, ""))
            results[model["label"]] = _edits(bpy, live, model["backend"], model["edit"],
                                             config["edits"])
        results["upload_1024"] = _upload_ms(bpy, face_image, 1024)
        results["poll"] = live.poll_statistics()
    finally:
        live.stop_worker()
        addon_utils.disable(package, default_set=True)
    return results


def edit_value(edit: str, index: int) -> tuple[str, float | int]:
    """(face_rig property path, value) of edit ``index`` (0 = the warm-up edit)."""
    if edit == "seed":
        return "seed", index + 1
    if edit == "expression":
        return "expression.c000", (-1) ** index * EXPRESSION_STEP * (index + 1)
    raise ValueError(f"edit: expected 'seed' or 'expression', found {edit!r}")


def _apply(card, edit: str, index: int) -> None:
    path, value = edit_value(edit, index)
    owner = card.face_rig
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    setattr(owner, name, value)


def _edits(bpy, live, backend: str, edit: str, count: int) -> dict[str, Any]:
    """Cold start, one warm-up edit, then ``count`` timed edits: ms to the first preview
    written and to the final face written (medians over the edits, and the fastest)."""
    bpy.ops.wm.read_homefile(use_empty=True)
    start = time.perf_counter()
    if bpy.ops.nfr.add_rig(backend=backend) != {"FINISHED"}:
        raise RuntimeError(f"Add Face Rig ({backend}) failed")
    card = bpy.context.object
    card.face_rig.preview_resolution = "FULL"
    name = card.face_rig.image_name
    _wait(live, lambda: _final_shown(live, name))
    cold = (time.perf_counter() - start) * 1e3
    _apply(card, edit, 0)
    _settle(live, name)
    jobs = [protocol.job_to_json(live.job_for(card))]
    first, final, edit_ms = [], [], []
    for index in range(1, count + 1):
        uploads = len(live.UPLOAD_SECONDS)
        start = time.perf_counter()
        _apply(card, edit, index)  # the property's update callbacks run here, the request too
        edit_ms.append((time.perf_counter() - start) * 1e3)
        seen_first = None
        while not _final_shown(live, name):
            live.poll_once()
            if seen_first is None and len(live.UPLOAD_SECONDS) > uploads:
                seen_first = time.perf_counter()
            if time.perf_counter() - start > EDIT_TIMEOUT:
                raise RuntimeError(f"no final face after {EDIT_TIMEOUT} s: {live._status}")
            time.sleep(POLL_PERIOD)
        done = time.perf_counter()
        first.append(((seen_first or done) - start) * 1e3)
        final.append((done - start) * 1e3)
        _settle(live, name)
        jobs.append(protocol.job_to_json(live.job_for(card)))
    return {
        "backend": backend,
        "edit": edit_value(edit, 0)[0],
        "size": bpy.data.images[name].size[0],
        "cold_start_ms": cold,
        "first_preview_ms": float(np.median(first)),
        "final_ms": float(np.median(final)),
        "final_best_ms": float(min(final)),
        "edit_main_thread_ms": edit_ms,
        "first_block": live.STREAM_FROM,
        "jobs": jobs,
    }


def _final_shown(live, name: str) -> bool:
    """Whether face ``name`` shows the final image of its newest request. Raises when no
    request is outstanding and none will come (the worker reported an error, or the rig
    could not ask): the bench stops with that message instead of waiting."""
    if live._requests:
        return False
    if live._shown.get(name):
        return True
    raise RuntimeError(f"no face for {name}: {live._status.get(name, 'never requested')}")


def _settle(live, name: str) -> None:
    """Until the face shows its final image and nothing is outstanding (no render, no
    estimate, no image waiting to be written)."""
    _wait(live, lambda: _final_shown(live, name) and not live._estimating
          and not live._arrived)


def _wait(live, done: Callable[[], bool]) -> None:
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
