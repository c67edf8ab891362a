"""Operator: Face Rig from Photo - invert a photo in the worker and add a rig that starts at
the photo's face (blender_addon/photo_import.py does the work).

Interactive: a file browser (or the name of an image already in the .blend), then the job
runs in the worker while a modal timer shows its progress (the window's progress bar and the
status bar); Esc cancels it and nothing is added. Background mode (``blender -b``) waits for
the result in ``execute``.
"""

from __future__ import annotations

import itertools
import traceback

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty
from bpy.types import Context, Event, Operator

from .. import photo_import
from ..properties import BACKEND_ITEMS

_targets = itertools.count(1)


class NFR_OT_face_rig_from_photo(Operator):
    """Add a face rig whose sliders start at a photo's face: the photo is inverted into the
    model (in the worker, with progress; Esc cancels) and shown beside the neural card"""

    bl_idname = "nfr.face_rig_from_photo"
    bl_label = "Face Rig from Photo"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="Photo", subtype="FILE_PATH", default="")
    filter_image: bpy.props.BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_folder: bpy.props.BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    image_name: StringProperty(
        name="Image", default="",
        description="An image already in the .blend to use instead of a file")
    backend: EnumProperty(
        name="Backend", default="AUTO",
        items=(("AUTO", "Auto", "The first backend whose model files are all set"),
               *BACKEND_ITEMS))
    face_index: IntProperty(
        name="Face", default=0, min=0,
        description="Which face of the photo (0: the largest)")
    steps: IntProperty(
        name="Steps", default=20, min=0, max=100_000,
        description="Optimisation steps after the encoder (StyleGAN2/StyleRig refinement, "
        "DiscoFaceGAN identity and noise fit); 0 = the encoder only")
    encoder_path: StringProperty(
        name="e4e Encoder", subtype="FILE_PATH", default="",
        description="e4e checkpoint (empty: e4e_ffhq_encode.pt in the models folder, if any)")
    rnet_path: StringProperty(
        name="R-Net", subtype="FILE_PATH", default="",
        description="Deep3DFaceRecon epoch_20.pth (empty: the models folder's, or the "
        "landmark fit with the face model)")

    @classmethod
    def poll(cls, context: Context) -> bool:
        return context.scene is not None and context.mode == "OBJECT"

    def invoke(self, context: Context, event: Event) -> set[str]:
        if self.filepath or self.image_name:
            return self.execute(context)
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    # ------------------------------------------------------------------ run

    def execute(self, context: Context) -> set[str]:
        try:
            self._import = photo_import.PhotoImport(
                context, filepath=self.filepath, image_name=self.image_name,
                backend=self.backend, face_index=self.face_index, steps=self.steps,
                encoder=self.encoder_path, rnet=self.rnet_path,
                target=f"photo:{next(_targets)}")
        except photo_import.PhotoImportError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if bpy.app.background or context.window is None:
            return self._finish_blocking(context)
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.progress_begin(0, 100)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _finish_blocking(self, context: Context) -> set[str]:
        last: list[str] = []

        def report(stage: str, fraction: float) -> None:
            line = f"Face Rig from Photo: {stage} {100 * fraction:.0f}%"
            if last != [line]:  # farm logs: one line per change
                last[:] = [line]
                print(line, flush=True)

        try:
            self._import.finish(context, report)
        except photo_import.PhotoImportError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except Exception as exc:  # a bug must not escape into Blender's UI as a traceback
            traceback.print_exc()
            self.report({"ERROR"}, f"Face Rig from Photo failed: {type(exc).__name__}: {exc}")
            return {"CANCELLED"}
        return self._finished()

    def modal(self, context: Context, event: Event) -> set[str]:
        if event.type == "ESC":
            self.cancel(context)
            self.report({"INFO"}, "Face Rig from Photo cancelled")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        run = self._import.run
        try:
            state = self._import.step(context)
        except Exception as exc:  # making the rig failed: report it, end the modal
            self._end(context)
            if not isinstance(exc, photo_import.PhotoImportError):
                traceback.print_exc()
            self.report({"ERROR"}, f"Face Rig from Photo failed: {exc}")
            return {"CANCELLED"}
        if state == "running":
            context.window_manager.progress_update(int(100 * run.fraction))
            context.workspace.status_text_set(
                f"Face Rig from Photo: {run.stage} ({100 * run.fraction:.0f}%) - Esc to cancel")
            return {"RUNNING_MODAL"}
        self._end(context)
        if state == "failed":
            if self._import.error:
                self.report({"ERROR"}, self._import.error)
            return {"CANCELLED"}
        return self._finished()

    def cancel(self, context: Context) -> None:  # Esc, or Blender ends the modal
        self._import.cancel()
        self._end(context)

    def _finished(self) -> set[str]:
        result = self._import.run.result
        card = self._import.card
        assert result is not None and card is not None
        faces = (f" (face {self.face_index} of {result.faces_found})"
                 if result.faces_found > 1 else "")
        self.report({"INFO"}, f"Added {card.name} from {self._import.label}{faces}: "
                    f"{result.backend}, rig values from {result.rig_source}")
        return {"FINISHED"}

    def _end(self, context: Context) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            context.window_manager.event_timer_remove(timer)
            context.window_manager.progress_end()
            if context.workspace is not None:
                context.workspace.status_text_set(None)
            self._timer = None


CLASSES = (NFR_OT_face_rig_from_photo,)
