"""Generator output -> pixels: Blender float buffers (the worker) and PNG files (the worker's
baked frames, the CLI's images).

The generator's image is sRGB-encoded in [-1, 1], rows top-first, [C, R, R]. Blender's
float-buffer images hold scene-linear RGBA with rows bottom-first, so the worker decodes
sRGB exactly (IEC 61966-2-1) and flips the rows; a portrait rendered with the "Standard"
view transform encodes it back, giving the generator's values (blender_addon/portrait.py).
PNG files hold the generator's values as 8- or 16-bit sRGB codes (no decoding).

Models flagged untrained (project sidecar ``"untrained": true``) get "UNTRAINED WEIGHTS"
stamped along the bottom, so nobody mistakes random weights for a broken model.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..rig.atomic import atomic_open
from .checkpoints.project_format import WEIGHTS_SUFFIX, sidecar_path
from .errors import NeuralError

UNTRAINED_TEXT = "UNTRAINED WEIGHTS"


class ImageFormatError(NeuralError):
    """A generator image has a shape that cannot become RGB pixels."""


def as_rgb(image: torch.Tensor) -> torch.Tensor:
    """[1, C, R, R] or [C, R, R] with C in (1, 3) -> float32 CPU [3, R, R]."""
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] not in (1, 3) or image.shape[1] != image.shape[2]:
        raise ImageFormatError(
            f"generator image: expected shape [1, 3 or 1, R, R], found {list(image.shape)}"
        )
    image = image.detach().to(device="cpu", dtype=torch.float32)
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """[C, r, r] -> [C, size, size]: bilinear (previews of the smaller blocks)."""
    if image.shape[-1] == size:
        return image
    return F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)[0]


def srgb_to_linear(srgb: torch.Tensor) -> torch.Tensor:
    """The sRGB decoding function on values in [0, 1]."""
    return torch.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def to_blender_rgba(
    image: torch.Tensor, size: int | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """Generator image [1, C, R, R] in [-1, 1] -> float32 [size * size * 4]: linear RGBA,
    alpha 1, rows bottom-first (``Image.pixels.foreach_set`` order). Smaller images are
    resized to ``size`` (default R). Writes into ``out`` when given (e.g. shared memory)."""
    rgb = as_rgb(image)
    size = rgb.shape[-1] if size is None else size
    rgb = resize(rgb, size)
    linear = srgb_to_linear(((rgb + 1.0) * 0.5).clamp(0.0, 1.0))
    if out is None:
        out = np.empty(size * size * 4, np.float32)
    rgba = torch.from_numpy(out).view(size, size, 4)
    rgba[..., :3] = linear.flip(1).permute(1, 2, 0)
    rgba[..., 3] = 1.0
    return out


def to_srgb_uint(image: torch.Tensor, bits: int = 8) -> np.ndarray:
    """Generator image [1, C, R, R] -> [R, R, 3] uint8 (bits 8) or uint16 (bits 16), rows
    top-first: the values a viewer shows, rounded to the nearest code."""
    scale = float(2**bits - 1)
    rgb = ((as_rgb(image) + 1.0) * 0.5).clamp(0.0, 1.0)
    codes = torch.round(rgb * scale).permute(1, 2, 0).numpy()
    return codes.astype(np.uint16 if bits == 16 else np.uint8)


# ------------------------------------------------------------------ PNG


def encode_png(pixels: np.ndarray) -> bytes:
    """[H, W, C] uint8 or uint16 (C = 1, 3 or 4; row 0 at the top) -> PNG bytes (stdlib only:
    the worker may run in a Python without imaging libraries)."""
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4) or pixels.dtype not in (
        np.uint8, np.uint16
    ):
        raise ImageFormatError(
            f"PNG pixels: expected uint8/uint16 [H, W, 1|3|4], found {pixels.dtype} "
            f"{list(pixels.shape)}"
        )
    height, width, channels = pixels.shape
    depth = 16 if pixels.dtype == np.uint16 else 8
    colour_type = {1: 0, 3: 2, 4: 6}[channels]
    data = np.ascontiguousarray(pixels, dtype=">u2" if depth == 16 else np.uint8)
    rows = data.reshape(height, -1).view(np.uint8)
    filtered = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)  # filter 0

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"IDAT", zlib.compress(filtered.tobytes(), 6)),
            chunk(b"IEND", b""),
        ]
    )


def write_png(image: torch.Tensor, path: str | os.PathLike[str], bits: int = 8) -> None:
    """Generator image -> ``bits``-bit (8 or 16) sRGB PNG at ``path``, atomically (temp file
    + rename)."""
    blob = encode_png(to_srgb_uint(image, bits))
    with atomic_open(Path(path), "wb") as out:
        out.write(blob)


# ------------------------------------------------------------------ untrained stamp


def is_untrained(model_path: str | os.PathLike[str]) -> bool:
    """Whether the model's project sidecar (``<name>.json``) says ``"untrained": true``."""
    sidecar = sidecar_path(model_path)
    if Path(model_path).suffix != WEIGHTS_SUFFIX or not sidecar.is_file():
        return False
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # the checkpoint reader reports a damaged sidecar with a clear message
    return isinstance(data, dict) and data.get("untrained") is True


# 5 x 7 glyphs of the stamp's letters ('#' = ink).
_GLYPHS = {
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "N": ("#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#", "#...#"),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "D": ("####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "##.##", "#...#"),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".###."),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    " ": (".....",) * 7,
}


def text_mask(text: str) -> np.ndarray:
    """bool [7, 6 * len(text) - 1]: the text in the 5 x 7 font, one blank column between
    letters."""
    columns = []
    for index, char in enumerate(text):
        glyph = _GLYPHS.get(char)
        if glyph is None:
            raise ValueError(f"stamp font has no glyph for {char!r}")
        if index:
            columns.append(np.zeros((7, 1), bool))
        columns.append(np.array([[c == "#" for c in row] for row in glyph]))
    return np.concatenate(columns, axis=1)


def stamp_text(image: torch.Tensor, text: str = UNTRAINED_TEXT) -> torch.Tensor:
    """A copy of image [C, R, R] (values in [-1, 1], row 0 top) with ``text`` in white on a
    dark band along the bottom, scaled to span most of the width."""
    mask = text_mask(text)
    size = image.shape[-1]
    scale = max(1, int(0.9 * size) // mask.shape[1])
    glyphs = torch.from_numpy(np.kron(mask, np.ones((scale, scale), bool)))
    height, width = glyphs.shape
    height, width = min(height, size), min(width, size)
    top = max(0, size - height - 2 * scale)
    left = (size - width) // 2
    out = image.clone()
    out[:, max(0, top - scale) : min(size, top + height + scale), :] = -0.7
    region = out[:, top : top + height, left : left + width]
    region[:, glyphs[:height, :width]] = 1.0
    return out
