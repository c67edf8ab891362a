"""The Blender half of ``make demo``, run by demo.py in a fresh interpreter where Blender is
the ``bpy`` module. Never loads torch (the extension's worker process does).

1. Install the extension zip; add and pose the 3DMM head with the extension's own operator,
   match the rig camera, render with Cycles and save ``rig_head.blend`` (the geometry check).
2. In a new file: point the preferences at the models folder, Add Face Rig (DiscoFaceGAN when
   its files are there, else StyleGAN2), keyframe an expression animation (DiscoFaceGAN: rig
   expression coefficients and a head turn; StyleGAN2: SeFa sliders), render a still and the
   sequence with Cycles (the faces come from the worker, synchronously, as on a farm) and
   save ``demo.blend``.

Input: one JSON argument (see demo.py); output: one JSON line on stdout, or a line starting
with STAGE_ERROR_PREFIX on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .rig.blender_mesh import to_blender_frame

EXTENSION_REPO = "user_default"
EXTENSION_MODULE = f"bl_ext.{EXTENSION_REPO}.neural_face_rig"
CYCLES_SAMPLES = 16
FACE_RIG_SAMPLES = 4  # emission only: every sample sees the same texel
STAGE_ERROR_PREFIX = "blender stage: "
# (data path, [(frame, value), ...]) per backend: a smile-and-turn over 24 frames.
ANIMATION = {
    # Named controls: a smile, then the jaw opens and the eyes blink, while the key light
    # orbits from the left to the right of the face and the head turns.
    "discofacegan": (
        ("face_controls.named.mouthSmileLeft", ((1, 0.0), (6, 1.0), (11, 1.0), (15, 0.0))),
        ("face_controls.named.mouthSmileRight", ((1, 0.0), (6, 1.0), (11, 1.0), (15, 0.0))),
        ("face_controls.named.jawOpen", ((11, 0.0), (16, 0.8), (22, 0.0))),
        ("face_controls.named.eyeBlinkLeft", ((17, 0.0), (19, 1.0), (21, 0.0))),
        ("face_controls.named.eyeBlinkRight", ((17, 0.0), (19, 1.0), (21, 0.0))),
        ("face_controls.key_light.intensity", ((1, 0.8),)),
        ("face_controls.key_light.elevation", ((1, 20.0),)),
        ("face_controls.key_light.azimuth", ((1, -70.0), (24, 70.0))),
        ("face_rig.rotation.c001", ((1, -0.3), (24, 0.3))),
    ),
    "stylegan2": (
        ("face_rig.sefa_sliders[0].value", ((1, 0.0), (8, 3.0), (16, -3.0), (24, 0.0))),
        ("face_rig.sefa_sliders[1].value", ((1, -2.0), (24, 2.0))),
    ),
}
SEFA_SLIDERS = ((0, 0, 3, "Pose"), (1, 4, 7, "Expression"))  # direction, first, last, label
DEMO_BACKENDS = ("discofacegan", "stylegan2")


class StageError(Exception):
    """The Blender stage could not finish; the message says which step failed."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"{STAGE_ERROR_PREFIX}expected one JSON argument, found {len(args)}",
              file=sys.stderr)
        return 2
    try:
        print(json.dumps(run_stage(json.loads(args[0]))))
    except (RuntimeError, StageError) as exc:  # operator reports arrive as RuntimeError
        print(f"{STAGE_ERROR_PREFIX}{exc}", file=sys.stderr)
        return 2
    return 0


def run_stage(config: dict[str, Any]) -> dict[str, Any]:
    """Install the extension, run both parts; returns what each did. Runs in the child."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    _install_extension(config["zip"])
    report = _head_stage(config)
    return {"report": report, "face_rig": _face_rig_stage(config["face_rig"],
                                                          config["face_model"])}


def _head_stage(config: dict[str, Any]) -> str:
    """Add and pose the head, render it and save the file."""
    import bpy
    from mathutils import Matrix

    preferences = importlib.import_module(f"{EXTENSION_MODULE}.preferences")
    head_mesh = importlib.import_module(f"{EXTENSION_MODULE}.head_mesh")
    preferences.addon_preferences(bpy.context).face_model_path = config["face_model"]

    # Operators registered at run time are unknown to the bpy stubs. An ERROR report from the
    # operator raises RuntimeError carrying its message.
    bpy.ops.nfr.add_head()  # type: ignore[attr-defined]
    head = bpy.context.active_object
    if head is None:
        raise StageError("nfr.add_head finished without an active head object")
    for group in head_mesh.SHAPE_KEY_GROUPS:
        head_mesh.set_shape_key_values(head, group, config[group])
    head.matrix_world = Matrix(config["matrix_world"])  # rows

    scene = bpy.context.scene
    _add_camera(scene, config["camera"])
    _add_lights(scene)
    render_seconds = _render(scene, Path(config["image"]))
    # Blender keeps the previous file as demo.blend1 unless none exists; it writes the new one
    # to a temporary file and renames it, so no half-written .blend is ever seen.
    Path(config["blend"]).unlink(missing_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=config["blend"], compress=True)
    return (
        f"extension {EXTENSION_MODULE} installed from the zip; its Add Face Rig Head "
        f"operator built {head.name}; shape keys and pose set from the sample; "
        f"render {render_seconds:.1f} s"
    )


def _face_rig_stage(config: dict[str, Any], face_model: str) -> dict[str, Any]:
    """Add a Face Rig in a new file, animate it, render the still and the sequence, save."""
    import bpy

    start = time.perf_counter()
    bpy.ops.wm.read_homefile(use_empty=True)
    extension = {name: importlib.import_module(f"{EXTENSION_MODULE}.{name}")
                 for name in ("live", "model_files", "preferences", "rig_props")}
    prefs = extension["preferences"].addon_preferences(bpy.context)
    prefs.models_dir = config["models_dir"]
    prefs.face_model_path = face_model
    backend = _demo_backend(extension["model_files"], prefs)

    bpy.ops.nfr.add_rig(backend=backend)  # type: ignore[attr-defined]
    card = bpy.context.active_object
    if card is None or not card.face_rig.is_rig:
        raise StageError("nfr.add_rig finished without an active face rig")
    with extension["live"].paused():  # no previews: nothing polls for them in background mode
        if backend == "stylegan2":
            for direction, first, last, label in SEFA_SLIDERS:
                extension["rig_props"].add_sefa_slider(card, direction, first, last, label)
        _keyframe(card, ANIMATION[backend])

    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, max(f for _, keys in ANIMATION[backend]
                                                for f, _ in keys)
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = FACE_RIG_SAMPLES
    scene.frame_set((scene.frame_start + scene.frame_end) // 2)
    bpy.ops.nfr.render_portrait(filepath=config["still"])  # type: ignore[attr-defined]
    bpy.ops.nfr.render_sequence(filepath=config["frames"])  # type: ignore[attr-defined]
    status = extension["live"].status_text(card)
    Path(config["blend"]).unlink(missing_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=config["blend"], compress=True)
    extension["live"].stop_worker()
    return {
        "backend": backend,
        "model": extension["model_files"].model_paths(prefs, backend)["generator"],
        "frames": [scene.frame_start, scene.frame_end],
        "status": status,
        "head": f"{card.name} Head" in scene.objects,
        "seconds": time.perf_counter() - start,
    }


def _demo_backend(model_files, prefs) -> str:
    """DiscoFaceGAN when all its files are in the models folder, else StyleGAN2."""
    problems = []
    for backend in DEMO_BACKENDS:
        missing = [s.problem for s in model_files.model_status(prefs, backend)
                   if s.required and not s.ok]
        if not missing:
            return backend
        problems.extend(missing)
    raise StageError(f"no usable generator in {prefs.models_dir}: " + "; ".join(
        str(p) for p in problems))


def _keyframe(card, animation) -> None:
    for path, keys in animation:
        for frame, value in keys:
            owner_path, _, prop = path.rpartition(".")
            setattr(card.path_resolve(owner_path), prop, value)
            card.keyframe_insert(path, frame=frame)


def _install_extension(zip_path: str) -> None:
    """Install and enable the extension zip in the user repository."""
    import bpy

    result = bpy.ops.extensions.package_install_files(
        filepath=zip_path, repo=EXTENSION_REPO, enable_on_install=True
    )
    preferences = bpy.context.preferences
    if result != {"FINISHED"} or preferences is None or EXTENSION_MODULE not in preferences.addons:
        raise StageError(f"installing {zip_path} as an extension failed ({result})")


def _add_camera(scene, camera: dict[str, float]) -> None:
    """The rig's pinhole camera in Blender: at the model's (0, 0, distance), looking down the
    model's -z (Blender +Y), focal length in pixels over the image width."""
    import bpy

    data = bpy.data.cameras.new("RigCamera")
    data.sensor_fit = "HORIZONTAL"
    data.lens = camera["focal"] / camera["size"] * data.sensor_width
    data.clip_start = 0.01
    obj = bpy.data.objects.new("RigCamera", data)
    obj.location = to_blender_frame(np.array([0.0, 0.0, camera["distance"]])).tolist()
    obj.rotation_euler = (math.pi / 2, 0.0, 0.0)  # Blender cameras look down local -Z
    scene.collection.objects.link(obj)
    scene.camera = obj
    scene.render.resolution_x = scene.render.resolution_y = int(camera["size"])
    scene.render.resolution_percentage = 100


def _add_lights(scene) -> None:
    """Soft ambient light plus a sun from above the camera, like the rig's default SH light."""
    import bpy

    world = bpy.data.worlds.new("DemoWorld")
    world.color = (0.35, 0.35, 0.35)
    scene.world = world
    light = bpy.data.lights.new("DemoSun", "SUN")
    assert isinstance(light, bpy.types.SunLight)  # what lights.new makes for "SUN"
    light.energy = 2.5
    sun = bpy.data.objects.new("DemoSun", light)
    sun.rotation_euler = (math.radians(65.0), 0.0, math.radians(-15.0))
    scene.collection.objects.link(sun)


def _render(scene, image: Path) -> float:
    """Cycles on the CPU into ``image`` (RGBA PNG, transparent background), atomically."""
    import bpy

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = CYCLES_SAMPLES
    scene.cycles.use_denoising = False
    scene.render.film_transparent = True
    scene.view_settings.view_transform = "Standard"  # show the albedo as stored, not AgX-toned
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    temp = image.with_name(f".{image.name}.{os.getpid()}.png")
    scene.render.filepath = str(temp)
    start = time.perf_counter()
    try:
        bpy.ops.render.render(write_still=True)
        os.replace(temp, image)
    finally:
        temp.unlink(missing_ok=True)
    return time.perf_counter() - start



if __name__ == "__main__":
    sys.exit(main())
