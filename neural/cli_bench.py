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
from typing import Any

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
    p.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace) -> int:
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
    for name in args.suite or sorted(SUITES):
        print(f"[{name}]", flush=True)
        start = time.perf_counter()
        importlib.import_module(SUITES[name]).run(report)
        report.notes[f"{name}_suite_seconds"] = round(time.perf_counter() - start, 2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(vars(report), indent=2, sort_keys=True))
        tmp.replace(args.json)
        print(f"wrote {args.json}")
    return 0
