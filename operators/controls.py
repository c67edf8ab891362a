"""Operators on the artist's controls of the active face rig: reset and apply expressions,
head shape keys, and identity tools (new, store, lock while randomising the rest)."""

from __future__ import annotations

import secrets

import numpy as np
from bpy.props import EnumProperty, IntProperty
from bpy.types import Context

from ..contract.errors import ContractError
from ..controls_eval import basis_problem, control_basis, head_of, set_key_light
from ..controls_props import preset_name
from ..head_control import add_control_shape_keys
from ..identity import new_identity
from ..properties import deferred_rig_changes
from ..rig.control_basis import controls_from_expression, expression_from_controls
from ..rig.controls import CONTROL_NAMES
from ..rig.errors import RigError
from ..rig.expressions import blend_preset, preset
from ..rig.key_light import sh_to_key_light
from ..rig_props import randomise_group
from .rig_groups import FaceRigOperator

SEED_MAX = 2**31 - 1
RANDOMISED_WITH_IDENTITY = ("identity", "expression", "reflectance", "rotation", "illumination")


class NFR_OT_reset_controls(FaceRigOperator):
    """Set every named control and the preset weight to 0"""

    bl_idname = "nfr.reset_controls"
    bl_label = "Reset Controls"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: Context) -> set[str]:
        controls = context.object.face_controls
        with deferred_rig_changes():
            for name in CONTROL_NAMES:
                setattr(controls.named, name, 0.0)
            controls.preset_weight = 0.0
        return {"FINISHED"}


class NFR_OT_apply_preset(FaceRigOperator):
    """Write the chosen expression, mixed by the preset weight, into the sliders"""

    bl_idname = "nfr.apply_preset"
    bl_label = "Apply to Sliders"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: Context) -> set[str]:
        controls = context.object.face_controls
        current = {name: getattr(controls.named, name) for name in CONTROL_NAMES}
        mixed = blend_preset(current, preset(preset_name(controls.preset)),
                             controls.preset_weight)
        with deferred_rig_changes():
            for name, value in mixed.items():
                setattr(controls.named, name, value)
            controls.preset_weight = 0.0
        return {"FINISHED"}


class NFR_OT_control_shape_keys(FaceRigOperator):
    """Add one shape key per named control to the rig's 3DMM head, driven by the controls"""

    bl_idname = "nfr.control_shape_keys"
    bl_label = "Add Control Shape Keys"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: Context) -> set[str]:
        if head_of(context.object) is None:
            self.report({"ERROR"}, "This rig has no 3DMM head (set a face model, Add Face Rig)")
            return {"CANCELLED"}
        count = add_control_shape_keys(context.object)
        if not count:
            self.report({"ERROR"}, "The face model's named controls are not available")
            return {"CANCELLED"}
        self.report({"INFO"}, f"{count} control shape keys on {head_of(context.object).name}")
        return {"FINISHED"}


class NFR_OT_new_identity(FaceRigOperator):
    """Draw a new plausible face (DiscoFaceGAN's VAE when its files are set, else the rig's
    prior); expression, pose and light stay"""

    bl_idname = "nfr.new_identity"
    bl_label = "New Identity"
    bl_options = {"REGISTER", "UNDO"}

    seed: IntProperty(name="Seed", description="Seed of the draw (-1: a new one each time)",
                      min=-1, max=SEED_MAX, default=-1, options={"SKIP_SAVE"})

    def execute(self, context: Context) -> set[str]:
        if self.seed < 0:
            self.seed = secrets.randbelow(SEED_MAX + 1)
        try:
            source = new_identity(context.object, self.seed)
        except (RigError, ContractError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        where = "DiscoFaceGAN's VAE" if source == "vae" else "the rig prior"
        self.report({"INFO"}, f"New identity from {where} (seed {self.seed})")
        return {"FINISHED"}


class NFR_OT_store_identity(FaceRigOperator):
    """Store the current identity as identity A or B of the blend"""

    bl_idname = "nfr.store_identity"
    bl_label = "Store Identity"
    bl_options = {"REGISTER", "UNDO"}

    slot: EnumProperty(name="Slot", items=(("A", "A", "Identity A"), ("B", "B", "Identity B")))

    def execute(self, context: Context) -> set[str]:
        ob = context.object
        target = ob.face_controls.identity_a if self.slot == "A" else ob.face_controls.identity_b
        with deferred_rig_changes():
            for index in range(80):
                key = f"c{index:03d}"
                setattr(target, key, getattr(ob.face_rig.identity, key))
        return {"FINISHED"}


class NFR_OT_randomise_all(FaceRigOperator):
    """Randomise expression, reflectance, pose and light (and identity unless locked)"""

    bl_idname = "nfr.randomise_all"
    bl_label = "Randomise All"
    bl_options = {"REGISTER", "UNDO"}

    seed: IntProperty(name="Seed", description="Seed of the draw (-1: a new one each time)",
                      min=-1, max=SEED_MAX, default=-1, options={"SKIP_SAVE"})

    def execute(self, context: Context) -> set[str]:
        ob = context.object
        if self.seed < 0:
            self.seed = secrets.randbelow(SEED_MAX + 1)
        locked = ob.face_controls.lock_identity
        with deferred_rig_changes():
            for offset, group in enumerate(RANDOMISED_WITH_IDENTITY):
                if group == "identity" and locked:
                    continue
                randomise_group(ob, group, (self.seed + offset) % (SEED_MAX + 1))
        return {"FINISHED"}


class NFR_OT_key_light_from_sh(FaceRigOperator):
    """Read the dominant light of the raw SH coefficients (e.g. from a photo) into the key
    light, and set the raw SH to zero"""

    bl_idname = "nfr.key_light_from_sh"
    bl_label = "Key Light from SH"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: Context) -> set[str]:
        ob = context.object
        raw = [getattr(ob.face_rig.illumination, f"c{i:03d}") for i in range(27)]
        light = sh_to_key_light(np.asarray(raw))
        props = ob.face_controls.key_light
        with deferred_rig_changes():
            set_key_light(props, light)
            for i in range(27):
                setattr(ob.face_rig.illumination, f"c{i:03d}", 0.0)
        self.report({"INFO"}, f"Key light at azimuth {light.azimuth:.0f}°, elevation "
                    f"{light.elevation:.0f}°, intensity {light.intensity:.2f}")
        return {"FINISHED"}


class NFR_OT_controls_from_expression(FaceRigOperator):
    """Express the raw expression coefficients (e.g. from a photo or a capture) as named
    controls; what they cannot express stays in the raw coefficients"""

    bl_idname = "nfr.controls_from_expression"
    bl_label = "Named Controls from Expression"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: Context) -> set[str]:
        ob = context.object
        basis = control_basis(ob)
        if basis is None:
            self.report({"ERROR"}, basis_problem(ob) or "The named controls are not available")
            return {"CANCELLED"}
        named = ob.face_controls.named
        current = [getattr(named, name) for name in basis.names]
        raw = [getattr(ob.face_rig.expression, f"c{i:03d}") for i in range(64)]
        total = expression_from_controls(basis, current, raw)
        values, remainder = controls_from_expression(basis, total)
        with deferred_rig_changes():
            for name, value in zip(basis.names, values.tolist(), strict=True):
                setattr(named, name, value)
            for i, value in enumerate(remainder.tolist()):
                setattr(ob.face_rig.expression, f"c{i:03d}", value)
        return {"FINISHED"}


CLASSES = (NFR_OT_reset_controls, NFR_OT_apply_preset, NFR_OT_control_shape_keys,
           NFR_OT_new_identity, NFR_OT_store_identity, NFR_OT_randomise_all,
           NFR_OT_key_light_from_sh, NFR_OT_controls_from_expression)
