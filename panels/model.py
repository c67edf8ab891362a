"""The Model panel: which generator renders the active face rig, its base latent and
resolutions, and the live bridge's status."""

from __future__ import annotations

from bpy.types import Context, Panel

from .. import live
from ..portrait import colour_problem
from ..properties import is_face_rig
from .services import operator_available

ADD_RIG = "nfr.add_rig"
FROM_PHOTO = "nfr.face_rig_from_photo"


class NFR_PT_model(Panel):
    """Generator, base latent and resolutions of the active face rig."""

    bl_idname = "NFR_PT_model"
    bl_label = "Model"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Face Rig"

    def draw(self, context: Context) -> None:
        layout = self.layout
        ob = context.object
        if not is_face_rig(ob):
            layout.label(text="The active object is not a face rig.", icon="INFO")
            for idname, icon in ((ADD_RIG, "USER"), (FROM_PHOTO, "IMAGE_DATA")):
                if operator_available(idname):
                    layout.operator(idname, icon=icon)
            return
        face_rig = ob.face_rig
        col = layout.column()
        col.prop(face_rig, "backend")
        col.prop(face_rig, "model_path")
        row = col.row(align=True)
        row.prop(face_rig, "seed")
        row.prop(face_rig, "psi")
        row = col.row(align=True)
        row.prop(face_rig, "preview_resolution")
        row.prop(face_rig, "render_resolution")
        layout.label(text=live.status_text(ob), icon="INFO")
        problem = colour_problem(context.scene)
        if problem is not None:
            layout.label(text=problem, icon="ERROR")


CLASSES = (NFR_PT_model,)
