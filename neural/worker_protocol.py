"""The inference worker's wire protocol: JSON control lines over pipes, pixels in shared memory.

Importable without torch and bpy: Blender's process (``blender_addon/bridge.py``) and the
worker (``neural/worker.py``) both use it.

Parent -> worker (one JSON object per line on the worker's stdin):

- ``render``: ``{"type": "render", "id": int, "job": {...}}`` (see :class:`RenderJob`).
  Latest wins per ``job.target``: a newer render for the same target cancels the older one,
  queued or running (between synthesis blocks).
- ``directions``: SeFa directions of a model for a W+ layer set (computed and cached on disk).
- ``release``: ``{"type": "release", "slot": name}``: the parent has copied the pixels of
  that shared-memory slot; the worker may reuse it.
- ``quit``. End of file on stdin means the same: the worker never outlives its parent.

Worker -> parent (one JSON object per line on the worker's protocol stream):

- ``ready`` (once, after start-up: pid, device, torch version), ``image`` (an image is in a
  slot: request id, target, block resolution, size, final flag), ``written`` (a final image
  was written to the job's ``output_path``), ``cancelled``, ``error`` (per request, a message
  naming what is wrong), ``directions`` (the reply to a directions request), ``slot_closed``
  (the worker unlinked a slot the parent may have attached) and ``bye``.

Images: float32 RGBA, ``size * size * 4`` values, linear Rec.709 (the generator's sRGB
output decoded), rows bottom-first: exactly what ``Image.pixels.foreach_set`` takes for a
float-buffer image, so Blender's main thread only copies.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backends import RigState, SefaSlider
from .errors import NeuralError

PROTOCOL_VERSION = 1

# Parent -> worker message types.
RENDER = "render"
DIRECTIONS = "directions"
RELEASE = "release"
QUIT = "quit"
# Worker -> parent message types.
READY = "ready"
IMAGE = "image"
WRITTEN = "written"
CANCELLED = "cancelled"
ERROR = "error"
SLOT_CLOSED = "slot_closed"
BYE = "bye"

PARENT_MESSAGES = frozenset({RENDER, DIRECTIONS, RELEASE, QUIT})
WORKER_MESSAGES = frozenset(
    {READY, IMAGE, WRITTEN, CANCELLED, ERROR, DIRECTIONS, SLOT_CLOSED, BYE}
)

CHANNELS = 4  # RGBA
DEVICES = ("auto", "cpu", "cuda")
NOISE_MODES = ("const", "none", "random")
LATENT_SPACES = ("z", "w", "w+")


class ProtocolError(NeuralError):
    """A protocol message is malformed: which field, what was expected, what was found."""


# ------------------------------------------------------------------ jobs


@dataclass(frozen=True)
class RenderJob:
    """What to render: a rig state with the model that renders it.

    model_path: the generator file; backend ``state.backend`` reads it. ``files``: other
    files the backend may use, by role (e.g. DiscoFaceGAN's ``"average_w_id"``).
    target: the latest-wins key (the add-on uses the face image's name): a newer job for the
    same target cancels this one. device: "auto" (CUDA when available, else CPU), "cpu",
    "cuda" or "cuda:N". stream_from: stream progressive images from this block resolution
    on (None: the final image only). output_path: write the final image there as a 16-bit
    sRGB PNG (atomically) instead of sending pixels.
    """

    state: RigState
    model_path: str
    target: str = ""
    device: str = "auto"
    files: dict[str, str] = field(default_factory=dict)
    stream_from: int | None = None
    output_path: str = ""

    def key(self) -> str:
        """Canonical JSON of everything that determines the pixels (not target/streaming):
        equal keys mean equal images."""
        data = job_to_json(self)
        for name in ("target", "stream_from", "output_path"):
            data.pop(name)
        return dumps(data)


def state_to_json(state: RigState) -> dict[str, Any]:
    """RigState -> JSON-able dict. Floats keep every bit (float32 values are exact in JSON)."""
    return {
        "backend": state.backend,
        "model_id": state.model_id,
        "rig": None if state.rig is None else np.asarray(state.rig, np.float32).tolist(),
        "seed": state.seed,
        "latent": None if state.latent is None else np.asarray(state.latent, np.float32).tolist(),
        "latent_space": state.latent_space,
        "psi": float(state.psi),
        "cutoff": state.cutoff,
        "sefa": [
            {"direction": s.direction, "value": float(s.value), "layers": list(s.layers)}
            for s in state.sefa
        ],
        "resolution": state.resolution,
        "noise_mode": state.noise_mode,
        "noise_seed": state.noise_seed,
        "extras": dict(state.extras),
    }


def state_from_json(data: Any, where: str = "state") -> RigState:
    """Inverse of :func:`state_to_json`, checking every field."""
    fields = _object(data, where)
    rig = fields.get("rig")
    latent = fields.get("latent")
    sefa = _list(fields.get("sefa", []), f"{where}.sefa")
    return RigState(
        backend=_string(fields.get("backend", "stylegan2"), f"{where}.backend"),
        model_id=_string(fields.get("model_id", ""), f"{where}.model_id"),
        rig=None if rig is None else _float_array(rig, f"{where}.rig"),
        seed=_optional_int(fields.get("seed"), f"{where}.seed"),
        latent=None if latent is None else _float_array(latent, f"{where}.latent"),
        latent_space=_choice(
            fields.get("latent_space", "z"), LATENT_SPACES, f"{where}.latent_space"
        ),
        psi=_number(fields.get("psi", 1.0), f"{where}.psi"),
        cutoff=_optional_int(fields.get("cutoff"), f"{where}.cutoff"),
        sefa=tuple(_slider(s, f"{where}.sefa[{i}]") for i, s in enumerate(sefa)),
        resolution=_optional_int(fields.get("resolution"), f"{where}.resolution"),
        noise_mode=_choice(fields.get("noise_mode", "const"), NOISE_MODES, f"{where}.noise_mode"),
        noise_seed=_optional_int(fields.get("noise_seed"), f"{where}.noise_seed"),
        extras=_object(fields.get("extras", {}), f"{where}.extras"),
    )


def job_to_json(job: RenderJob) -> dict[str, Any]:
    return {
        "state": state_to_json(job.state),
        "model_path": job.model_path,
        "target": job.target,
        "device": job.device,
        "files": dict(sorted(job.files.items())),
        "stream_from": job.stream_from,
        "output_path": job.output_path,
    }


def job_from_json(data: Any, where: str = "job") -> RenderJob:
    fields = _object(data, where)
    files = _object(fields.get("files", {}), f"{where}.files")
    job = RenderJob(
        state=state_from_json(fields.get("state"), f"{where}.state"),
        model_path=_string(fields.get("model_path"), f"{where}.model_path"),
        target=_string(fields.get("target", ""), f"{where}.target"),
        device=_string(fields.get("device", "auto"), f"{where}.device"),
        files={k: _string(v, f"{where}.files.{k}") for k, v in files.items()},
        stream_from=_optional_int(fields.get("stream_from"), f"{where}.stream_from"),
        output_path=_string(fields.get("output_path", ""), f"{where}.output_path"),
    )
    if not job.model_path:
        raise ProtocolError(f"{where}.model_path: expected the path of a model file, found ''")
    check_device(job.device, f"{where}.device")
    return job


def check_device(device: str, where: str = "device") -> None:
    base, _, index = device.partition(":")
    if base not in DEVICES or (index and (base != "cuda" or not index.isdigit())):
        raise ProtocolError(
            f"{where}: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found {device!r}"
        )


# ------------------------------------------------------------------ messages


def render_message(request_id: int, job: RenderJob) -> dict[str, Any]:
    return {"type": RENDER, "id": request_id, "job": job_to_json(job)}


def directions_message(
    request_id: int, job: RenderJob, layers: tuple[int, ...]
) -> dict[str, Any]:
    """Ask for the SeFa directions of ``job``'s model over W+ rows ``layers``."""
    return {"type": DIRECTIONS, "id": request_id, "job": job_to_json(job), "layers": list(layers)}


def dumps(message: dict[str, Any]) -> str:
    """One protocol line (no newline). Refuses NaN/inf, which JSON cannot carry."""
    try:
        return json.dumps(message, allow_nan=False, separators=(",", ":"), sort_keys=True)
    except ValueError as exc:
        raise ProtocolError(f"message {message.get('type')!r}: {exc} (NaN or inf?)") from None


def encode(message: dict[str, Any]) -> bytes:
    return (dumps(message) + "\n").encode("utf-8")


def decode(line: bytes | str, allowed: frozenset[str]) -> dict[str, Any]:
    """Parse one line; the message must be an object whose ``type`` is in ``allowed``."""
    try:
        data = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"protocol line is not JSON ({exc}): {line[:80]!r}") from None
    message = _object(data, "message")
    kind = message.get("type")
    if kind not in allowed:
        raise ProtocolError(
            f"message type: expected one of {', '.join(sorted(allowed))}, found {kind!r}"
        )
    return message


def request_id(message: dict[str, Any]) -> int:
    value = message.get("id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{message.get('type')}.id: expected an integer, found {value!r}")
    return value


# ------------------------------------------------------------------ images


def image_nbytes(size: int) -> int:
    """Bytes of one float32 RGBA image of ``size`` x ``size`` pixels."""
    return size * size * CHANNELS * 4


def image_view(buffer: Any, size: int) -> np.ndarray:
    """The first ``image_nbytes(size)`` bytes of ``buffer`` as float32 [size * size * 4]."""
    return np.ndarray((size * size * CHANNELS,), dtype=np.float32, buffer=buffer)


@dataclass(frozen=True)
class FaceImage:
    """An image from the worker, copied out of shared memory.

    pixels: float32 [size * size * 4], linear RGBA, rows bottom-first (Blender's layout).
    block: resolution of the synthesis block it came from (< size: an upscaled preview).
    """

    request_id: int
    target: str
    block: int
    size: int
    final: bool
    pixels: np.ndarray
    model_sha256: str = ""
    untrained: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class WorkerEvent:
    """Anything else the parent learns: kind is ``ready``, ``written``, ``cancelled``,
    ``error``, ``directions`` or ``crashed`` (the process died; request_id None)."""

    kind: str
    request_id: int | None
    target: str = ""
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ field checks


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: expected a JSON object, found {_kind(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ProtocolError(f"{where}: expected a list, found {_kind(value)}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{where}: expected a string, found {_kind(value)}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError(f"{where}: expected a finite number, found {value!r}")
    return float(value)


def _optional_int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{where}: expected an integer or null, found {value!r}")
    return value


def _int(value: Any, where: str) -> int:
    result = _optional_int(value, where)
    if result is None:
        raise ProtocolError(f"{where}: expected an integer, found null")
    return result


def _choice(value: Any, choices: tuple[str, ...], where: str) -> Any:
    if value not in choices:
        raise ProtocolError(f"{where}: expected one of {', '.join(choices)}, found {value!r}")
    return value


def _float_array(value: Any, where: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise ProtocolError(f"{where}: expected a (nested) list of numbers") from None
    if array.dtype != np.float32 or not np.isfinite(array).all():
        raise ProtocolError(f"{where}: expected finite numbers")
    return array


def _slider(value: Any, where: str) -> SefaSlider:
    fields = _object(value, where)
    direction = _int(fields.get("direction"), f"{where}.direction")
    layers = _list(fields.get("layers"), f"{where}.layers")
    return SefaSlider(
        direction=direction,
        value=_number(fields.get("value"), f"{where}.value"),
        layers=tuple(_int(r, f"{where}.layers[{i}]") for i, r in enumerate(layers)),
    )


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
