"""The StyleGAN2 decoder inside an encoder4editing checkpoint (METHODS §6.1).

An e4e file is a ``torch.save`` dict: ``state_dict`` holds the pSp module (``encoder.*`` and
``decoder.*``, the decoder being a rosinality Generator), ``opts`` the training options and
``latent_avg`` the W average repeated per W+ row ([num_ws, w_dim]; some files keep [w_dim]).
``mapping.w_avg`` is row 0 when all rows are equal (the normal case) and their mean
otherwise; ``extras['w_avg_source']`` says which. The encoder is not read here.
"""

from __future__ import annotations

from typing import Any

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
