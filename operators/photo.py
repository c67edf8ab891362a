"""Operator: Face Rig from Photo - invert a photo in the worker and add a rig that starts at
the photo's face (blender_addon/photo_import.py does the work).

Interactive: a file browser (or the name of an image already in the .blend), then the job
runs in the worker while a modal timer shows its progress (the window's progress bar and the
status bar); Esc cancels it and nothing is added. Background mode (``blender -b``) waits for
the result in ``execute``.
"""

from __future__ import annotations

import itertools

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty
from bpy.types import Context, Event, Operator

from .. import photo_import
from ..properties import BACKEND_ITEMS
from .worker_job import WorkerJobOperator

_targets = itertools.count(1)


class NFR_OT_face_rig_from_photo(WorkerJobOperator, Operator):
    """Add a face rig whose sliders start at a photo's face: the photo is inverted into the
    model (in the worker, with progress; Esc cancels) and shown beside the neural card"""

    bl_idname = "nfr.face_rig_from_photo"
    bl_label = "Face Rig from Photo"
    bl_options = {"REGISTER", "UNDO"}
    title = "Face Rig from Photo"
    job_errors = (photo_import.PhotoImportError,)

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

    def make_job(self, context: Context) -> photo_import.PhotoImport:
        return photo_import.PhotoImport(
            context, filepath=self.filepath, image_name=self.image_name,
            backend=self.backend, face_index=self.face_index, steps=self.steps,
            encoder=self.encoder_path, rnet=self.rnet_path,
            target=f"photo:{next(_targets)}")

    def finished(self) -> set[str]:
        result = self._job.run.result
        card = self._job.card
        assert result is not None and card is not None
        faces = (f" (face {self.face_index} of {result.faces_found})"
                 if result.faces_found > 1 else "")
        self.report({"INFO"}, f"Added {card.name} from {self._job.label}{faces}: "
                    f"{result.backend}, rig values from {result.rig_source}")
        return {"FINISHED"}


CLASSES = (NFR_OT_face_rig_from_photo,)
