"""The inference worker's wire protocol: JSON control lines over pipes, pixels in shared memory.

Importable without torch and bpy: Blender's process (``blender_addon/bridge.py``) and the
worker (``neural/worker.py``) both use it.

Parent -> worker (one JSON object per line on the worker's stdin, at most MAX_LINE_BYTES):

- ``render``: ``{"type": "render", "id": int, "job": {...}}`` (see :class:`RenderJob`).
  Latest wins per ``job.target`` (contract/latest.py): a newer render for the same target
  cancels the older one, queued or running (between synthesis blocks).
- ``directions``: SeFa directions of a model for a W+ layer set (computed and cached on disk).
- ``estimate``: the backend's reading of the rig values of the job's base face (the face
  with no rig edits: what sliders start from); the reply's ``rig`` is null for backends
  without one (catalogue ``estimate``).
- ``load``: load the job's model now (the add-on preloads as soon as a rig exists), then
  render the job's face once without sending it (the warm-up; a newer request interrupts
  it); ``progress`` lines ("loading <file> (N MiB)", "first synthesis"), then ``loaded``.
  Any job whose model is not loaded yet first answers a ``progress`` line naming the file.
- ``ping``: the reply is ``pong`` (a heartbeat: a worker that stops answering is frozen).
- ``release``: ``{"type": "release", "slot": name}``: the parent has copied the pixels of
  that shared-memory slot; the worker may reuse it.
- ``quit``. End of file on stdin means the same: the worker never outlives its parent.
- ``photo``: ``{"type": "photo", "id": int, "job": {...}}`` (see :class:`PhotoJob`): invert
  a photo; the worker answers ``progress`` lines (stage, done, total) and one
  ``photo_result`` (:class:`PhotoResult`), ``cancelled`` or ``error``. ``cancel``:
  ``{"type": "cancel", "id": int, "target": name}`` cancels the target's photo job, queued
  or running (latest wins per target, like renders).
- ``capture``: ``{"type": "capture", "id": int, "job": {...}}`` (see :class:`CaptureJob`):
  a video or image sequence -> rig curves; ``progress`` lines (stages "landmarks", "fit"),
  then one ``capture_result`` (the curves document), ``cancelled`` or ``error``. Photo and
  capture jobs share one latest-wins key per target, so ``cancel`` stops either.

Worker -> parent (one JSON object per line on the worker's protocol stream):

- ``ready`` (once, after start-up: pid, device, torch version), ``image`` (an image is in a
  slot: request id, target, block resolution, its size, the final size, final flag),
  ``written`` (a final image was written to the job's ``output_path``), ``cancelled``,
  ``error`` (per request, a message naming what is wrong; id null when the line had none),
  ``directions``, ``estimate``, ``loaded``, ``pong``, ``slot_closed`` (the worker unlinked a
  slot the parent may have attached) and ``bye``.
  ``progress`` (stage, done, total) reports a model load on the way to any reply. Photo
  jobs add ``progress`` and ``photo_result``; capture jobs ``progress`` and
  ``capture_result``.

Images: float32 RGBA, ``size * size * 4`` values, linear Rec.709 (the generator's sRGB
output decoded), rows bottom-first: exactly what ``Image.pixels.foreach_set`` takes for a
float-buffer image. Previews cross at their block's native size (``size`` < ``final_size``);
Blender's side scales them when it shows them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from .catalogue import (
    DEFAULT_BACKEND,
    DEFAULT_NOISE_MODE,
    FILE_ROLES,
    LATENT_SPACES,
    NOISE_MODES,
    check_device,
)
from .errors import ContractError
from .state import RigState, SefaSlider

PROTOCOL_VERSION = 2

# Parent -> worker message types.
RENDER = "render"
DIRECTIONS = "directions"
ESTIMATE = "estimate"
LOAD = "load"
PING = "ping"
RELEASE = "release"
PHOTO = "photo"
CAPTURE = "capture"
CANCEL = "cancel"
QUIT = "quit"
# Worker -> parent message types.
READY = "ready"
IMAGE = "image"
WRITTEN = "written"
CANCELLED = "cancelled"
ERROR = "error"
LOADED = "loaded"
PONG = "pong"
SLOT_CLOSED = "slot_closed"
BYE = "bye"
PROGRESS = "progress"
PHOTO_RESULT = "photo_result"
CAPTURE_RESULT = "capture_result"

PARENT_MESSAGES = frozenset({RENDER, DIRECTIONS, ESTIMATE, LOAD, PING, RELEASE, QUIT, PHOTO,
                             CAPTURE, CANCEL})
JOB_MESSAGES = frozenset({RENDER, DIRECTIONS, ESTIMATE, LOAD})
"""Parent messages that carry a job and are served in order by the worker's main loop."""
WORKER_MESSAGES = frozenset(
    {READY, IMAGE, WRITTEN, CANCELLED, ERROR, DIRECTIONS, ESTIMATE, LOADED, PONG, SLOT_CLOSED,
     BYE, PROGRESS, PHOTO_RESULT, CAPTURE_RESULT}
)

CHANNELS = 4  # RGBA
MAX_LINE_BYTES = 16 << 20
"""Longest protocol line: a job with a full W+ latent of a 1024 model is ~200 KB of JSON;
anything much longer is not a job, and reading it whole would let one line exhaust memory."""
MAX_ID = 2**53
"""Request ids are positive integers a JSON double holds exactly."""
MAX_IMAGE_SIZE = 4096
"""Largest image side: the biggest generator the project reads (a power of two <= 4096)."""


class ProtocolError(ContractError):
    """A protocol message is malformed: which field, what was expected, what was found."""


# ------------------------------------------------------------------ jobs


@dataclass(frozen=True)
class RenderJob:
    """What to render: a rig state with the model that renders it.

    model_path: the generator file; backend ``state.backend`` reads it. ``files``: other
    files the backend may use, by catalogue role (e.g. DiscoFaceGAN's ``"average_w_id"``,
    StyleRig's ``"rignet"``). target: the latest-wins key (the add-on uses the face image's
    name). device: "auto", "cpu", "cuda" or "cuda:N" (catalogue.DEVICES). stream_from:
    stream progressive images from this block resolution on (None: the final image only).
    output_path: write the final image there as a 16-bit sRGB PNG (atomically) instead of
    sending pixels; it must lie inside ``output_root`` (the bake or render folder the add-on
    names), which the worker checks after resolving symlinks.
    """

    state: RigState
    model_path: str
    target: str = ""
    device: str = "auto"
    files: dict[str, str] = field(default_factory=dict)
    stream_from: int | None = None
    output_path: str = ""
    output_root: str = ""

    def key(self) -> str:
        """Canonical JSON of everything that determines the pixels (not target/streaming):
        equal keys mean equal images."""
        data = job_to_json(self)
        for name in ("target", "stream_from", "output_path", "output_root"):
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
        backend=_string(fields.get("backend", DEFAULT_BACKEND), f"{where}.backend"),
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
        noise_mode=_choice(fields.get("noise_mode", DEFAULT_NOISE_MODE), NOISE_MODES,
                           f"{where}.noise_mode"),
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
        "output_root": job.output_root,
    }


def job_from_json(data: Any, where: str = "job") -> RenderJob:
    fields = _object(data, where)
    files = _object(fields.get("files", {}), f"{where}.files")
    for role in files:
        if role not in FILE_ROLES:
            raise ProtocolError(f"{where}.files: expected roles from {', '.join(FILE_ROLES)}, "
                                f"found {role!r:.80}")
    job = RenderJob(
        state=state_from_json(fields.get("state"), f"{where}.state"),
        model_path=_string(fields.get("model_path"), f"{where}.model_path"),
        target=_string(fields.get("target", ""), f"{where}.target"),
        device=_string(fields.get("device", "auto"), f"{where}.device"),
        files={k: _string(v, f"{where}.files.{k}") for k, v in files.items()},
        stream_from=_optional_int(fields.get("stream_from"), f"{where}.stream_from"),
        output_path=_string(fields.get("output_path", ""), f"{where}.output_path"),
        output_root=_string(fields.get("output_root", ""), f"{where}.output_root"),
    )
    if not job.model_path:
        raise ProtocolError(f"{where}.model_path: expected the path of a model file, found ''")
    if job.output_path and not job.output_root:
        raise ProtocolError(f"{where}.output_root: expected the folder output_path must lie "
                            f"in, found '' (output_path {job.output_path!r:.200})")
    try:
        check_device(job.device, f"{where}.device")
    except ContractError as exc:
        raise ProtocolError(str(exc)) from None
    return job


# ------------------------------------------------------------------ messages


def render_message(request_id: int, job: RenderJob) -> dict[str, Any]:
    return {"type": RENDER, "id": request_id, "job": job_to_json(job)}


def directions_message(
    request_id: int, job: RenderJob, layers: tuple[int, ...]
) -> dict[str, Any]:
    """Ask for the SeFa directions of ``job``'s model over W+ rows ``layers``."""
    return {"type": DIRECTIONS, "id": request_id, "job": job_to_json(job), "layers": list(layers)}


def job_message(kind: str, request_id: int, job: RenderJob) -> dict[str, Any]:
    """An ``estimate`` or ``load`` request for ``job``'s model and base face."""
    if kind not in JOB_MESSAGES:
        raise ProtocolError(f"message type: expected one of {', '.join(sorted(JOB_MESSAGES))}, "
                            f"found {kind!r}")
    return {"type": kind, "id": request_id, "job": job_to_json(job)}


def dumps(message: dict[str, Any]) -> str:
    """One protocol line (no newline). Refuses NaN/inf, which JSON cannot carry."""
    try:
        return json.dumps(message, allow_nan=False, separators=(",", ":"), sort_keys=True)
    except ValueError as exc:
        raise ProtocolError(f"message {message.get('type')!r}: {exc} (NaN or inf?)") from None


def encode(message: dict[str, Any]) -> bytes:
    return (dumps(message) + "\n").encode("utf-8")


def decode(line: bytes | str, allowed: frozenset[str]) -> dict[str, Any]:
    """Parse one line; the message must be an object whose ``type`` is in ``allowed``.
    Any malformed line (not JSON, too long, nested too deep, an integer of thousands of
    digits) is a ProtocolError naming what was found, never another exception."""
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"protocol line: expected at most {MAX_LINE_BYTES} bytes, found "
                            f"{len(line)}")
    try:
        data = json.loads(line)
    except RecursionError:
        raise ProtocolError("protocol line is not a message: JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, huge integer literals
        raise ProtocolError(f"protocol line is not JSON ({str(exc)[:120]}): "
                            f"{line[:80]!r}") from None
    message = _object(data, "message")
    kind = message.get("type")
    if kind not in allowed:
        raise ProtocolError(
            f"message type: expected one of {', '.join(sorted(allowed))}, found {_short(kind)}"
        )
    return message


def request_id(message: dict[str, Any]) -> int:
    value = message.get("id")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise ProtocolError(f"{message.get('type')}.id: expected an integer in 1..2^53, "
                            f"found {_short(value)}")
    return value


def bounded_lines(stream: IO[bytes], limit: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The lines of ``stream``, reading at most ``limit + 1`` bytes per line: a longer line
    is yielded as its first ``limit + 1`` bytes (``decode`` refuses it) and the rest of it is
    skipped, so no line can make the reader hold more than one limit's worth of memory."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while True:  # skip the rest of the oversize line
                rest = stream.readline(limit + 1)
                if not rest or rest.endswith(b"\n"):
                    break
        yield line


# ------------------------------------------------------------------ images


def image_nbytes(size: int) -> int:
    """Bytes of one float32 RGBA image of ``size`` x ``size`` pixels."""
    return size * size * CHANNELS * 4


def image_view(buffer: Any, size: int) -> np.ndarray:
    """The first ``image_nbytes(size)`` bytes of ``buffer`` as float32 [size * size * 4]."""
    return np.ndarray((size * size * CHANNELS,), dtype=np.float32, buffer=buffer)


def upscale_pixels(pixels: np.ndarray, size: int, to: int) -> np.ndarray:
    """float32 [size * size * 4] Blender pixels -> [to * to * 4], nearest texel (a preview
    shown at the face's final size; block sizes are powers of two, so every texel becomes
    a whole square)."""
    if size == to:
        return pixels
    image = pixels.reshape(size, size, CHANNELS)
    if to % size == 0:  # whole texels: two repeats, 20x faster than fancy indexing at 1024 px
        factor = to // size
        return np.repeat(np.repeat(image, factor, axis=1), factor, axis=0).reshape(-1)
    index = (np.arange(to) * size) // to
    return np.ascontiguousarray(image[index][:, index]).reshape(-1)


@dataclass(frozen=True)
class FaceImage:
    """An image from the worker, copied out of shared memory.

    pixels: float32 [size * size * 4], linear RGBA, rows bottom-first (Blender's layout),
    at the face's final size. block: resolution of the synthesis block it came from; a
    preview crossed the pipe at ``native_size`` (its block's) and was scaled up on arrival.
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
    native_size: int = 0


@dataclass(frozen=True)
class WorkerEvent:
    """Anything else the parent learns: kind is ``ready``, ``written``, ``cancelled``,
    ``error``, ``directions``, ``estimate``, ``loaded``, ``pong``, ``frozen`` (no heartbeat
    reply in time) or ``crashed`` (the process died; request_id None)."""

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
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"{where}: expected a finite number, found {_short(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ProtocolError(f"{where}: expected a finite number, found {_short(value)}")
    return number


def _optional_int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= 2**63:
        raise ProtocolError(f"{where}: expected an integer (64-bit) or null, "
                            f"found {_short(value)}")
    return value


def _int(value: Any, where: str) -> int:
    result = _optional_int(value, where)
    if result is None:
        raise ProtocolError(f"{where}: expected an integer, found null")
    return result


def _choice(value: Any, choices: tuple[str, ...], where: str) -> Any:
    if not isinstance(value, str) or value not in choices:
        raise ProtocolError(f"{where}: expected one of {', '.join(choices)}, "
                            f"found {_short(value)}")
    return value


def _float_array(value: Any, where: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError, OverflowError, RecursionError):
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


def _short(value: Any) -> str:
    """repr of a found value, cut to 80 characters (never thousands of digits or bytes)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# ------------------------------------------------------------------ photo jobs

PHOTO_BACKENDS = ("auto", "stylegan2", "stylerig", "discofacegan")
PHOTO_LATENT_SPACES = ("w+", "z")
PHOTO_STAGES = ("detect", "align", "rig", "encode", "refine", "invert", "done")
MAX_PHOTO_STEPS = 100_000


@dataclass(frozen=True)
class PhotoJob:
    """Invert a photo into a backend (``photo``): the worker runs
    ``neural.photo.pipeline.invert_photo`` and answers with ``progress`` lines, then one
    ``photo_result`` (or ``cancelled`` / ``error``).

    photo: the image file. model_path: the generator. backend: auto, stylegan2, stylerig or
    discofacegan. encoder (e4e), rnet (Deep3DFaceRecon epoch_20.pth), face_model (BFM .mat,
    for the landmark fit and the named controls), lm3d, average_w_id, rignet: optional files
    ("" = none). face_index: which face, largest first. steps: refinement steps (StyleGAN2 /
    StyleRig) or optimisation steps (DiscoFaceGAN). target: the latest-wins key (a newer
    photo job or a ``cancel`` for the same target cancels this one, queued or running
    between steps)."""

    photo: str
    model_path: str
    backend: str = "auto"
    target: str = ""
    device: str = "auto"
    encoder: str = ""
    rnet: str = ""
    face_model: str = ""
    lm3d: str = ""
    average_w_id: str = ""
    rignet: str = ""
    face_index: int = 0
    detector: str = ""
    steps: int = 0


_PHOTO_FILES = ("encoder", "rnet", "face_model", "lm3d", "average_w_id", "rignet")


def photo_job_to_json(job: PhotoJob) -> dict[str, Any]:
    return {name: getattr(job, name) for name in PhotoJob.__dataclass_fields__}


def photo_job_from_json(data: Any, where: str = "job") -> PhotoJob:
    fields = _object(data, where)
    unknown = sorted(set(fields) - set(PhotoJob.__dataclass_fields__))
    if unknown:
        raise ProtocolError(f"{where}: unknown photo job field(s) {', '.join(unknown)[:200]}")
    job = PhotoJob(
        photo=_string(fields.get("photo"), f"{where}.photo"),
        model_path=_string(fields.get("model_path"), f"{where}.model_path"),
        backend=_choice(fields.get("backend", "auto"), PHOTO_BACKENDS, f"{where}.backend"),
        target=_string(fields.get("target", ""), f"{where}.target"),
        device=_string(fields.get("device", "auto"), f"{where}.device"),
        face_index=_int(fields.get("face_index", 0), f"{where}.face_index"),
        detector=_string(fields.get("detector", ""), f"{where}.detector"),
        steps=_int(fields.get("steps", 0), f"{where}.steps"),
        **{name: _string(fields.get(name, ""), f"{where}.{name}") for name in _PHOTO_FILES},
    )
    if not job.photo:
        raise ProtocolError(f"{where}.photo: expected the path of an image file, found ''")
    if not job.model_path:
        raise ProtocolError(f"{where}.model_path: expected the path of a model file, found ''")
    if job.face_index < 0:
        raise ProtocolError(f"{where}.face_index: expected 0 or more, found {job.face_index}")
    if not 0 <= job.steps <= MAX_PHOTO_STEPS:
        raise ProtocolError(f"{where}.steps: expected 0..{MAX_PHOTO_STEPS}, found {job.steps}")
    try:
        check_device(job.device, f"{where}.device")
    except ContractError as exc:
        raise ProtocolError(str(exc)) from None
    return job


def photo_message(request_id: int, job: PhotoJob) -> dict[str, Any]:
    return {"type": PHOTO, "id": request_id, "job": photo_job_to_json(job)}


def cancel_message(request_id: int, target: str) -> dict[str, Any]:
    """Cancel the photo job of ``target`` (queued or running); answered with ``cancelled``
    for the job (if any) and for this request."""
    return {"type": CANCEL, "id": request_id, "target": target}


@dataclass(frozen=True)
class PhotoResult:
    """A photo's inversion, as the add-on stores it.

    rig: [257] the slider start values; photo_rig: [257] what R-Net / the landmark fit read.
    latent: the base latent, ``latent_space`` "w+" ([num_ws, w_dim], StyleGAN2 / StyleRig) or
    "z" (DiscoFaceGAN's input [z_dim] = coefficients of ``rig`` + ``noise``). noise: DiscoFaceGAN's
    optimised noise part [noise_dim] (empty otherwise). psi/cutoff: the truncation the
    inversion used. face_box: x0, y0, x1, y1 in photo pixels. controls: named control values
    (None without a face model); key_light: the key light read off the SH light."""

    backend: str
    model_sha256: str
    rig: np.ndarray
    photo_rig: np.ndarray
    latent: np.ndarray
    latent_space: str
    noise: np.ndarray
    psi: float
    cutoff: int | None
    face_box: tuple[float, float, float, float]
    faces_found: int
    rig_source: str
    controls: dict[str, float] | None
    key_light: dict[str, Any]


def photo_result_to_json(request_id: int, target: str, result: PhotoResult) -> dict[str, Any]:
    return {
        "type": PHOTO_RESULT, "id": request_id, "target": target,
        "backend": result.backend, "model": result.model_sha256,
        "rig": np.asarray(result.rig, np.float32).tolist(),
        "photo_rig": np.asarray(result.photo_rig, np.float32).tolist(),
        "latent": np.asarray(result.latent, np.float32).tolist(),
        "latent_space": result.latent_space,
        "noise": np.asarray(result.noise, np.float32).tolist(),
        "psi": float(result.psi), "cutoff": result.cutoff,
        "face_box": [float(v) for v in result.face_box], "faces_found": result.faces_found,
        "rig_source": result.rig_source, "controls": result.controls,
        "key_light": result.key_light,
    }


def photo_result_from_json(data: Any, where: str = "photo_result") -> PhotoResult:
    """Inverse of :func:`photo_result_to_json`, checking every field and shape."""
    fields = _object(data, where)
    rig = _float_array(fields.get("rig"), f"{where}.rig")
    photo_rig = _float_array(fields.get("photo_rig"), f"{where}.photo_rig")
    for name, value in (("rig", rig), ("photo_rig", photo_rig)):
        if value.shape != (257,):
            raise ProtocolError(f"{where}.{name}: expected 257 values, found shape "
                                f"{list(value.shape)}")
    space = _choice(fields.get("latent_space"), PHOTO_LATENT_SPACES, f"{where}.latent_space")
    latent = _float_array(fields.get("latent"), f"{where}.latent")
    if latent.ndim != (2 if space == "w+" else 1) or latent.size == 0:
        wanted = "[num_ws, w_dim]" if space == "w+" else "[z_dim]"
        raise ProtocolError(f"{where}.latent: expected a {wanted} array for {space!r}, found "
                            f"shape {list(latent.shape)}")
    noise = _float_array(fields.get("noise", []), f"{where}.noise").reshape(-1)
    box = _float_array(fields.get("face_box"), f"{where}.face_box")
    if box.shape != (4,):
        raise ProtocolError(f"{where}.face_box: expected 4 values, found shape "
                            f"{list(box.shape)}")
    controls = fields.get("controls")
    if controls is not None:
        controls = {str(k): _number(v, f"{where}.controls.{k}")
                    for k, v in _object(controls, f"{where}.controls").items()}
    return PhotoResult(
        backend=_string(fields.get("backend"), f"{where}.backend"),
        model_sha256=_string(fields.get("model", ""), f"{where}.model"),
        rig=rig, photo_rig=photo_rig, latent=latent, latent_space=space, noise=noise,
        psi=_number(fields.get("psi", 1.0), f"{where}.psi"),
        cutoff=_optional_int(fields.get("cutoff"), f"{where}.cutoff"),
        face_box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
        faces_found=_int(fields.get("faces_found", 1), f"{where}.faces_found"),
        rig_source=_string(fields.get("rig_source", ""), f"{where}.rig_source"),
        controls=controls,
        key_light=_object(fields.get("key_light", {}), f"{where}.key_light"),
    )


# ------------------------------------------------------------------ capture jobs

CAPTURE_DETECTORS = ("dlib", "fan")
CAPTURE_STAGES = ("landmarks", "fit")
MAX_SMOOTHING = 1e6


@dataclass(frozen=True)
class CaptureJob:
    """Capture a performance (``capture``): the worker runs ``neural.capture.pipeline`` on
    ``video`` (a video file, a folder of numbered images or one image of a sequence) with the
    face model ``face_model`` (BFM .mat) and answers ``progress`` lines (stages "landmarks"
    and "fit"), then one ``capture_result`` carrying the curves document (the curves.json
    dict), or ``cancelled`` / ``error``.

    detector: "dlib" or "fan". smoothing: λ of the zero-lag smoother (0: off). every_frame:
    one key per frame instead of keyframe reduction. gains: retarget gain per group
    (mouth, eyes, brows, cheeks_nose, jaw, head, raw; checked by the pipeline).
    frame_start: the scene frame of the clip's first frame; scene_fps: the scene's rate (0:
    the clip's). target: the latest-wins key, shared with photo jobs (a newer job or a
    ``cancel`` for the target cancels this one, between frame batches and fit iterations)."""

    video: str
    face_model: str
    target: str = ""
    detector: str = "dlib"
    smoothing: float = 1.0
    every_frame: bool = False
    gains: dict[str, float] = field(default_factory=dict)
    frame_start: int = 1
    scene_fps: float = 0.0


def capture_job_to_json(job: CaptureJob) -> dict[str, Any]:
    data = {name: getattr(job, name) for name in CaptureJob.__dataclass_fields__}
    data["gains"] = dict(sorted(job.gains.items()))
    return data


def capture_job_from_json(data: Any, where: str = "job") -> CaptureJob:
    fields = _object(data, where)
    unknown = sorted(set(fields) - set(CaptureJob.__dataclass_fields__))
    if unknown:
        raise ProtocolError(f"{where}: unknown capture job field(s) {', '.join(unknown)[:200]}")
    every_frame = fields.get("every_frame", False)
    if not isinstance(every_frame, bool):
        raise ProtocolError(f"{where}.every_frame: expected true or false, found "
                            f"{_short(every_frame)}")
    # Group names and ranges are the pipeline's to check (neural.capture.retarget).
    gains = {str(name)[:80]: _number(value, f"{where}.gains.{str(name)[:80]}")
             for name, value in _object(fields.get("gains", {}), f"{where}.gains").items()}
    job = CaptureJob(
        video=_string(fields.get("video"), f"{where}.video"),
        face_model=_string(fields.get("face_model"), f"{where}.face_model"),
        target=_string(fields.get("target", ""), f"{where}.target"),
        detector=_choice(fields.get("detector", "dlib"), CAPTURE_DETECTORS,
                         f"{where}.detector"),
        smoothing=_number(fields.get("smoothing", 1.0), f"{where}.smoothing"),
        every_frame=every_frame, gains=gains,
        frame_start=_int(fields.get("frame_start", 1), f"{where}.frame_start"),
        scene_fps=_number(fields.get("scene_fps", 0.0), f"{where}.scene_fps"),
    )
    if not job.video:
        raise ProtocolError(f"{where}.video: expected the path of a video or image sequence, "
                            "found ''")
    if not job.face_model:
        raise ProtocolError(f"{where}.face_model: expected the path of a face model (BFM "
                            ".mat), found ''")
    if not 0.0 <= job.smoothing <= MAX_SMOOTHING:
        raise ProtocolError(f"{where}.smoothing: expected 0..{MAX_SMOOTHING:g}, found "
                            f"{job.smoothing:g}")
    if job.scene_fps < 0.0:
        raise ProtocolError(f"{where}.scene_fps: expected 0 (the clip's) or a positive rate, "
                            f"found {job.scene_fps:g}")
    if abs(job.frame_start) > 10**7:
        raise ProtocolError(f"{where}.frame_start: expected a scene frame within ±10^7, "
                            f"found {job.frame_start}")
    return job


def capture_message(request_id: int, job: CaptureJob) -> dict[str, Any]:
    return {"type": CAPTURE, "id": request_id, "job": capture_job_to_json(job)}


def capture_result_to_json(request_id: int, target: str,
                           curves: dict[str, Any]) -> dict[str, Any]:
    """``curves``: the curves document (rig/curves_file.py's ``to_dict``)."""
    return {"type": CAPTURE_RESULT, "id": request_id, "target": target, "curves": curves}


def capture_curves_of(message: Any, where: str = "capture_result") -> dict[str, Any]:
    """The curves document a ``capture_result`` carries (an object; its schema is checked by
    rig/curves_file.py's ``curves_from_dict`` on the reader's side)."""
    return _object(_object(message, where).get("curves"), f"{where}.curves")
