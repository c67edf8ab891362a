"""Operators: bake the active rig's face as an image sequence, and go back to the live face.

Baking renders every frame of the scene's range at the render resolution into
``<folder>/<rig>/face_####.png`` (16-bit sRGB, written atomically by the worker), then the
card shows that sequence: render-farm nodes without PyTorch render it like any texture.
Interactively the bake runs as a modal operator (a timer steps it, the cursor shows progress,
Esc cancels); in background mode it runs to the end at once.

A bake never leaves a half sequence: frames go to a hidden folder beside the final one and
move into place only when every frame is there; a failure, Esc, the window manager cancelling
the operator (``cancel``) or a file being opened (``load_pre``) deletes them and resumes the
live preview. A worker that crashes on a frame is restarted and the frame tried once more.
"""

from __future__ import annotations

import os
import shutil
import traceback

import bpy
from bpy.app.handlers import persistent
from bpy.props import StringProperty
from bpy.types import Context, Event, Object, Operator, Scene

from .. import live, portrait
from ..bridge import PendingRequest, WorkerError
from ..properties import is_face_rig

BAKE_FOLDER = "//face_bake"
FRAME_FILE = "face_{frame:04d}.png"
PARTIAL_PREFIX = ".partial-"
TIMER_SECONDS = 0.05


def frame_path(folder: str, rig: str, frame: int) -> str:
    """Absolute path of one baked frame."""
    return os.path.join(bake_folder(folder, rig), FRAME_FILE.format(frame=frame))


def bake_folder(folder: str, rig: str) -> str:
    """Absolute folder of one rig's baked frames."""
    return os.path.join(bpy.path.abspath(folder), bpy.path.clean_name(rig))


class BakeFailed(Exception):
    """The bake stopped; the message says at which frame and why."""


class BakeJob:
    """One bake's state, stepped without blocking (modal) or run to the end (background).

    Frames are written to ``partial`` (a hidden sibling of the final folder) and moved into
    the final folder by ``finish``; ``abort`` removes them. Holds a ``live.pause()`` from
    ``start`` until ``finish`` or ``abort``."""

    def __init__(self, rig: Object, scene: Scene, folder: str) -> None:
        self.rig = rig
        self.rig_name = rig.name
        self.scene = scene
        self.folder = folder
        self.frames = list(range(scene.frame_start, scene.frame_end + 1))
        self.original_frame = scene.frame_current
        self.index = 0
        self.pending: PendingRequest | None = None
        self.crashes_at_submit = 0
        self.retried: set[int] = set()
        self.final_folder = bake_folder(folder, rig.name)
        self.partial = os.path.join(os.path.dirname(self.final_folder),
                                    f"{PARTIAL_PREFIX}{os.path.basename(self.final_folder)}")
        self.active = False

    # -------------------------------------------------------------- life cycle

    def start(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)  # a bake killed with Blender
        os.makedirs(self.partial)
        live.pause()
        self.active = True
        ACTIVE_BAKES.append(self)

    def abort(self, *, restore_frame: bool = True) -> None:
        """Stop: no frame of this bake stays on disk, the live preview runs again."""
        if not self.active:
            return
        self.active = False
        ACTIVE_BAKES.remove(self)
        self.pending = None
        shutil.rmtree(self.partial, ignore_errors=True)
        live.resume()
        if restore_frame:
            self.scene.frame_set(self.original_frame)

    def finish(self) -> str:
        """Move the frames into place and show them on the card; returns the first frame."""
        os.makedirs(self.final_folder, exist_ok=True)
        for frame in self.frames:
            name = FRAME_FILE.format(frame=frame)
            os.replace(os.path.join(self.partial, name), os.path.join(self.final_folder, name))
        os.rmdir(self.partial)
        self.active = False
        ACTIVE_BAKES.remove(self)
        live.resume()
        self.scene.frame_set(self.original_frame)
        first = os.path.join(self.final_folder, FRAME_FILE.format(frame=self.frames[0]))
        if self.folder.startswith("//"):
            first = bpy.path.relpath(first)
        portrait.show_sequence(self.rig, first, self.frames[0], len(self.frames))
        return first

    # -------------------------------------------------------------- frames

    @property
    def frame(self) -> int:
        return self.frames[min(self.index, len(self.frames) - 1)]

    def _job(self, frame: int):
        self.scene.frame_set(frame)
        return live.job_for(
            self.rig,
            depsgraph=bpy.context.evaluated_depsgraph_get(),
            final=True,
            target=f"bake:{live.face_name(self.rig)}",
            output_path=os.path.join(self.partial, FRAME_FILE.format(frame=frame)),
            output_root=self.partial,
        )

    def _submit(self) -> None:
        client = live.client()
        self.crashes_at_submit = client.crashes
        self.pending = client.submit(self._job(self.frame))

    def _failed(self, exc: Exception) -> None:
        """A frame failed: retry it once if the worker crashed on it, else raise."""
        self.pending = None
        crashed = live.client().crashes > self.crashes_at_submit
        if crashed and self.frame not in self.retried:
            self.retried.add(self.frame)
            print(f"Neural Face Rig: bake of {self.rig_name}: the worker stopped at frame "
                  f"{self.frame}; trying that frame again with a new worker", flush=True)
            return
        raise BakeFailed(f"frame {self.frame}: {exc}") from None

    def step(self) -> bool:
        """Submit or collect one frame without blocking; True when every frame is written."""
        if self.pending is None:
            self._submit()
            return False
        try:
            result = self.pending.result()
        except WorkerError as exc:
            self._failed(exc)
            return False
        if result is None:
            return False
        self.pending = None
        self.index += 1
        return self.index == len(self.frames)

    def run(self, timeout: float) -> None:
        """Every frame, blocking (background mode, scripts)."""
        while self.index < len(self.frames):
            self._submit()
            assert self.pending is not None
            try:
                self.pending.wait(timeout)
            except WorkerError as exc:
                self._failed(exc)
                continue
            self.pending = None
            self.index += 1


ACTIVE_BAKES: list[BakeJob] = []
"""Bakes between start and finish/abort (the load_pre handler ends them)."""


@persistent
def on_load_pre(*_args: object) -> None:
    """A file is being opened during a bake: end it cleanly (its rig is about to go)."""
    for job in list(ACTIVE_BAKES):
        print(f"Neural Face Rig: bake of {job.rig_name} stopped at frame {job.frame}: a file "
              "was opened", flush=True)
        job.abort(restore_frame=False)


HANDLERS = ((bpy.app.handlers.load_pre, on_load_pre),)


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

    def _start(self, context: Context) -> BakeJob | None:
        """Check and prepare; None (the problem reported) when the bake cannot start."""
        if self.folder.startswith("//") and not bpy.data.filepath:
            self.report({"ERROR"}, "Save the .blend file first: baked frames go next to it ("
                        + self.folder + ")")
            return None
        job = BakeJob(context.object, context.scene, self.folder)
        try:
            job.start()
        except OSError as exc:
            self.report({"ERROR"}, f"Bake cannot write its frames: {exc}")
            return None
        return job

    def _done(self, job: BakeJob) -> set[str]:
        try:
            job.finish()
        except (OSError, ValueError) as exc:
            job.abort()
            self.report({"ERROR"}, f"Bake failed while moving the frames into place: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Baked {len(job.frames)} frames of {job.rig_name} to "
                    f"{job.final_folder}; the card shows them")
        return {"FINISHED"}

    def _fail(self, job: BakeJob, exc: Exception) -> set[str]:
        if not isinstance(exc, (BakeFailed, live.LiveError, WorkerError, ValueError, OSError)):
            traceback.print_exc()
        job.abort()
        self.report({"ERROR"}, f"Bake failed at frame {job.frame}: {exc}; no frame was kept")
        return {"CANCELLED"}

    # -------------------------------------------------------------- synchronous

    def execute(self, context: Context) -> set[str]:
        job = self._start(context)
        if job is None:
            return {"CANCELLED"}
        try:
            job.run(live.BLOCKING_TIMEOUT)
        except Exception as exc:  # the pause and the partial frames must end whatever happened
            return self._fail(job, exc)
        return self._done(job)

    # -------------------------------------------------------------- modal

    def invoke(self, context: Context, event: Event) -> set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        job = self._start(context)
        if job is None:
            return {"CANCELLED"}
        self._job = job
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_SECONDS, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, len(job.frames))
        return {"RUNNING_MODAL"}

    def modal(self, context: Context, event: Event) -> set[str]:
        job = self._job
        if not job.active:  # a file was opened (load_pre ended the bake)
            self._end_modal(context)
            return {"CANCELLED"}
        if event.type == "ESC":
            self._end_modal(context)
            job.abort()
            self.report({"WARNING"}, f"Bake cancelled after {job.index} of {len(job.frames)} "
                        "frames; no frame was kept and the card still shows the live face")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            done = job.step()
        except Exception as exc:
            self._end_modal(context)
            return self._fail(job, exc)
        context.window_manager.progress_update(job.index)
        if done:
            self._end_modal(context)
            return self._done(job)
        return {"RUNNING_MODAL"}

    def cancel(self, context: Context) -> None:
        """The window manager ends the operator (window closed, file loaded)."""
        self._end_modal(context)
        self._job.abort(restore_frame=False)

    def _end_modal(self, context: Context) -> None:
        timer, self._timer = getattr(self, "_timer", None), None
        if timer is not None:
            wm = context.window_manager
            wm.event_timer_remove(timer)
            wm.progress_end()


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
