"""``nfr bench --suite stylerig``: StyleRig edit latency and training step costs on the CPU.

- Per edit, FFHQ-1024 sizes (W+ 18 x 512; DFR hidden 512; RigNet l = 32, hidden 256), batch
  1, fp32, 2 threads, random weights (the time does not depend on their values): DFR
  forward, RigNet forward, the whole edit (DFR + change + RigNet), and the backend's
  ``latents`` (seed -> mapping -> edit).
- Training steps at tiny scale (32 px generator, synthetic "tiny" face model, 32 px rig
  camera, batch 8): one DFR and one RigNet optimisation step of the real trainer.
- Full-scale pieces of a training step (batch 8): the render loss at 224 px with the full
  35,709-vertex mesh (forward + backward), the DFR's and RigNet's forward + backward. With
  the generator's own time (suite stylegan2) they are the basis of the GPU-hours estimate in
  docs/STYLERIG.md.
Each metric is the fastest of several runs after warm-up runs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..contract.state import RigState
from ..rig.geometry import TorchFaceModel
from ..rig.params import RigParams
from ..rig.synthetic import make_synthetic_face_model
from .backends.stylerig import StyleRigBackend
from .bench_timing import best_ms
from .checkpoints import LoadedGenerator, save_project
from .engine import StyleGAN2Engine, configure_inference_process
from .stylegan2.config import StyleGAN2Config
from .stylegan2.generator import Generator, random_state_dict
from .stylerig.backend import StyleRigModel, TrainingSetup
from .stylerig.data import Batch, ffhq_crop, rig_camera
from .stylerig.dfr import DFR, DFRConfig
from .stylerig.losses import LossWeights, dfr_loss, render_loss, rignet_loss
from .stylerig.rignet import RigNet, RigNetConfig, edit_latents, random_edit_masks
from .stylerig.trainer import (
    DFRJob,
    RigNetJob,
    Trainer,
    TrainSettings,
    train_dfr,
    train_rignet,
)

THREADS = 2
REPEATS = 5
TINY = StyleGAN2Config(z_dim=16, w_dim=32, img_resolution=32, mapping_layers=2,
                       channel_base=512, channel_max=16)


def _full_models(config: StyleGAN2Config) -> tuple[DFR, RigNet]:
    torch.manual_seed(0)
    dfr = DFR(DFRConfig(config.num_ws, config.w_dim)).eval().requires_grad_(False)
    rignet = RigNet(RigNetConfig(config.num_ws, config.w_dim))
    with torch.no_grad():  # a trained-looking RigNet: its zero-initialised last layer moves
        rignet.decoder1_weight.normal_(0.0, 0.01)
    return dfr, rignet.eval().requires_grad_(False)


def _edit_latency(report: Any) -> None:
    ffhq = StyleGAN2Config()
    dfr, rignet = _full_models(ffhq)
    ws = torch.randn(1, ffhq.num_ws, ffhq.w_dim)
    target = torch.from_numpy(RigParams.sample(np.random.default_rng(1)).to_vector())[None]
    mask = torch.ones(target.shape[1], dtype=torch.bool)
    delta = torch.randn(1, 94)
    many = 4 * REPEATS  # cheap calls: more repeats make the minimum robust to a busy machine
    with torch.no_grad():
        report.add("stylerig_dfr_forward_ms", best_ms(lambda: dfr(ws), many), "ms")
        report.add("stylerig_rignet_forward_ms", best_ms(lambda: rignet(ws, delta), many), "ms")
        report.add("stylerig_edit_ms",
                   best_ms(lambda: edit_latents(rignet, dfr, ws, target, mask), many), "ms")

    generator = Generator.from_state_dict(ffhq, random_state_dict(ffhq, seed=0))
    engine = StyleGAN2Engine(generator, "cpu", cache=False)
    tm = TorchFaceModel.from_face_model(make_synthetic_face_model("tiny"))
    setup = TrainingSetup("0" * 64, {"name": "synthetic:tiny", "sha256": ""}, 224,
                          ffhq_crop(tm, rig_camera(224)), 0.7)
    backend = StyleRigBackend(engine, "", StyleRigModel(dfr, rignet, setup))
    state = RigState(backend="stylerig", seed=1, psi=0.7, rig=target[0].numpy())
    report.add("stylerig_backend_latents_ms", best_ms(lambda: backend.latents(state), many),
               "ms")


def _tiny_training(report: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="nfr-bench-stylerig-") as folder:
        out = Path(folder)
        weights = out / "tiny.safetensors"
        save_project(LoadedGenerator(TINY, random_state_dict(TINY, 1), "nfr", "0" * 64), weights)
        settings = TrainSettings(steps=5, batch=8, lr=1e-3, progress=False,
                                 checkpoint_every=10_000)
        dfr_job = DFRJob(weights, out / "dfr", "synthetic:tiny", settings, samples=64,
                         camera_size=32, hidden=64, cache_images=True)
        for name, trainer in (
            ("stylerig_tiny_dfr_step_ms", train_dfr(dfr_job)),
            ("stylerig_tiny_rignet_step_ms", train_rignet(RigNetJob(
                weights, out / "dfr" / "dfr.safetensors", out / "rignet", settings, latent=8,
                hidden=64, cache_images=True))),
        ):
            report.add(name, best_ms(_stepper(trainer), 20), "ms")


def _stepper(trainer: Trainer) -> Callable[[], Any]:
    """One more optimisation step of ``trainer`` per call."""
    steps = iter(range(trainer.step, trainer.step + 1000))
    return lambda: trainer.train_step(trainer.step_rng(next(steps)))


def _full_step_pieces(report: Any) -> None:
    ffhq = StyleGAN2Config()
    batch_size = 8
    tm = TorchFaceModel.from_face_model(make_synthetic_face_model("full"))
    camera = rig_camera(224)
    generator = torch.Generator().manual_seed(0)
    batch = Batch(
        ws=torch.randn(batch_size, ffhq.num_ws, ffhq.w_dim, generator=generator),
        images=torch.rand(batch_size, 3, 224, 224, generator=generator),
        landmarks=torch.rand(batch_size, 68, 2, generator=generator) * 224,
        found=torch.ones(batch_size, dtype=torch.bool),
    )
    weights = LossWeights()
    torch.manual_seed(0)
    dfr = DFR(DFRConfig(ffhq.num_ws, ffhq.w_dim))
    rig = dfr(batch.ws).detach()

    def render_step() -> None:
        rig_leaf = rig.clone().requires_grad_(True)
        terms = render_loss(tm, camera, rig_leaf, batch.images, batch.landmarks, batch.found,
                            weights)
        terms["render"].mean().backward()

    def dfr_step() -> None:
        dfr.zero_grad()
        dfr_loss(dfr, batch, tm, camera, weights)["total"].backward()

    frozen = DFR(DFRConfig(ffhq.num_ws, ffhq.w_dim)).requires_grad_(False)
    _, rignet = _full_models(ffhq)
    rignet.requires_grad_(True)
    masks = torch.from_numpy(random_edit_masks(np.random.default_rng(0), batch_size))

    def rignet_step() -> None:
        rignet.zero_grad()
        rignet_loss(rignet, frozen, batch, masks, tm, camera, weights)["total"].backward()

    # The first full-size renders run several times slower (the heap grows to its working
    # size with mmap disabled by configure_inference_process): warm up longer.
    report.add("stylerig_full_render_loss_fwd_bwd_ms", best_ms(render_step, 3, 6), "ms")
    report.add("stylerig_full_dfr_step_ms", best_ms(dfr_step, 3, 2), "ms")
    report.add("stylerig_full_rignet_step_ms", best_ms(rignet_step, 3, 2), "ms")
    report.notes["stylerig_full_step"] = (
        "batch 8, 224 px, full-size synthetic mesh, CPU fp32, without the generator's "
        "synthesis of the batch (see g1024_full_ms of the stylegan2 suite, per image)"
    )


def run(report: Any) -> None:
    report.notes["stylerig_process"] = configure_inference_process(threads=THREADS)
    _edit_latency(report)
    _tiny_training(report)
    _full_step_pieces(report)
