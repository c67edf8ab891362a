"""The worker client: starts the inference worker, sends it render jobs, collects its images.

No bpy here, and no bpy in its threads: a reader thread turns the worker's replies into
``FaceImage``/``WorkerEvent`` objects (copying pixels out of shared memory and releasing the
slot at once), and Blender's main thread collects them with the non-blocking ``poll()``.
Background mode (``blender -b``, farms: no timers) uses ``render_blocking``.

A worker that dies is reported (``status`` and a ``crashed`` event) and started again by the
next request; one that stops answering its heartbeat pings for FROZEN_AFTER seconds is
reported (``frozen``), killed and replaced by the next request. Previews arrive at their
block's size and are scaled to the face's size here, in the reader thread. ``stop()`` ends
it (quit message, then terminate, then kill) and is registered with ``atexit`` by the
add-on, so Blender never leaves a worker behind; the worker also exits by itself when its
stdin closes.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path
from typing import IO, Any

from .contract import protocol as wp
from .contract.latest import LatestWins
from .contract.protocol import FaceImage, RenderJob, WorkerEvent

STDERR_LINES_KEPT = 20
STOP_TIMEOUT = 5.0
HEARTBEAT_SECONDS = 2.0
"""A ping goes out this often while requests are outstanding (the worker answers pings from
its command thread, also while a render or a model load runs)."""
FROZEN_AFTER = 20.0
"""Seconds without any reply to pings before the worker counts as frozen: a stopped or
deadlocked process, never a slow model load (the worker keeps answering pings meanwhile)."""
Result = FaceImage | WorkerEvent


class WorkerError(Exception):
    """The worker could not produce what was asked (error reply, crash, timeout)."""


def default_command() -> tuple[list[str], dict[str, str]]:
    """Blender's own Python running this package's worker module.

    Inside Blender the package is ``bl_ext.<repo>.<folder>``, which only Blender can import:
    the worker imports the same folder as a top-level package from its parent directory.
    """
    folder = Path(__file__).resolve().parent
    package = __package__ or folder.name
    env = dict(os.environ)
    if package.startswith("bl_ext."):
        paths = [str(folder.parent)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        package = folder.name
    return [sys.executable, "-m", f"{package}.neural.worker"], env


class WorkerClient:
    """One worker process and the bookkeeping of its requests. Thread-safe."""

    def __init__(
        self, command: Sequence[str] | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        default, default_env = default_command()
        self.command = list(command) if command is not None else default
        self.env = dict(env) if env is not None else default_env
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._proc: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._events: collections.deque[WorkerEvent] = collections.deque()
        self._images: LatestWins[FaceImage] = LatestWins()  # newest image per target
        self._waiters: dict[int, queue.Queue[Result]] = {}
        self._slots: dict[str, shared_memory.SharedMemory] = {}
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._stopping = False
        self._last_sent = 0  # id of the newest request sent to the current process
        self.info: dict[str, Any] = {}
        self.status = "not started"
        self.crashes = 0
        self.frozen_after = FROZEN_AFTER
        self._last_reply = time.monotonic()  # any line from the worker
        self._last_ping = 0.0
        self._frozen_reported = False

    # -------------------------------------------------------------- process

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the worker unless it is running (returns at once; it reports ``ready``)."""
        with self._lock:
            if self.is_running():
                return
            self._join_threads()
            self._stopping = False
            self._stderr.clear()
            try:
                proc = subprocess.Popen(
                    self.command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=self.env,
                    start_new_session=True,  # a Ctrl+C in Blender's terminal is Blender's
                )
            except OSError as exc:
                self.status = f"cannot start the worker ({self.command[0]}): {exc}"
                raise WorkerError(self.status) from None
            self._proc = proc
            self.status = "starting"
            self._last_reply = time.monotonic()
            self._frozen_reported = False
            assert proc.stdout is not None and proc.stderr is not None
            self._threads = [
                threading.Thread(target=self._read_replies, args=(proc, proc.stdout),
                                 name="nfr-worker-replies", daemon=True),
                threading.Thread(target=self._read_stderr, args=(proc.stderr,),
                                 name="nfr-worker-stderr", daemon=True),
            ]
            for thread in self._threads:
                thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """End the worker: quit message and closed stdin, then terminate, then kill."""
        with self._lock:
            self._stopping = True
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                data = wp.encode({"type": wp.QUIT})
                assert proc.stdin is not None
                with self._write_lock:
                    proc.stdin.write(data)
                    proc.stdin.flush()
                proc.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        # The reader threads end with the process's pipes (they take the lock: not held here).
        self._join_threads()
        if proc is not None:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self._close_slots()
        self.status = "stopped"

    def end_frozen(self) -> None:
        """Kill a worker that stopped answering (SIGKILL: a stopped or deadlocked process
        ignores a quit message and SIGTERM); the next request starts a new one."""
        with self._lock:
            self._stopping = True
            proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
        self._join_threads()  # the reader threads end at the pipes' end of file
        if proc is not None:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self._close_slots()
        self.crashes += 1

    def restart(self) -> None:
        self.stop()
        self.start()

    # -------------------------------------------------------------- requests

    def request(self, job: RenderJob) -> int:
        """Send a render job; returns its id. Latest wins per ``job.target`` in the worker.
        A crashed or stopped worker is started again first."""
        return self._submit(lambda ident: wp.render_message(ident, job))

    def request_directions(self, job: RenderJob, layers: Sequence[int]) -> int:
        """Ask for the SeFa directions of ``job``'s model over W+ rows ``layers``."""
        return self._submit(lambda ident: wp.directions_message(ident, job, tuple(layers)))

    def request_job(self, kind: str, job: RenderJob) -> int:
        """Send an ``estimate`` or ``load`` request for ``job`` (protocol.job_message)."""
        return self._submit(lambda ident: wp.job_message(kind, ident, job))

    def poll(self) -> list[Result]:
        """Everything that arrived since the last call (never blocks): events in order, then
        the newest image of each target."""
        with self._lock:
            results: list[Result] = list(self._events)
            self._events.clear()
            results.extend(self._images.take_all())
        return results

    # -------------------------------------------------------------- liveness

    @property
    def last_sent(self) -> int:
        """Id of the newest request sent to the current process."""
        return self._last_sent

    def seconds_silent(self) -> float:
        """Seconds since the worker last sent anything."""
        return time.monotonic() - self._last_reply

    def is_frozen(self) -> bool:
        """Running, pinged, and silent for longer than ``frozen_after`` seconds."""
        return (self.is_running() and self._last_ping > self._last_reply
                and self.seconds_silent() > self.frozen_after)

    def heartbeat(self) -> bool:
        """Ping the worker if the last ping is HEARTBEAT_SECONDS old; returns False (and
        reports a ``frozen`` event once) when the worker has stopped answering. Call it while
        waiting for results; it never blocks."""
        if not self.is_running():
            return True
        now = time.monotonic()
        if now - self._last_ping >= min(HEARTBEAT_SECONDS, self.frozen_after / 4):
            self._last_ping = now
            try:
                with self._lock:
                    self._send({"type": wp.PING, "id": next(self._ids)})
            except (OSError, ValueError):
                return True  # the reader thread reports the crash
        if not self.is_frozen():
            return True
        if not self._frozen_reported:
            self._frozen_reported = True
            self.status = (f"worker not responding for {self.seconds_silent():.0f} s (frozen?); "
                           "it is restarted with the next update")
            with self._lock:
                self._events.append(WorkerEvent("frozen", None, "", self.status,
                                                {"last_request": self._last_sent}))
        return False

    def submit(self, job: RenderJob) -> PendingRequest:
        """Send ``job`` for its final result only, which the returned handle collects
        (``poll()`` never sees it): the final image, or a ``written`` event when the job has
        an output path."""
        waiter: queue.Queue[Result] = queue.Queue()
        job = dataclasses.replace(job, stream_from=None)
        ident = self._submit(lambda i: wp.render_message(i, job), waiter)
        return PendingRequest(self, ident, waiter)

    def render_blocking(self, job: RenderJob, timeout: float) -> Result:
        """``submit(job).wait(timeout)``: background mode and renders, where nothing else
        may happen before the frame's face is there."""
        return self.submit(job).wait(timeout)

    def _forget(self, ident: int) -> None:
        with self._lock:
            self._waiters.pop(ident, None)

    def _submit(self, make: Any, waiter: queue.Queue[Result] | None = None) -> int:
        if self.is_frozen():
            self.end_frozen()
        with self._lock:
            if not self.is_running():
                self.start()
            ident = next(self._ids)
            self._last_sent = ident
            if waiter is not None:
                self._waiters[ident] = waiter
            try:
                self._send(make(ident))
            except (OSError, ValueError) as exc:
                self._waiters.pop(ident, None)
                raise WorkerError(f"cannot reach the worker: {exc}") from None
            return ident

    def _send(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise OSError("the worker is not running")
        data = wp.encode(message)
        with self._write_lock:
            proc.stdin.write(data)
            proc.stdin.flush()

    # -------------------------------------------------------------- reader threads

    def _read_replies(self, proc: subprocess.Popen[bytes], stream: IO[bytes]) -> None:
        for line in stream:
            self._last_reply = time.monotonic()
            if self._frozen_reported:
                self._frozen_reported = False
                self.status = "ready (answering again)"
            try:
                message = wp.decode(line, wp.WORKER_MESSAGES)
                self._dispatch(proc, message)
            except (wp.ProtocolError, OSError, ValueError) as exc:
                self._deliver(WorkerEvent("error", None, "", f"worker protocol: {exc}"))
        code = proc.wait()
        self._close_slots()
        if not self._stopping:
            self._crashed(code)

    def _read_stderr(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            self._stderr.append(line)
            print(f"[nfr worker] {line}", file=sys.stderr)

    def _dispatch(self, proc: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == wp.IMAGE:
            self._deliver(self._take_image(proc, message))
        elif kind == wp.SLOT_CLOSED:
            slot = self._slots.pop(str(message.get("slot")), None)
            if slot is not None:
                slot.close()
        elif kind == wp.READY:
            self.info = message
            self.status = f"ready ({message.get('device')}, torch {message.get('torch')})"
            self._deliver(WorkerEvent("ready", None, "", self.status, message))
        elif kind == wp.PONG:
            pass  # _last_reply is all a heartbeat is for
        elif kind != wp.BYE:
            target = str(message.get("target") or "")
            ident = message.get("id")
            text = str(message.get("message") or "")
            self._deliver(WorkerEvent(kind, ident if isinstance(ident, int) else None,
                                      target, text, message))

    def _take_image(self, proc: subprocess.Popen[bytes], message: dict[str, Any]) -> FaceImage:
        """Copy the slot's pixels and hand the slot back to the worker at once."""
        name, native = str(message["slot"]), int(message["size"])
        if not 0 < native <= wp.MAX_IMAGE_SIZE:
            raise ValueError(f"image size {native} outside 1..{wp.MAX_IMAGE_SIZE}")
        size = int(message.get("final_size") or native)
        slot = self._slots.get(name)
        if slot is None:
            slot = self._slots[name] = _attach(name)
        # Scaled here, in the reader thread: Blender's main thread only copies.
        pixels = wp.upscale_pixels(wp.image_view(slot.buf, native).copy(), native, size)
        with self._write_lock:
            assert proc.stdin is not None
            proc.stdin.write(wp.encode({"type": wp.RELEASE, "slot": name}))
            proc.stdin.flush()
        return FaceImage(
            request_id=int(message["id"]), target=str(message.get("target") or ""),
            block=int(message["block"]), size=size, final=bool(message["final"]),
            native_size=native,
            pixels=pixels, model_sha256=str(message.get("model") or ""),
            untrained=bool(message.get("untrained")), seconds=float(message.get("seconds", 0)),
        )

    def _deliver(self, result: Result) -> None:
        with self._lock:
            waiter = self._waiters.get(result.request_id) if result.request_id else None
            if waiter is not None:
                waiter.put(result)
            elif isinstance(result, FaceImage):
                self._images.put(result.target, result.request_id, result)
            else:
                self._events.append(result)

    def _crashed(self, code: int | None) -> None:
        self.crashes += 1
        last = " | ".join(line for line in self._stderr if line.strip())[-300:]
        self.status = (
            f"worker stopped unexpectedly (exit code {code}); it restarts with the next "
            f"update" + (f". Last output: {last}" if last else "")
        )
        # Requests up to last_request died with the process; newer ones go to its successor.
        event = WorkerEvent("crashed", None, "", self.status,
                            {"exit_code": code, "last_request": self._last_sent})
        with self._lock:
            waiters = list(self._waiters.values())
            self._events.append(event)
        for waiter in waiters:
            waiter.put(event)

    def _join_threads(self) -> None:
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=STOP_TIMEOUT)
        self._threads = []

    def _close_slots(self) -> None:
        with self._lock:
            slots, self._slots = list(self._slots.values()), {}
        for slot in slots:
            try:
                slot.close()
            except BufferError:
                pass  # a FaceImage view still exists; the mapping goes with it


class PendingRequest:
    """A submitted job's final result. ``result()`` never blocks, ``wait()`` does; both raise
    WorkerError on an error reply, a crash or a cancellation (a newer job for the target)."""

    def __init__(self, client: WorkerClient, ident: int, waiter: queue.Queue[Result]) -> None:
        self.id = ident
        self._client = client
        self._waiter = waiter
        self._done: Result | None = None

    def result(self) -> Result | None:
        """The final result if it has arrived, else None."""
        while self._done is None:
            try:
                self._take(self._waiter.get_nowait())
            except queue.Empty:
                return None
        return self._done

    def wait(self, timeout: float) -> Result:
        """The result, waiting at most ``timeout`` seconds, and less when the worker stops
        answering its heartbeat (``frozen_after``): then WorkerError says so and the frozen
        process is ended (the next request starts a new one)."""
        deadline = time.monotonic() + timeout
        while self._done is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._client._forget(self.id)
                raise WorkerError(f"no result from the worker after {timeout:.0f} s")
            if not self._client.heartbeat():
                self._client._forget(self.id)
                message = self._client.status
                self._client.end_frozen()
                raise WorkerError(message)
            try:
                self._take(self._waiter.get(timeout=min(remaining, 0.25)))
            except queue.Empty:
                continue
        return self._done

    def _take(self, result: Result) -> None:
        if isinstance(result, FaceImage) and not result.final:
            return
        if isinstance(result, WorkerEvent) and result.kind == wp.PROGRESS:
            return  # a model load on the way to the result
        self._client._forget(self.id)
        if isinstance(result, WorkerEvent) and result.kind != "written":
            raise WorkerError(result.message or f"worker: request {result.kind}")
        self._done = result


def _attach(name: str) -> shared_memory.SharedMemory:
    """Attach to the worker's slot. The worker owns (and unlinks) it: take it back from this
    process's resource tracker, which Python 3.11 registers every attachment with."""
    slot = shared_memory.SharedMemory(name=name)
    if os.name == "posix":
        resource_tracker.unregister(slot._name, "shared_memory")  # type: ignore[attr-defined]
    return slot

