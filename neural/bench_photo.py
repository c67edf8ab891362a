"""The ``photo`` suite of ``nfr bench``: photo -> editable rig, stage by stage, on the CPU.

The astronaut portrait (scikit-image) through dlib, the FFHQ crop at 256 (e4e's input) and at
1024, Deep3DFaceRecon's 224 crop, R-Net (ResNet-50 + heads), the e4e encoder for a 1024
generator (18 W+ rows) and StyleRig's DFR; refinement seconds per step (forward + backward)
at 256 and 1024 (config-f). Networks have random weights at their full architectures (time
does not depend on the values). FLOPs are counted by torch's FlopCounterMode and compared with
an fp32 matmul peak measured in the same run. ``photo_to_rig_s`` is the sum of the stages a
photo needs before its sliders can move (no refinement); the target on 2 cores is 10 s.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .bench_stylegan2 import matmul_peak_gflops
from .bench_timing import times_ms

TARGET_SECONDS = 10.0


def _flops(fn: Any) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def run(report: Any) -> None:
    from skimage import data

    from ..rig.synthetic import make_synthetic_face_model
    from .photo.align import align_d3d, align_ffhq, standard_points
    from .photo.detect import default_detector, detect_face
    from .photo.e4e_encoder import E4EEncoder, encoder_input
    from .photo.rnet import RNet, crop_tensor
    from .stylerig.dfr import DFR, DFRConfig

    photo = data.astronaut()
    detector = default_detector("dlib")
    lm3d = standard_points(make_synthetic_face_model("tiny"))
    stages: dict[str, float] = {}

    def measure(name: str, fn: Any, repeats: int = 5, warmup: int = 1) -> float:
        value = statistics.median(times_ms(fn, repeats, warmup))
        report.add(name, value, "ms")
        return value

    found, _ = detect_face(photo, detector)
    points = found.landmarks.astype(np.float64)
    stages["detect"] = measure("photo_detect_dlib_ms", lambda: detect_face(photo, detector))
    stages["align_e4e"] = measure("photo_align_ffhq_256_ms", lambda: align_ffhq(photo, points, 256))
    measure("photo_align_ffhq_1024_ms", lambda: align_ffhq(photo, points, 1024), 3)
    stages["align_d3d"] = measure("photo_align_d3d_224_ms", lambda: align_d3d(photo, points, lm3d))

    peak = matmul_peak_gflops()
    report.add("fp32_matmul_peak_gflops", peak, "GFLOP/s")

    rnet = RNet().eval().requires_grad_(False)
    crop = crop_tensor(align_d3d(photo, points, lm3d).image)
    with torch.no_grad():
        rnet_flops = _flops(lambda: rnet(crop))
        stages["rnet"] = measure("photo_rnet_forward_ms", lambda: rnet(crop))
    report.add("photo_rnet_efficiency", rnet_flops / (stages["rnet"] / 1e3) / 1e9 / peak,
               "of peak")

    encoder = E4EEncoder(18).eval().requires_grad_(False)
    x = encoder_input(align_ffhq(photo, points, 256).image)
    with torch.no_grad():
        e4e_flops = _flops(lambda: encoder(x))
        stages["e4e"] = measure("photo_e4e_1024_forward_ms", lambda: encoder(x), 3)
        latents = encoder(x)
        dfr = DFR(DFRConfig(18, 512)).eval()
        stages["dfr"] = measure("photo_dfr_estimate_ms", lambda: dfr(latents))
    report.notes["photo_gflop"] = {"rnet": round(rnet_flops / 1e9, 2),
                                   "e4e_1024": round(e4e_flops / 1e9, 2)}
    report.add("photo_e4e_efficiency", e4e_flops / (stages["e4e"] / 1e3) / 1e9 / peak,
               "of peak")

    total = sum(stages.values()) / 1e3
    report.add("photo_to_rig_s", total, "s")
    report.add("photo_to_rig_of_target", total / TARGET_SECONDS, "of 10 s")
    report.notes["photo_to_rig_stages_ms"] = {k: round(v, 1) for k, v in stages.items()}

    for size, repeats in ((256, 3), (1024, 2)):
        report.add(f"photo_refine_step_{size}_s", _refine_step_seconds(size, repeats), "s")


def _refine_step_seconds(size: int, repeats: int) -> float:
    """One refinement step (synthesis forward, pooled pixel loss, backward, Adam) of a
    config-f generator at ``size``, median seconds."""
    from .stylegan2.config import StyleGAN2Config
    from .stylegan2.generator import Generator, SynthesisOptions, random_state_dict

    config = StyleGAN2Config(img_resolution=size)
    generator = Generator.from_state_dict(config, random_state_dict(config, 0))
    options = SynthesisOptions(noise_mode="const")
    target = torch.zeros(1, 3, min(size, 256), min(size, 256))
    ws = torch.zeros(1, config.num_ws, config.w_dim, requires_grad=True)
    optimiser = torch.optim.Adam([ws], lr=0.01)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        image = torch.nn.functional.adaptive_avg_pool2d(generator.synthesis(ws, options),
                                                        min(size, 256))
        torch.nn.functional.mse_loss(image, target).backward()
        optimiser.step()

    return statistics.median(times_ms(step, repeats, 1)) / 1e3
