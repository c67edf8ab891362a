"""Operators: save and load rig presets (rig.params JSON holding some of the groups)."""

from __future__ import annotations

from bpy.props import EnumProperty, StringProperty
from bpy.types import Context
from bpy_extras.io_utils import ExportHelper, ImportHelper

from ..properties import GROUP_LABELS
from ..rig.errors import RigParamsError
from ..rig.params import GROUP_NAMES
from ..rig_props import load_preset, save_preset
from .rig_groups import RIG_GROUP_ITEMS, FaceRigOperator

ALL_GROUPS = "ALL"
PRESET_GROUP_ITEMS = (
    (ALL_GROUPS, "All Groups", "Every rig group (loading: every group the file holds)"),
    *RIG_GROUP_ITEMS,
)


def _describe(groups: tuple[str, ...]) -> str:
    return ", ".join(GROUP_LABELS[name].lower() for name in groups)


class NFR_OT_save_preset(FaceRigOperator, ExportHelper):
    """Save rig values of the active face rig as a JSON preset"""

    bl_idname = "nfr.save_preset"
    bl_label = "Save Preset"
    bl_options = {"REGISTER"}

    filename_ext = ".json"
    filter_glob: StringProperty(default="*.json", options={"HIDDEN"})
    group: EnumProperty(name="Group", items=PRESET_GROUP_ITEMS, default=ALL_GROUPS)

    def execute(self, context: Context) -> set[str]:
        groups = GROUP_NAMES if self.group == ALL_GROUPS else (self.group,)
        try:
            save_preset(context.object, self.filepath, groups)
        except RigParamsError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Saved {_describe(groups)} to {self.filepath}")
        return {"FINISHED"}


class NFR_OT_load_preset(FaceRigOperator, ImportHelper):
    """Load rig values from a JSON preset into the active face rig (other groups keep their
    values; a bad file changes nothing)"""

    bl_idname = "nfr.load_preset"
    bl_label = "Load Preset"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".json"
    filter_glob: StringProperty(default="*.json", options={"HIDDEN"})
    group: EnumProperty(name="Group", items=PRESET_GROUP_ITEMS, default=ALL_GROUPS)

    def execute(self, context: Context) -> set[str]:
        groups = None if self.group == ALL_GROUPS else (self.group,)
        try:
            loaded = load_preset(context.object, self.filepath, groups)
        except RigParamsError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Loaded {_describe(loaded)} from {self.filepath}")
        return {"FINISHED"}


CLASSES = (NFR_OT_save_preset, NFR_OT_load_preset)
