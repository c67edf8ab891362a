"""Errors of the face rig. Every message names the file or field, what was expected and what
was found, so a user can fix their input without reading code."""


class RigError(Exception):
    """Base class of every error raised by ``rig``."""


class FaceModelError(RigError):
    """A face-model file (or one of the raw BFM inputs) is missing, unreadable or malformed."""


class PriorModelError(RigError):
    """A learned prior over rig values (DiscoFaceGAN's VAE checkpoints) is missing or malformed."""


class RigParamsError(RigError):
    """A rig parameter vector or JSON document is malformed (length, NaN, schema)."""
