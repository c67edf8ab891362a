"""The modal half shared by operators whose work runs as a job in the worker (Face Rig from
Photo, Capture from Video).

Interactive: ``execute`` starts the job, a modal timer polls it (``step``) and shows its
progress in the window's progress bar and the status bar; Esc or Blender ending the modal
cancels it. Background mode (``blender -b``, or no window) waits in ``execute`` and prints
one progress line per change for farm logs. The job object (the operator's ``make_job``)
has ``run`` (a ``WorkerJobRun``), ``step(context)`` -> "running" / "done" / "failed",
``finish(context, progress)``, ``cancel()`` and ``error``.
"""

from __future__ import annotations

import traceback
from typing import Any

import bpy
from bpy.types import Context, Event

TIMER_SECONDS = 0.1


class WorkerJobOperator:
    """Mixin for a ``bpy.types.Operator`` (listed before it in the bases; ``report`` is the
    operator's): subclasses set ``title`` and ``job_errors`` and implement ``make_job`` and
    ``finished``."""

    # No annotations here: Blender reads an operator's (and its bases') annotations as
    # properties.
    title = ""
    """The operator's name in progress lines and reports."""
    job_errors = ()
    """Errors that carry a user-facing one-line message (reported without a traceback)."""
    _job = None
    _timer = None

    def make_job(self, context: Context) -> Any:  # the job object (module docstring)
        raise NotImplementedError

    def finished(self) -> set[str]:
        """Report what was done once the job's result is applied; {"FINISHED"}."""
        raise NotImplementedError

    def execute(self, context: Context) -> set[str]:
        try:
            self._job = self.make_job(context)
        except self.job_errors as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except Exception as exc:  # the worker cannot start: a message, not a traceback
            traceback.print_exc()
            self.report({"ERROR"}, f"{self.title} failed: {type(exc).__name__}: {exc}")
            return {"CANCELLED"}
        if bpy.app.background or context.window is None:
            return self._finish_blocking(context)
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_SECONDS, window=context.window)
        wm.progress_begin(0, 100)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _finish_blocking(self, context: Context) -> set[str]:
        last: list[str] = []

        def progress(stage: str, fraction: float) -> None:
            line = f"{self.title}: {stage} {100 * fraction:.0f}%"
            if last != [line]:  # farm logs: one line per change
                last[:] = [line]
                print(line, flush=True)

        try:
            self._job.finish(context, progress)
        except self.job_errors as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except Exception as exc:  # a bug must not escape into Blender's UI as a traceback
            traceback.print_exc()
            self.report({"ERROR"}, f"{self.title} failed: {type(exc).__name__}: {exc}")
            return {"CANCELLED"}
        return self.finished()

    def modal(self, context: Context, event: Event) -> set[str]:
        if event.type == "ESC":
            self.cancel(context)
            self.report({"INFO"}, f"{self.title} cancelled")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        run = self._job.run
        try:
            state = self._job.step(context)
        except Exception as exc:  # applying the result failed: report it, end the modal
            self._end(context)
            if not isinstance(exc, self.job_errors):
                traceback.print_exc()
            self.report({"ERROR"}, f"{self.title} failed: {exc}")
            return {"CANCELLED"}
        if state == "running":
            context.window_manager.progress_update(int(100 * run.fraction))
            context.workspace.status_text_set(
                f"{self.title}: {run.stage} ({100 * run.fraction:.0f}%) - Esc to cancel")
            return {"RUNNING_MODAL"}
        self._end(context)
        if state == "failed":
            if self._job.error:
                self.report({"ERROR"}, self._job.error)
            return {"CANCELLED"}
        return self.finished()

    def cancel(self, context: Context) -> None:  # Esc, or Blender ends the modal
        if self._job is not None:
            self._job.cancel()
        self._end(context)

    def _end(self, context: Context) -> None:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            context.window_manager.progress_end()
            if context.workspace is not None:
                context.workspace.status_text_set(None)
            self._timer = None
