"""The SeFa panel: the active face rig's slider list and the selected slider's settings."""

from __future__ import annotations

from bpy.types import Context, UILayout, UIList

from ..operators.rig_groups import NFR_OT_reset_group
from ..operators.sefa_sliders import (
    NFR_OT_add_sefa_slider,
    NFR_OT_compute_sefa_directions,
    NFR_OT_move_sefa_slider,
    NFR_OT_remove_sefa_slider,
)
from ..properties import NFR_SefaSlider
from ..rig_props import SEFA
from .coefficients import FaceRigPanel


class NFR_UL_sefa_sliders(UIList):
    """One row per slider: label, direction and layer range, value."""

    def draw_item(
        self,
        context: Context,
        layout: UILayout,
        data: object,
        item: NFR_SefaSlider,
        icon: int,
        active_data: object,
        active_propname: str,
        index: int = 0,
        flt_flag: int = 0,
    ) -> None:
        row = layout.row(align=True)
        row.prop(item, "label", text="", emboss=False)
        row.label(text=f"#{item.direction} · {item.layer_start}-{item.layer_end}")
        row.prop(item, "value", text="")


class NFR_PT_sefa(FaceRigPanel):
    """SeFa sliders: closed-form edit directions of the generator."""

    bl_idname = "NFR_PT_sefa"
    bl_label = "SeFa"

    def draw(self, context: Context) -> None:
        layout = self.layout
        face_rig = context.object.face_rig
        row = layout.row()
        row.template_list(
            NFR_UL_sefa_sliders.__name__, "", face_rig, "sefa_sliders",
            face_rig, "sefa_active_index", rows=4,
        )
        side = row.column(align=True)
        side.operator(NFR_OT_add_sefa_slider.bl_idname, text="", icon="ADD")
        side.operator(NFR_OT_remove_sefa_slider.bl_idname, text="", icon="REMOVE")
        side.separator()
        side.operator(NFR_OT_move_sefa_slider.bl_idname, text="", icon="TRIA_UP").direction = "UP"
        side.operator(
            NFR_OT_move_sefa_slider.bl_idname, text="", icon="TRIA_DOWN"
        ).direction = "DOWN"

        sliders, index = face_rig.sefa_sliders, face_rig.sefa_active_index
        if 0 <= index < len(sliders):
            slider = sliders[index]
            col = layout.column()
            col.prop(slider, "label")
            col.prop(slider, "direction")
            row = col.row(align=True)
            row.prop(slider, "layer_start", text="Layers")
            row.prop(slider, "layer_end", text="")
            col.prop(slider, "value")
        layout.operator(NFR_OT_compute_sefa_directions.bl_idname, icon="FILE_REFRESH")
        if len(sliders):
            layout.operator(
                NFR_OT_reset_group.bl_idname, text="Reset Values", icon="LOOP_BACK"
            ).group = SEFA


CLASSES = (NFR_UL_sefa_sliders, NFR_PT_sefa)
