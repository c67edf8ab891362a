"""Rig group panels: Identity, Reflectance, Expression, Illumination and Pose. Long groups
show their leading coefficients and a "show all" toggle; every group has randomise and reset
buttons, the per-person groups also preset load/save."""

from __future__ import annotations

from bpy.types import Context, Panel, UILayout

from ..operators.presets import NFR_OT_load_preset, NFR_OT_save_preset
from ..operators.rig_groups import NFR_OT_randomise_group, NFR_OT_reset_group
from ..properties import GROUP_LABELS, NFR_FaceRig, coefficient_key, is_face_rig
from ..rig.params import GROUP_SIZES
from .ignored import draw_ignored  # controls

LEADING_COEFFICIENTS = 10
LEADING_SH_ROWS = 4  # SH bands 0 and 1: ambient and directional light
SH_ROWS = 9


def draw_group_buttons(
    layout: UILayout, group: str, *, randomise: bool = True, presets: bool = False
) -> None:
    """Randomise / reset (and preset load / save) buttons acting on ``group``."""
    row = layout.row(align=True)
    if randomise:
        row.operator(NFR_OT_randomise_group.bl_idname, icon="FILE_REFRESH").group = group
    row.operator(NFR_OT_reset_group.bl_idname, icon="LOOP_BACK").group = group
    if presets:
        row = layout.row(align=True)
        row.operator(NFR_OT_load_preset.bl_idname, text="Load", icon="IMPORT").group = group
        row.operator(NFR_OT_save_preset.bl_idname, text="Save", icon="EXPORT").group = group


def draw_show_all(layout: UILayout, face_rig: NFR_FaceRig, group: str) -> None:
    layout.prop(
        face_rig, f"show_all_{group}", text=f"Show All {GROUP_SIZES[group]}", toggle=True
    )


class FaceRigPanel(Panel):
    """Base of the panels that show the active face rig's values."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Face Rig"

    @classmethod
    def poll(cls, context: Context) -> bool:
        return is_face_rig(context.object)


class CoefficientListPanel(FaceRigPanel):
    """A long statistical group (identity, reflectance, expression) as a list of sliders."""

    group = ""

    def draw(self, context: Context) -> None:
        layout = self.layout
        face_rig = context.object.face_rig
        draw_ignored(layout, context.object, self.group)  # controls
        draw_group_buttons(layout, self.group, presets=True)
        values = getattr(face_rig, self.group)
        size = GROUP_SIZES[self.group]
        shown = size if getattr(face_rig, f"show_all_{self.group}") else LEADING_COEFFICIENTS
        col = layout.column(align=True)
        for index in range(min(shown, size)):
            col.prop(values, coefficient_key(index))
        draw_show_all(layout, face_rig, self.group)


class NFR_PT_identity(CoefficientListPanel):
    bl_idname = "NFR_PT_identity"
    bl_parent_id = "NFR_PT_advanced"  # controls: raw grids under Advanced
    bl_label = GROUP_LABELS["identity"]
    group = "identity"


class NFR_PT_reflectance(CoefficientListPanel):
    bl_idname = "NFR_PT_reflectance"
    bl_parent_id = "NFR_PT_advanced"  # controls
    bl_label = GROUP_LABELS["reflectance"]
    bl_options = {"DEFAULT_CLOSED"}
    group = "reflectance"


class NFR_PT_expression(CoefficientListPanel):
    bl_idname = "NFR_PT_expression"
    bl_parent_id = "NFR_PT_advanced"  # controls
    bl_label = GROUP_LABELS["expression"]
    group = "expression"


class NFR_PT_illumination(FaceRigPanel):
    """Spherical-harmonics light as a grid: one row per SH coefficient, columns R, G, B."""

    bl_idname = "NFR_PT_illumination"
    bl_parent_id = "NFR_PT_advanced"  # controls
    bl_label = GROUP_LABELS["illumination"]
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: Context) -> None:
        layout = self.layout
        face_rig = context.object.face_rig
        draw_ignored(layout, context.object, "illumination")  # controls
        draw_group_buttons(layout, "illumination")
        values = face_rig.illumination
        col = layout.column(align=True)
        header = col.row(align=True)
        for text in ("", "R", "G", "B"):
            header.label(text=text)
        rows = SH_ROWS if face_rig.show_all_illumination else LEADING_SH_ROWS
        for sh in range(rows):
            row = col.row(align=True)
            row.label(text=f"SH {sh}")
            for channel in range(3):
                row.prop(values, coefficient_key(channel * SH_ROWS + sh), text="")
        draw_show_all(layout, face_rig, "illumination")


class NFR_PT_pose(FaceRigPanel):
    """Head rotation (radians, shown in degrees) and translation (decimetres)."""

    bl_idname = "NFR_PT_pose"
    bl_label = "Pose"

    def draw(self, context: Context) -> None:
        layout = self.layout
        face_rig = context.object.face_rig
        for group in ("rotation", "translation"):
            layout.label(text=GROUP_LABELS[group])
            col = layout.column(align=True)
            draw_ignored(col, context.object, group)  # controls: grey what the backend ignores
            for index in range(GROUP_SIZES[group]):
                col.prop(getattr(face_rig, group), coefficient_key(index))
            # The translation prior is zero (faces stay centred): randomising it would reset it.
            draw_group_buttons(layout, group, randomise=group == "rotation")


CLASSES = (
    NFR_PT_identity,
    NFR_PT_reflectance,
    NFR_PT_expression,
    NFR_PT_illumination,
    NFR_PT_pose,
)
