"""One training loop for DFR and RigNet: AMP, DDP, resumable checkpoints, progress, CSV log.

``Trainer`` optimises any module with Adam on a loss function ``loss_fn(module, rng) ->
{"total": scalar, other scalars}``; the function draws its own batch from ``rng``.

- Devices: CUDA trains with autocast (float16 + loss scaling) unless ``amp`` is False; CPU
  trains in float32, or bfloat16 autocast with ``amp`` True where the CPU has native bf16.
- Several processes: started by torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
  MASTER_PORT in the environment) the loop joins a process group (NCCL on CUDA, gloo on
  CPU) and wraps the module in DistributedDataParallel; every rank draws its own batch of
  ``batch`` samples, rank 0 alone logs and writes checkpoints. Without those variables it runs
  as one process.
- Randomness: the batch of step s on rank r comes from numpy's generator seeded with
  (seed, r, s), so a resumed run draws exactly what the uninterrupted one would have; torch's
  global RNG states are checkpointed too. On CPU a resumed run's losses are bit-identical.
- Checkpoints (every ``checkpoint_every`` steps and at the end): ``checkpoint-<step>
  .safetensors`` (module, Adam state, RNG states) then ``checkpoint.json`` (step, settings,
  optimiser hyper-parameters, loss scaler, the weights' file name and sha256), each written
  atomically; the JSON is replaced last, so it always names a complete weights file. Older
  weights files are deleted after.
- Log: ``train_log.csv`` (step, seconds, lr, mean of every loss since the previous row,
  averaged over ranks); a resumed run first drops rows after its checkpoint.

The two jobs at the end (``train_dfr``, ``train_rignet``) set the loop up for StyleRig.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ...rig.atomic import atomic_open
from ...rig.face_model import FaceModel, load_face_model
from ...rig.geometry import TorchFaceModel
from ...rig.synthetic import make_synthetic_face_model
from ..checkpoints import file_sha256, load_generator
from ..checkpoints.project_format import read_artifact, write_artifact
from ..config_json import read_json_document
from ..engine import StyleGAN2Engine, bf16_supported
from . import StyleRigError
from .backend import (
    TrainingSetup,
    load_dfr,
    save_dfr,
    save_stylerig,
)
from .data import (
    FaceCrop,
    GeneratorSamples,
    LandmarkSource,
    SampleBank,
    crop_from_landmarks,
    ffhq_crop,
    rig_camera,
)
from .dfr import DFR, DFRConfig, latent_statistics
from .losses import LossWeights, dfr_loss, rignet_loss
from .rignet import RigNet, RigNetConfig, random_edit_masks

CHECKPOINT_FORMAT = "nfr-stylerig-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_JSON = "checkpoint.json"
LOG_CSV = "train_log.csv"

LossFn = Callable[[nn.Module, np.random.Generator], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class TrainSettings:
    """steps: total optimisation steps; batch: samples per step and rank; lr: Adam's step
    size; amp: mixed precision (None: on for CUDA); log_every / checkpoint_every: steps."""

    steps: int
    batch: int = 8
    lr: float = 1e-4
    seed: int = 0
    device: str = "cpu"
    amp: bool | None = None
    log_every: int = 10
    checkpoint_every: int = 1000
    progress: bool = True

    def __post_init__(self) -> None:
        for name, low in (("steps", 1), ("batch", 1), ("log_every", 1),
                          ("checkpoint_every", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise StyleRigError(f"training setting {name}: expected an integer >= {low}, "
                                    f"found {value!r}")
        if not self.lr > 0:
            raise StyleRigError(f"training setting lr: expected a positive number, "
                                f"found {self.lr!r}")


# ------------------------------------------------------------------ processes


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Distributed:
        values = {}
        for key, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
            text = os.environ.get(key, str(default))
            try:
                values[key] = int(text)
            except ValueError:
                raise StyleRigError(f"environment {key}: expected an integer, found {text!r}"
                                    ) from None
        if not 0 <= values["RANK"] < values["WORLD_SIZE"]:
            raise StyleRigError(f"environment: RANK {values['RANK']} is outside "
                                f"WORLD_SIZE {values['WORLD_SIZE']}")
        return cls(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> torch.device:
        """The requested device; under torchrun on CUDA, this rank's own GPU."""
        device = torch.device(requested)
        if device.type == "cuda" and self.active:
            return torch.device("cuda", self.local_rank)
        return device

    def start(self, device: torch.device) -> None:
        """Join the process group (once per process)."""
        if self.active and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, rank=self.rank, world_size=self.world_size)

    def barrier(self) -> None:
        if self.active and dist.is_initialized():
            dist.barrier()

    def mean(self, sums: dict[str, float], count: int, device: torch.device) -> dict[str, float]:
        """Per-key mean of ``sums`` over ``count`` steps on every rank."""
        values = torch.tensor([sums[k] for k in sorted(sums)] + [count], dtype=torch.float64,
                              device=device)
        if self.active and dist.is_initialized():
            dist.all_reduce(values)
        total = float(values[-1])
        return {k: float(v) / total for k, v in zip(sorted(sums), values[:-1].tolist(),
                                                     strict=True)}


# ------------------------------------------------------------------ the loop


def _amp_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """The autocast dtype (None: float32 training)."""
    if amp is None:
        amp = device.type == "cuda"
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and bf16_supported(device):
        return torch.bfloat16
    raise StyleRigError(f"--amp: mixed precision needs CUDA or a CPU with native bfloat16; "
                        f"{device} has neither (train without --amp)")


class CsvLog:
    """``train_log.csv`` of rank 0: one row per log step, fixed columns from the first row."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        self.columns: list[str] | None = None
        if resume_step is None or not path.is_file():
            path.unlink(missing_ok=True)
            return
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        kept = [r for r in rows if int(r["step"]) <= resume_step]
        if rows:
            self.columns = list(rows[0])
            with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
                writer = csv.DictWriter(handle, self.columns)
                writer.writeheader()
                writer.writerows(kept)

    def write(self, row: dict[str, Any]) -> None:
        new = self.columns is None
        columns = self.columns = list(row) if self.columns is None else self.columns
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns)
            if new:
                writer.writeheader()
            writer.writerow(row)


class Trainer:
    """Adam on ``loss_fn`` for ``module``; see the module docstring."""

    def __init__(
        self,
        kind: str,
        module: nn.Module,
        loss_fn: LossFn,
        settings: TrainSettings,
        out_dir: str | os.PathLike[str],
        meta: dict[str, Any] | None = None,
        distributed: Distributed | None = None,
    ) -> None:
        self.kind = kind
        self.settings = settings
        self.dist = distributed or Distributed()
        self.device = self.dist.device(settings.device)
        self.dist.start(self.device)
        self.out_dir = Path(out_dir)
        self.meta = dict(meta or {})
        self.module = module.to(self.device)
        self.amp_dtype = _amp_dtype(self.device, settings.amp)
        self.net: nn.Module = self.module
        if self.dist.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
        trainable = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=settings.lr)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.loss_fn = loss_fn
        self.step = 0
        self.history: list[dict[str, float]] = []

    def step_rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([self.settings.seed, self.dist.rank, step])

    def run(self, resume: bool = False) -> list[dict[str, float]]:
        """Train up to ``settings.steps``; returns the rows logged by this call."""
        settings, main = self.settings, self.dist.is_main
        resumed = self.load_checkpoint() if resume else None
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        log = CsvLog(self.out_dir / LOG_CSV, resumed) if main else None
        bar = _progress_bar(settings.steps, self.step, self.kind,
                            enabled=main and settings.progress)
        sums: dict[str, float] = {}
        count, start = 0, time.perf_counter()
        self.module.train()
        try:
            while self.step < settings.steps:
                losses = self.train_step(self.step_rng(self.step))
                self.step += 1
                count += 1
                for key, value in losses.items():
                    sums[key] = sums.get(key, 0.0) + value
                last = self.step == settings.steps
                if self.step % settings.log_every == 0 or last:
                    row = {"step": self.step, "seconds": round(time.perf_counter() - start, 3),
                           "lr": settings.lr, **self.dist.mean(sums, count, self.device)}
                    self.history.append(row)
                    if log is not None:
                        log.write(row)
                    bar.set_postfix({k: f"{row[k]:.4g}" for k in sums}, refresh=False)
                    sums, count = {}, 0
                bar.update(1)
                if self.step % settings.checkpoint_every == 0 or last:
                    self.save_checkpoint()
        finally:
            bar.close()
        return self.history

    def train_step(self, rng: np.random.Generator) -> dict[str, float]:
        """One optimisation step on the batch drawn from ``rng``; the losses as floats."""
        self.optimizer.zero_grad(set_to_none=True)
        dtype = self.amp_dtype
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            losses = self.loss_fn(self.net, rng)
        total = losses["total"]
        if not torch.isfinite(total):
            raise StyleRigError(f"{self.kind} training: the loss became {total.item()} at step "
                                f"{self.step + 1} (lower --lr, or train without --amp)")
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {k: float(v.detach()) for k, v in losses.items()}

    # -------------------------------------------------------------- checkpoints

    def save_checkpoint(self) -> Path | None:
        """Rank 0 writes the checkpoint of the current step (others return None)."""
        if not self.dist.is_main:
            return None
        tensors = {f"module.{k}": v for k, v in self.module.state_dict().items()}
        state = self.optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, entries in state["state"].items():
            for name, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer.{pid}.{name}"] = value
                else:
                    scalars.setdefault(str(pid), {})[name] = value
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, rng in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = rng
        name = f"checkpoint-{self.step:08d}.safetensors"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        document = {
            "kind": self.kind,
            "step": self.step,
            "weights": name,
            "settings": asdict(self.settings),
            "param_groups": state["param_groups"],
            "optimizer_scalars": scalars,
            "scaler": self.scaler.state_dict(),
            "meta": self.meta,
        }
        # The project's artefact format, with the run's fixed sidecar name: checkpoint.json
        # names the weights and carries their digest; a crash between the two renames leaves
        # a pair the loader refuses rather than resumes from.
        write_artifact(self.out_dir / name, tensors, document, CHECKPOINT_FORMAT,
                       CHECKPOINT_VERSION, sidecar=self.out_dir / CHECKPOINT_JSON)
        for old in self.out_dir.glob("checkpoint-*.safetensors"):
            if old.name != name:
                old.unlink(missing_ok=True)
        return self.out_dir / name

    def load_checkpoint(self) -> int | None:
        """Restore the latest checkpoint in ``out_dir`` (None when there is none)."""
        sidecar = self.out_dir / CHECKPOINT_JSON
        if not sidecar.is_file():
            return None
        document = read_json_document(sidecar, "training checkpoint", StyleRigError)
        if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT \
                or document.get("version") != CHECKPOINT_VERSION:
            raise StyleRigError(f"{sidecar}: not a version-{CHECKPOINT_VERSION} StyleRig "
                                "training checkpoint")
        if document.get("kind") != self.kind:
            raise StyleRigError(f"{sidecar}: a {document.get('kind')!r} checkpoint, this run "
                                f"trains {self.kind!r} (use another --out)")
        name = document.get("weights")
        if not isinstance(name, str) or Path(name).name != name:
            raise StyleRigError(f"{sidecar}: field weights: expected a file name in "
                                f"{self.out_dir}, found {name!r:.80}")
        weights = self.out_dir / name
        tensors, document = read_artifact(weights, CHECKPOINT_FORMAT, CHECKPOINT_VERSION,
                                          StyleRigError, sidecar=sidecar)
        module_state = {k[len("module."):]: v for k, v in tensors.items()
                        if k.startswith("module.")}
        try:
            self.module.load_state_dict(module_state)
        except RuntimeError as exc:
            raise StyleRigError(f"{weights}: the checkpoint's model differs from this run's "
                                f"({exc})") from None
        optimizer_state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, pid, name = key.split(".", 2)
                optimizer_state.setdefault(int(pid), {})[name] = value.to(self.device)
        for pid, entries in document["optimizer_scalars"].items():
            optimizer_state.setdefault(int(pid), {}).update(entries)
        self.optimizer.load_state_dict(
            {"state": optimizer_state, "param_groups": document["param_groups"]}
        )
        for group in self.optimizer.param_groups:
            group["lr"] = self.settings.lr
        self.scaler.load_state_dict(document["scaler"])
        torch.set_rng_state(tensors["rng.torch"])
        cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if cuda_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
        self.step = int(document["step"])
        return self.step


class _NoBar:
    def set_postfix(self, *args: Any, **kwargs: Any) -> None: ...
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


def _progress_bar(total: int, initial: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)


# ------------------------------------------------------------------ StyleRig jobs

SAMPLES_FILE = "samples.safetensors"
DFR_FILE = "dfr.safetensors"
STATISTICS_SAMPLES = 1024


def open_face_model(spec: str) -> tuple[FaceModel, dict[str, str]]:
    """A face model from a ``BFM_model_front.mat`` path, or "synthetic:tiny" /
    "synthetic:full" (stand-ins without the licensed BFM: smoke runs, tests)."""
    if spec.startswith("synthetic:"):
        kind = spec.split(":", 1)[1]
        try:
            return make_synthetic_face_model(kind), {"name": spec, "sha256": ""}
        except ValueError as exc:
            raise StyleRigError(f"--face-model {spec}: {exc}") from None
    path = Path(spec)
    return load_face_model(path), {"name": str(path.resolve()), "sha256": file_sha256(path)}


@dataclass
class DFRJob:
    """``nfr train dfr``: what to train on and how. ``landmark_source`` (with its ``landmarks``
    name) finds landmarks on generator images; None trains photometrically only."""

    weights: Path
    out: Path
    face_model: str
    settings: TrainSettings
    samples: int = 10_000
    psi: float = 0.7
    mixing: float = 0.5
    camera_size: int = 224
    crop: FaceCrop | None = None
    hidden: int = 512
    loss_weights: LossWeights = field(default_factory=LossWeights)
    landmarks: str = "none"
    landmark_source: LandmarkSource | None = None
    cache_images: bool = False


@dataclass
class RigNetJob:
    """``nfr train rignet``: the DFR file fixes the samples, crop, camera and face model."""

    weights: Path
    dfr: Path
    out: Path
    settings: TrainSettings
    face_model: str | None = None
    latent: int = 32
    hidden: int = 256
    loss_weights: LossWeights = field(default_factory=LossWeights)
    cache_images: bool = False


def _engine(weights: Path, device: torch.device) -> tuple[StyleGAN2Engine, str]:
    loaded = load_generator(weights)
    engine = StyleGAN2Engine.from_state_dict(loaded.config, loaded.state_dict, device,
                                             cache=False)
    return engine, loaded.sha256


def _prepare_bank(job: DFRJob, engine: StyleGAN2Engine, sha: str, dist_: Distributed
                  ) -> SampleBank:
    """The job's sample bank: reused from ``out`` when it matches, else built by rank 0."""
    path = job.out / SAMPLES_FILE
    wanted = job.landmarks if job.landmark_source is not None else "none"

    def usable() -> SampleBank | None:
        if not path.is_file():
            return None
        bank = SampleBank.load(path)
        same = (bank.generator_sha256 == sha and len(bank) == job.samples
                and bank.psi == job.psi and bank.landmark_source == wanted
                and bank.mixing == job.mixing)
        return bank if same else None

    if dist_.is_main and usable() is None:
        bank = SampleBank.from_seeds(range(job.samples), job.psi,
                                     engine.config.img_resolution, sha, engine.num_ws,
                                     job.mixing, job.settings.seed)
        if job.landmark_source is not None:
            bar = _progress_bar(len(bank), 0, "landmarks", enabled=job.settings.progress)
            bank.detect(engine, job.landmark_source, wanted, progress=bar.update)
            bar.close()
        job.out.mkdir(parents=True, exist_ok=True)
        bank.save(path)
    dist_.barrier()
    ready = usable()
    if ready is None:
        raise StyleRigError(f"{path}: the sample bank rank 0 wrote does not match this run")
    return ready


def _latent_statistics(bank: SampleBank, engine: StyleGAN2Engine
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    count = min(len(bank), STATISTICS_SAMPLES)
    return latent_statistics(bank.latents(engine, range(count)).cpu())


def train_dfr(job: DFRJob, resume: bool = False) -> Trainer:
    """Train a DFR; rank 0 writes ``out/dfr.safetensors`` (+ .json) at the end."""
    dist_ = Distributed.from_env()
    device = dist_.device(job.settings.device)
    dist_.start(device)
    engine, sha = _engine(job.weights, device)
    face_model, face_info = open_face_model(job.face_model)
    tm = TorchFaceModel.from_face_model(face_model, device)
    camera = rig_camera(job.camera_size)
    bank = _prepare_bank(job, engine, sha, dist_)
    crop = job.crop
    if crop is None:
        found = torch.from_numpy(bank.landmarks[bank.found])
        crop = (crop_from_landmarks(found, bank.resolution, tm, camera) if len(found)
                else ffhq_crop(tm, camera))
    samples = GeneratorSamples(engine, bank, crop, camera, job.cache_images)

    torch.manual_seed(job.settings.seed)
    dfr = DFR(DFRConfig(engine.config.num_ws, engine.config.w_dim, job.hidden))
    dfr.normalizer.set_statistics(*_latent_statistics(bank, engine))
    weights, batch = job.loss_weights, job.settings.batch

    def loss_fn(module: nn.Module, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        return dfr_loss(module, samples.batch(rng.integers(0, len(bank), batch)), tm, camera,
                        weights)

    setup = TrainingSetup(sha, face_info, camera.size, crop, job.psi)
    meta = {"setup": setup.to_dict(), "loss_weights": weights.to_dict()}
    trainer = Trainer("dfr", dfr, loss_fn, job.settings, job.out, meta, dist_)
    trainer.run(resume)
    if dist_.is_main:
        save_dfr(job.out / DFR_FILE, dfr, setup, {
            "samples_file": SAMPLES_FILE,
            "steps": trainer.step,
            "loss_weights": weights.to_dict(),
        })
    return trainer


def train_rignet(job: RigNetJob, resume: bool = False) -> Trainer:
    """Train a RigNet against a trained DFR; rank 0 writes ``out/stylerig-<sha>.safetensors``
    (DFR + RigNet, what the backend loads) at the end."""
    dist_ = Distributed.from_env()
    device = dist_.device(job.settings.device)
    dist_.start(device)
    engine, sha = _engine(job.weights, device)
    dfr, setup, dfr_meta = load_dfr(job.dfr, device)
    if setup.generator_sha256 != sha:
        raise StyleRigError(f"{job.dfr}: trained for generator {setup.generator_sha256[:16]}, "
                            f"--weights is {sha[:16]}")
    face_model, face_info = open_face_model(job.face_model or setup.face_model["name"])
    if face_info["sha256"] != setup.face_model["sha256"]:
        raise StyleRigError(f"--face-model: the DFR was trained with {setup.face_model['name']}"
                            f" (sha256 {setup.face_model['sha256'][:16]}), not this file")
    tm = TorchFaceModel.from_face_model(face_model, device)
    camera = rig_camera(setup.camera_size)
    bank_path = Path(job.dfr).parent / str(dfr_meta.get("samples_file", SAMPLES_FILE))
    if not bank_path.is_file():
        raise StyleRigError(f"{bank_path}: the DFR's sample bank is missing (keep "
                            f"{SAMPLES_FILE} next to {Path(job.dfr).name})")
    bank = SampleBank.load(bank_path)
    samples = GeneratorSamples(engine, bank, setup.crop, camera, job.cache_images)

    torch.manual_seed(job.settings.seed)
    rignet = RigNet(RigNetConfig(engine.config.num_ws, engine.config.w_dim, job.latent,
                                 job.hidden))
    rignet.normalizer.set_statistics(dfr.normalizer.w_mean.cpu(), dfr.normalizer.w_std.cpu())
    weights, batch = job.loss_weights, job.settings.batch

    def loss_fn(module: nn.Module, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        data = samples.batch(rng.integers(0, len(bank), batch))
        masks = torch.from_numpy(random_edit_masks(rng, batch)).to(device)
        return rignet_loss(module, dfr, data, masks, tm, camera, weights)

    meta = {"setup": setup.to_dict(), "dfr": str(job.dfr), "loss_weights": weights.to_dict()}
    trainer = Trainer("rignet", rignet, loss_fn, job.settings, job.out, meta, dist_)
    trainer.run(resume)
    if dist_.is_main:
        save_stylerig(job.out, dfr, rignet, setup, {
            "steps": trainer.step,
            "dfr_steps": dfr_meta.get("steps"),
            "loss_weights": weights.to_dict(),
        })
    return trainer

