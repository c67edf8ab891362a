"""``nfr bench --suite live``: the live face in Blender, end to end through the real bridge.

Writes random-weight generators of the 256 px (channel_base 16384) and 1024 px (FFHQ
config-f) architectures in the project's format, then runs blender_addon/bench_stage.py in a
child interpreter (Blender as the ``bpy`` module, user folder in a temporary directory; this
module never imports bpy): slider-to-texture latency to the first progressive image and to
the final image, main-thread milliseconds per ``poll_once`` (p95, max; target <= 16 ms), and
the pixel upload time of a 1024² float image.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .checkpoints import LoadedGenerator, save_project
from .errors import NeuralError
from .stylegan2.config import StyleGAN2Config
from .stylegan2.generator import random_state_dict

EDITS = 3
STAGE_MODULE = "neural_face_rig.bench_stage"
ARCHITECTURES = {
    "g256": StyleGAN2Config(img_resolution=256, channel_base=16384),
    "g1024": StyleGAN2Config(),
}


def write_random_generator(config: StyleGAN2Config, path: Path) -> Path:
    digest = hashlib.sha256(config.to_json().encode()).hexdigest()
    save_project(LoadedGenerator(config, random_state_dict(config, 0), "random", digest), path)
    return path


def run(report: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="nfr-bench-live-") as folder:
        root = Path(folder)
        models = {label: str(write_random_generator(config, root / f"{label}.safetensors"))
                  for label, config in ARCHITECTURES.items()}
        env = dict(os.environ, BLENDER_USER_RESOURCES=str(root / "blender_user"))
        command = [sys.executable, "-m", STAGE_MODULE, json.dumps({"models": models,
                                                                    "edits": EDITS})]
        result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise NeuralError(f"live bench stage failed (exit {result.returncode}): "
                          + "\n".join(result.stderr.strip().splitlines()[-15:]))
    found = json.loads(result.stdout.strip().splitlines()[-1])
    for label in ARCHITECTURES:
        numbers = found[label]
        report.add(f"live_{label}_cold_start_ms", numbers["cold_start_ms"], "ms")
        report.add(f"live_{label}_first_preview_ms", numbers["first_preview_ms"], "ms")
        report.add(f"live_{label}_final_ms", numbers["final_ms"], "ms")
    poll = found["poll"]
    report.add("live_poll_main_thread_p95_ms", poll["poll_p95_ms"], "ms")
    report.add("live_poll_main_thread_max_ms", poll["poll_max_ms"], "ms")
    report.add("live_upload_1024_ms", found["upload_1024"]["median_ms"], "ms")
    report.add("live_upload_1024_p95_ms", found["upload_1024"]["p95_ms"], "ms")
    report.notes["live"] = {
        "edits_per_model": EDITS,
        "first_preview_block_px": found["g256"]["first_block"],
        "polls_measured": poll.get("polls"),
        "what": "seed change -> update callback -> worker -> progressive images -> poll_once "
        "pixel writes; median over the edits; every W+ row changes (full synthesis)",
    }
