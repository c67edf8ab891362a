"""Operator: Add Face Rig - the portrait card showing the neural face, its camera and render
settings, and (when a face model is set) the co-registered 3DMM head driven by the rig.

The first rig of a scene sets the scene up for portraits (its camera, square resolution,
texel-exact sampling, "Standard" colour). Later rigs go beside the existing ones and leave the
scene's camera and render settings alone: an artist's choices there are not reset. A rig can
be added before any model file is set: it shows black and its status says what is missing.
"""

from __future__ import annotations

import traceback

import bpy
from bpy.props import EnumProperty
from bpy.types import Context, Object, Operator, Scene

from .. import face_image, live, model_files, portrait
from ..contract import catalogue
from ..head_control import add_shape_keys_to_new_head
from ..head_mesh import build_head
from ..preferences import addon_preferences, resolved_face_model_path
from ..properties import BACKEND_ITEMS, is_face_rig, resolution_pixels, set_model_resolution
from ..rig.errors import RigError
from ..rig.face_model import load_face_model
from ..rig_models import default_resolution, model_resolution

RIG_NAME = "FaceRig"
RIG_SPACING = 1.25  # card sides between the centres of neighbouring rigs
# Rig-driven backends first: AUTO picks the first whose required files are all there.
AUTO_ORDER = catalogue.AUTO_ORDER


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
            card, notes = self._add(context)
        except (RigError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except Exception as exc:  # a bug must not escape into Blender's UI as a traceback
            traceback.print_exc()
            self.report({"ERROR"}, f"Add Face Rig failed: {type(exc).__name__}: {exc}")
            return {"CANCELLED"}
        model_note = notes.pop(0)
        self.report({"WARNING"} if model_note else {"INFO"},
                    f"Added {card.name}: " + "; ".join(note for note in (model_note, *notes)
                                                        if note))
        return {"FINISHED"}

    def _add(self, context: Context) -> tuple[Object, list[str]]:
        prefs = addon_preferences(context)
        backend = self._choose_backend(prefs)
        generator = model_files.model_paths(prefs, backend)["generator"]
        full = model_resolution(generator, backend) if generator else default_resolution(backend)
        collection = context.collection
        scene = context.scene
        layout = portrait.portrait_layout()
        first_rig = not any(is_face_rig(ob) for ob in scene.objects)

        name = _unused_object_name(RIG_NAME)
        image = face_image.ensure_face_image(f"{name} Face", full)
        card = portrait.build_card(name, collection, layout, image)
        card.location = _free_spot(scene, layout)
        face_rig = card.face_rig
        face_rig.backend = backend
        set_model_resolution(face_rig, full)
        if generator:  # the .blend says which model it needs (and records its digest)
            face_rig.model_path = generator
        face_rig.is_rig = True
        face_rig.image_name = image.name
        camera = portrait.build_camera(f"{name} Camera", collection, layout, card)
        notes = [self._model_note(prefs, backend, generator)]
        if first_rig:
            scene.camera = camera
            render_size = resolution_pixels(face_rig.render_resolution, full) or full
            portrait.setup_render(scene, render_size)
            notes.append(f"scene set up for portraits: camera {camera.name}, {render_size} px, "
                         f"view transform '{portrait.VIEW_TRANSFORM}' (exact generator colours)")
        else:
            if scene.camera is None:
                scene.camera = camera
            notes.append(f"placed beside the existing rigs; the scene's camera and render "
                         f"settings are unchanged (its camera: {camera.name})")

        notes.append(self._add_head(prefs, collection, card, layout))
        for selected in context.selected_objects:
            selected.select_set(False)
        card.select_set(True)
        context.view_layer.objects.active = card
        live.request_update(card)
        return card, notes

    @staticmethod
    def _model_note(prefs, backend: str, generator: str) -> str:
        """"" when the backend's required files are there, else what is missing."""
        for status in model_files.model_status(prefs, backend, generator):
            if status.required and not status.ok:
                return (f"{status.problem} The rig shows black until it is set "
                        f"(the rig's Model field or {model_files.PREFERENCES})")
        return ""

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
        keys = add_shape_keys_to_new_head(card, face_model)  # controls: ARKit shape keys
        return f"head {head.name} follows the rig (identity, expression, rotation; {keys})"


def _free_spot(scene: Scene, layout: portrait.PortraitLayout):
    """Where a new card goes: behind the 3D cursor like the first rig (the head at the
    cursor), moved along +X past every card already near that line."""
    from mathutils import Vector

    spot = scene.cursor.location + Vector((0.0, layout.card_distance - layout.head_distance,
                                           0.0))
    step = RIG_SPACING * layout.card_size
    taken = [ob.matrix_world.translation for ob in scene.objects if is_face_rig(ob)]
    while any((spot - other).length < step * 0.99 for other in taken):
        spot.x += step
    return spot


def _unused_object_name(base: str) -> str:
    if base not in bpy.data.objects:
        return base
    index = 1
    while f"{base}.{index:03d}" in bpy.data.objects:
        index += 1
    return f"{base}.{index:03d}"


CLASSES = (NFR_OT_add_rig,)
