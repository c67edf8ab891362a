"""Operators: check the worker's Python packages, and install the missing ones with pip.

Both run a child process. Interactively they are modal: a timer steps the job on the main
thread, the cursor and the preferences show progress, Esc cancels (and kills the process).
In background mode, or when called from a script (EXEC_DEFAULT), they run to the end.
"""

from __future__ import annotations

import bpy
from bpy.types import Context, Event, Operator

from .. import dependencies
from ..dependencies import DependencyError, NothingToInstall, Task
from ..preferences import addon_preferences

_POLL_INTERVAL_S = 0.2
_REDRAWN_AREAS = {"PREFERENCES", "VIEW_3D"}


def _redraw(context: Context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in _REDRAWN_AREAS:
                area.tag_redraw()


class _DependencyJob:
    """Start a dependencies.Task, step it on a timer until it ends; Esc cancels it."""

    _task: Task | None = None
    _timer = None
    _cancelled = False

    @classmethod
    def poll(cls, context: Context) -> bool:
        return dependencies.active_task() is None

    def start(self, context: Context) -> Task:
        raise NotImplementedError

    def finish(self, ok: bool, message: str) -> set[str]:
        self.report({"INFO"} if ok else {"ERROR"}, message)
        return {"FINISHED"} if ok else {"CANCELLED"}

    def _begin(self, context: Context) -> set[str] | None:
        """Start the task; the operator's return value if that failed."""
        try:
            self._task = self.start(context)
        except NothingToInstall as exc:
            self.report({"INFO"}, str(exc))
            return {"FINISHED"}
        except DependencyError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return None

    def execute(self, context: Context) -> set[str]:
        failed = self._begin(context)
        if failed is not None:
            return failed
        assert self._task is not None
        ok, message = dependencies.run_to_end(
            self._task, echo=lambda stage: print(f"Neural Face Rig: {stage}")
        )
        return self.finish(ok, message)

    def invoke(self, context: Context, event: Event) -> set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        failed = self._begin(context)
        if failed is not None:
            return failed
        wm = context.window_manager
        self._timer = wm.event_timer_add(_POLL_INTERVAL_S, window=context.window)
        wm.progress_begin(0.0, 1.0)
        wm.modal_handler_add(self)
        _redraw(context)
        return {"RUNNING_MODAL"}

    def modal(self, context: Context, event: Event) -> set[str]:
        task = self._task
        assert task is not None
        if event.type == "ESC" and event.value == "PRESS":
            task.cancel()
            self._cancelled = True
        elif event.type != "TIMER":
            return {"PASS_THROUGH"}
        done = task.step()
        context.window_manager.progress_update(task.progress)
        _redraw(context)
        if not done:
            return {"RUNNING_MODAL"}
        self._end(context)
        assert task.result is not None
        if self._cancelled:
            self.report({"WARNING"}, f"{task.title}: cancelled")
            return {"CANCELLED"}
        return self.finish(*task.result)

    def cancel(self, context: Context) -> None:
        """Blender ends the modal (file load, quit): stop the child process too."""
        if self._task is not None:
            self._task.cancel()
            self._task.step()
        self._end(context)

    def _end(self, context: Context) -> None:
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
            wm.progress_end()
        _redraw(context)


class NFR_OT_check_dependencies(_DependencyJob, Operator):
    """Check which Python packages the worker's Python has (runs it once, a few seconds)"""

    bl_idname = "nfr.check_dependencies"
    bl_label = "Check Python Packages"
    bl_options = {"REGISTER", "INTERNAL"}

    def start(self, context: Context) -> Task:
        return dependencies.start_check(addon_preferences(context))

    def finish(self, ok: bool, message: str) -> set[str]:
        report = getattr(self._task, "report", None)
        if ok or (report is not None and report.error is None):
            # The check itself worked; missing packages are a finding, not a failure.
            self.report({"INFO"} if ok else {"WARNING"}, message)
            return {"FINISHED"}
        return super().finish(ok, message)


class NFR_OT_install_dependencies(_DependencyJob, Operator):
    """Download the missing Python packages (pinned versions) with pip into the extension's
    user folder, for the worker process. Needs Blender's online access"""

    bl_idname = "nfr.install_dependencies"
    bl_label = "Install Missing Packages"
    bl_options = {"REGISTER", "INTERNAL"}

    def start(self, context: Context) -> Task:
        return dependencies.start_install(addon_preferences(context))
