"""The StyleGAN2 decoder inside an encoder4editing checkpoint.

An e4e file is a ``torch.save`` dict: ``state_dict`` holds the pSp module (``encoder.*`` and
``decoder.*``, the decoder being a rosinality Generator), ``opts`` the training options and
``latent_avg`` the W average repeated per W+ row ([num_ws, w_dim]; some files keep [w_dim]).
``mapping.w_avg`` is row 0 when all rows are equal (the normal case) and their mean
otherwise; ``extras['w_avg_source']`` says which. ``read_e4e_encoder`` reads the encoder half
(``encoder.*``, its options and ``latent_avg``) for photo import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import CheckpointError
from .loaded import ReadResult, plain
from .rosinality import generator_with_w_avg

DECODER_PREFIX = "decoder."
ENCODER_PREFIX = "encoder."


def is_e4e(ckpt: object) -> bool:
    """Whether a loaded torch checkpoint looks like an e4e/pSp file."""
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    return isinstance(state, dict) and any(
        isinstance(k, str) and k.startswith(DECODER_PREFIX) for k in state
    )


def read_e4e(ckpt: object, label: str) -> ReadResult:
    """A loaded e4e checkpoint dict -> the decoder's config + NVIDIA state dict."""
    if not is_e4e(ckpt):
        raise CheckpointError(
            f"{label}: expected an e4e checkpoint with 'state_dict' holding decoder.* keys"
        )
    assert isinstance(ckpt, dict)
    state: dict[str, Any] = ckpt["state_dict"]
    decoder = {k: v for k, v in state.items() if k.startswith(DECODER_PREFIX)}
    opts = ckpt.get("opts")
    extras = {
        "opts": plain(opts) if isinstance(opts, dict) else None,
        "encoder_tensors": sum(1 for k in state if k.startswith(ENCODER_PREFIX)),
    }
    return generator_with_w_avg(decoder, ckpt.get("latent_avg"), label, DECODER_PREFIX, extras)


# ------------------------------------------------------------------ the encoder (photo import)

ENCODER_TYPES = ("Encoder4Editing", "GradualStyleEncoder")


@dataclass(frozen=True)
class E4EEncoderWeights:
    """The ``encoder.*`` half of an e4e/pSp file: ``state`` (prefix stripped, as the encoder
    module names them), ``encoder_type`` (one of ENCODER_TYPES), ``style_count`` W+ rows
    (2 log2(stylegan_size) - 2), ``latent_avg`` [style_count, 512] float32 or None, and
    whether the encoder's output is relative to it (``start_from_latent_avg``)."""

    state: dict[str, torch.Tensor]
    encoder_type: str
    style_count: int
    latent_avg: torch.Tensor | None
    start_from_latent_avg: bool


def read_e4e_encoder(ckpt: object, label: str) -> E4EEncoderWeights:
    """A loaded e4e/pSp checkpoint dict -> its encoder weights and options (checked)."""
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(
        isinstance(k, str) and k.startswith(ENCODER_PREFIX) for k in state
    ):
        raise CheckpointError(
            f"{label}: expected an e4e checkpoint with 'state_dict' holding encoder.* keys"
        )
    assert isinstance(ckpt, dict)
    opts = ckpt.get("opts")
    if not isinstance(opts, dict):
        raise CheckpointError(f"{label}: field opts: expected the training options dict, found "
                              f"{type(opts).__name__}")
    encoder_type = opts.get("encoder_type")
    if encoder_type not in ENCODER_TYPES:
        raise CheckpointError(
            f"{label}: opts encoder_type {encoder_type!r} is not supported (expected one of "
            f"{', '.join(ENCODER_TYPES)})"
        )
    if opts.get("input_nc", 3) != 3:
        raise CheckpointError(f"{label}: opts input_nc {opts.get('input_nc')!r}: only RGB "
                              "encoders (input_nc 3) are supported")
    size = opts.get("stylegan_size", 1024)
    if isinstance(size, bool) or not isinstance(size, int) or size < 8 or size & (size - 1):
        raise CheckpointError(f"{label}: opts stylegan_size: expected a power of two >= 8, "
                              f"found {size!r}")
    style_count = 2 * (size.bit_length() - 1) - 2
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not (isinstance(key, str) and key.startswith(ENCODER_PREFIX)):
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{label}: {key}: expected a tensor, found "
                                  f"{type(value).__name__}")
        tensors[key[len(ENCODER_PREFIX):]] = value
    start = bool(opts.get("start_from_latent_avg", True))
    latent_avg = ckpt.get("latent_avg")
    avg: torch.Tensor | None = None
    if latent_avg is not None:
        if not isinstance(latent_avg, torch.Tensor) or latent_avg.shape[-1:] != (512,) or (
            latent_avg.dim() == 2 and latent_avg.shape[0] != style_count
        ) or latent_avg.dim() not in (1, 2):
            found = (list(latent_avg.shape) if isinstance(latent_avg, torch.Tensor)
                     else type(latent_avg).__name__)
            raise CheckpointError(f"{label}: latent_avg: expected [512] or [{style_count}, 512], "
                                  f"found {found}")
        avg = latent_avg.float().reshape(-1, 512).expand(style_count, 512).contiguous()
        if not torch.isfinite(avg).all():
            raise CheckpointError(f"{label}: latent_avg holds NaN or inf")
    elif start:
        raise CheckpointError(f"{label}: opts start_from_latent_avg is set but the file has no "
                              "latent_avg")
    return E4EEncoderWeights(tensors, str(encoder_type), style_count, avg, start)
