"""Operator: Add Face Rig - the portrait card showing the neural face, its camera and render
settings, and (when a face model is set) the co-registered 3DMM head driven by the rig."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import bpy
from bpy.props import EnumProperty
from bpy.types import Context, Object, Operator

from .. import face_image, live, model_files, portrait
from ..contract import catalogue
from ..head_mesh import build_head
from ..preferences import addon_preferences, resolved_face_model_path
from ..properties import BACKEND_ITEMS, resolution_pixels
from ..rig.errors import RigError
from ..rig.face_model import load_face_model

RIG_NAME = "FaceRig"
# Output size when the model file does not say (non-project formats): the architectures'.
DEFAULT_RESOLUTION = {"discofacegan": 256}
FALLBACK_RESOLUTION = 1024
# Rig-driven backends first: AUTO picks the first whose required files are all there.
AUTO_ORDER = catalogue.AUTO_ORDER


def model_resolution(path: str, backend: str) -> int:
    """Full output size of a model: its project sidecar's config when it has one, else the
    backend's usual size (the worker knows for sure once it loads the file)."""
    sidecar = Path(path).with_suffix(".json")
    if path.endswith(".safetensors") and sidecar.is_file():
        try:
            size = json.loads(sidecar.read_text(encoding="utf-8"))["config"]["img_resolution"]
            if isinstance(size, int) and size > 0:
                return size
        except (OSError, ValueError, KeyError, TypeError):
            pass  # the worker reports a damaged sidecar when it loads the model
    return DEFAULT_RESOLUTION.get(backend, FALLBACK_RESOLUTION)


class NFR_OT_add_rig(Operator):
    """Add a face rig: a portrait card showing the neural face, a camera framed on it with
    exact-colour render settings (Standard view transform), and the 3DMM head when a face
    model is set in the preferences"""

    bl_idname = "nfr.add_rig"
    bl_label = "Add Face Rig"
    bl_options = {"REGISTER", "UNDO"}

    backend: EnumProperty(
        name="Backend",
        description="How the rig values become a face",
        items=(("AUTO", "Auto", "The first backend whose model files are all set (DiscoFaceGAN, "
                 "StyleRig, then StyleGAN2)"),
               *BACKEND_ITEMS),
        default="AUTO",
    )

    @classmethod
    def poll(cls, context: Context) -> bool:
        return context.scene is not None and context.mode == "OBJECT"

    def execute(self, context: Context) -> set[str]:
        try:
            card, head_note = self._add(context)
        except (RigError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except Exception as exc:  # a bug must not escape into Blender's UI as a traceback
            traceback.print_exc()
            self.report({"ERROR"}, f"Add Face Rig failed: {type(exc).__name__}: {exc}")
            return {"CANCELLED"}
        size = context.scene.render.resolution_x
        self.report(
            {"INFO"},
            f"Added {card.name}: portrait card and camera ({size} px, view transform "
            f"'{portrait.VIEW_TRANSFORM}' so renders show the generator's exact colours); "
            f"{head_note}",
        )
        return {"FINISHED"}

    def _add(self, context: Context) -> tuple[Object, str]:
        prefs = addon_preferences(context)
        backend = self._choose_backend(prefs)
        generator = model_files.model_paths(prefs, backend)["generator"]
        full = model_resolution(generator, backend)
        collection = context.collection
        scene = context.scene
        layout = portrait.portrait_layout()

        name = _unused_object_name(RIG_NAME)
        image = face_image.ensure_face_image(f"{name} Face", full)
        card = portrait.build_card(name, collection, layout, image)
        card.location = tuple(scene.cursor.location + _offset(layout.card_distance -
                                                              layout.head_distance))
        face_rig = card.face_rig
        face_rig.backend = backend
        face_rig.is_rig = True
        face_rig.image_name = image.name
        camera = portrait.build_camera(f"{name} Camera", collection, layout, card)
        scene.camera = camera
        render_size = resolution_pixels(face_rig.render_resolution) or full
        portrait.setup_render(scene, render_size)

        head_note = self._add_head(prefs, collection, card, layout)
        for selected in context.selected_objects:
            selected.select_set(False)
        card.select_set(True)
        context.view_layer.objects.active = card
        live.request_update(card)
        return card, head_note

    def _choose_backend(self, prefs) -> str:
        if self.backend != "AUTO":
            return self.backend
        for backend in AUTO_ORDER:
            statuses = model_files.model_status(prefs, backend)
            if all(status.ok for status in statuses if status.required):
                return backend
        return catalogue.DEFAULT_BACKEND

    def _add_head(self, prefs, collection, card: Object, layout: portrait.PortraitLayout) -> str:
        path = resolved_face_model_path(prefs)
        if not path:
            return "no head (set a face model in the preferences to add the 3DMM head)"
        try:
            face_model = load_face_model(path)
        except (RigError, OSError) as exc:
            self.report({"WARNING"}, f"No head: {exc}")
            return "no head (the face model could not be read)"
        head = build_head(face_model, collection, name=f"{card.name} Head")
        head.face_rig_source = path
        portrait.place_head(head, card, layout)
        portrait.drive_head(head, card)
        return f"head {head.name} follows the rig (identity, expression, rotation)"


def _offset(y: float):
    from mathutils import Vector

    return Vector((0.0, y, 0.0))


def _unused_object_name(base: str) -> str:
    if base not in bpy.data.objects:
        return base
    index = 1
    while f"{base}.{index:03d}" in bpy.data.objects:
        index += 1
    return f"{base}.{index:03d}"


CLASSES = (NFR_OT_add_rig,)
