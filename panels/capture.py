"""The Capture panel (under Animation): capture a video or import a performance capture onto
the rig."""

from __future__ import annotations

from bpy.types import Context

from ..capture_import import capture_action_name
from ..operators.capture import (
    NFR_OT_capture_from_video,
    NFR_OT_import_arkit_csv,
    NFR_OT_import_capture_curves,
)
from .coefficients import FaceRigPanel


class NFR_PT_capture(FaceRigPanel):
    """Capture a video, or import a Live Link Face CSV or capture curves, as keys on the rig."""

    bl_idname = "NFR_PT_capture"
    bl_label = "Capture"
    bl_parent_id = "NFR_PT_animation"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: Context) -> None:
        layout = self.layout
        col = layout.column(align=True)
        col.operator(NFR_OT_capture_from_video.bl_idname, icon="FILE_MOVIE")
        col.operator(NFR_OT_import_arkit_csv.bl_idname, icon="IMPORT")
        col.operator(NFR_OT_import_capture_curves.bl_idname, icon="GRAPH")
        animation = context.object.animation_data
        action = animation.action if animation is not None else None
        if action is not None and action.name.startswith(capture_action_name(context.object)):
            layout.label(text=f"Action: {action.name}", icon="ACTION")


CLASSES = (NFR_PT_capture,)
