"""Trained StyleRig files: the DFR and the RigNet of one generator, and where they are found.

Trained models live in one file per generator, ``stylerig-<first 16 hex of the generator's
sha256>.safetensors`` + ``.json`` (the DFR and the RigNet, the crop, camera and face model
they were trained with), looked up in the given folders, then ``$NFR_STYLERIG_DIR``, then
next to the generator file. The same safetensors + JSON convention holds the DFR alone
(``dfr.safetensors``), written by ``nfr train dfr``. The runtime backend that uses them is
``neural.backends.stylerig``.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...contract.files import STYLERIG_FORMAT, stylerig_filename
from ..backends.base import BackendError
from . import StyleRigError
from .data import FaceCrop
from .dfr import DFR, DFRConfig
from .rignet import RigNet, RigNetConfig

DFR_FORMAT = "nfr-stylerig-dfr"

FILE_VERSION = 1
SEARCH_ENV = "NFR_STYLERIG_DIR"


class MissingRigNetError(BackendError):
    """No trained RigNet exists for the selected generator."""


# ------------------------------------------------------------------ files


def write_artifact(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """``path`` (.safetensors) + its ``.json`` sidecar in the project's one artefact format
    (``checkpoints.project_format``): ``meta`` holds ``format`` and ``version``; the sidecar
    also carries the weights' sha256 and the pair is written crash-safely."""
    from ..checkpoints.project_format import write_artifact as write_pair

    fields = {k: v for k, v in meta.items() if k not in ("format", "version")}
    write_pair(path, tensors, fields, str(meta["format"]), int(meta["version"]))


def read_artifact(path: Path, expected_format: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and sidecar of a file written by ``write_artifact``; checks its format,
    version and that the weights are the ones the sidecar describes (both digests named)."""
    from ..checkpoints.project_format import read_artifact as read_pair

    return read_pair(path, expected_format, FILE_VERSION, StyleRigError)


def _prefixed(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def _load_module(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str,
                 source: Path) -> None:
    state = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise StyleRigError(f"{source}: {prefix} weights do not match its config ({exc})") from None


@dataclass
class TrainingSetup:
    """How a DFR/RigNet was trained, which decides where it is valid: the generator (sha256),
    the face model (name, sha256), the rig camera size, the crop and the truncation psi of
    the samples."""

    generator_sha256: str
    face_model: dict[str, str]
    camera_size: int
    crop: FaceCrop
    psi: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "generator_sha256": self.generator_sha256,
            "face_model": dict(self.face_model),
            "camera_size": self.camera_size,
            "crop": self.crop.to_dict(),
            "psi": self.psi,
        }

    @classmethod
    def from_dict(cls, meta: dict, source: str) -> TrainingSetup:
        try:
            return cls(
                generator_sha256=str(meta["generator_sha256"]),
                face_model={str(k): str(v) for k, v in dict(meta["face_model"]).items()},
                camera_size=int(meta["camera_size"]),
                crop=FaceCrop.from_dict(meta["crop"], f"{source} crop"),
                psi=float(meta["psi"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StyleRigError(
                f"{source}: missing or malformed training setup ({exc!r})"
            ) from None


def save_dfr(path: Path, dfr: DFR, setup: TrainingSetup, extra: dict[str, Any]) -> None:
    meta = {"format": DFR_FORMAT, "version": FILE_VERSION, "dfr": dfr.config.to_dict(),
            **setup.to_dict(), **extra}
    write_artifact(path, _prefixed(dfr, "dfr"), meta)


def load_dfr(path: str | os.PathLike[str], device: torch.device | str = "cpu"
             ) -> tuple[DFR, TrainingSetup, dict]:
    """A DFR file -> (DFR in eval mode, frozen, on ``device``; its training setup; sidecar)."""
    path = Path(path)
    tensors, meta = read_artifact(path, DFR_FORMAT)
    dfr = DFR(DFRConfig.from_dict(meta.get("dfr"), f"{path.with_suffix('.json')} dfr"))
    _load_module(dfr, tensors, "dfr", path)
    setup = TrainingSetup.from_dict(meta, str(path.with_suffix(".json")))
    return dfr.to(device).eval().requires_grad_(False), setup, meta


@dataclass
class StyleRigModel:
    """A trained DFR + RigNet pair for one generator (eval mode, frozen)."""

    dfr: DFR
    rignet: RigNet
    setup: TrainingSetup
    path: Path | None = None

    def to(self, device: torch.device | str) -> StyleRigModel:
        self.dfr.to(device)
        self.rignet.to(device)
        return self


def save_stylerig(folder: Path, dfr: DFR, rignet: RigNet, setup: TrainingSetup,
                  extra: dict[str, Any]) -> Path:
    """Write the runtime file of a generator into ``folder``; returns its path."""
    path = folder / stylerig_filename(setup.generator_sha256)
    meta = {"format": STYLERIG_FORMAT, "version": FILE_VERSION, "dfr": dfr.config.to_dict(),
            "rignet": rignet.config.to_dict(), **setup.to_dict(), **extra}
    write_artifact(path, {**_prefixed(dfr, "dfr"), **_prefixed(rignet, "rignet")}, meta)
    return path


def load_stylerig(path: str | os.PathLike[str], device: torch.device | str = "cpu"
                  ) -> StyleRigModel:
    path = Path(path)
    tensors, meta = read_artifact(path, STYLERIG_FORMAT)
    source = str(path.with_suffix(".json"))
    dfr = DFR(DFRConfig.from_dict(meta.get("dfr"), f"{source} dfr"))
    rignet = RigNet(RigNetConfig.from_dict(meta.get("rignet"), f"{source} rignet"))
    _load_module(dfr, tensors, "dfr", path)
    _load_module(rignet, tensors, "rignet", path)
    model = StyleRigModel(dfr.eval().requires_grad_(False), rignet.eval().requires_grad_(False),
                          TrainingSetup.from_dict(meta, source), path)
    return model.to(device)


def search_folders(folders: Iterable[str | os.PathLike[str]] = (),
                   weights_path: str | os.PathLike[str] | None = None) -> list[Path]:
    """Where RigNets are looked for, in order: ``folders``, $NFR_STYLERIG_DIR (os.pathsep
    separated), the generator file's folder."""
    found = [Path(f) for f in folders]
    env = os.environ.get(SEARCH_ENV, "")
    found += [Path(p) for p in env.split(os.pathsep) if p]
    if weights_path is not None:
        found.append(Path(weights_path).resolve().parent)
    return found


def find_stylerig(generator_sha256: str, folders: Sequence[Path]) -> Path | None:
    """The first folder's StyleRig file for the generator whose sidecar names it."""
    name = stylerig_filename(generator_sha256)
    for folder in folders:
        candidate = folder / name
        if candidate.is_file() and candidate.with_suffix(".json").is_file():
            try:
                meta = json.loads(candidate.with_suffix(".json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and meta.get("generator_sha256") == generator_sha256:
                return candidate
    return None


def training_commands(weights_path: str | os.PathLike[str] | None, out: str = "stylerig-run"
                      ) -> str:
    """The shell commands that train the StyleRig file of a generator."""
    weights = shlex.quote(str(weights_path)) if weights_path is not None else "GENERATOR.pkl"
    return (
        f"nfr train dfr --weights {weights} --face-model BFM_model_front.mat --out {out}/dfr\n"
        f"  nfr train rignet --weights {weights} --dfr {out}/dfr/dfr.safetensors --out {out}"
    )


def missing_rignet_message(generator_sha256: str, folders: Sequence[Path],
                           weights_path: str | os.PathLike[str] | None) -> str:
    looked = ", ".join(str(f) for f in folders) or "(no folders)"
    return (
        f"no RigNet for generator {generator_sha256[:16]} (expected "
        f"{stylerig_filename(generator_sha256)} in {looked}; set ${SEARCH_ENV} to add a "
        f"folder). StyleRig has no public weights: train one for this generator with\n"
        f"  {training_commands(weights_path)}\n"
        f"and put the stylerig-*.safetensors/.json it writes into one of those folders."
    )
