"""Operator: add the 3D Morphable Model head (a mesh with identity and expression shape keys)."""

from __future__ import annotations

import traceback

from bpy.types import Context, Operator

from ..head_mesh import build_head
from ..preferences import FACE_MODEL_FILENAME, addon_preferences, resolved_face_model_path
from ..rig.errors import RigError
from ..rig.face_model import load_face_model


class NFR_OT_add_head(Operator):
    """Add the face-rig head: the face model's mean shape with one shape key per identity and
    expression coefficient"""

    bl_idname = "nfr.add_head"
    bl_label = "Add Face Rig Head"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: Context) -> bool:
        return context.scene is not None and context.mode == "OBJECT"

    def execute(self, context: Context) -> set[str]:
        path = resolved_face_model_path(addon_preferences(context))
        if not path:
            self.report(
                {"ERROR"},
                f"No face model set: choose {FACE_MODEL_FILENAME} in "
                "Preferences > Add-ons > Neural Face Rig",
            )
            return {"CANCELLED"}
        try:
            face_model = load_face_model(path)
            head = build_head(
                face_model,
                context.collection,
                location=tuple(context.scene.cursor.location),
            )
        except (RigError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except Exception as exc:  # a bug must not escape into Blender's UI as a traceback
            traceback.print_exc()
            self.report({"ERROR"}, f"Add Face Rig Head failed: {type(exc).__name__}: {exc}")
            return {"CANCELLED"}

        head.face_rig_source = path
        for selected in context.selected_objects:
            selected.select_set(False)
        head.select_set(True)
        context.view_layer.objects.active = head
        n_keys = len(head.data.shape_keys.key_blocks) - 1
        self.report(
            {"INFO"}, f"Added {head.name}: {len(head.data.vertices)} vertices, {n_keys} shape keys"
        )
        return {"FINISHED"}
