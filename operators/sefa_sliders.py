"""Operators on the active face rig's SeFa sliders: compute directions, add, remove, move."""

from __future__ import annotations

from bpy.props import EnumProperty, IntProperty, StringProperty
from bpy.types import Context

from .. import live
from ..rig.errors import RigParamsError
from ..rig_props import add_sefa_slider, move_sefa_slider, remove_sefa_slider
from .rig_groups import FaceRigOperator

# W+ rows 0-3 drive the 4 and 8 px blocks: pose and face shape, the most visible edits.
DEFAULT_LAYERS = (0, 3)


class NFR_OT_compute_sefa_directions(FaceRigOperator):
    """Factorise the generator's SeFa directions for the selected slider's layers, in the
    worker (the result is cached per model and layers; the Model panel shows progress)"""

    bl_idname = "nfr.compute_sefa_directions"
    bl_label = "Compute SeFa Directions"

    def execute(self, context: Context) -> set[str]:
        if live.compute_sefa_directions(context.object) is None:
            self.report({"ERROR"}, live.status_text(context.object))
            return {"CANCELLED"}
        self.report({"INFO"}, "Computing SeFa directions in the worker")
        return {"FINISHED"}


class NFR_OT_add_sefa_slider(FaceRigOperator):
    """Add a SeFa slider (value 0) to the active face rig"""

    bl_idname = "nfr.add_sefa_slider"
    bl_label = "Add SeFa Slider"
    bl_options = {"REGISTER", "UNDO"}

    direction: IntProperty(
        name="Direction",
        description="SeFa direction index (-1: the next one after the existing sliders)",
        min=-1,
        default=-1,
    )
    layer_start: IntProperty(name="First Layer", min=0, default=DEFAULT_LAYERS[0])
    layer_end: IntProperty(name="Last Layer", min=0, default=DEFAULT_LAYERS[1])
    label: StringProperty(name="Label", default="")

    def execute(self, context: Context) -> set[str]:
        ob = context.object
        direction = self.direction
        if direction < 0:
            direction = max((s.direction + 1 for s in ob.face_rig.sefa_sliders), default=0)
        try:
            slider = add_sefa_slider(ob, direction, self.layer_start, self.layer_end, self.label)
        except RigParamsError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Added SeFa slider '{slider.label}'")
        return {"FINISHED"}


class _ActiveSliderOperator(FaceRigOperator):
    @classmethod
    def poll(cls, context: Context) -> bool:
        if not super().poll(context):
            return False
        face_rig = context.object.face_rig
        if not 0 <= face_rig.sefa_active_index < len(face_rig.sefa_sliders):
            cls.poll_message_set("No SeFa slider selected")
            return False
        return True


class NFR_OT_remove_sefa_slider(_ActiveSliderOperator):
    """Remove the selected SeFa slider and its animation"""

    bl_idname = "nfr.remove_sefa_slider"
    bl_label = "Remove SeFa Slider"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: Context) -> set[str]:
        face_rig = context.object.face_rig
        index = face_rig.sefa_active_index
        label = face_rig.sefa_sliders[index].label
        remove_sefa_slider(context.object, index)
        self.report({"INFO"}, f"Removed SeFa slider '{label}'")
        return {"FINISHED"}


class NFR_OT_move_sefa_slider(_ActiveSliderOperator):
    """Move the selected SeFa slider up or down the list (its animation moves with it)"""

    bl_idname = "nfr.move_sefa_slider"
    bl_label = "Move SeFa Slider"
    bl_options = {"REGISTER", "UNDO"}

    direction: EnumProperty(name="Direction", items=(("UP", "Up", ""), ("DOWN", "Down", "")))

    def execute(self, context: Context) -> set[str]:
        face_rig = context.object.face_rig
        index = face_rig.sefa_active_index
        to = index - 1 if self.direction == "UP" else index + 1
        if not 0 <= to < len(face_rig.sefa_sliders):
            return {"CANCELLED"}  # already at the end: nothing to do, nothing to report
        move_sefa_slider(context.object, index, to)
        return {"FINISHED"}


CLASSES = (
    NFR_OT_compute_sefa_directions,
    NFR_OT_add_sefa_slider,     NFR_OT_remove_sefa_slider,
    NFR_OT_move_sefa_slider,
)
