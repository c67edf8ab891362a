"""Operators: bake the active rig's face as an image sequence, and go back to the live face.

Baking renders every frame of the scene's range at the render resolution into
``<folder>/<rig>/face_####.png`` (16-bit sRGB, written atomically by the worker), then the
card shows that sequence: render-farm nodes without PyTorch render it like any texture.
Interactively the bake runs as a modal operator (a timer steps it, the cursor shows progress,
Esc cancels); in background mode it runs to the end at once.
"""

from __future__ import annotations

import os
import traceback

import bpy
from bpy.props import StringProperty
from bpy.types import Context, Event, Object, Operator

from .. import live, portrait
from ..bridge import PendingRequest, WorkerError
from ..properties import is_face_rig

BAKE_FOLDER = "//face_bake"
FRAME_FILE = "face_{frame:04d}.png"
TIMER_SECONDS = 0.05


def frame_path(folder: str, rig: str, frame: int) -> str:
    """Absolute path of one baked frame."""
    return os.path.join(bpy.path.abspath(folder), bpy.path.clean_name(rig),
                        FRAME_FILE.format(frame=frame))


class NFR_OT_bake_face(Operator):
    """Render the face of every frame into an image sequence next to the .blend and show it
    on the card, so render farms need no PyTorch (Esc cancels)"""

    bl_idname = "nfr.bake_face"
    bl_label = "Bake Face Sequence"
    bl_options = {"REGISTER"}

    folder: StringProperty(
        name="Folder",
        description="Folder for the frames (// = next to the .blend file)",
        default=BAKE_FOLDER,
        subtype="DIR_PATH",
    )

    @classmethod
    def poll(cls, context: Context) -> bool:
        return is_face_rig(context.object)

    # -------------------------------------------------------------- setup

    def _start(self, context: Context) -> bool:
        """Check and prepare; False (the problem reported) when the bake cannot start."""
        if self.folder.startswith("//") and not bpy.data.filepath:
            self.report({"ERROR"}, "Save the .blend file first: baked frames go next to it ("
                        + self.folder + ")")
            return False
        self.rig: Object = context.object
        scene = context.scene
        self.frames = list(range(scene.frame_start, scene.frame_end + 1))
        self.original_frame = scene.frame_current
        self.index = 0
        self.pending: PendingRequest | None = None
        os.makedirs(os.path.dirname(frame_path(self.folder, self.rig.name, 0)), exist_ok=True)
        return True

    def _job(self, context: Context, frame: int):
        context.scene.frame_set(frame)
        return live.job_for(
            self.rig,
            depsgraph=context.evaluated_depsgraph_get(),
            final=True,
            target=f"bake:{live.face_name(self.rig)}",
            output_path=frame_path(self.folder, self.rig.name, frame),
        )

    def _finish(self, context: Context) -> None:
        context.scene.frame_set(self.original_frame)
        first = frame_path(self.folder, self.rig.name, self.frames[0])
        if self.folder.startswith("//"):
            first = bpy.path.relpath(first)
        portrait.show_sequence(self.rig, first, self.frames[0], len(self.frames))
        self.report(
            {"INFO"},
            f"Baked {len(self.frames)} frames of {self.rig.name} to "
            f"{os.path.dirname(frame_path(self.folder, self.rig.name, 0))}; the card shows them",
        )

    # -------------------------------------------------------------- synchronous

    def execute(self, context: Context) -> set[str]:
        if not self._start(context):
            return {"CANCELLED"}
        try:
            with live.paused():
                for frame in self.frames:
                    live.client().render_blocking(self._job(context, frame),
                                                  live.BLOCKING_TIMEOUT)
                self._finish(context)
        except (live.LiveError, WorkerError, ValueError) as exc:
            context.scene.frame_set(self.original_frame)
            self.report({"ERROR"}, f"Bake failed: {exc}")
            return {"CANCELLED"}
        return {"FINISHED"}

    # -------------------------------------------------------------- modal

    def invoke(self, context: Context, event: Event) -> set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        if not self._start(context):
            return {"CANCELLED"}
        wm = context.window_manager
        self.timer = wm.event_timer_add(TIMER_SECONDS, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, len(self.frames))
        live.pause()
        return {"RUNNING_MODAL"}

    def modal(self, context: Context, event: Event) -> set[str]:
        if event.type == "ESC":
            self._end_modal(context)
            context.scene.frame_set(self.original_frame)
            self.report({"WARNING"}, f"Bake cancelled after {self.index} of "
                        f"{len(self.frames)} frames; the card still shows the live face")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            if self.pending is None:
                job = self._job(context, self.frames[self.index])
                self.pending = live.client().submit(job)
            elif self.pending.result() is not None:
                self.pending = None
                self.index += 1
                context.window_manager.progress_update(self.index)
                if self.index == len(self.frames):
                    self._end_modal(context)
                    self._finish(context)
                    return {"FINISHED"}
        except Exception as exc:  # the timer and the pause must end whatever happened
            if not isinstance(exc, (live.LiveError, WorkerError, ValueError)):
                traceback.print_exc()
            self._end_modal(context)
            context.scene.frame_set(self.original_frame)
            self.report({"ERROR"}, f"Bake failed at frame {self.frames[self.index]}: {exc}")
            return {"CANCELLED"}
        return {"RUNNING_MODAL"}

    def _end_modal(self, context: Context) -> None:
        wm = context.window_manager
        wm.event_timer_remove(self.timer)
        wm.progress_end()
        live.resume()


class NFR_OT_use_live_face(Operator):
    """Show the live neural face on the card again instead of the baked sequence"""

    bl_idname = "nfr.use_live_face"
    bl_label = "Use Live Face"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: Context) -> bool:
        return is_face_rig(context.object) and live.is_baked(context.object)

    def execute(self, context: Context) -> set[str]:
        rig = context.object
        image = bpy.data.images.get(live.face_name(rig))
        if image is None:
            self.report({"ERROR"}, f"{rig.name}: its live face image is gone")
            return {"CANCELLED"}
        portrait.show_live(rig, image)
        live.request_update(rig)
        self.report({"INFO"}, f"{rig.name} shows the live face again")
        return {"FINISHED"}


CLASSES = (NFR_OT_bake_face, NFR_OT_use_live_face)
