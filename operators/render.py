"""Operators: render the portrait (a still) or the animation with Blender's own renderer.

The faces are rendered by the frame handler (live.on_frame_change) before each frame, so these
only pick the output files and report where they went. A "//" path in a file never saved has
no folder to be relative to: the output goes to the extension's user folder "renders" (never
Blender's working directory), and the report says so. When the colour settings would change
the face's colours (portrait.colour_problem), the report warns. Interactively Blender's render
window opens (the UI stays responsive while the worker renders); in background mode the render
runs here and a still is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import os
import time

import bpy
from bpy.props import StringProperty
from bpy.types import Context, Operator

from ..dependencies import extension_user_folder
from ..portrait import colour_problem

PORTRAIT_PATH = "//render/portrait.png"
SEQUENCE_PATH = "//render/frames/frame_"
UNSAVED_FOLDER = "renders"


def output_path(filepath: str) -> str:
    """Absolute output path of ``filepath``: "//" is the .blend's folder, or the extension's
    user folder "renders" when the file was never saved; a bare relative path is refused by
    the caller (it would land in Blender's working directory)."""
    if filepath.startswith("//") and not bpy.data.filepath:
        return os.path.join(extension_user_folder(UNSAVED_FOLDER, create=True), filepath[2:])
    return bpy.path.abspath(filepath)


def _prepare_output(operator: Operator, context: Context) -> str | None:
    """The absolute PNG output path of ``operator.filepath``, its folder created; None (the
    problem reported) when the scene cannot be rendered."""
    if context.scene.camera is None:
        operator.report({"ERROR"},
                        "The scene has no camera: add a face rig (it adds the portrait camera)")
        return None
    path = output_path(operator.filepath)
    if not os.path.isabs(path):
        operator.report({"ERROR"}, f"Output path '{operator.filepath}' is relative to no folder: "
                        "give an absolute path or a '//' path (next to the .blend)")
        return None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    context.scene.render.image_settings.file_format = "PNG"
    return path


def _report(operator: Operator, context: Context, message: str) -> None:
    """INFO, or WARNING with the reason when the colours would not be the generator's."""
    notes = []
    if operator.filepath.startswith("//") and not bpy.data.filepath:
        notes.append("the .blend is not saved, so '//' is the extension's user folder")
    problem = colour_problem(context.scene)
    if problem is not None:
        notes.append(problem)
    operator.report({"WARNING"} if problem else {"INFO"},
                    message + "".join(f"; {note}" for note in notes))


class NFR_OT_render_portrait(Operator):
    """Render the current frame with the scene camera to a PNG file"""

    bl_idname = "nfr.render_portrait"
    bl_label = "Render Portrait"
    bl_options = {"REGISTER"}

    filepath: StringProperty(
        name="File",
        description="PNG file to write (// = next to the .blend file)",
        default=PORTRAIT_PATH,
        subtype="FILE_PATH",
    )

    def execute(self, context: Context) -> set[str]:
        path = _prepare_output(self, context)
        if path is None:
            return {"CANCELLED"}
        scene = context.scene
        size = f"{scene.render.resolution_x}x{scene.render.resolution_y}"
        if not bpy.app.background:
            scene.render.filepath = path
            bpy.ops.render.render("INVOKE_DEFAULT", write_still=True)
            _report(self, context, f"Rendering the portrait ({size}, {scene.render.engine}) "
                    f"to {path}")
            return {"FINISHED"}
        previous = scene.render.filepath
        temp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.png")
        scene.render.filepath = temp
        start = time.perf_counter()
        try:
            bpy.ops.render.render(write_still=True)
            os.replace(temp, path)
        finally:
            scene.render.filepath = previous
            if os.path.exists(temp):
                os.remove(temp)
        _report(self, context, f"Rendered the portrait to {path} ({size}, "
                f"{scene.render.engine}, {time.perf_counter() - start:.1f} s)")
        return {"FINISHED"}


class NFR_OT_render_sequence(Operator):
    """Render the scene's frame range with the scene camera to numbered PNG files (sets the
    scene's output path)"""

    bl_idname = "nfr.render_sequence"
    bl_label = "Render Sequence"
    bl_options = {"REGISTER"}

    filepath: StringProperty(
        name="Output",
        description="Output path prefix; Blender appends the frame number and .png",
        default=SEQUENCE_PATH,
        subtype="FILE_PATH",
    )

    def execute(self, context: Context) -> set[str]:
        path = _prepare_output(self, context)
        if path is None:
            return {"CANCELLED"}
        scene = context.scene
        scene.render.filepath = path
        frames = f"frames {scene.frame_start}-{scene.frame_end}"
        if not bpy.app.background:
            bpy.ops.render.render("INVOKE_DEFAULT", animation=True)
            _report(self, context, f"Rendering {frames} to {path}####.png")
            return {"FINISHED"}
        start = time.perf_counter()
        bpy.ops.render.render(animation=True)
        _report(self, context, f"Rendered {frames} to {path}####.png "
                f"({time.perf_counter() - start:.1f} s)")
        return {"FINISHED"}


CLASSES = (NFR_OT_render_portrait, NFR_OT_render_sequence)
