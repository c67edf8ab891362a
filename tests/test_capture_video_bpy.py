"""Capture from Video on the real bpy module with the built zip installed: a real face (the
astronaut portrait turned by a known angle per frame, an image sequence) is tracked and
fitted by the real worker; its progress is reported, a cancel leaves the rig untouched, the
keys land on the scene frames in one undo step, the clip becomes a reference plane whose
image user follows the timeline, and a background render of a captured frame equals the
interactive face.

The bpy module is background mode: the operator takes its synchronous path (the modal
progress bar needs a window); progress and cancel are driven through the same CaptureRun and
CaptureFromVideo the modal operator polls. No torch or OpenCV in this process: the clip, the
tiny models and the reference curves come from the worker's Python (fixtures.worker_python).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import bpy
import numpy as np
import pytest
from fixtures import worker_python
from fixtures.fcurves import fcurves_by_path, keys
from fixtures.live_addon import installed_extension, pixels, poll_until, preferences
from PIL import Image

FRAMES = 8
FIRST_NUMBER = 1001  # the sequence's first file: shot.1001.png
SCENE_START = 20
OFFSET = 5
TOLERANCE = 2  # of 255, as the render tests


def _write_clip(folder: Path) -> Path:
    """The astronaut turned by 2° more per frame about its face, 512 px, as shot.1001.png..."""
    worker_python.run(
        "import cv2\nfrom skimage import data\n"
        "photo = data.astronaut()\n"
        f"for i in range({FRAMES}):\n"
        "    matrix = cv2.getRotationMatrix2D((230.0, 150.0), 2.0 * i, 1.0)\n"
        "    frame = cv2.warpAffine(photo, matrix, (512, 512), flags=cv2.INTER_LINEAR)\n"
        f"    cv2.imwrite({str(folder)!r} + f'/shot.{{{FIRST_NUMBER} + i:04d}}.png', "
        "frame[..., ::-1])\n"
        "print('{}')\n")
    return folder / f"shot.{FIRST_NUMBER:04d}.png"


def _write_movie(sequence: Path) -> Path:
    """The same frames as an MJPG .avi at 24 fps (a video file: the MOVIE path)."""
    movie = sequence.parent.parent / "movie" / "clip.avi"
    worker_python.run(
        "import cv2, pathlib\n"
        f"out = pathlib.Path({str(movie)!r})\nout.parent.mkdir(exist_ok=True)\n"
        "writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*'MJPG'), 24.0, (512, 512))\n"
        f"folder = {str(sequence.parent)!r}\n"
        f"for i in range({FRAMES}):\n"
        f"    writer.write(cv2.imread(folder + f'/shot.{{{FIRST_NUMBER} + i:04d}}.png'))\n"
        "writer.release()\nprint('{}')\n")
    return movie


def _expected_curves(video: Path, face_model: Path, fps: float, start: int) -> dict:
    """The pipeline run in the worker's Python (no worker, no Blender): every-frame keys."""
    found = worker_python.run(
        "import json\n"
        "from neural_face_rig.neural.capture.pipeline import (CaptureOptions, CurveOptions,\n"
        "    capture_video)\n"
        "from neural_face_rig.rig.face_model import load_face_model\n"
        f"result = capture_video({str(video)!r}, load_face_model({str(face_model)!r}),\n"
        f"    CaptureOptions(scene_fps={fps!r}, frame_start={start},\n"
        "                   curves=CurveOptions(every_frame=True)))\n"
        "print(json.dumps(result.curves.to_dict()))\n")
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def addon(tmp_path_factory: pytest.TempPathFactory):
    models = tmp_path_factory.mktemp("models")
    face_model = worker_python.write_face_model(models / "BFM_model_front.mat", seed=3)
    tiny = worker_python.write_tiny_models(models)
    video = _write_clip(tmp_path_factory.mktemp("clip"))
    expected = _expected_curves(video, face_model, 24.0, SCENE_START + OFFSET)
    with installed_extension(tmp_path_factory.mktemp("dist")) as module:
        prefs = preferences()
        worker_python.configure(prefs)
        prefs.dfg_generator_path = str(tiny["dfg"])
        prefs.dfg_average_w_path = str(tiny["dfg"].parent / "average_w_id.txt")
        prefs.face_model_path = str(face_model)
        prefs.device = "CPU"
        yield SimpleNamespace(live=module("live"), capture_job=module("capture_job"),
                              prefs=prefs, video=video, movie=_write_movie(video),
                              expected=expected)


@pytest.fixture()
def card(addon) -> bpy.types.Object:
    """A fresh file at 24 fps starting on SCENE_START with a DiscoFaceGAN rig (its rig values
    drive the face), its first live face shown."""
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    scene.frame_start, scene.frame_end = SCENE_START, SCENE_START + 40
    assert bpy.ops.nfr.add_rig(backend="discofacegan") == {"FINISHED"}
    ob = bpy.context.object
    ob.face_rig.preview_resolution = "FULL"  # the tiny models are 32 px
    ob.face_rig.render_resolution = "FULL"
    image = bpy.data.images[ob.face_rig.image_name]
    poll_until(addon.live, lambda: addon.live._shown.get(image.name) and not addon.live._requests)
    return ob


def _capture(**options) -> set[str]:
    """The operator as a button click does it (undo on), every option named (Blender
    remembers an operator's last options)."""
    values = {"frame_offset": OFFSET, "every_frame": True, "smoothing": 1.0,
              "action_mode": "REPLACE", "reference": True, **options}
    return bpy.ops.nfr.capture_from_video("EXEC_DEFAULT", True, filepath=str(values.pop(
        "filepath")), **values)


def _contents() -> dict[str, set[str]]:
    return {name: set(getattr(bpy.data, name).keys())
            for name in ("objects", "meshes", "materials", "images", "actions")}


def test_progress_is_reported_and_a_cancel_leaves_the_rig_untouched(addon, card) -> None:
    capture_job = addon.capture_job
    job = capture_job.capture_job(addon.prefs, bpy.context.scene, str(addon.video),
                                  target="capture:t1", every_frame=True,
                                  frame_offset=OFFSET)
    assert job.frame_start == SCENE_START + OFFSET and job.scene_fps == 24.0
    run = capture_job.CaptureRun(job)
    seen = []
    curves = run.wait(progress=lambda stage, fraction: seen.append((stage, fraction)))
    assert {"landmarks", "fit"} <= {stage for stage, _ in seen} and run.stage == "done"
    fractions = [fraction for _, fraction in seen]
    assert fractions == sorted(fractions) and run.fraction == 1.0  # the bar only moves on
    roll = curves.channels["rotation.z"]
    expected = addon.expected["channels"]["rotation.z"]["keys"]
    np.testing.assert_allclose(roll.values, [v for _, v, _ in expected], atol=1e-9)

    before = _contents()
    controls = card.face_controls.named.jawOpen
    work = capture_job.CaptureFromVideo(bpy.context, card, str(addon.video),
                                        target="capture:t2")
    assert work.step(bpy.context) == "running"
    work.cancel()  # Esc: the modal operator's cancel
    deadline = 200
    while (state := work.step(bpy.context)) == "running" and deadline:
        deadline -= 1
    assert state == "failed" and work.error == "" and work.run.cancelled
    assert card.animation_data is None or card.animation_data.action is None
    assert card.face_controls.named.jawOpen == controls
    assert _contents() == before  # no action, no plane, no clip image


def test_capture_from_video_keys_the_rig_in_one_undo_step(addon, card) -> None:
    name = card.name
    bpy.ops.ed.undo_push(message="Original")
    assert _capture(filepath=addon.video) == {"FINISHED"}
    ob = bpy.data.objects[name]
    curves = fcurves_by_path(ob)
    expected = addon.expected["channels"]
    roll = keys(curves["face_rig.rotation.c002"])
    frames = list(range(SCENE_START + OFFSET, SCENE_START + OFFSET + FRAMES))
    assert roll[:, 0].tolist() == frames  # every frame, from the scene start + offset
    np.testing.assert_allclose(roll[:, 1], [v for _, v, _ in expected["rotation.z"]["keys"]],
                               atol=1e-6)
    # The clip turns by 2° per frame: the roll follows it, by 14° in all (in-plane, sign by
    # the image's y-down axis).
    assert abs(abs(roll[-1, 1] - roll[0, 1]) - np.radians(14.0)) < np.radians(3.0)
    controls = [n for n in expected if "." not in n]
    assert controls and all(f"face_controls.named.{n}" in curves for n in controls)
    assert ob.animation_data.action.name == f"{name} capture"
    assert bpy.ops.ed.undo() == {"FINISHED"}
    restored = bpy.data.objects[name]
    assert restored.animation_data is None or restored.animation_data.action is None
    assert f"{name} Video" not in bpy.data.objects  # the plane went with the same step


def _clip_frames(video: Path, side: int) -> np.ndarray:
    """The clip's frames as 8-bit RGB [FRAMES, side, side, 3], box-filtered down."""
    frames = []
    for i in range(FRAMES):
        with Image.open(video.parent / f"shot.{FIRST_NUMBER + i:04d}.png") as png:
            frames.append(np.asarray(png.convert("RGB").resize((side, side), Image.BOX)))
    return np.stack(frames).astype(int)


def _look_at_plane(plane: bpy.types.Object, side: int) -> None:
    """An orthographic camera framing exactly the plane (it faces -Y), Cycles on the CPU
    with a box filter of under a pixel: the render shows the plane's texels at ``side`` px."""
    scene = bpy.context.scene
    bpy.context.view_layer.update()
    centre = plane.matrix_world.translation
    width = plane.dimensions.x
    camera = bpy.data.objects.new("Plane Camera", bpy.data.cameras.new("Plane Camera"))
    scene.collection.objects.link(camera)
    camera.data.type = "ORTHO"
    camera.data.ortho_scale = width
    camera.location = (centre.x, centre.y - 2.0, centre.z)
    camera.rotation_euler = (np.pi / 2, 0.0, 0.0)
    scene.camera = camera
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", 1
    scene.cycles.pixel_filter_type, scene.cycles.filter_width = "BOX", 0.01
    scene.render.resolution_x = scene.render.resolution_y = side
    scene.render.resolution_percentage = 100


def test_the_reference_plane_follows_the_timeline(addon, card, tmp_path: Path) -> None:
    assert _capture(filepath=addon.video) == {"FINISHED"}
    plane = bpy.data.objects[f"{card.name} Video"]
    assert plane.parent == card
    node = plane.active_material.node_tree.nodes["NFR Face"]
    image, user = node.image, node.image_user
    assert image.source == "SEQUENCE" and Path(image.filepath) == addon.video
    assert (user.frame_start, user.frame_duration) == (SCENE_START + OFFSET, FRAMES)
    assert user.use_auto_refresh and not user.use_cyclic
    # What a render shows on the plane at a scene frame is the clip frame whose keys sit on
    # that scene frame (closer to it than to any other frame of the clip).
    side = 64
    clip = _clip_frames(addon.video, side)
    _look_at_plane(plane, side)
    for step in (0, 3, FRAMES - 1):
        frame = SCENE_START + OFFSET + step
        assert _plane_shows(plane, clip, frame, tmp_path / f"plane_{step}.png") == step
    # A second capture replaces the plane instead of stacking another.
    assert _capture(filepath=addon.video, action_mode="NEW") == {"FINISHED"}
    assert [o.name for o in bpy.data.objects if o.name.startswith(f"{card.name} Video")] == [
        f"{card.name} Video"]


def _plane_shows(plane: bpy.types.Object, clip: np.ndarray, frame: int, out: Path) -> int:
    """The index of the clip frame a render of the plane at scene ``frame`` is closest to."""
    bpy.context.scene.frame_set(frame)
    bpy.context.scene.render.filepath = str(out)
    bpy.ops.render.render(write_still=True)
    with Image.open(out) as png:
        shown = np.asarray(png.convert("RGB")).astype(int)
    errors = np.abs(clip - shown).mean(axis=(1, 2, 3))
    index = int(np.argmin(errors))
    assert errors[index] < 0.6 * np.delete(errors, index).min(), errors  # not a near miss
    return index


def test_a_video_file_plays_as_a_movie_and_the_plane_saves_and_reopens(
    addon, card, tmp_path: Path
) -> None:
    assert _capture(filepath=addon.movie, frame_offset=0) == {"FINISHED"}
    name = card.name
    path = tmp_path / "captured.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.open_mainfile(filepath=str(path))
    ob = bpy.data.objects[name]
    assert ob.animation_data.action.name == f"{name} capture"
    assert keys(fcurves_by_path(ob)["face_rig.rotation.c002"])[:, 0].tolist() == list(
        range(SCENE_START, SCENE_START + FRAMES))
    plane = bpy.data.objects[f"{name} Video"]
    node = plane.active_material.node_tree.nodes["NFR Face"]
    image, user = node.image, node.image_user
    assert image.source == "MOVIE"
    assert Path(bpy.path.abspath(image.filepath)).resolve() == addon.movie.resolve()
    assert image.frame_duration == FRAMES
    assert (user.frame_start, user.frame_duration, user.frame_offset) == (SCENE_START, FRAMES, 0)
    side = 64
    clip = _clip_frames(addon.video, side)
    _look_at_plane(plane, side)
    for step in (1, FRAMES - 2):
        assert _plane_shows(plane, clip, SCENE_START + step, tmp_path / f"m{step}.png") == step


def _srgb8(linear: np.ndarray) -> np.ndarray:
    """Blender RGBA pixels (linear, bottom row first) -> 8-bit sRGB RGB, top row first."""
    side = int(round(np.sqrt(linear.size // 4)))
    rgb = np.clip(linear.reshape(side, side, 4)[::-1, :, :3], 0.0, 1.0).astype(np.float64)
    encoded = np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * rgb ** (1 / 2.4) - 0.055)
    return np.round(encoded * 255).astype(int)


def test_a_background_render_of_a_captured_frame_equals_the_interactive_one(
    addon, card, tmp_path: Path
) -> None:

    live = addon.live
    assert _capture(filepath=addon.video) == {"FINISHED"}
    scene = bpy.context.scene
    scene.render.engine = "BLENDER_WORKBENCH"
    face = bpy.data.images[card.face_rig.image_name]
    interactive = {}
    for frame in (SCENE_START + OFFSET, SCENE_START + OFFSET + FRAMES - 1):
        with live.paused():  # the interactive path: a frame change asks for a preview
            scene.frame_set(frame)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        assert live.request_update(card, depsgraph) is not None
        poll_until(live, lambda: not live._requests)
        interactive[frame] = pixels(face)
    first, last = interactive
    assert not np.array_equal(interactive[first], interactive[last])  # the capture moves it
    for frame, shown in interactive.items():
        scene.frame_set(frame)
        out = tmp_path / f"frame_{frame}.png"
        assert bpy.ops.nfr.render_portrait(filepath=str(out)) == {"FINISHED"}
        with Image.open(out) as png:
            rendered = np.asarray(png.convert("RGB")).astype(int)
        expected = _srgb8(shown)
        assert rendered.shape == expected.shape == (32, 32, 3)
        assert np.abs(rendered - expected).max() <= TOLERANCE, f"frame {frame}"
