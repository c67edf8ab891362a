"""The face file: one inverted photo, ready to edit (``docs/PHOTO.md`` documents the schema).

``face.json`` (the sidecar: format ``nfr-photo-face``, version 1, human-readable) and
``face.safetensors`` beside it (the tensors: ``rig`` [257], ``photo_rig`` [257],
``landmarks`` [68, 2] and, per backend, ``w_plus`` [num_ws, w_dim] or ``noise``
[noise_dim] + ``z`` [z_dim]), written as one crash-safe pair by the project's artefact writer;
reading checks the format, the version and that the tensors are the ones the JSON describes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...contract.state import RigState
from ...rig.params import RIG_SIZE
from ..checkpoints.project_format import read_artifact, write_artifact
from . import PhotoError

FACE_FORMAT = "nfr-photo-face"
FACE_VERSION = 1
BACKENDS = ("stylegan2", "stylerig", "discofacegan")


@dataclass
class FaceFile:
    """One inverted photo. ``rig`` [257] are the slider start values (StyleRig: the DFR
    estimate of ``w_plus``; DiscoFaceGAN: the photo's coefficients with the optimised identity
    and reflectance; StyleGAN2: the photo's values, informational); ``photo_rig`` [257] what
    R-Net or the landmark fit read from the photo. ``meta`` holds the JSON fields of
    docs/PHOTO.md (photo, alignment, model, inversion, controls, key light)."""

    backend: str
    model_sha256: str
    rig: np.ndarray
    photo_rig: np.ndarray
    landmarks: np.ndarray
    w_plus: np.ndarray | None = None
    noise: np.ndarray | None = None
    z: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def tensors(self) -> dict[str, np.ndarray]:
        out = {"rig": self.rig, "photo_rig": self.photo_rig, "landmarks": self.landmarks}
        for name in ("w_plus", "noise", "z"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}

    def rig_state(self, rig: np.ndarray | None = None, resolution: int | None = None
                  ) -> RigState:
        """The backend's RigState of this face with rig values ``rig`` (default: the start
        values): W+ for StyleGAN2/StyleRig, the generator input z = [coefficients, noise] for
        DiscoFaceGAN, with the truncation the inversion used."""
        values = self.rig if rig is None else np.asarray(rig, np.float32)
        files = self.meta.get("model", {})
        if self.backend == "discofacegan":
            from ...rig.params import RigParams

            assert self.noise is not None
            coefficients = RigParams.from_vector(values).to_dfg_vector()
            z = np.concatenate([coefficients, self.noise]).astype(np.float32)
            return RigState(backend=self.backend, model_id=self.model_sha256, rig=values,
                            latent=z, latent_space="z", psi=float(files.get("psi", 1.0)),
                            cutoff=files.get("cutoff"), resolution=resolution)
        assert self.w_plus is not None
        return RigState(backend=self.backend, model_id=self.model_sha256, rig=values,
                        latent=self.w_plus, latent_space="w+", resolution=resolution)


def _tensors_path(json_path: Path) -> Path:
    return json_path.with_suffix(".safetensors")


def write_face(path: str | os.PathLike[str], face: FaceFile) -> Path:
    """Write ``path`` (.json) and its ``.safetensors`` atomically as a pair; returns the JSON
    path."""
    json_path = Path(path)
    if json_path.suffix != ".json":
        raise PhotoError(f"{json_path}: a face file is written as <name>.json (+ "
                         "<name>.safetensors)")
    if face.backend not in BACKENDS:
        raise PhotoError(f"face file backend {face.backend!r}: expected one of "
                         f"{', '.join(BACKENDS)}")
    meta = dict(face.meta, backend=face.backend, model_sha256=face.model_sha256,
                tensors={k: list(v.shape) for k, v in face.tensors().items()})
    return write_artifact(_tensors_path(json_path), face.tensors(), meta, FACE_FORMAT,
                          FACE_VERSION, sidecar=json_path)


def read_face(path: str | os.PathLike[str]) -> FaceFile:
    """A face file written by ``write_face`` (checked: format, version, digest, shapes)."""
    json_path = Path(path)
    tensors, meta = read_artifact(_tensors_path(json_path), FACE_FORMAT, FACE_VERSION,
                                  PhotoError, sidecar=json_path)
    backend = meta.get("backend")
    if backend not in BACKENDS:
        raise PhotoError(f"{json_path}: field backend: expected one of {', '.join(BACKENDS)}, "
                         f"found {backend!r}")
    needed: dict[str, tuple[int, ...] | None] = {
        "rig": (RIG_SIZE,), "photo_rig": (RIG_SIZE,), "landmarks": (68, 2)}
    needed.update({"noise": None, "z": None} if backend == "discofacegan" else {"w_plus": None})
    arrays: dict[str, np.ndarray] = {}
    for name, shape in needed.items():
        value: torch.Tensor | None = tensors.get(name)
        if value is None or (shape is not None and tuple(value.shape) != shape):
            found = "nothing" if value is None else str(list(value.shape))
            raise PhotoError(f"{_tensors_path(json_path)}: tensor {name}: expected "
                             f"{list(shape) if shape else 'present'}, found {found}")
        array = value.float().numpy()
        if not np.isfinite(array).all():
            raise PhotoError(f"{_tensors_path(json_path)}: tensor {name} holds NaN or inf")
        arrays[name] = array
    extra = {k: v for k, v in meta.items()
             if k not in ("format", "version", "weights_sha256", "backend", "model_sha256",
                          "tensors")}
    return FaceFile(backend=str(backend), model_sha256=str(meta.get("model_sha256", "")),
                    rig=arrays["rig"], photo_rig=arrays["photo_rig"],
                    landmarks=arrays["landmarks"], w_plus=arrays.get("w_plus"),
                    noise=arrays.get("noise"), z=arrays.get("z"), meta=extra)
