"""The Animation and Output panels: keyframe a rig group; render and bake buttons of the
operators the extension provides."""

from __future__ import annotations

from bpy.types import Context

from ..operators.rig_groups import NFR_OT_keyframe_group
from ..portrait import colour_problem
from ..rig_props import FCURVE_GROUP_LABELS, KEYFRAME_GROUPS
from .coefficients import FaceRigPanel
from .services import operator_available

OUTPUT_OPERATORS = (
    ("nfr.render_portrait", "Render Portrait", "RENDER_STILL"),
    ("nfr.render_sequence", "Render Sequence", "RENDER_ANIMATION"),
    ("nfr.bake_face", "Bake Face Sequence", "SEQUENCE"),
)


class NFR_PT_animation(FaceRigPanel):
    """Keyframe whole rig groups at the current frame."""

    bl_idname = "NFR_PT_animation"
    bl_label = "Animation"

    def draw(self, context: Context) -> None:
        layout = self.layout
        layout.label(text=f"Keyframe at frame {context.scene.frame_current}:")
        grid = layout.grid_flow(columns=2, even_columns=True, align=True)
        for group in KEYFRAME_GROUPS:
            button = grid.operator(
                NFR_OT_keyframe_group.bl_idname, text=FCURVE_GROUP_LABELS[group], icon="KEY_HLT"
            )
            button.group = group


class NFR_PT_output(FaceRigPanel):
    """Render the portrait or the animation, or bake the face for render farms."""

    bl_idname = "NFR_PT_output"
    bl_label = "Output"

    def draw(self, context: Context) -> None:
        layout = self.layout
        available = [entry for entry in OUTPUT_OPERATORS if operator_available(entry[0])]
        if not available:
            layout.label(text="No render operators in this build.", icon="INFO")
        col = layout.column(align=True)
        for idname, text, icon in available:
            col.operator(idname, text=text, icon=icon)
        # Farm renders fail on a face that cannot be rendered unless the artist opts out here.
        layout.prop(context.object.face_rig, "failure_placeholder")
        problem = colour_problem(context.scene)
        if problem is not None:
            layout.label(text=problem, icon="ERROR")


CLASSES = (NFR_PT_animation, NFR_PT_output)
