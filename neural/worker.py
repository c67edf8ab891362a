"""The inference worker: a process that owns torch and the models, driven by the add-on.

``python -m neural_face_rig.neural.worker [--device auto|cpu|cuda] [--threads N]``

Protocol (contract/protocol.py): JSON lines on stdin (commands) and on the process's
original stdout (replies); pixels through ``multiprocessing.shared_memory`` slots. Anything a
library prints goes to stderr, so it cannot corrupt the protocol stream.

- Backends are loaded by (backend name, model file, device) through the registry
  ``backends.BACKEND_LOADERS`` and kept loaded (the two most recent), so a slider move only
  pays for synthesis, and the engine's cache resumes at the first block whose W+ rows
  changed.
- A job that has to load its model first reports ``progress`` while it does (the stage
  names the file); a ``load`` job (the add-on's preload) then renders the job's face once,
  untransferred, so the first slider move finds the kernels created, the bf16 preview
  calibration done and the engine's cache filled. Any newer request interrupts that warm-up.
- Latest wins per target: a reader thread files every command as it arrives; a render for a
  target replaces the target's queued render and cancels its running one between synthesis
  blocks (the engine's cancel callable).
- The worker quits on a ``quit`` message or when stdin closes (the parent died): it never
  outlives Blender. A watchdog ends it if a non-cancellable step (a model load) is running.
- Output per request is deterministic: fp32, the checkpoint's constant noise, cuDNN
  deterministic (``configure_inference_process``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from ..contract import protocol as wp
from ..contract.catalogue import ROLE_VAE, check_device
from ..contract.errors import ContractError
from ..contract.latest import LatestWins
from ..contract.state import RigState
from ..rig.errors import RigError
from ..rig.file_limits import CHECKPOINT_MAX_BYTES, check_regular_file
from .backends import BACKEND_LOADERS, Backend, StyleGAN2Backend
from .engine import SynthesisCancelled, configure_inference_process
from .errors import NeuralError
from .images import as_rgb, is_untrained, resize, stamp_text, to_blender_rgba, write_png

SLOTS_PER_SIZE = 3
MODELS_KEPT = 2
QUIT_GRACE_SECONDS = 10.0


class RequestError(NeuralError):
    """A request cannot be served (unknown backend, unavailable device, ...)."""


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; explicit devices are checked."""
    try:
        check_device(device)
    except ContractError as exc:
        raise RequestError(str(exc)) from None
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RequestError(
            f"device {device!r}: this Python's torch has no CUDA device "
            f"(torch {torch.__version__}); choose 'cpu' or 'auto'"
        )
    return device


# ------------------------------------------------------------------ models


@dataclass
class LoadedModel:
    backend: Backend
    untrained: bool
    resolution: int  # full output resolution
    warmed_up: bool = False  # a load job rendered a face with it (the first synthesis)

    def size_for(self, job: wp.RenderJob) -> int:
        """The size this model renders the job at: the asked resolution, or the model's own
        when none or a larger one is asked (a 256 px preview of a 128 px model is its full
        size)."""
        return min(job.state.resolution or self.resolution, self.resolution)

    def state_for(self, job: wp.RenderJob) -> RigState:
        """The job's rig state at ``size_for(job)``."""
        return dataclasses.replace(job.state, resolution=self.size_for(job))


OnLoad = Callable[[str], None]
"""Called with what is about to be read (file name and size) when a model is not cached."""


class ModelCache:
    """The most recently used backends, keyed by everything that identifies their weights."""

    def __init__(self, keep: int = MODELS_KEPT) -> None:
        self._keep = keep
        self._models: OrderedDict[tuple[Any, ...], LoadedModel] = OrderedDict()

    def get(self, job: wp.RenderJob, device: str, on_load: OnLoad | None = None) -> LoadedModel:
        """The job's backend with its model loaded (from the cache when its files are
        unchanged). Every path of the job must be a regular file (the VAE role a folder),
        checked before anything is opened; files are only ever opened read-only.
        ``on_load``: told before a model is read (not when it comes from the cache)."""
        backend_name = job.state.backend
        loader = BACKEND_LOADERS.get(backend_name)
        if loader is None:
            raise RequestError(
                f"backend {backend_name!r:.80} is not available in this worker; available: "
                f"{', '.join(sorted(BACKEND_LOADERS))}"
            )
        path = Path(job.model_path)
        size = check_regular_file(path, "model file", CHECKPOINT_MAX_BYTES, RequestError)
        for role, other in sorted(job.files.items()):
            if role == ROLE_VAE:
                if other and not os.path.isdir(other):
                    raise RequestError(f"{other}: expected the {role} folder, found no folder")
            elif other:
                check_regular_file(other, f"{role} file", CHECKPOINT_MAX_BYTES, RequestError)
        key = (backend_name, os.path.realpath(path), path.stat().st_mtime_ns, size, device,
               tuple(sorted(job.files.items())))
        model = self._models.get(key)
        if model is None:
            if on_load is not None:
                on_load(f"{path.name} ({size / 2**20:.0f} MiB)")
            try:
                backend = loader(str(path), device, job.files)
            except MemoryError:
                raise RequestError(f"{path}: loading it needs more memory than this machine "
                                   "has (a damaged or crafted file?)") from None
            except RecursionError:
                raise RequestError(f"{path}: malformed model file (nested too deeply)") from None
            model = LoadedModel(backend, is_untrained(path), backend.engine.config.img_resolution)
            self._models[key] = model
            while len(self._models) > self._keep:
                self._models.popitem(last=False)
        self._models.move_to_end(key)
        return model


def redact(message: str) -> str:
    """An error message without any bytes of the file it is about: the worker answers
    whoever writes to its stdin, and a model path may name a file that is not a model."""
    return _FILE_BYTES.sub("its first bytes are not a known model format", message)


_FILE_BYTES = re.compile(r"first bytes( [0-9a-f]{2})+|first bytes b'[^']*'")


# ------------------------------------------------------------------ output


def checked_output_path(job: wp.RenderJob) -> Path:
    """The job's output path, resolved (symlinks included), after checking it lies inside
    the job's ``output_root`` (an existing folder) and names a .png file: the worker never
    writes anywhere else, whatever a message says."""
    if not job.output_root:
        raise RequestError(f"output_path {job.output_path!r}: the job names no output_root "
                           "folder to write into")
    root = Path(os.path.realpath(job.output_root))
    if not root.is_dir():
        raise RequestError(f"output_root {job.output_root!r}: expected an existing folder, "
                           f"found {'a file' if root.exists() else 'nothing'} at {root}")
    target = Path(os.path.realpath(job.output_path))
    if target.parent != root and root not in target.parents:
        raise RequestError(f"output_path {job.output_path!r}: refused, it resolves to "
                           f"{target}, outside the job's folder {root}")
    if target.suffix.lower() != ".png" or target.is_dir():
        raise RequestError(f"output_path {job.output_path!r}: expected a .png file name, "
                           f"found {target.name!r}")
    return target


class Channel:
    """The reply stream: whole JSON lines, one writer at a time."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.broken = False

    def send(self, message: dict[str, Any]) -> None:
        data = wp.encode(message)
        with self._lock:
            if self.broken:
                return
            try:
                self._stream.write(data)
                self._stream.flush()
            except (BrokenPipeError, OSError, ValueError):
                self.broken = True  # the parent is gone; the reader thread sees EOF too


class SlotPool:
    """Shared-memory image slots, ``per_size`` at most per image size. A slot is busy from
    the moment the worker writes it until the parent releases it."""

    def __init__(self, channel: Channel, per_size: int = SLOTS_PER_SIZE) -> None:
        self._channel = channel
        self._per_size = per_size
        self._cond = threading.Condition()
        self._free: dict[int, list[shared_memory.SharedMemory]] = {}
        self._busy: dict[str, tuple[int, shared_memory.SharedMemory]] = {}

    def acquire(
        self, size: int, give_up: Callable[[], bool], keep_up_to: int | None = None
    ) -> shared_memory.SharedMemory | None:
        """A free slot for ``size`` px images (created if below the limit), waiting for a
        release otherwise; None if ``give_up()`` turns true while waiting."""
        with self._cond:
            self._close_free(keep_up_to or size)
            while True:
                free = self._free.setdefault(size, [])
                if free:
                    slot = free.pop()
                    break
                if sum(1 for s, _ in self._busy.values() if s == size) < self._per_size:
                    slot = shared_memory.SharedMemory(create=True, size=wp.image_nbytes(size))
                    break
                if give_up():
                    return None
                self._cond.wait(0.05)
            self._busy[slot.name] = (size, slot)
            return slot

    def release(self, name: str) -> None:
        with self._cond:
            entry = self._busy.pop(name, None)
            if entry is not None:
                self._free.setdefault(entry[0], []).append(entry[1])
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            slots = [s for free in self._free.values() for s in free]
            slots += [slot for _, slot in self._busy.values()]
            self._free.clear()
            self._busy.clear()
        for slot in slots:
            _unlink(slot)

    def _close_free(self, keep_up_to: int) -> None:
        """Free slots larger than the current job's final size are dropped (the resolution
        changed); smaller ones serve its previews."""
        for size in [s for s in self._free if s > keep_up_to]:
            for slot in self._free.pop(size):
                _unlink(slot)
                self._channel.send({"type": wp.SLOT_CLOSED, "slot": slot.name})


def _unlink(slot: shared_memory.SharedMemory) -> None:
    slot.close()
    try:
        slot.unlink()
    except FileNotFoundError:
        pass


# ------------------------------------------------------------------ the worker


class Worker:
    """Serves render and directions requests, one at a time, latest wins per target."""

    def __init__(
        self, channel: Channel, device: str = "auto", quit_grace: float | None = QUIT_GRACE_SECONDS
    ) -> None:
        """``quit_grace``: seconds after a quit request before the process is ended by force
        (None: never; for running a worker inside another program)."""
        self.channel = channel
        self.quit_grace = quit_grace
        self.default_device = resolve_device(device)
        self.models = ModelCache()
        self.slots = SlotPool(channel)
        self._cond = threading.Condition()
        self._pending: LatestWins[dict[str, Any]] = LatestWins()
        self._quit = False
        self._doing: tuple[int, str, float] | None = None

    # -------------------------------------------------------------- commands (reader thread)

    def read_commands(self, stream: Iterable[bytes]) -> None:
        """File every command line; end of input means the parent is gone."""
        try:
            for line in stream:
                if line.strip():
                    self.handle_line(line)
                if self.quitting:
                    return
        finally:
            self.request_quit()

    def handle_line(self, line: bytes) -> None:
        """File one command line. Any line at all (garbage, too long, nested 100 000 deep,
        a 5000-digit id) is answered: a malformed one with an error reply (its id when it
        has a valid one), never by ending this thread."""
        ident: int | None = None
        try:
            message = wp.decode(line, wp.PARENT_MESSAGES)
            kind = message["type"]
            if kind == wp.RELEASE:
                self.slots.release(str(message.get("slot"))[:255])
            elif kind == wp.QUIT:
                self.request_quit()
            else:
                ident = wp.request_id(message)
                if kind == wp.PING:
                    self.channel.send({"type": wp.PONG, "id": ident, "busy": self._busy})
                else:
                    self._enqueue(ident, message)
        except (wp.ProtocolError, ContractError) as exc:
            self.channel.send({"type": wp.ERROR, "id": ident, "target": "", "message": str(exc)})
        except Exception as exc:  # a bug must not end the command thread (and the worker)
            traceback.print_exc(file=sys.stderr)
            self.channel.send({"type": wp.ERROR, "id": ident, "target": "",
                               "message": f"cannot handle this line: {type(exc).__name__}"})

    def _enqueue(self, ident: int, message: dict[str, Any]) -> None:
        if message["type"] in (wp.PHOTO, wp.CAPTURE, wp.CANCEL):
            self._enqueue_photo(ident, message)
            return
        job = wp.job_from_json(message.get("job"))
        if message["type"] == wp.RENDER:
            key = f"render:{job.target}"  # latest wins per target
        else:
            key = f"{message['type']}:{ident}"  # never superseded
        message = dict(message, job=job)
        with self._cond:
            accepted, replaced = self._pending.put(key, ident, message)
            self._cond.notify_all()
        if replaced is not None:
            self._send_cancelled(replaced)
        if not accepted:
            self._send_cancelled(message)

    def _enqueue_photo(self, ident: int, message: dict[str, Any]) -> None:
        """Photo and capture jobs and their cancels share one latest-wins key per target: a
        newer job or a ``cancel`` for the target cancels the one queued or running (between
        inversion stages and steps, capture frame batches and fit iterations)."""
        if message["type"] in (wp.PHOTO, wp.CAPTURE):
            read = wp.photo_job_from_json if message["type"] == wp.PHOTO else \
                wp.capture_job_from_json
            job = read(message.get("job"))
            target = job.target
            message = dict(message, job=job)
        else:
            target = wp._string(message.get("target", ""), "cancel.target")
            message = {"type": wp.CANCEL, "id": ident, "target": target}
        with self._cond:
            accepted, replaced = self._pending.put(f"photo:{target}", ident, message)
            self._cond.notify_all()
        if replaced is not None:
            self._send_cancelled(replaced)
        if not accepted:
            self._send_cancelled(message)

    def request_quit(self) -> None:
        with self._cond:
            if self._quit:
                return
            self._quit = True
            self._cond.notify_all()
        if self.quit_grace is not None:
            # A model load cannot be interrupted: do not let it keep an orphan alive.
            watchdog = threading.Timer(self.quit_grace, os._exit, args=(0,))
            watchdog.daemon = True
            watchdog.start()

    @property
    def quitting(self) -> bool:
        return self._quit

    # -------------------------------------------------------------- main loop

    def serve(self, commands: Iterable[bytes]) -> int:
        reader = threading.Thread(
            target=self.read_commands, args=(commands,), name="nfr-commands", daemon=True
        )
        reader.start()
        self.channel.send({
            "type": wp.READY, "pid": os.getpid(), "device": self.default_device,
            "torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "threads": torch.get_num_threads(), "protocol": wp.PROTOCOL_VERSION,
            "backends": sorted(BACKEND_LOADERS),
        })
        try:
            while (item := self._next()) is not None:
                key, message = item
                self._serve_one(key, message)
        finally:
            self.slots.close()
            self.channel.send({"type": wp.BYE})
        return 0

    def _next(self) -> tuple[str, dict[str, Any]] | None:
        with self._cond:
            while not self._pending and not self._quit:
                self._cond.wait()
            if self._quit:
                for message in self._pending.take_all():
                    self._send_cancelled(message)
                return None
            return self._pending.pop_oldest()

    def _superseded(self, key: str) -> bool:
        return self._quit or key in self._pending

    @property
    def _busy(self) -> dict[str, Any] | None:
        """What the main loop is doing, for heartbeat replies: request id, kind, seconds."""
        doing = self._doing
        if doing is None:
            return None
        ident, kind, since = doing
        return {"id": ident, "type": kind, "seconds": round(time.monotonic() - since, 3)}

    def _serve_one(self, key: str, message: dict[str, Any]) -> None:
        if message["type"] in (wp.PHOTO, wp.CAPTURE, wp.CANCEL):
            self._serve_long_job(key, message)
            return
        job: wp.RenderJob = message["job"]
        ident = message["id"]
        kind = message["type"]
        self._doing = (ident, kind, time.monotonic())
        stages = 2 if kind == wp.LOAD else 1

        def progress(stage: str, done: int) -> None:
            self.channel.send({"type": wp.PROGRESS, "id": ident, "target": job.target,
                               "stage": stage, "done": done, "total": stages})

        try:
            device = self.default_device if job.device == "auto" else resolve_device(job.device)
            model = self.models.get(job, device, lambda what: progress(f"loading {what}", 0))
            if kind == wp.DIRECTIONS:
                self._directions(ident, job, model, message)
            elif kind == wp.ESTIMATE:
                self._estimate(ident, job, model)
            elif kind == wp.LOAD:
                if not model.warmed_up:
                    progress("first synthesis", 1)
                    self._warm_up(job, model)
                self.channel.send({"type": wp.LOADED, "id": ident, "target": job.target,
                                   "model": model.backend.model_id,
                                   "resolution": model.resolution})
            else:
                self._render(ident, key, job, model)
        except SynthesisCancelled:
            self._send_cancelled(message)
        except (NeuralError, RigError, ContractError) as exc:
            self._send_error(ident, job, redact(str(exc)))
        except Exception as exc:  # a bug must reach the user as a message, not kill the worker
            traceback.print_exc(file=sys.stderr)
            self._send_error(ident, job, redact(f"{type(exc).__name__}: {exc}"[:500]))
        finally:
            self._doing = None

    def _render(self, ident: int, key: str, job: wp.RenderJob, model: LoadedModel) -> None:
        start = time.perf_counter()
        output = checked_output_path(job) if job.output_path else None
        state = model.state_for(job)
        size = model.size_for(job)

        def cancel() -> bool:
            return self._superseded(key)

        shown_from = size if job.stream_from is None else job.stream_from
        for block in model.backend.render_progressive(state, cancel, shown_from):
            final = block.res == size
            if not final and (job.stream_from is None or block.res < job.stream_from):
                continue
            # Previews cross the pipe at their block's own size (a 32 px preview of a 1024
            # face is 16 KiB, not 16 MiB); Blender's side scales them for display.
            rgb = as_rgb(block.image)
            if model.untrained:  # the stamp needs the full size to be legible
                rgb = stamp_text(resize(rgb, size))
            native = rgb.shape[-1]
            if final and output is not None:
                write_png(rgb, output, bits=16)
                self.channel.send({
                    "type": wp.WRITTEN, "id": ident, "target": job.target,
                    "path": job.output_path, "seconds": time.perf_counter() - start,
                })
                return
            if job.output_path:
                continue
            slot = self.slots.acquire(native, cancel, keep_up_to=size)
            if slot is None:
                raise SynthesisCancelled("superseded while waiting for a free image slot")
            to_blender_rgba(rgb, native, out=wp.image_view(slot.buf, native))
            self.channel.send({
                "type": wp.IMAGE, "id": ident, "target": job.target, "block": block.res,
                "size": native, "final_size": size, "final": final, "slot": slot.name,
                "model": model.backend.model_id, "untrained": model.untrained,
                "seconds": time.perf_counter() - start,
            })

    def _warm_up(self, job: wp.RenderJob, model: LoadedModel) -> None:
        """Render the job's face once without sending it (see the module docstring); any
        request that arrives meanwhile stops it between blocks."""
        state = model.state_for(job)
        try:
            for _block in model.backend.render_progressive(
                state, lambda: self._quit or bool(self._pending)
            ):
                pass
        except SynthesisCancelled:
            return
        model.warmed_up = True

    def _directions(
        self, ident: int, job: wp.RenderJob, model: LoadedModel, message: dict[str, Any]
    ) -> None:
        layers = message.get("layers")
        if not isinstance(layers, list) or not all(
            isinstance(r, int) and not isinstance(r, bool) for r in layers
        ):
            raise wp.ProtocolError(f"directions.layers: expected a list of integers, found "
                                   f"{layers!r}")
        backend = model.backend
        if not isinstance(backend, StyleGAN2Backend):
            raise RequestError(f"backend {job.state.backend!r} has no SeFa directions")
        directions = backend.directions(tuple(layers))
        self.channel.send({
            "type": wp.DIRECTIONS, "id": ident, "target": job.target,
            "count": int(directions.shape[0]), "layers": sorted(set(layers)),
            "model": backend.model_id,
        })

    def _estimate(self, ident: int, job: wp.RenderJob, model: LoadedModel) -> None:
        """The backend's rig values of the job's base face (None: it has no reading)."""
        rig = model.backend.estimate(job.state)
        self.channel.send({
            "type": wp.ESTIMATE, "id": ident, "target": job.target,
            "rig": None if rig is None else [float(v) for v in rig],
            "model": model.backend.model_id, "backend": job.state.backend,
        })

    # -------------------------------------------------------------- long jobs

    def _serve_long_job(self, key: str, message: dict[str, Any]) -> None:
        """A photo or capture job: it streams ``progress`` and ends in its result message,
        ``cancelled`` or one ``error`` line. A ``cancel`` that no such job absorbed (it was
        not running) is answered ``cancelled``."""
        ident = message["id"]
        if message["type"] == wp.CANCEL:
            self.channel.send({"type": wp.CANCELLED, "id": ident, "target": message["target"]})
            return
        job: wp.PhotoJob | wp.CaptureJob = message["job"]
        self._doing = (ident, message["type"], time.monotonic())
        from .capture import CaptureCancelled
        from .photo.optimise import InversionCancelled

        def progress(stage: str, done: int, total: int) -> None:
            self.channel.send({"type": wp.PROGRESS, "id": ident, "target": job.target,
                               "stage": stage, "done": int(done), "total": int(total)})

        def cancel() -> bool:
            return self._superseded(key)

        try:
            if isinstance(job, wp.CaptureJob):
                reply = self._capture_reply(ident, job, progress, cancel)
            else:
                device = (self.default_device if job.device == "auto"
                          else resolve_device(job.device))
                result = run_photo_job(job, device, progress, cancel)
                reply = wp.photo_result_to_json(ident, job.target, result)
            self.channel.send(reply)
        except (InversionCancelled, CaptureCancelled):
            self._send_cancelled(message)
        except (NeuralError, RigError, ContractError, OSError) as exc:
            self._send_job_error(ident, job, str(exc))
        except Exception as exc:  # a bug must reach the user as a message, not kill the worker
            traceback.print_exc(file=sys.stderr)
            self._send_job_error(ident, job, f"{type(exc).__name__}: {exc}"[:500])
        finally:
            self._doing = None

    @staticmethod
    def _capture_reply(ident: int, job: wp.CaptureJob, progress: Callable[[str, int, int], None],
                       cancel: Callable[[], bool]) -> dict[str, Any]:
        curves = run_capture_job(job, progress, cancel)
        reply = wp.capture_result_to_json(ident, job.target, curves)
        size = len(wp.dumps(reply))
        if size > wp.MAX_LINE_BYTES:
            raise RequestError(
                f"{job.video}: the capture's curves are {size >> 20} MiB of JSON, more "
                f"than one protocol line carries ({wp.MAX_LINE_BYTES >> 20} MiB); turn "
                "off every-frame keys or capture a shorter range")
        return reply

    def _send_job_error(self, ident: int, job: wp.PhotoJob | wp.CaptureJob, text: str) -> None:
        line = " ".join(redact(text).split())  # one line, whatever the exception held
        self.channel.send({"type": wp.ERROR, "id": ident, "target": job.target, "message": line})

    def _send_cancelled(self, message: dict[str, Any]) -> None:
        job = message.get("job")
        target = (job.target if isinstance(job, (wp.RenderJob, wp.PhotoJob, wp.CaptureJob))
                  else str(message.get("target") or ""))
        self.channel.send({"type": wp.CANCELLED, "id": message.get("id"), "target": target})

    def _send_error(self, ident: int, job: wp.RenderJob, text: str) -> None:
        self.channel.send({"type": wp.ERROR, "id": ident, "target": job.target, "message": text})


def run_photo_job(
    job: wp.PhotoJob,
    device: str,
    progress: Callable[[str, int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> wp.PhotoResult:
    """Invert ``job.photo`` (neural.photo.pipeline.invert_photo) into the wire result. Every
    named file must be a regular file (checked before anything is opened)."""
    import json

    from .photo.invert_dfg import DFGInvertOptions
    from .photo.invert_stylegan import RefineOptions
    from .photo.pipeline import InvertRequest, invert_photo

    check_regular_file(job.photo, "photo", CHECKPOINT_MAX_BYTES, RequestError)
    check_regular_file(job.model_path, "model file", CHECKPOINT_MAX_BYTES, RequestError)
    files = {name: getattr(job, name) for name in
             ("encoder", "rnet", "face_model", "lm3d", "average_w_id", "rignet")}
    for name, path in files.items():
        if path:
            check_regular_file(path, f"{name} file", CHECKPOINT_MAX_BYTES, RequestError)
    request = InvertRequest(
        photo=job.photo, weights=job.model_path, backend=job.backend,
        encoder=job.encoder or None, rnet=job.rnet or None, face_model=job.face_model or None,
        lm3d=job.lm3d or None, face_index=job.face_index, detector=job.detector or None,
        refine=RefineOptions(steps=job.steps), dfg=DFGInvertOptions(steps=job.steps),
        average_w_id=job.average_w_id or None, stylerig=job.rignet or None, device=device,
    )
    face = invert_photo(request, progress, cancel)
    state = face.rig_state()
    assert state.latent is not None
    photo = face.meta.get("photo", {})
    box = [float(v) for v in photo.get("face_box", (0.0, 0.0, 0.0, 0.0))]
    # numpy scalars in the metadata become plain JSON numbers
    extras = json.loads(json.dumps({"controls": face.meta.get("controls"),
                                    "key_light": face.meta.get("key_light", {})},
                                   default=float))
    return wp.PhotoResult(
        backend=face.backend, model_sha256=face.model_sha256, rig=face.rig,
        photo_rig=face.photo_rig, latent=state.latent, latent_space=state.latent_space,
        noise=face.noise if face.noise is not None else np.zeros(0, np.float32),
        psi=state.psi, cutoff=state.cutoff,
        face_box=(box[0], box[1], box[2], box[3]),
        faces_found=int(photo.get("faces_found", 1)),
        rig_source=str(face.meta.get("rig_source", "")),
        controls=extras["controls"], key_light=extras["key_light"],
    )


def run_capture_job(
    job: wp.CaptureJob,
    progress: Callable[[str, int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Capture ``job.video`` (neural.capture.pipeline.capture_video) -> the curves document
    (curves.json's dict). The face model must be a regular file; the video (a file, a folder
    or one image of a sequence) is read by the pipeline's frame source, which names what it
    found when it is not a clip."""
    from ..rig.face_model import load_face_model
    from .capture import CaptureCancelled, CaptureError
    from .capture.pipeline import CaptureOptions, CurveOptions, capture_video
    from .capture.retarget import check_gains

    gains = check_gains(job.gains)  # refuse a bad gain before minutes of tracking
    check_regular_file(job.face_model, "face model", CHECKPOINT_MAX_BYTES, RequestError)
    if not os.path.exists(job.video):
        raise RequestError(f"{job.video}: no video file, image or folder of images there")
    model = load_face_model(job.face_model)
    options = CaptureOptions(
        detector=job.detector, scene_fps=job.scene_fps or None, frame_start=job.frame_start,
        curves=CurveOptions(smoothing=job.smoothing, gains=gains,
                            every_frame=job.every_frame),
    )
    try:
        result = capture_video(job.video, model, options, progress=progress, cancel=cancel)
    except CaptureCancelled:
        raise
    except CaptureError as exc:  # the message names the clip, whatever stage refused it
        if os.path.basename(job.video) in str(exc):
            raise
        raise CaptureError(f"{job.video}: {exc}") from None
    return result.curves.to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m neural_face_rig.neural.worker", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args(argv)
    # The protocol keeps the original stdout; everything printed from here on goes to stderr.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    configure_inference_process(args.threads)
    try:
        worker = Worker(Channel(protocol), args.device)
    except NeuralError as exc:
        Channel(protocol).send({"type": wp.ERROR, "id": None, "target": "", "message": str(exc)})
        return 2
    return worker.serve(wp.bounded_lines(sys.stdin.buffer))


if __name__ == "__main__":
    sys.exit(main())
