"""File names and folder layouts both sides rely on: the add-on checks and finds these files
cheaply in Blender's process, the worker's readers load them.

- DiscoFaceGAN's coefficient VAEs: ``vae/weights/{id,exp,gamma,rot}``, each one TF checkpoint
  (``stage1_epoch_395.ckpt.index`` + ``.data-00000-of-00001`` in the release).
- A trained StyleRig (DFR + RigNet) for a generator: ``stylerig-<first 16 hex digits of the
  generator's sha256>.safetensors`` and its ``.json`` sidecar (format ``nfr-stylerig``),
  written by ``nfr train rignet``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ContractError

VAE_FACTORS: tuple[str, ...] = ("id", "exp", "gamma", "rot")
"""The VAE factor folders, in the order DiscoFaceGAN draws their latents."""
VAE_RELEASED_PREFIX = "stage1_epoch_395.ckpt"

STYLERIG_FORMAT = "nfr-stylerig"
STYLERIG_GLOB = "stylerig-*.safetensors"
_STYLERIG_NAME = re.compile(r"^stylerig-[0-9a-f]{16}\.safetensors$")


def vae_checkpoint_prefix(folder: str | os.PathLike[str]) -> str:
    """The checkpoint prefix inside a VAE factor folder (the released name, otherwise the only
    ``*.index`` there); ContractError naming what was found otherwise."""
    folder = Path(folder)
    indexes = sorted(folder.glob("*.index"))
    released = folder / f"{VAE_RELEASED_PREFIX}.index"
    if released in indexes:
        return str(released)[: -len(".index")]
    if len(indexes) != 1:
        found = ", ".join(p.name for p in indexes) or "none"
        raise ContractError(
            f"{folder}: expected one TF checkpoint index (*.ckpt.index), found {found}"
        )
    return str(indexes[0])[: -len(".index")]


def stylerig_filename(generator_sha256: str) -> str:
    """The StyleRig file name of the generator whose weights have this sha256."""
    return f"stylerig-{generator_sha256[:16]}.safetensors"


def is_stylerig_name(name: str) -> bool:
    """Whether ``name`` is a file name ``stylerig_filename`` makes."""
    return _STYLERIG_NAME.match(name) is not None
