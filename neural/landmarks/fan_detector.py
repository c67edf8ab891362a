"""face-alignment's 2DFAN4 landmark network with its sfd face detector, CPU or CUDA.

Nothing is downloaded: the official weight files must already be in
``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``) under their official
names, otherwise construction fails with a message naming the files, the folder and the URLs.
face-alignment loads them itself (``FaceAlignment``, ``compile=False``: compiling costs
minutes on a CPU and gains nothing per call).

Unlike ``FaceAlignment.get_landmarks_from_image`` (one image per call, integer output), the
crops of every face of the batch go through the network together, and heatmap peaks are
decoded on the device and mapped back to the image without rounding to whole pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import Detection, DetectorUnavailableError, LandmarkDetector, LandmarkError, largest_box

FAN_WEIGHTS = "2DFAN4-11f355bf06.pth.tar"
SFD_WEIGHTS = "s3fd-619a316812.pth"
WEIGHT_URLS = {
    FAN_WEIGHTS: "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    SFD_WEIGHTS: "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
}


def weights_dir() -> Path:
    """Where face-alignment looks for its weights: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def check_weights(folder: Path) -> None:
    """Raise DetectorUnavailableError naming every official weight file missing in ``folder``."""
    missing = [name for name in WEIGHT_URLS if not (folder / name).is_file()]
    if missing:
        listing = "\n".join(f"  {name}  (from {WEIGHT_URLS[name]})" for name in missing)
        raise DetectorUnavailableError(
            f"FAN landmark detector: weight file(s) missing in {folder}:\n{listing}\n"
            "Download them yourself and put them into that folder under exactly these names "
            "(the folder is $TORCH_HOME/hub/checkpoints; TORCH_HOME defaults to "
            "~/.cache/torch). Nothing is downloaded automatically."
        )


def resolve_device(device: torch.device | str | None) -> torch.device:
    """None -> CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type not in ("cpu", "cuda"):
        raise LandmarkError(f"device: the FAN detector runs on 'cpu' or 'cuda', found {device!r}")
    return resolved


def heatmap_peaks(heatmaps: torch.Tensor) -> torch.Tensor:
    """[N, K, h, w] -> [N, K, 2] (x, y) peak positions in heatmap units as face-alignment
    decodes them: the arg-max pixel p maps to p + 0.5, moved a quarter pixel toward the higher
    neighbour on each axis when the peak is not on the border."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    index = flat.argmax(-1)
    px, py = index % w, index // w

    def value_at(dx: int, dy: int) -> torch.Tensor:
        x = (px + dx).clamp(0, w - 1)
        y = (py + dy).clamp(0, h - 1)
        return flat.gather(-1, (y * w + x).unsqueeze(-1)).squeeze(-1)

    step_x = torch.sign(value_at(1, 0) - value_at(-1, 0))
    step_y = torch.sign(value_at(0, 1) - value_at(0, -1))
    step = torch.stack([step_x, step_y], dim=-1)
    interior = (px > 0) & (px < w - 1) & (py > 0) & (py < h - 1)
    peaks = torch.stack([px, py], dim=-1).to(heatmaps.dtype) + 0.5
    return peaks + 0.25 * step * interior.unsqueeze(-1)


class FanDetector(LandmarkDetector):
    """``flip_input`` averages the heatmaps of the mirrored crop (face-alignment's default;
    twice the network time). ``max_batch_size`` bounds how many 256 px crops (and images for
    the face detector) go through a network at once."""

    name = "fan"

    def __init__(
        self,
        device: torch.device | str | None = None,
        *,
        flip_input: bool = True,
        max_batch_size: int = 8,
    ) -> None:
        if max_batch_size < 1:
            raise LandmarkError(f"max_batch_size: expected >= 1, found {max_batch_size}")
        self.device = resolve_device(device)
        folder = weights_dir()
        check_weights(folder)
        try:
            import face_alignment
            from face_alignment import utils as fa_utils
        except ImportError as exc:
            raise DetectorUnavailableError(
                "the FAN landmark detector needs the package 'face-alignment' "
                f"(pip install face-alignment==1.5.0); importing it failed: {exc}"
            ) from exc
        try:
            aligner = face_alignment.FaceAlignment(
                face_alignment.LandmarksType.TWO_D,
                device=str(self.device),
                flip_input=flip_input,
                face_detector="sfd",
                face_detector_kwargs={"path_to_detector": str(folder / SFD_WEIGHTS)},
                compile=False,
            )
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            raise DetectorUnavailableError(
                f"FAN landmark detector: could not load {FAN_WEIGHTS} / {SFD_WEIGHTS} from "
                f"{folder} ({type(exc).__name__}: {exc}); replace them with the official files "
                f"from {WEIGHT_URLS[FAN_WEIGHTS]} and {WEIGHT_URLS[SFD_WEIGHTS]}"
            ) from exc
        self._utils = fa_utils
        self._network = aligner.face_alignment_net
        self._face_detector = aligner.face_detector
        self.flip_input = flip_input
        self.max_batch_size = max_batch_size

    def _detect(
        self, images: list[np.ndarray], boxes: list[np.ndarray | None]
    ) -> list[Detection | None]:
        found = self._find_faces(images, boxes)
        faces = [(i, box) for i, (box, _) in enumerate(found) if box is not None]
        results: list[Detection | None] = [None] * len(images)
        if not faces:
            return results
        landmarks = self._landmarks([images[i] for i, _ in faces], [box for _, box in faces])
        for (i, box), points in zip(faces, landmarks, strict=True):
            results[i] = Detection(points, box.astype(np.float32), found[i][1])
        return results

    def _find_faces(
        self, images: list[np.ndarray], boxes: list[np.ndarray | None]
    ) -> list[tuple[np.ndarray | None, float | None]]:
        """Per image: (box, sfd score) of the largest face, the given box with None, or
        (None, None). sfd runs batched over consecutive images of one size."""
        found: list[tuple[np.ndarray | None, float | None]] = [(box, None) for box in boxes]
        todo = [i for i, box in enumerate(boxes) if box is None]
        for start in range(0, len(todo), self.max_batch_size):
            chunk = todo[start : start + self.max_batch_size]
            groups: dict[tuple[int, ...], list[int]] = {}
            for i in chunk:
                groups.setdefault(images[i].shape, []).append(i)
            for members in groups.values():
                batch = torch.from_numpy(np.stack([images[i] for i in members]))
                batch = batch.to(self.device).permute(0, 3, 1, 2).float()
                for i, candidates in zip(
                    members, self._face_detector.detect_from_batch(batch), strict=True
                ):
                    candidates = np.asarray(candidates, np.float64).reshape(-1, 5)
                    if len(candidates):
                        best = candidates[largest_box(candidates)]
                        found[i] = (best[:4], float(best[4]))
        return found

    @torch.no_grad()
    def _landmarks(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        """Landmarks [68, 2] float32 of one face per (image, box)."""
        u = self._utils
        boxes_array = np.stack(boxes)
        size = boxes_array[:, 2:] - boxes_array[:, :2]
        centres = (boxes_array[:, :2] + boxes_array[:, 2:]) / 2
        centres[:, 1] -= size[:, 1] * u.CENTER_Y_OFFSET
        scales = size.sum(axis=1) / self._face_detector.reference_scale
        crops = np.stack(
            [u.crop(image, c, s) for image, c, s in zip(images, centres, scales, strict=True)]
        )
        pixels = torch.from_numpy(crops).permute(0, 3, 1, 2)
        peaks = []
        for start in range(0, len(pixels), self.max_batch_size):
            chunk = pixels[start : start + self.max_batch_size].to(self.device).float() / 255.0
            heatmaps = self._network(chunk)[-1]
            if self.flip_input:
                heatmaps = heatmaps + u.flip(self._network(u.flip(chunk))[-1], is_label=True)
            peaks.append(heatmap_peaks(heatmaps.float()).cpu())
        points = torch.cat(peaks).numpy().astype(np.float64)
        # face-alignment's inverse crop transform: the heatmap spans SCALE_FACTOR * scale
        # image pixels centred on the crop centre.
        span = (u.SCALE_FACTOR * scales)[:, None, None]
        resolution = u.HEATMAP_RESOLUTION
        image_points = points * span / resolution - span / 2 + centres[:, None, :]
        return list(image_points.astype(np.float32))
