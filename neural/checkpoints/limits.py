"""Sane ranges of generator architecture fields, checked before any tensor or shape table is
built from them.

A checkpoint's or sidecar's architecture fields size everything that follows (the table of
expected state shapes, FIR filters, the generator's layers). Each bound is far beyond any
published or plausible model and far below what would exhaust memory, so a crafted value is
refused by name instead of allocating for minutes. The file-level limits (JSON, sizes,
regular files) live in ``rig.file_limits``; the pickle limits in :mod:`.safe_pickle`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import CheckpointError

MAX_RESOLUTION = 4096
"""Largest StyleGAN2 output published is 1024 px (FFHQ), some fine-tunes 2048; 4096 px is
the largest a CPU/GPU of today can synthesise interactively at all."""
MAX_CHANNELS = 4096
"""StyleGAN2 config-f uses 512 (channel_max), StyleGAN-XL 1024; z/w/c dims are 512 or less."""
MAX_CHANNEL_BASE = MAX_CHANNELS * MAX_RESOLUTION
"""channels(R) = min(channel_base // R, channel_max): no block may exceed MAX_CHANNELS."""
MAX_MAPPING_LAYERS = 32
"""StyleGAN2 uses 8 mapping layers, StyleGAN-T 2..; 32 is beyond any model and keeps the
state-shape table small."""
MAX_IMAGE_CHANNELS = 4
"""RGB (3) or RGBA (4); 1 for grayscale."""
MAX_RESAMPLE_TAPS = 16
"""NVIDIA's FIR is [1, 3, 3, 1] (4 taps); the filter is its outer product, so 16 taps is a
16 x 16 buffer per layer at most."""
MAX_FP16_RESOLUTIONS = 12
"""num_fp16_res counts blocks (log2 of MAX_RESOLUTION)."""

_INT_BOUNDS = {
    "z_dim": MAX_CHANNELS,
    "w_dim": MAX_CHANNELS,
    "c_dim": MAX_CHANNELS,
    "noise_dim": MAX_CHANNELS,
    "img_resolution": MAX_RESOLUTION,
    "resolution": MAX_RESOLUTION,
    "img_channels": MAX_IMAGE_CHANNELS,
    "num_channels": MAX_IMAGE_CHANNELS,
    "mapping_layers": MAX_MAPPING_LAYERS,
    "channel_base": MAX_CHANNEL_BASE,
    "channel_max": MAX_CHANNELS,
    "fmap_base": MAX_CHANNEL_BASE,
    "fmap_max": MAX_CHANNELS,
    "latent_size": MAX_CHANNELS,
    "dlatent_size": MAX_CHANNELS,
    "mapping_fmaps": MAX_CHANNELS,
    "num_fp16_res": MAX_FP16_RESOLUTIONS,
}
_KERNELS = ("resample_kernel", "resample_filter")


def check_architecture(fields: Mapping[str, Any], source: str,
                       error: type[Exception] = CheckpointError) -> None:
    """Raise ``error`` (message starting with ``source``) if a known architecture field of
    ``fields`` is out of its sane range: integers (Python ints, no overflow) within their
    bound, the resolution a power of two, FIR kernels short lists of finite numbers. Fields
    this module does not know are left to the config's own validation."""
    for name, bound in _INT_BOUNDS.items():
        value = fields.get(name)
        if value is None or isinstance(value, bool) or not isinstance(value, int):
            continue  # absent or not an int: the config's own validation names the type
        if not -1 <= value <= bound:
            raise error(f"{source}: architecture field {name}: expected at most {bound}, "
                        f"found {value}")
        if name in ("img_resolution", "resolution") and value >= 1 and value & (value - 1):
            raise error(f"{source}: architecture field {name}: expected a power of two <= "
                        f"{MAX_RESOLUTION}, found {value}")
    for name in _KERNELS:
        kernel = fields.get(name)
        if kernel is None:
            continue
        if not isinstance(kernel, (list, tuple)) or len(kernel) > MAX_RESAMPLE_TAPS:
            found = f"{len(kernel)} taps" if isinstance(kernel, (list, tuple)) else \
                type(kernel).__name__
            raise error(f"{source}: architecture field {name}: expected a FIR kernel of at "
                        f"most {MAX_RESAMPLE_TAPS} taps, found {found}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   and abs(v) < 1e6 for v in kernel):
            raise error(f"{source}: architecture field {name}: expected finite taps, found "
                        f"{list(kernel)[:8]}")
