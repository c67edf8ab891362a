"""Config dataclasses from JSON objects: the one reader behind every ``from_dict`` of the
generator, DFR, RigNet and loss configs; and the bounded reader of the JSON files they come
from."""

from __future__ import annotations

import os
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

from ..rig.file_limits import JSON_MAX_BYTES, read_json_file
from .errors import NeuralError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ConfigT = TypeVar("ConfigT", bound="DataclassInstance")


def config_from_dict(
    cls: type[ConfigT], data: Any, source: str, error: type[NeuralError], kind: str
) -> ConfigT:
    """``cls(**data)`` for a JSON object: anything but an object, unknown keys (the message
    names the ``kind`` of config) and invalid values raise ``error`` starting with
    ``source``; missing keys take the defaults."""
    if not isinstance(data, dict):
        raise error(f"{source}: expected a JSON object, found {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise error(
            f"{source}: unknown {kind} config field(s) {', '.join(unknown)}; "
            f"expected some of {', '.join(sorted(known))}"
        )
    try:
        return cls(**data)
    except TypeError as exc:  # a field without a default is missing, or a value's type is off
        raise error(f"{source}: {exc}") from None
    except error as exc:
        raise error(f"{source}: {exc}") from None


def read_json_document(
    path: str | os.PathLike[str], role: str, error: type[NeuralError],
    max_bytes: int = JSON_MAX_BYTES,
) -> Any:
    """A JSON file the project reads (sidecars, StyleRig and trainer files): a regular file of
    at most ``max_bytes``, parsed with the size, depth, duplicate-key, integer and NaN limits of
    ``rig.file_limits.parse_json``; any refusal raises ``error`` naming the file and ``role``."""
    return read_json_file(path, role, error, max_bytes)
