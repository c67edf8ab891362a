"""Errors of the neural side. Messages name the file, what was expected and what was found."""


class NeuralError(Exception):
    """Base class of every user-facing error raised by ``neural``."""


class CheckpointError(NeuralError):
    """A checkpoint is missing, truncated, of an unknown or refused format, or malformed."""


class UnsafePickleError(CheckpointError):
    """A pickle names a global outside the allow-list; nothing from it was executed."""
