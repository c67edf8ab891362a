"""Face Rig from a photo: detect and align the face, read its rig values, invert it into a
generator's latent space and store the result as a face file (``docs/PHOTO.md``).

One module per job: ``detect`` (faces and their 68 landmarks), ``align`` (FFHQ and
Deep3DFaceRecon crops with their transforms), ``rnet`` (Deep3DFaceRecon's R-Net),
``e4e_encoder`` (encoder4editing), ``invert_stylegan`` / ``invert_dfg`` (optimisation),
``face_file`` (JSON + safetensors). Nothing here imports bpy.
"""

from __future__ import annotations

from ..errors import NeuralError


class PhotoError(NeuralError):
    """A photo cannot be used (no face, bad index, unreadable image) or an option is refused."""
