"""Add-on preferences: where the user's face-model file lives.

Nothing licensed ships with the extension, so the preferences explain which file is needed,
how to make it from the user's own BFM download and where to point the path.
"""

from __future__ import annotations

import os

import bpy
from bpy.props import StringProperty
from bpy.types import AddonPreferences, Context, UILayout

from .rig.bfm_convert import FILES

FACE_MODEL_FILENAME = "BFM_model_front.mat"


def face_model_help() -> tuple[tuple[str, ...], ...]:
    """Paragraphs (tuples of lines) telling the user which file is needed, how to make it from
    their own downloads and where to put it. The input list comes from rig.bfm_convert."""
    inputs = tuple(
        line
        for raw in FILES.values()
        for line in (f"{raw.name} ({raw.what})", f"    from {raw.source}")
    )
    return (
        (
            f"Needed: {FACE_MODEL_FILENAME}, the 3D Morphable Face Model in Deep3DFaceRecon's "
            "layout.",
            "Nothing licensed ships with this extension: make it from your own downloads.",
        ),
        (
            "Make it with the project's command line, from one folder holding these six files:",
            f"nfr rig convert-bfm --bfm-dir FOLDER --out {FACE_MODEL_FILENAME}",
        ),
        inputs,
        (f"Keep {FACE_MODEL_FILENAME} in any folder and set its path above.",),
    )


class NFR_AddonPreferences(AddonPreferences):
    """Neural Face Rig preferences."""

    # The extension's root package, e.g. "bl_ext.user_default.neural_face_rig".
    bl_idname = __package__

    face_model_path: StringProperty(
        name="Face Model",
        description=f"Path of {FACE_MODEL_FILENAME} (made with 'nfr rig convert-bfm')",
        subtype="FILE_PATH",
        default="",
    )

    def draw(self, context: Context) -> None:
        layout = self.layout
        layout.prop(self, "face_model_path")
        problem = face_model_problem(self.face_model_path)
        if problem is not None:
            draw_face_model_help(layout.box(), problem)


def addon_preferences(context: Context) -> NFR_AddonPreferences:
    """This extension's preferences (the extension must be enabled)."""
    return context.preferences.addons[__package__].preferences


def resolved_face_model_path(prefs: NFR_AddonPreferences) -> str:
    """The face-model path with Blender's ``//`` (blend-relative) prefix expanded."""
    return bpy.path.abspath(prefs.face_model_path) if prefs.face_model_path else ""


def face_model_problem(path: str) -> str | None:
    """Why ``path`` cannot be a face model yet (cheap checks only), or None if it may be one."""
    if not path:
        return "No face model set."
    resolved = bpy.path.abspath(path)
    if not os.path.exists(resolved):
        return f"Face model not found: {resolved}"
    if not os.path.isfile(resolved):
        return f"Face model path is not a file: {resolved}"
    return None


def draw_face_model_help(layout: UILayout, problem: str) -> None:
    """Draw ``problem`` followed by how to obtain and set the face-model file."""
    col = layout.column(align=True)
    col.label(text=problem, icon="ERROR")
    for paragraph in face_model_help():
        col.separator()
        for line in paragraph:
            col.label(text=line)
