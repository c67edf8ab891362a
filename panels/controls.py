"""Artist panels: named expression controls (grouped, left/right side by side) with the
expression library, the key light, the head and identity tools, and the "Advanced" parent of
the raw coefficient panels. Controls a backend ignores are greyed with the reason."""

from __future__ import annotations

from bpy.types import Context, UILayout

from ..controls_eval import basis_problem, head_of
from ..controls_props import control_label
from ..operators.controls import (
    NFR_OT_apply_preset,
    NFR_OT_control_shape_keys,
    NFR_OT_controls_from_expression,
    NFR_OT_key_light_from_sh,
    NFR_OT_new_identity,
    NFR_OT_randomise_all,
    NFR_OT_reset_controls,
    NFR_OT_store_identity,
)
from ..rig.controls import GROUP_LABELS, GROUPS, control, controls_in_group
from .coefficients import FaceRigPanel
from .ignored import draw_ignored


def draw_control_group(layout: UILayout, named, group: str) -> None:
    """One group's sliders: centre controls full width, Left/Right pairs side by side."""
    col = layout.column(align=True)
    col.label(text=GROUP_LABELS[group])
    for c in controls_in_group(group):
        if c.side == "right":
            continue
        if c.side == "left":
            row = col.row(align=True)
            split = row.split(factor=0.34, align=True)
            split.label(text=control_label(c).removesuffix(" Left"))
            pair = split.row(align=True)
            pair.prop(named, c.name, text="L")
            pair.prop(named, control(c.mirror).name, text="R")
        else:
            col.prop(named, c.name)


class NFR_PT_named_controls(FaceRigPanel):
    """Named expression controls (ARKit) and the expression library."""

    bl_idname = "NFR_PT_named_controls"
    bl_label = "Expression"

    def draw(self, context: Context) -> None:
        layout = self.layout
        ob = context.object
        controls = ob.face_controls
        draw_ignored(layout, ob, "expression")
        problem = basis_problem(ob)
        if problem:
            layout.label(text=problem, icon="ERROR")
        row = layout.row(align=True)
        row.prop(controls, "preset", text="")
        row.prop(controls, "preset_weight", text="Weight", slider=True)
        row.operator(NFR_OT_apply_preset.bl_idname, text="", icon="CHECKMARK")
        for group in GROUPS:
            draw_control_group(layout, controls.named, group)
        row = layout.row(align=True)
        row.operator(NFR_OT_reset_controls.bl_idname, icon="LOOP_BACK")
        row.operator(NFR_OT_controls_from_expression.bl_idname, text="From Raw", icon="IMPORT")
        if head_of(ob) is not None:
            row.operator(NFR_OT_control_shape_keys.bl_idname, text="Shape Keys",
                         icon="SHAPEKEY_DATA")


class NFR_PT_key_light(FaceRigPanel):
    """A key light and ambient colour, or a Blender light to follow."""

    bl_idname = "NFR_PT_key_light"
    bl_label = "Key Light"

    def draw(self, context: Context) -> None:
        layout = self.layout
        ob = context.object
        light = ob.face_controls.key_light
        draw_ignored(layout, ob, "illumination")
        layout.prop(light, "follow")
        layout.operator(NFR_OT_key_light_from_sh.bl_idname, icon="LIGHT_SUN")
        col = layout.column(align=True)
        if light.follow is not None:
            col.prop(light, "power_scale")
            col.prop(light, "world_ambient")
            if not light.world_ambient:
                col.prop(light, "ambient")
            return
        col.prop(light, "azimuth")
        col.prop(light, "elevation")
        col.prop(light, "intensity")
        col.prop(light, "colour")
        col.prop(light, "ambient")


class NFR_PT_head_identity(FaceRigPanel):
    """Grab the 3DMM head to turn the face; new, stored and blended identities."""

    bl_idname = "NFR_PT_head_identity"
    bl_label = "Head & Identity"

    def draw(self, context: Context) -> None:
        layout = self.layout
        ob = context.object
        controls = ob.face_controls
        row = layout.row()
        row.enabled = head_of(ob) is not None
        row.prop(controls, "grab_head", icon="ORIENTATION_GIMBAL")
        box = layout.column()
        draw_ignored(box, ob, "identity")
        row = box.row(align=True)
        row.operator(NFR_OT_new_identity.bl_idname, icon="USER")
        row.operator(NFR_OT_randomise_all.bl_idname, icon="FILE_REFRESH")
        box.prop(controls, "lock_identity")
        row = box.row(align=True)
        row.operator(NFR_OT_store_identity.bl_idname, text="Store A").slot = "A"
        row.operator(NFR_OT_store_identity.bl_idname, text="Store B").slot = "B"
        row = box.row(align=True)
        row.prop(controls, "use_identity_blend", text="")
        sub = row.row()
        sub.active = controls.use_identity_blend
        sub.prop(controls, "identity_blend", slider=True)


class NFR_PT_advanced(FaceRigPanel):
    """The model's raw coefficients (what the named controls add to)."""

    bl_idname = "NFR_PT_advanced"
    bl_label = "Advanced"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: Context) -> None:
        self.layout.label(text="Raw coefficients; named controls and the key light add to them")


CLASSES = (NFR_PT_named_controls, NFR_PT_key_light, NFR_PT_head_identity, NFR_PT_advanced)
"""Register before the raw coefficient panels (they are children of NFR_PT_advanced)."""
