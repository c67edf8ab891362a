"""``nfr train ...``: train StyleRig for a StyleGAN2 generator, and evaluate it.

- ``nfr train dfr --weights G --face-model BFM_model_front.mat --out DIR``: the DFR
  (W+ -> rig values), written as DIR/dfr.safetensors + .json with its sample bank;
- ``nfr train rignet --weights G --dfr DIR/dfr.safetensors --out OUT``: the RigNet, written
  with the DFR as OUT/stylerig-<sha>.safetensors + .json, the file the "stylerig" backend
  loads;
- ``nfr train eval --weights G --stylerig FILE --out DIR``: the evaluation report.

Training runs on one process, or on several GPUs with ``torchrun --nproc-per-node N -m
neural_face_rig.neural.cli train ...``. ``--resume`` continues from DIR's checkpoint;
``--steps`` is the total, so resuming with a larger value trains longer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .engine import configure_inference_process
from .errors import NeuralError

if TYPE_CHECKING:
    from .stylerig.data import LandmarkSource
    from .stylerig.trainer import TrainSettings


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``train`` and its sub-commands on the `nfr` sub-parser."""
    train = sub.add_parser("train", help="train StyleRig (DFR, RigNet) for a StyleGAN2; evaluate")
    commands = train.add_subparsers(dest="train_command", required=True, metavar="TRAIN_COMMAND")

    dfr = commands.add_parser(
        "dfr", help="train the DFR: W+ -> 257 rig values, self-supervised through the renderer",
        description="Train StyleRig's differentiable face reconstruction on the generator's own "
        "samples (seeds 0..SAMPLES-1). Landmarks are detected once and cached in "
        "OUT/samples.safetensors.",
    )
    _common(dfr, default_steps=20_000)
    dfr.add_argument("--face-model", required=True,
                     help="BFM_model_front.mat (`nfr rig convert-bfm`), or synthetic:tiny / "
                     "synthetic:full for smoke runs without the BFM")
    dfr.add_argument("--samples", type=int, default=10_000,
                     help="generator samples to train on (default 10000)")
    dfr.add_argument("--psi", type=float, default=0.7, help="truncation of the samples (0.7)")
    dfr.add_argument("--mixing", type=float, default=0.5,
                     help="fraction of style-mixed samples (default 0.5)")
    dfr.add_argument("--camera-size", type=int, default=224,
                     help="rig camera frame in px (Deep3DFaceRecon's 224 camera, scaled)")
    dfr.add_argument("--crop", default=None, metavar="LEFT,TOP,SIZE",
                     help="generator-image square the camera sees, fractions of the image side "
                     "(default: fitted to detected landmarks, else FFHQ's alignment rule)")
    dfr.add_argument("--hidden", type=int, default=512, help="DFR hidden width (512)")
    dfr.add_argument("--landmarks", default="dlib",
                     help="landmark detector for the landmark loss, or 'none' (default dlib)")
    dfr.set_defaults(handler=run_train_dfr)

    rignet = commands.add_parser(
        "rignet", help="train the RigNet against a trained DFR",
        description="Train RigNet (pose, expression and illumination edits of W+) with the "
        "DFR's samples, crop and face model; writes OUT/stylerig-<sha>.safetensors.",
    )
    _common(rignet, default_steps=20_000)
    rignet.add_argument("--dfr", type=Path, required=True, help="dfr.safetensors of `train dfr`")
    rignet.add_argument("--face-model", default=None,
                        help="the DFR's face model file (default: the path it was trained with)")
    rignet.add_argument("--latent", type=int, default=32, help="per-row code size l (32)")
    rignet.add_argument("--hidden", type=int, default=256, help="decoder hidden width (256)")
    rignet.set_defaults(handler=run_train_rignet)

    ev = commands.add_parser("eval", help="evaluate a StyleRig file: Markdown + JSON report")
    ev.add_argument("--weights", type=Path, required=True, help="generator checkpoint")
    ev.add_argument("--stylerig", type=Path, required=True,
                    help="stylerig-<sha>.safetensors of `train rignet`")
    ev.add_argument("--out", type=Path, required=True, help="folder for the report")
    ev.add_argument("--face-model", default=None,
                    help="face model (default: the one the StyleRig file was trained with)")
    ev.add_argument("--samples", type=int, default=64, help="held-out seeds (default 64)")
    ev.add_argument("--batch", type=int, default=16, help="samples per batch (16)")
    ev.add_argument("--landmarks", default="none",
                    help="detector for landmark-based pose and dlib face distances ('dlib'), "
                    "or 'none' (default)")
    ev.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ev.set_defaults(handler=run_train_eval)


def _common(p: argparse.ArgumentParser, default_steps: int) -> None:
    p.add_argument("--weights", type=Path, required=True, help="generator checkpoint")
    p.add_argument("--out", type=Path, required=True, help="output folder (checkpoints, log)")
    p.add_argument("--steps", type=int, default=default_steps,
                   help=f"total optimisation steps (default {default_steps})")
    p.add_argument("--batch", type=int, default=8, help="samples per step and process (8)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam step size (1e-4)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and batches")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default: cuda when available)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (default: on for CUDA)")
    p.add_argument("--resume", action="store_true", help="continue from OUT's checkpoint")
    p.add_argument("--log-every", type=int, default=50, help="steps per CSV row (50)")
    p.add_argument("--checkpoint-every", type=int, default=1000,
                   help="steps between checkpoints (1000)")
    p.add_argument("--cache-images", action="store_true",
                   help="keep every cropped sample image in memory (small sample counts)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _settings(args: argparse.Namespace) -> TrainSettings:
    from .stylerig.trainer import TrainSettings

    configure_inference_process(args.threads)
    return TrainSettings(
        steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, device=args.device,
        amp=args.amp, log_every=args.log_every, checkpoint_every=args.checkpoint_every,
        progress=not args.no_progress and sys.stderr.isatty(),
    )


def _landmark_source(name: str) -> LandmarkSource | None:
    if name == "none":
        return None
    from .landmarks import make_detector
    from .stylerig.data import detector_source

    return detector_source(make_detector(name))


def run_train_dfr(args: argparse.Namespace) -> int:
    from .stylerig.data import FaceCrop
    from .stylerig.trainer import DFR_FILE, DFRJob, train_dfr

    job = DFRJob(
        weights=args.weights, out=args.out, face_model=args.face_model,
        settings=_settings(args), samples=args.samples, psi=args.psi, mixing=args.mixing,
        camera_size=args.camera_size, crop=FaceCrop.parse(args.crop) if args.crop else None,
        hidden=args.hidden, landmarks=args.landmarks,
        landmark_source=_landmark_source(args.landmarks), cache_images=args.cache_images,
    )
    trainer = train_dfr(job, resume=args.resume)
    if trainer.dist.is_main:
        print(f"wrote {args.out / DFR_FILE} after {trainer.step} steps")
    return 0


def run_train_rignet(args: argparse.Namespace) -> int:
    from .stylerig.backend import stylerig_filename
    from .stylerig.trainer import RigNetJob, train_rignet

    job = RigNetJob(
        weights=args.weights, dfr=args.dfr, out=args.out, settings=_settings(args),
        face_model=args.face_model, latent=args.latent, hidden=args.hidden,
        cache_images=args.cache_images,
    )
    trainer = train_rignet(job, resume=args.resume)
    if trainer.dist.is_main:
        sha = trainer.meta["setup"]["generator_sha256"]
        print(f"wrote {args.out / stylerig_filename(sha)} after {trainer.step} steps; put it "
              "(with its .json) next to the generator or in $NFR_STYLERIG_DIR")
    return 0


def run_train_eval(args: argparse.Namespace) -> int:
    from ..rig.geometry import TorchFaceModel
    from .checkpoints import load_generator
    from .engine import StyleGAN2Engine
    from .stylerig.backend import load_stylerig
    from .stylerig.evaluate import dlib_face_embedder, evaluate, write_report
    from .stylerig.trainer import open_face_model

    configure_inference_process()
    loaded = load_generator(args.weights)
    model = load_stylerig(args.stylerig, args.device)
    if model.setup.generator_sha256 != loaded.sha256:
        raise NeuralError(f"{args.stylerig}: trained for generator "
                          f"{model.setup.generator_sha256[:16]}, --weights is {loaded.sha256[:16]}")
    engine = StyleGAN2Engine.from_state_dict(loaded.config, loaded.state_dict, args.device,
                                             cache=False)
    face_model, _ = open_face_model(args.face_model or model.setup.face_model["name"])
    tm = TorchFaceModel.from_face_model(face_model, engine.device)
    source = _landmark_source(args.landmarks)
    embedder = dlib_face_embedder(source) if source is not None else None
    report = evaluate(engine, model, tm, args.samples, args.batch, source, embedder)
    json_path, md_path = write_report(report, args.out)
    print(f"wrote {md_path} and {json_path}")
    return 0
