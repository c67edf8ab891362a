"""Operators on one rig group of the active face rig: randomise from the prior, reset to
neutral, keyframe at the current frame."""

from __future__ import annotations

import secrets

from bpy.props import EnumProperty, IntProperty
from bpy.types import Context, Operator

from ..properties import GROUP_LABELS, is_face_rig
from ..rig.params import GROUP_NAMES
from ..rig_props import FCURVE_GROUP_LABELS, KEYFRAME_GROUPS, keyframe_group, randomise_group
from ..rig_props import reset_group as reset_rig_group

RIG_GROUP_ITEMS = tuple((name, GROUP_LABELS[name], "") for name in GROUP_NAMES)
ANIMATABLE_GROUP_ITEMS = tuple((name, FCURVE_GROUP_LABELS[name], "") for name in KEYFRAME_GROUPS)
SEED_MAX = 2**31 - 1


class FaceRigOperator(Operator):
    """Base of the operators that act on the active object's face rig."""

    @classmethod
    def poll(cls, context: Context) -> bool:
        if not is_face_rig(context.object):
            cls.poll_message_set("The active object is not a face rig")
            return False
        return True


class NFR_OT_randomise_group(FaceRigOperator):
    """Draw this group from the rig's prior (plausible values; the seed makes it repeatable)"""

    bl_idname = "nfr.randomise_group"
    bl_label = "Randomise"
    bl_options = {"REGISTER", "UNDO"}

    group: EnumProperty(name="Group", items=RIG_GROUP_ITEMS)
    seed: IntProperty(
        name="Seed",
        description="Random seed of the draw: the same seed gives the same values (-1: a new "
        "seed each time, shown here afterwards)",
        min=-1,
        max=SEED_MAX,
        default=-1,
        options={"SKIP_SAVE"},  # every click draws anew; the redo panel keeps the seed used
    )

    def execute(self, context: Context) -> set[str]:
        if self.seed < 0:
            self.seed = secrets.randbelow(SEED_MAX + 1)
        randomise_group(context.object, self.group, self.seed)
        self.report({"INFO"}, f"Randomised {GROUP_LABELS[self.group].lower()} (seed {self.seed})")
        return {"FINISHED"}


class NFR_OT_reset_group(FaceRigOperator):
    """Set this group to neutral (zeros: mean face, neutral expression, frontal pose, ambient
    light; SeFa slider values back to 0)"""

    bl_idname = "nfr.reset_group"
    bl_label = "Reset"
    bl_options = {"REGISTER", "UNDO"}

    group: EnumProperty(name="Group", items=ANIMATABLE_GROUP_ITEMS)

    def execute(self, context: Context) -> set[str]:
        reset_rig_group(context.object, self.group)
        self.report({"INFO"}, f"Reset {FCURVE_GROUP_LABELS[self.group]} to neutral")
        return {"FINISHED"}


class NFR_OT_keyframe_group(FaceRigOperator):
    """Insert a keyframe on every value of this group at the current frame"""

    bl_idname = "nfr.keyframe_group"
    bl_label = "Keyframe Group"
    bl_options = {"REGISTER", "UNDO"}

    group: EnumProperty(name="Group", items=ANIMATABLE_GROUP_ITEMS)

    def execute(self, context: Context) -> set[str]:
        frame = context.scene.frame_current
        label = FCURVE_GROUP_LABELS[self.group]
        inserted = keyframe_group(context.object, self.group, frame)
        if not inserted:
            self.report({"WARNING"}, f"{label}: nothing to keyframe")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Keyframed {inserted} {label} values at frame {frame}")
        return {"FINISHED"}


CLASSES = (NFR_OT_randomise_group, NFR_OT_reset_group, NFR_OT_keyframe_group)
