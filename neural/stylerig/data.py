"""Generator samples for StyleRig training: seeds -> W+ -> images at the rig camera, landmarks.

The crop (docs/STYLERIG.md): the rig renders through Deep3DFaceRecon's camera (focal 1015 px,
224 px frame, docs/REFERENCE.md §4.3) or a scaled copy of it (same field of view, any size). Each
generator image is mapped onto that frame by one fixed axis-aligned square crop per
generator, a :class:`FaceCrop`: the box (fractions of the generator image) that the camera
frame sees. Two ways to get it:

- ``ffhq_crop``: FFHQ's alignment rule (docs/REFERENCE.md §6.2) applied to the face model's neutral
  face seen by the camera. FFHQ-aligned generators put the quad of side
  2·max(2·|eye_to_eye|, 1.8·|eye_to_mouth|) centred at eye_avg + 0.1·eye_to_mouth onto the
  whole image, so the same quad computed from the rig's projected keypoints is the whole
  generator image. With the synthetic face model this is the centre 84 % of the image,
  slightly below the centre.
- ``crop_from_landmarks``: the median detected 5 points (eyes, nose tip, mouth corners;
  Deep3DFaceRecon's alignment points) of the generator's samples fitted by scale +
  translation to the same 5 points of the neutral face: right for any framing (a studio's
  own crops), needs a landmark detector.

What one crop cannot do (faces of a generator vary in position and size) the DFR absorbs in
the rig's translation. Coordinates: generator and camera pixel coordinates are pixel indices
(x right, y down, pixel centre at the integer), related through the continuous image plane
(pixel i covers [i, i + 1)).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import torch
import torch.nn.functional as F

from ...rig.atomic import atomic_open
from ...rig.camera import CAMERA_224, Camera
from ...rig.face_model import N_LANDMARKS
from ...rig.geometry import TorchFaceModel, evaluate_rig
from ...rig.params import RIG_SIZE
from ..engine import StyleGAN2Engine
from ..landmarks import LandmarkDetector
from . import StyleRigError

BANK_FORMAT = "nfr-stylerig-samples"
BANK_VERSION = 1

# Deep3DFaceRecon's 5 alignment points from the iBUG 68 (0-based): eye centres, nose tip,
# mouth corners.
_LEFT_EYE, _RIGHT_EYE = slice(36, 42), slice(42, 48)
_NOSE_TIP, _MOUTH_LEFT, _MOUTH_RIGHT = 30, 48, 54


def rig_camera(size: int = 224) -> Camera:
    """Deep3DFaceRecon's camera scaled to a ``size`` px frame (same field of view)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise StyleRigError(f"rig camera size: expected an integer >= 8 px, found {size!r}")
    factor = size / CAMERA_224.size
    return Camera(focal=CAMERA_224.focal * factor, center=size / 2.0, size=size)


@dataclass(frozen=True)
class FaceCrop:
    """The square of the generator image the rig camera frame shows: left and top edge and
    side length, as fractions of the generator image's side (may reach outside [0, 1])."""

    left: float
    top: float
    size: float

    def __post_init__(self) -> None:
        values = (self.left, self.top, self.size)
        if not all(isinstance(v, int | float) and np.isfinite(v) for v in values):
            raise StyleRigError(f"face crop: expected finite numbers, found {values}")
        if not self.size > 0:
            raise StyleRigError(f"face crop: expected a positive size, found {self.size}")

    def to_dict(self) -> dict[str, float]:
        return {"left": float(self.left), "top": float(self.top), "size": float(self.size)}

    @classmethod
    def from_dict(cls, data: Any, source: str = "face crop") -> FaceCrop:
        if not isinstance(data, dict) or set(data) != {"left", "top", "size"}:
            raise StyleRigError(
                f"{source}: expected an object with 'left', 'top' and 'size', found {data!r}"
            )
        return cls(**{k: float(v) for k, v in data.items()})

    @classmethod
    def parse(cls, text: str) -> FaceCrop:
        """From "left,top,size" (the CLI's --crop)."""
        parts = text.split(",")
        try:
            left, top, size = (float(p) for p in parts)
        except ValueError:
            raise StyleRigError(
                f"--crop: expected three numbers 'left,top,size' (fractions of the generator "
                f"image), found {text!r}"
            ) from None
        return cls(left, top, size)


def five_points(landmarks: torch.Tensor) -> torch.Tensor:
    """iBUG-68 landmarks [..., 68, 2] -> the 5 alignment points [..., 5, 2]."""
    return torch.stack(
        [
            landmarks[..., _LEFT_EYE, :].mean(dim=-2),
            landmarks[..., _RIGHT_EYE, :].mean(dim=-2),
            landmarks[..., _NOSE_TIP, :],
            landmarks[..., _MOUTH_LEFT, :],
            landmarks[..., _MOUTH_RIGHT, :],
        ],
        dim=-2,
    )


def neutral_landmarks(tm: TorchFaceModel, camera: Camera) -> torch.Tensor:
    """The face model's mean face, frontal, seen by ``camera``: landmarks [68, 2] px."""
    rig = tm.mean_shape.new_zeros(1, RIG_SIZE)
    return evaluate_rig(tm, rig, camera).landmarks[0].detach()


def ffhq_crop(tm: TorchFaceModel, camera: Camera) -> FaceCrop:
    """The crop of an FFHQ-aligned generator (module docstring)."""
    points = neutral_landmarks(tm, camera).double().cpu() + 0.5  # continuous coordinates
    eye_left, eye_right = points[_LEFT_EYE].mean(0), points[_RIGHT_EYE].mean(0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_mouth = (points[_MOUTH_LEFT] + points[_MOUTH_RIGHT]) / 2 - eye_avg
    quad = 2.0 * max(2.0 * float((eye_right - eye_left).norm()), 1.8 * float(eye_to_mouth.norm()))
    centre = eye_avg + 0.1 * eye_to_mouth
    corner = (quad / 2 - centre) / quad  # camera origin in generator-image fractions
    return FaceCrop(float(corner[0]), float(corner[1]), camera.size / quad)


def crop_from_landmarks(
    landmarks: torch.Tensor, resolution: int, tm: TorchFaceModel, camera: Camera
) -> FaceCrop:
    """The crop fitted to detected landmarks [N, 68, 2] (generator px, N >= 1) of images of
    ``resolution`` px: median 5 points vs the neutral face's, scale + translation."""
    if landmarks.dim() != 3 or tuple(landmarks.shape[1:]) != (N_LANDMARKS, 2) or not len(
        landmarks
    ):
        raise StyleRigError(
            f"crop from landmarks: expected [N >= 1, 68, 2] detections, found "
            f"{list(landmarks.shape)}"
        )
    detected = five_points(landmarks.double().cpu()).median(dim=0).values + 0.5
    model = five_points(neutral_landmarks(tm, camera).double().cpu()) + 0.5
    d_centre, m_centre = detected.mean(0), model.mean(0)
    scale = float(((detected - d_centre) * (model - m_centre)).sum() /
                  (model - m_centre).square().sum())
    if not scale > 0:
        raise StyleRigError("crop from landmarks: the detected faces are mirrored or degenerate")
    origin = (d_centre - scale * m_centre) / resolution
    return FaceCrop(float(origin[0]), float(origin[1]), scale * camera.size / resolution)


def crop_to_camera(images: torch.Tensor, crop: FaceCrop, camera: Camera) -> torch.Tensor:
    """Generator images [B, C, R, R] (sRGB, nominally [-1, 1]) -> the camera's view
    [B, 3, S, S] in 0..1: box-filtered by the largest integer factor that keeps at least
    S px across the crop, then sampled bilinearly at the camera's pixel centres."""
    if images.dim() != 4 or images.shape[1] < 3 or images.shape[2] != images.shape[3]:
        raise StyleRigError(
            f"generator images: expected [B, 3, R, R], found {list(images.shape)}"
        )
    resolution, size = images.shape[-1], camera.size
    rgb = ((images[:, :3].float() + 1.0) / 2.0).clamp(0.0, 1.0)
    shrink = int(crop.size * resolution // size)
    if shrink >= 2:
        rgb = F.avg_pool2d(rgb, shrink)
    pooled = rgb.shape[-1]
    centres = (torch.arange(size, dtype=torch.float64) + 0.5) / size  # camera frame fractions
    xs = (crop.left + crop.size * centres) * resolution / max(shrink, 1)
    ys = (crop.top + crop.size * centres) * resolution / max(shrink, 1)
    grid_x = (2.0 * xs / pooled - 1.0).to(rgb)
    grid_y = (2.0 * ys / pooled - 1.0).to(rgb)
    grid = torch.stack(torch.meshgrid(grid_y, grid_x, indexing="ij")[::-1], dim=-1)
    grid = grid.expand(rgb.shape[0], -1, -1, -1)
    return F.grid_sample(rgb, grid, mode="bilinear", padding_mode="border", align_corners=False)


def landmarks_to_camera(
    points: torch.Tensor, crop: FaceCrop, resolution: int, camera: Camera
) -> torch.Tensor:
    """Generator-image pixel coordinates [..., 2] -> camera pixel coordinates [..., 2]."""
    origin = points.new_tensor([crop.left, crop.top])
    fraction = (points + 0.5) / resolution
    return (fraction - origin) / crop.size * camera.size - 0.5


# ------------------------------------------------------------------ landmark sources

LandmarkSource = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""Generator images [B, C, R, R] (nominally [-1, 1]) -> (landmarks [B, 68, 2] generator
pixel coordinates, found [B] bool). Rows not found are ignored by the landmark loss."""


def no_landmarks(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A landmark source that finds nothing (photometric training only; tests)."""
    batch = images.shape[0]
    return torch.zeros(batch, N_LANDMARKS, 2), torch.zeros(batch, dtype=torch.bool)


def detector_source(detector: LandmarkDetector) -> LandmarkSource:
    """Adapt a ``neural.landmarks`` detector to a LandmarkSource: generator images
    [B, 3, H, W] in [-1, 1] -> (points [B, 68, 2] image pixels, found [B] bool)."""

    def source(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        detections = detector.detect(images[:, :3].float())
        points = torch.zeros(len(detections), N_LANDMARKS, 2)
        found = torch.zeros(len(detections), dtype=torch.bool)
        for i, detection in enumerate(detections):
            if detection is not None:
                points[i] = torch.from_numpy(detection.landmarks)
                found[i] = True
        return points, found

    return source


# ------------------------------------------------------------------ samples


@dataclass
class SampleBank:
    """The training samples of one generator and their detected landmarks.

    Sample i's W+ is map(z(seeds[i])) truncated with ``psi``; where ``crossover[i]`` > 0 its
    rows from ``crossover[i]`` on come from ``mix_seeds[i]`` instead (StyleGAN's style
    mixing), so the DFR learns to read W+ whose rows differ, as RigNet's outputs do.
    ``landmarks`` are generator pixels of ``resolution`` px images; ``found`` False where none
    was detected or detection was not run.
    """

    seeds: np.ndarray  # [N] int64
    mix_seeds: np.ndarray  # [N] int64
    crossover: np.ndarray  # [N] int64, 0 = no mixing
    psi: float
    resolution: int
    generator_sha256: str
    landmarks: np.ndarray  # [N, 68, 2] float32
    found: np.ndarray  # [N] bool
    landmark_source: str = "none"
    mixing: float = 0.0

    @classmethod
    def from_seeds(
        cls,
        seeds: Sequence[int] | np.ndarray,
        psi: float,
        resolution: int,
        generator_sha256: str = "",
        num_ws: int = 1,
        mixing: float = 0.0,
        mixing_seed: int = 0,
    ) -> SampleBank:
        """Samples of ``seeds``; a fraction ``mixing`` of them style-mixed with another seed of
        the list at a crossover row drawn uniformly from 1..num_ws-1 (seeded draws)."""
        array = np.asarray(seeds, dtype=np.int64)
        if array.ndim != 1 or not array.size:
            raise StyleRigError("sample bank: expected a non-empty list of seeds")
        if not 0.0 <= mixing <= 1.0:
            raise StyleRigError(f"style-mixing probability: expected 0..1, found {mixing}")
        rng = np.random.default_rng(mixing_seed)
        mixed = (rng.random(array.size) < mixing) & (num_ws > 1)
        crossover = np.where(mixed, rng.integers(1, max(num_ws, 2), array.size), 0)
        return cls(
            seeds=array,
            mix_seeds=array[rng.integers(0, array.size, array.size)],
            crossover=crossover.astype(np.int64),
            psi=float(psi),
            resolution=int(resolution),
            generator_sha256=generator_sha256,
            landmarks=np.zeros((array.size, N_LANDMARKS, 2), np.float32),
            found=np.zeros(array.size, bool),
            mixing=float(mixing),
        )

    def __len__(self) -> int:
        return int(self.seeds.size)

    def latents(self, engine: StyleGAN2Engine, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """W+ [b, num_ws, w_dim] of the samples at ``indices`` (on the engine's device)."""
        indices = np.asarray(indices, dtype=np.int64)
        ws = _seed_latents(engine, self.seeds[indices], self.psi)
        crossover = self.crossover[indices]
        if crossover.any():
            other = _seed_latents(engine, self.mix_seeds[indices], self.psi)
            rows = torch.arange(ws.shape[1], device=ws.device)
            start = torch.as_tensor(crossover, device=ws.device)
            use_other = (start[:, None] > 0) & (rows[None, :] >= start[:, None])
            ws = torch.where(use_other[..., None], other, ws)
        return ws

    def detect(
        self,
        engine: StyleGAN2Engine,
        source: LandmarkSource,
        name: str,
        batch_size: int = 16,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Render every sample and record its landmarks from ``source`` (called ``name``)."""
        for start in range(0, len(self), batch_size):
            indices = np.arange(start, min(start + batch_size, len(self)))
            images = engine.synthesize(self.latents(engine, indices))
            points, found = source(images)
            self.landmarks[indices] = points.cpu().numpy()
            self.found[indices] = found.cpu().numpy()
            if progress is not None:
                progress(len(indices))
        self.landmark_source = name

    def save(self, path: str | os.PathLike[str]) -> None:
        """``path`` (.safetensors) + ``path`` with .json: arrays, then the description."""
        path = Path(path)
        blob = safetensors.numpy.save(
            {
                "seeds": self.seeds,
                "mix_seeds": self.mix_seeds,
                "crossover": self.crossover,
                "landmarks": self.landmarks,
                "found": self.found.astype(np.uint8),
            }
        )
        with atomic_open(path, "wb") as out:
            out.write(blob)
        meta = {
            "format": BANK_FORMAT,
            "version": BANK_VERSION,
            "psi": self.psi,
            "resolution": self.resolution,
            "generator_sha256": self.generator_sha256,
            "landmark_source": self.landmark_source,
            "mixing": self.mixing,
            "samples": len(self),
        }
        with atomic_open(path.with_suffix(".json"), "w", encoding="utf-8") as out:
            json.dump(meta, out, indent=2, sort_keys=True)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SampleBank:
        path = Path(path)
        sidecar = path.with_suffix(".json")
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            arrays = safetensors.numpy.load_file(str(path))
        except (OSError, ValueError) as exc:
            raise StyleRigError(f"{path}: cannot read the sample bank ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != BANK_FORMAT:
            raise StyleRigError(f"{sidecar}: field format: expected {BANK_FORMAT!r}")
        if meta.get("version") != BANK_VERSION:
            raise StyleRigError(
                f"{sidecar}: field version: expected {BANK_VERSION}, found {meta.get('version')!r}"
            )
        n = int(meta.get("samples", -1))
        expected = {"seeds": (n,), "mix_seeds": (n,), "crossover": (n,),
                    "landmarks": (n, N_LANDMARKS, 2), "found": (n,)}
        for key, shape in expected.items():
            found_shape = tuple(arrays[key].shape) if key in arrays else None
            if found_shape != shape:
                raise StyleRigError(f"{path}: {key}: expected shape {shape}, found {found_shape}")
        return cls(
            seeds=arrays["seeds"].astype(np.int64),
            mix_seeds=arrays["mix_seeds"].astype(np.int64),
            crossover=arrays["crossover"].astype(np.int64),
            psi=float(meta["psi"]),
            resolution=int(meta["resolution"]),
            generator_sha256=str(meta["generator_sha256"]),
            landmarks=arrays["landmarks"].astype(np.float32),
            found=arrays["found"].astype(bool),
            landmark_source=str(meta["landmark_source"]),
            mixing=float(meta["mixing"]),
        )


def _seed_latents(engine: StyleGAN2Engine, seeds: np.ndarray, psi: float) -> torch.Tensor:
    z = torch.cat([engine.z_from_seed(int(seed)) for seed in seeds])
    return engine.map(z, psi=psi)


@dataclass
class Batch:
    """Training samples at the rig camera. B = batch, S = camera size.

    ws         [B, num_ws, w_dim] W+
    images     [B, 3, S, S] 0..1, the generator images cropped to the camera
    landmarks  [B, 68, 2] camera px (rows with found False are meaningless)
    found      [B] bool
    """

    ws: torch.Tensor
    images: torch.Tensor
    landmarks: torch.Tensor
    found: torch.Tensor


class GeneratorSamples:
    """Batches of a SampleBank rendered by an engine and cropped to the rig camera.

    ``cache_images`` keeps every cropped image in memory (small banks, tests): a sample is
    then rendered once. Images are a pure function of the seed, so caching changes no bits."""

    def __init__(
        self,
        engine: StyleGAN2Engine,
        bank: SampleBank,
        crop: FaceCrop,
        camera: Camera,
        cache_images: bool = False,
    ) -> None:
        if bank.resolution != engine.config.img_resolution:
            raise StyleRigError(
                f"sample bank: landmarks are for {bank.resolution} px images, the generator "
                f"renders {engine.config.img_resolution} px"
            )
        self.engine, self.bank, self.crop, self.camera = engine, bank, crop, camera
        self._cache: dict[int, torch.Tensor] | None = {} if cache_images else None

    @property
    def device(self) -> torch.device:
        return self.engine.device

    def batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        """The samples at ``indices``, rendered by the engine at its own precision (never under
        the trainer's autocast)."""
        indices = [int(i) for i in indices]
        with torch.autocast(self.device.type, enabled=False):
            ws = self.bank.latents(self.engine, indices)
            images = self._images(indices, ws)
        points = torch.as_tensor(self.bank.landmarks[indices], device=self.device)
        landmarks = landmarks_to_camera(points, self.crop, self.bank.resolution, self.camera)
        found = torch.as_tensor(self.bank.found[indices], device=self.device)
        return Batch(ws, images, landmarks, found)

    def _images(self, indices: list[int], ws: torch.Tensor) -> torch.Tensor:
        cache = self._cache
        if cache is None:
            return crop_to_camera(self.engine.synthesize(ws), self.crop, self.camera)
        missing = [k for k, i in enumerate(indices) if i not in cache]
        if missing:
            rendered = crop_to_camera(self.engine.synthesize(ws[missing]), self.crop, self.camera)
            for k, image in zip(missing, rendered, strict=True):
                cache[indices[k]] = image
        return torch.stack([cache[i] for i in indices])
