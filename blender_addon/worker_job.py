"""A long job in the worker (a photo inversion, a video capture), seen from Blender's side.

The job is submitted once; ``poll()`` never blocks (the modal operator calls it on a timer)
and takes what the worker sent: ``progress`` lines, then the job's result message, an error
or ``cancelled``. ``wait()`` is background mode's blocking form. ``cancel()`` asks the
worker to stop (it checks between stages and steps) and forgets the job at once, so nothing
the worker still sends is applied. Subclasses say which message ends the job, how its data
is read and how stage progress maps to an overall fraction.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from .contract import protocol as wp


class WorkerJobRun:
    """One job in the worker: ``stage``/``fraction`` (0..1, never decreasing) while it runs,
    then ``outcome`` (the read result), ``error`` (one line) or ``cancelled``."""

    noun: ClassVar[str] = "job"
    """What the job is, in messages ("photo", "capture")."""
    result_kind: ClassVar[str] = ""
    """The message kind carrying the result (``wp.PHOTO_RESULT``, ``wp.CAPTURE_RESULT``)."""
    result_errors: ClassVar[tuple[type[Exception], ...]] = (wp.ProtocolError,)
    """What ``read_result`` raises for a malformed result."""
    error_type: ClassVar[type[Exception]] = RuntimeError
    """What ``wait`` raises on an error, a cancel or a timeout."""
    timeout: ClassVar[float] = 3600.0
    """Seconds ``wait`` allows by default."""
    stage_span: ClassVar[Mapping[str, tuple[float, float]]] = {}
    """Per stage name: the part (start, end) of the whole job it covers."""

    def __init__(self, job: Any, message: Callable[[int, Any], dict[str, Any]]) -> None:
        from .live import client

        self.job = job
        self.client = client()
        self.stage = "starting"
        self.fraction = 0.0
        self.outcome: Any = None
        self.error = ""
        self.cancelled = False
        self._waiter: queue.Queue[Any] = queue.Queue()
        self.id = self.client._submit(lambda ident: message(ident, job), self._waiter)

    def read_result(self, data: dict[str, Any]) -> Any:
        """The job's outcome from its result message's data; raises one of ``result_errors``."""
        raise NotImplementedError

    @property
    def done(self) -> bool:
        return self.outcome is not None or bool(self.error) or self.cancelled

    def poll(self) -> bool:
        """Take what arrived; True once the job is done."""
        while not self.done:
            try:
                event = self._waiter.get_nowait()
            except queue.Empty:
                if not self.client.heartbeat():
                    self._finish(error=self.client.status)
                break
            self._take(event)
        return self.done

    def wait(self, timeout: float | None = None,
             progress: Callable[[str, float], None] | None = None) -> Any:
        """Block until the outcome (background mode); ``progress(stage, fraction)`` on every
        poll. Raises ``error_type`` on an error, a cancel or a timeout."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while not self.poll():
            if time.monotonic() > deadline:
                self.cancel()
                raise self.error_type(
                    f"no {self.noun} result from the worker after {limit:.0f} s")
            if progress is not None:
                progress(self.stage, self.fraction)
            time.sleep(0.05)
        if self.outcome is None:
            raise self.error_type(self.error or f"the {self.noun} job was cancelled")
        return self.outcome

    def cancel(self) -> None:
        if self.done:
            return
        self.cancelled = True
        self.client._forget(self.id)
        try:
            self.client._submit(lambda ident: wp.cancel_message(ident, self.job.target))
        except Exception:  # the worker is gone: nothing runs any more
            pass

    def stage_fraction(self, stage: str, done: int, total: int) -> float:
        """Overall progress 0..1 of a stage's ``done`` of ``total`` steps."""
        start, end = self.stage_span.get(stage, (0.0, 0.0))
        return start + (end - start) * (done / total if total > 0 else 0.0)

    def _take(self, event: Any) -> None:
        kind = getattr(event, "kind", "")
        data = getattr(event, "data", {})
        if kind == wp.PROGRESS:
            self.stage = str(data.get("stage", ""))
            self.fraction = max(self.fraction, self.stage_fraction(
                self.stage, int(data.get("done", 0)), int(data.get("total", 1))))
        elif kind == self.result_kind:
            try:
                outcome = self.read_result(data)
            except self.result_errors as exc:
                self._finish(error=f"worker {self.noun} result: {exc}")
            else:
                self._finish(outcome=outcome)
        elif kind == wp.CANCELLED:
            self.cancelled = True
            self.client._forget(self.id)
        else:
            self._finish(error=getattr(event, "message", "") or f"worker: {kind}")

    def _finish(self, outcome: Any = None, error: str = "") -> None:
        self.outcome, self.error = outcome, error
        if outcome is not None:
            self.stage, self.fraction = "done", 1.0
        self.client._forget(self.id)
