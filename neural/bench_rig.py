"""The ``rig`` suite of ``nfr bench``: rig evaluation, rasteriser and face renderer timings.

Everything runs on the synthetic face model with the BFM-front mesh size (35,709 vertices,
70,789 triangles) at 224 px on the CPU, fp32. Each metric is the median of several runs
after warm-up (notes["rig_fastest_ms"] holds the fastest run); "fwd_bwd" includes a scalar
loss and its backward pass.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from ..rig.camera import CAMERA_224
from ..rig.control_basis import derive_controls
from ..rig.geometry import TorchFaceModel, evaluate_rig
from ..rig.params import RigParams
from ..rig.raster import interpolate, rasterize
from ..rig.render import render_face
from ..rig.synthetic import make_synthetic_face_model
from .bench_timing import times_ms
from .cli_bench import BenchReport

WARMUP_RUNS = 3
TIMED_RUNS = 15


def run(report: BenchReport) -> None:
    face_model = make_synthetic_face_model("full")
    model = TorchFaceModel.from_face_model(face_model)
    report.notes["rig_mesh"] = {"vertices": model.n_vertices, "triangles": model.n_triangles}
    rng = np.random.default_rng(0)
    rigs = torch.tensor(np.stack([RigParams.sample(rng).to_vector() for _ in range(16)]))
    # The fastest run of each metric too: on a shared machine the median can be dominated by
    # other processes, the minimum shows what the code itself costs.
    fastest: dict[str, float] = {}
    report.notes["rig_fastest_ms"] = fastest

    def measure(name: str, function: Callable[[], object]) -> None:
        times = times_ms(function, TIMED_RUNS, WARMUP_RUNS)
        fastest[name] = round(min(times), 3)
        report.add(name, statistics.median(times), "ms")

    for batch in (1, 16):
        measure(
            f"rig_eval_b{batch}_ms",
            partial(_no_grad, evaluate_rig, model, rigs[:batch], CAMERA_224),
        )

    evaluation = evaluate_rig(model, rigs[:1], CAMERA_224)
    screen, colours = evaluation.screen.detach(), evaluation.colours.detach()
    size = CAMERA_224.size
    report.notes["raster_covered_pixels"] = int(
        rasterize(screen, model.triangles, size).mask.sum()
    )

    def raster_forward() -> None:
        with torch.no_grad():
            interpolate(colours, model.triangles, rasterize(screen, model.triangles, size))

    def raster_forward_backward() -> None:
        positions = screen.clone().requires_grad_(True)
        shading = colours.clone().requires_grad_(True)
        image = interpolate(shading, model.triangles, rasterize(positions, model.triangles, size))
        image.square().mean().backward()

    def render_forward_backward() -> None:
        rig = rigs[:1].clone().requires_grad_(True)
        render_face(model, rig, CAMERA_224).image.square().mean().backward()

    measure("raster_fwd_ms", raster_forward)
    measure("raster_fwd_bwd_ms", raster_forward_backward)
    measure("render_face_fwd_ms", partial(_no_grad, render_face, model, rigs[:1], CAMERA_224))
    measure("render_face_fwd_bwd_ms", render_forward_backward)
    # Named controls from the face model (least squares over the keypoints, target <= 1 s).
    measure("controls_derive_ms", partial(derive_controls, face_model))


def _no_grad(function: Callable[..., object], *args: object) -> None:
    with torch.no_grad():
        function(*args)

