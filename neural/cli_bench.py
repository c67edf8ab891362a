"""``nfr bench``: the project's benchmarks, as numbers in a JSON file.

Each suite is a module exposing ``run(report)``; suites add metrics with units. Benchmarks
never run in the unit tests; their numbers go into the closing notes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bench_nvidia import NvidiaRepo

SUITES = {
    "rig": "neural_face_rig.neural.bench_rig",
    "stylegan2": "neural_face_rig.neural.bench_stylegan2",
    "dfg": "neural_face_rig.neural.bench_dfg",
    "stylerig": "neural_face_rig.neural.bench_stylerig",
    "live": "neural_face_rig.neural.bench_live",
    "capture": "neural_face_rig.neural.bench_capture",
    "photo": "neural_face_rig.neural.bench_photo",
}


@dataclass
class BenchReport:
    """Metrics collected by the suites: name -> value, plus units and free-form notes."""

    metrics: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, value: float, unit: str) -> None:
        self.metrics[name] = float(value)
        self.units[name] = unit
        print(f"  {name:<40s} {value:12.3f} {unit}", flush=True)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run the benchmarks and write their numbers as JSON")
    p.add_argument("--json", type=Path, help="write the metrics to this JSON file")
    p.add_argument(
        "--suite", action="append", choices=sorted(SUITES), help="run only these suites"
    )
    p.add_argument(
        "--nvidia-repo", type=Path, metavar="DIR",
        help="your checkout of NVIDIA's StyleGAN2 code (git clone "
             "https://github.com/NVlabs/stylegan2-ada-pytorch, or NVlabs/stylegan3): the "
             "stylegan2 suite then also times NVIDIA's reference synthesis on the same weights "
             "(default: $NFR_NVIDIA_REPO)",
    )
    p.set_defaults(handler=run_bench)


def _nvidia_repo(args: argparse.Namespace, suites: list[str]) -> NvidiaRepo | None:
    """The NVIDIA checkout the stylegan2 suite compares with (``--nvidia-repo``, else
    $NFR_NVIDIA_REPO), checked and imported before any suite runs; None without one."""
    from .bench_nvidia import ENV_VAR, NvidiaRepoError, open_repo

    if args.nvidia_repo is not None and "stylegan2" not in suites:
        raise NvidiaRepoError(
            f"--nvidia-repo {args.nvidia_repo}: only the stylegan2 suite uses it, and the suites "
            f"asked for are {', '.join(suites)}"
        )
    where = args.nvidia_repo or os.environ.get(ENV_VAR) or None
    if where is None or "stylegan2" not in suites:
        return None
    try:
        return open_repo(where)
    except NvidiaRepoError as exc:
        if args.nvidia_repo is None:  # say where the folder came from
            raise NvidiaRepoError(f"{exc} (the folder named by ${ENV_VAR})") from exc
        raise


def run_bench(args: argparse.Namespace) -> int:
    suites = args.suite or sorted(SUITES)
    # Refuse a bad NVIDIA checkout before minutes of other benchmarks.
    options: dict[str, dict[str, Any]] = {"stylegan2": {"nvidia_repo": _nvidia_repo(args, suites)}}

    import torch

    from .stylegan2 import kernels

    report = BenchReport()
    report.notes["machine"] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": kernels.cpu_model_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_kernels": kernels.describe(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    print(f"CPU: {kernels.cpu_model_name()} x {os.cpu_count()} ({kernels.describe()})",
          flush=True)
    for name in suites:
        print(f"[{name}]", flush=True)
        start = time.perf_counter()
        importlib.import_module(SUITES[name]).run(report, **options.get(name, {}))
        report.notes[f"{name}_suite_seconds"] = round(time.perf_counter() - start, 2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(vars(report), indent=2, sort_keys=True))
        tmp.replace(args.json)
        print(f"wrote {args.json}")
    return 0
