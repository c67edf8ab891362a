"""The face image datablock: a float-buffer RGBA image the worker's pixels are copied into.

Pixels arrive as linear Rec.709 float32 RGBA, rows bottom-first (neural/images.py), so
writing is one ``foreach_set`` (~1.6 ms at 1024²) plus ``update``. The image's colour space
is set explicitly to linear: a float buffer is already scene-linear, Blender must not decode
it again. Saving packs the pixels as float EXR (lossless), so a reopened file shows the same
face without running the network.
"""

from __future__ import annotations

from collections.abc import Iterator

import bpy
import numpy as np
from bpy.types import Image, ShaderNodeTexImage

LINEAR_COLOURSPACE = "Linear Rec.709"
PACK_FORMAT = "OPEN_EXR"  # 32-bit float: the packed face is bit-identical


def ensure_face_image(name: str, size: int) -> Image:
    """The image ``name``, created black as a float buffer if there is none."""
    image = bpy.data.images.get(name)
    if image is None:
        image = bpy.data.images.new(name, size, size, alpha=True, float_buffer=True)
        image.generated_color = (0.0, 0.0, 0.0, 1.0)
        # Set once: assigning a colour space regenerates a generated image's pixels.
        image.colorspace_settings.name = LINEAR_COLOURSPACE
    return image


def write_pixels(image: Image, pixels: np.ndarray, size: int) -> None:
    """Show float32 [size * size * 4] linear RGBA (rows bottom-first) in ``image``."""
    if tuple(image.size) != (size, size):
        if image.source == "GENERATED":  # a new blank buffer: twice as fast as resampling
            image.generated_width = image.generated_height = size
        else:
            image.scale(size, size)
    image.pixels.foreach_set(pixels)
    image.update()


def read_pixels(image: Image) -> np.ndarray:
    """float32 [width * height * 4] of ``image`` (tests, bake checks)."""
    width, height = image.size
    pixels = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(pixels)
    return pixels


def image_nodes(image: Image) -> Iterator[ShaderNodeTexImage]:
    """Every image texture node of every material that shows ``image``."""
    for material in bpy.data.materials:
        tree = material.node_tree
        if tree is None:
            continue
        for node in tree.nodes:
            if node.type == "TEX_IMAGE" and node.image == image:
                yield node


def pack_for_save(image: Image) -> None:
    """Embed the current pixels in the .blend as float EXR (a reopened file shows them)."""
    if image.source not in {"GENERATED", "FILE"} or not image.has_data:
        return
    if image.packed_file is None or image.is_dirty:
        image.file_format = PACK_FORMAT
        image.pack()
