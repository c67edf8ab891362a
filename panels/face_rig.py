"""The Face Rig sidebar panel of the 3D Viewport: face-model status and the Add Head button."""

from __future__ import annotations

import os

from bpy.types import Context, Panel

from .. import __package__ as base_package
from .. import file_status
from ..operators.add_head import NFR_OT_add_head
from ..preferences import addon_preferences


class NFR_PT_face_rig(Panel):
    """Face-model status and head creation."""

    bl_idname = "NFR_PT_face_rig"
    bl_label = "Face Rig"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Face Rig"

    def draw(self, context: Context) -> None:
        layout = self.layout
        # The path field or the models folder's copy, as Add Head resolves it.
        (status,) = file_status.model_status(addon_preferences(context), "face_model")
        problem = status.problem
        if problem is None:
            layout.label(text=f"Face model: {os.path.basename(status.path)}", icon="CHECKMARK")
        else:
            col = layout.column(align=True)
            col.label(text=problem, icon="ERROR")
            col.label(text="Set the face model in the add-on preferences.")
            show = col.operator(
                "preferences.addon_show", text="Open Preferences", icon="PREFERENCES"
            )
            show.module = base_package
        layout.operator(NFR_OT_add_head.bl_idname, icon="USER")
