"""Operator: Face Rig from Photo - invert a photo in the worker and add a rig that starts at
the photo's face (blender_addon/photo_import.py does the work).

Interactive: a file browser (or the name of an image already in the .blend), then the job
runs in the worker while a modal timer shows its progress (the window's progress bar and the
status bar); Esc cancels it and nothing is added. Background mode (``blender -b``) waits for
the result in ``execute``.
"""

from __future__ import annotations

import itertools
import os
import traceback

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty
from bpy.types import Context, Event, Operator

from .. import photo_import
from ..preferences import addon_preferences
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

    # ------------------------------------------------------------------ start

    def _start(self, context: Context) -> None:
        self._temporary = ""
        self._image = None
        if self.image_name:
            image = bpy.data.images.get(self.image_name)
            if image is None:
                raise photo_import.PhotoImportError(f"No image {self.image_name!r} in this file")
            photo, temporary = photo_import.photo_file_of_image(image)
            self._image = image
            self._temporary = photo if temporary else ""
        else:
            photo = os.path.normpath(bpy.path.abspath(self.filepath))
            if not os.path.isfile(photo):
                raise photo_import.PhotoImportError(f"Photo not found: {photo}")
        self._photo = photo
        self._label = self._image.name if self._image is not None else os.path.basename(photo)
        prefs = addon_preferences(context)
        backend = photo_import.choose_backend(prefs, self.backend)
        job = photo_import.photo_job(
            prefs, photo, backend, target=f"photo:{next(_targets)}", face_index=self.face_index,
            steps=self.steps, encoder=self.encoder_path, rnet=self.rnet_path)
        self._run = photo_import.PhotoRun(job)

    def execute(self, context: Context) -> set[str]:
        try:
            self._start(context)
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
            result = self._run.wait(progress=report)
        except photo_import.PhotoImportError as exc:
            self._cleanup(context)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return self._create(context, result)

    # ------------------------------------------------------------------ modal

    def modal(self, context: Context, event: Event) -> set[str]:
        if event.type == "ESC":
            self._run.cancel()
            self._cleanup(context)
            self.report({"INFO"}, "Face Rig from Photo cancelled")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        if not self._run.poll():
            context.window_manager.progress_update(int(100 * self._run.fraction))
            context.workspace.status_text_set(
                f"Face Rig from Photo: {self._run.stage} ({100 * self._run.fraction:.0f}%) "
                "- Esc to cancel")
            return {"RUNNING_MODAL"}
        result = self._run.result
        if result is None:
            self._cleanup(context)
            if self._run.error:
                self.report({"ERROR"}, self._run.error)
            return {"CANCELLED"}
        return self._create(context, result)

    def cancel(self, context: Context) -> None:  # Blender ends the modal (file closed, ...)
        self._run.cancel()
        self._cleanup(context)

    # ------------------------------------------------------------------ end

    def _create(self, context: Context, result) -> set[str]:
        self._cleanup(context)
        try:
            card = photo_import.create_photo_rig(context, result, self._photo, self._image)
        except photo_import.PhotoImportError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except Exception as exc:  # a bug must not escape into Blender's UI as a traceback
            traceback.print_exc()
            self.report({"ERROR"}, f"Face Rig from Photo failed: {type(exc).__name__}: {exc}")
            return {"CANCELLED"}
        faces = f" (face {self.face_index} of {result.faces_found})" if result.faces_found > 1 \
            else ""
        self.report({"INFO"}, f"Added {card.name} from {self._label}{faces}: "
                    f"{result.backend}, rig values from {result.rig_source}")
        return {"FINISHED"}

    def _cleanup(self, context: Context) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            context.window_manager.event_timer_remove(timer)
            context.window_manager.progress_end()
            if context.workspace is not None:
                context.workspace.status_text_set(None)
            self._timer = None
        if getattr(self, "_temporary", ""):
            try:
                os.remove(self._temporary)
            except OSError:
                pass
            self._temporary = ""


CLASSES = (NFR_OT_face_rig_from_photo,)
