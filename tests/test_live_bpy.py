"""The live neural face on the real bpy module, with the built zip installed: Add Face Rig,
the co-registered head, slider -> worker -> texture, keyframed faces (StyleGAN2 SeFa sliders
and DiscoFaceGAN expression coefficients) equal to direct engine calls, save/reopen, a
killed worker, and the bake to an image sequence.

Timers never run in the bpy module, so the tests call ``live.poll_once`` themselves; the bpy
module is background mode, so frame changes render synchronously (the farm path).

No torch in this process: the tiny models, the face model, the RigNet and every reference
image come from the worker's Python (fixtures.worker_python), rendered there by the engine's
own backends, so the file runs on every Blender version of the matrix.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from fixtures import worker_python
from fixtures.bpy_exit import SCRIPT_END
from fixtures.live_addon import (
    MODULE,
    TINY_STYLEGAN2,
    addon_utils,
    installed_extension,
    pixels,
    poll_until,
    preferences,
)
from neural_face_rig.contract.state import RigState
from neural_face_rig.live import FAILED_FRAME_EXIT_CODE
from neural_face_rig.rig.camera import CAMERA_256
from neural_face_rig.rig.params import RigParams
from PIL import Image


@pytest.fixture(scope="module")
def addon(tmp_path_factory: pytest.TempPathFactory):
    models = tmp_path_factory.mktemp("models")
    face_model = worker_python.write_face_model(models / "BFM_model_front.mat", seed=3)
    paths = SimpleNamespace(**worker_python.write_tiny_models(models))
    with installed_extension(tmp_path_factory.mktemp("dist")) as module:
        prefs = preferences()
        worker_python.configure(prefs)
        prefs.stylegan2_generator_path = str(paths.stylegan2)
        prefs.dfg_generator_path = str(paths.dfg)
        prefs.face_model_path = str(face_model)
        prefs.device = "CPU"
        yield SimpleNamespace(live=module("live"), rig_props=module("rig_props"),
                              face_model=face_model, paths=paths,
                              stylerig=train_stylerig(paths.stylegan2, models / "trained"),
                              renders=tmp_path_factory.mktemp("references"))


def train_stylerig(generator: Path, out: Path) -> Path:
    """`nfr train dfr` then `nfr train rignet` at tiny scale for ``generator`` (the worker's
    Python's ``nfr``): the folder the trainer wrote its stylerig-<sha16>.safetensors + .json
    into, names untouched."""
    nfr = Path(worker_python.WORKER_PYTHON).with_name("nfr")
    common = ["--weights", str(generator), "--steps", "4", "--batch", "4", "--device", "cpu",
              "--no-amp", "--cache-images", "--no-progress", "--threads", "1"]
    for command in (
        ["dfr", "--out", str(out / "dfr"), "--face-model", "synthetic:tiny", "--samples", "16",
         "--camera-size", "32", "--hidden", "16", "--landmarks", "none"],
        ["rignet", "--out", str(out / "rig"), "--dfr", str(out / "dfr" / "dfr.safetensors"),
         "--latent", "4", "--hidden", "16"],
    ):
        subprocess.run([str(nfr), "train", command[0], *common, *command[1:]], check=True,
                       capture_output=True, timeout=300)
    return out / "rig"


def add_rig(addon, backend: str = "stylegan2") -> bpy.types.Object:
    """A fresh file with one rig, its first live face shown."""
    bpy.ops.wm.read_homefile(use_empty=True)
    assert bpy.ops.nfr.add_rig(backend=backend) == {"FINISHED"}
    card = bpy.context.object
    card.face_rig.preview_resolution = "FULL"  # the tiny models are 32 px
    card.face_rig.psi = 1.0 if backend == "stylegan2" else 0.7
    image = bpy.data.images[card.face_rig.image_name]
    poll_until(addon.live, lambda: addon.live._shown.get(image.name) and not addon.live._requests)
    return card


_REFERENCES = itertools.count()


def engine_pixels(addon, state, *, stylegan2: Path | None = None,
                  srgb_bits: int | None = None) -> np.ndarray:
    """What the engine's own backend (``state.backend``) renders for ``state``, outside
    Blender and the worker (in the worker's Python): Blender pixels, or sRGB codes
    [H, W, 3] with ``srgb_bits``."""
    files = {"stylegan2": stylegan2 or addon.paths.stylegan2, "dfg": addon.paths.dfg,
             "stylerig": addon.stylerig}
    out = addon.renders / f"reference_{next(_REFERENCES)}.npy"
    return worker_python.engine_render(state, files, out, srgb_bits)


def direct_pixels(addon, card, *, depsgraph=None, final: bool = False,
                  srgb_bits: int | None = None) -> np.ndarray:
    """What the engine renders for the rig's state, as Blender pixels (or sRGB codes)."""
    state = addon.rig_props.rig_state(card, depsgraph=depsgraph, final=final)
    return engine_pixels(addon, state, srgb_bits=srgb_bits)


def face(card) -> bpy.types.Image:
    return bpy.data.images[card.face_rig.image_name]


def test_add_rig_builds_a_card_that_fills_the_portrait_camera(addon) -> None:
    card = add_rig(addon)
    scene = bpy.context.scene
    assert card.face_rig.is_rig and card.face_rig.backend == "stylegan2"
    image = face(card)
    assert image.is_float and image.colorspace_settings.name == "Linear Rec.709"
    assert tuple(image.size) == (32, 32)  # the model's full size
    nodes = card.active_material.node_tree.nodes
    assert nodes["NFR Face"].image == image and nodes["NFR Face"].interpolation == "Closest"
    emission = next(n for n in nodes if n.type == "EMISSION")
    assert emission.inputs["Strength"].default_value == 1.0
    camera = scene.camera
    assert camera.parent == card
    assert camera.data.lens == pytest.approx(CAMERA_256.focal / CAMERA_256.size * 36.0)
    assert scene.view_settings.view_transform == "Standard"
    assert (scene.render.resolution_x, scene.render.resolution_y) == (32, 32)
    corners = [card.matrix_world @ v.co for v in card.data.vertices]
    frame = [tuple(world_to_camera_view(scene, camera, corner))[:2] for corner in corners]
    assert np.allclose(frame, [(0, 0), (1, 0), (1, 1), (0, 1)], atol=1e-5)
    head = bpy.data.objects[f"{card.name} Head"]
    assert head.parent == card and head.hide_render and head.display_type == "WIRE"


def test_head_projects_where_the_generator_camera_puts_the_face(addon) -> None:
    """Co-registration: the head seen through the portrait camera lands on the rig's own
    CAMERA_256 projection (DiscoFaceGAN's crop) for the same shape and rotation."""
    card = add_rig(addon)
    params = RigParams.neutral()
    params.identity[1], params.expression[3] = -1.0, 1.5
    params.rotation[:] = (0.1, 0.3, -0.05)
    addon.rig_props.set_rig_params(card, params)
    scene = bpy.context.scene
    depsgraph = bpy.context.evaluated_depsgraph_get()
    depsgraph.update()
    head = bpy.data.objects[f"{card.name} Head"].evaluated_get(depsgraph)
    mesh = head.to_mesh()
    seen = np.array([tuple(world_to_camera_view(scene, scene.camera, head.matrix_world @ v.co))
                     for v in mesh.vertices])[:, :2]
    head.to_mesh_clear()

    expected = worker_python.project_head(addon.face_model, params.to_vector())
    assert np.abs(seen - expected).max() < 1e-4


def test_a_slider_change_reaches_the_texture_through_the_worker(addon) -> None:
    card = add_rig(addon)
    image = face(card)
    before = pixels(image)
    assert np.array_equal(before, direct_pixels(addon, card))
    requests = len(addon.live.REQUEST_SECONDS)
    card.face_rig.seed = 11  # the update callback sends the request
    assert len(addon.live.REQUEST_SECONDS) == requests + 1  # its main-thread time, timed
    poll_until(addon.live, lambda: not np.array_equal(pixels(image), before)
               and not addon.live._requests)
    assert np.array_equal(pixels(image), direct_pixels(addon, card))
    assert addon.live.POLL_SECONDS and "32 px in" in addon.live.status_text(card)
    stats = addon.live.poll_statistics()
    assert 0 < stats["request_p99_ms"] <= stats["request_max_ms"]
    assert 0 < stats["poll_p95_ms"] <= stats["poll_p99_ms"] <= stats["poll_max_ms"]


def test_frame_5_shows_the_face_of_the_interpolated_sefa_value(addon) -> None:
    card = add_rig(addon)
    slider = addon.rig_props.add_sefa_slider(card, direction=1, layer_start=0, layer_end=3)
    for frame, value in ((1, 0.0), (10, 4.0)):
        slider.value = value
        card.keyframe_insert("face_rig.sefa_sliders[0].value", frame=frame)
    scene = bpy.context.scene
    scene.frame_set(1)
    at_1 = pixels(face(card))
    scene.frame_set(5)  # background mode: rendered synchronously by the frame handler
    depsgraph = bpy.context.evaluated_depsgraph_get()
    value = addon.rig_props.rig_state(card, depsgraph=depsgraph).sefa[0].value
    assert 0.0 < value < 4.0
    at_5 = pixels(face(card))
    assert not np.array_equal(at_5, at_1)
    assert np.array_equal(at_5, direct_pixels(addon, card, depsgraph=depsgraph, final=True))


def test_discofacegan_expression_keyframes_drive_the_face(addon) -> None:
    card = add_rig(addon, "discofacegan")
    for frame, value in ((1, -2.0), (10, 2.0)):
        card.face_rig.expression.c000 = value
        card.keyframe_insert("face_rig.expression.c000", frame=frame)
    scene = bpy.context.scene
    scene.frame_set(1)
    at_1 = pixels(face(card))
    scene.frame_set(5)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    assert -2.0 < card.evaluated_get(depsgraph).face_rig.expression.c000 < 2.0
    at_5 = pixels(face(card))
    assert not np.array_equal(at_5, at_1)
    assert np.array_equal(at_5, direct_pixels(addon, card, depsgraph=depsgraph, final=True))


def test_save_and_reopen_keeps_the_face(addon, tmp_path: Path) -> None:
    card = add_rig(addon)
    card.face_rig.seed = 3
    poll_until(addon.live, lambda: not addon.live._requests and addon.live._shown[face(card).name])
    shown = pixels(face(card))
    path = tmp_path / "rig.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(path))
    card = bpy.data.objects["FaceRig"]
    assert card.face_rig.seed == 3 and card.face_rig.is_rig
    image = face(card)
    assert card.active_material.node_tree.nodes["NFR Face"].image == image
    assert np.array_equal(pixels(image), shown)  # packed as float EXR: bit for bit


def test_opening_a_file_with_a_rig_preloads_its_model(
    addon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = addon.live
    card = add_rig(addon)
    name, model = face(card).name, addon.paths.stylegan2.name
    path = tmp_path / "preload.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    live.stop_worker()
    shown: list[str] = []
    note_progress = live._note_progress

    def recorded(event) -> None:  # the status line after each progress report
        note_progress(event)
        shown.append(live._status[name])

    monkeypatch.setattr(live, "_note_progress", recorded)
    bpy.ops.wm.open_mainfile(filepath=str(path))
    assert live._client is not None and live._client.is_running()  # started by the load
    card = bpy.data.objects["FaceRig"]
    poll_until(live, lambda: "model loaded (32 px)" in live.status_text(card))
    # The preload says what it is doing: reading the file, then its warm-up render.
    assert len(shown) == 2, shown
    assert shown[0].startswith(f"loading {model} (") and shown[0].endswith("(step 1 of 2)")
    assert shown[1] == "first synthesis (step 2 of 2)"


def test_switching_models_keeps_the_worker(addon, tmp_path: Path) -> None:
    live = addon.live
    card = add_rig(addon)
    first_face, pid = pixels(face(card)), live._client.pid
    other = worker_python.write_stylegan2(tmp_path, seed=8)
    card.face_rig.model_path = str(other)
    poll_until(live, lambda: not live._requests and live._shown.get(face(card).name))
    assert live._client.pid == pid
    state = addon.rig_props.rig_state(card)
    expected = engine_pixels(addon, state, stylegan2=other)
    assert np.array_equal(pixels(face(card)), expected)
    assert not np.array_equal(expected, first_face)


def test_a_killed_worker_is_reported_and_replaced(addon) -> None:
    live = addon.live
    card = add_rig(addon)
    first = live._client.pid
    os.kill(first, signal.SIGKILL)
    poll_until(live, lambda: "stopped unexpectedly" in live.status_text(card))
    before = pixels(face(card))
    card.face_rig.seed = 21  # the next update starts a new worker
    poll_until(live, lambda: not np.array_equal(pixels(face(card)), before)
               and not live._requests)
    assert live._client.pid not in (None, first) and live._client.crashes == 1
    assert np.array_equal(pixels(face(card)), direct_pixels(addon, card))


def test_bake_writes_a_sequence_that_the_card_shows_without_a_worker(
    addon, tmp_path: Path
) -> None:
    live = addon.live
    card = add_rig(addon)
    slider = addon.rig_props.add_sefa_slider(card, direction=0, layer_start=0, layer_end=5)
    for frame, value in ((1, -3.0), (3, 3.0)):
        slider.value = value
        card.keyframe_insert("face_rig.sefa_sliders[0].value", frame=frame)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 3
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "bake.blend"))
    assert bpy.ops.nfr.bake_face() == {"FINISHED"}

    files = sorted((tmp_path / "face_bake" / "FaceRig").iterdir())
    assert [f.name for f in files] == ["face_0001.png", "face_0002.png", "face_0003.png"]
    scene.frame_set(2)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    with Image.open(files[1]) as png:
        baked = np.asarray(png.convert("RGB"))  # PIL reads 16-bit RGB as 8 bits
    expected = direct_pixels(addon, card, depsgraph=depsgraph, final=True, srgb_bits=8)
    assert np.abs(baked.astype(int) - expected).max() <= 1
    node = card.active_material.node_tree.nodes["NFR Face"]
    assert node.image.source == "SEQUENCE" and live.is_baked(card)
    assert node.image.filepath == "//face_bake/FaceRig/face_0001.png"
    assert "Baked sequence" in live.status_text(card)

    live.stop_worker()
    scene.frame_set(3)  # baked: the frame handler needs no worker
    assert live._client is None
    assert bpy.ops.nfr.use_live_face() == {"FINISHED"}
    assert node.image == face(card) and not live.is_baked(card)




def test_a_frame_whose_face_fails_turns_magenta(addon, tmp_path: Path) -> None:
    """Background mode (farms): a worker error must not leave the last frame's face."""
    live = addon.live
    card = add_rig(addon)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a model")
    with live.paused():
        card.face_rig.model_path = str(broken)
    bpy.context.scene.frame_set(2)
    image = pixels(face(card)).reshape(-1, 4)
    assert np.array_equal(np.unique(image, axis=0), [[1.0, 0.0, 1.0, 1.0]])
    assert "frame 2" in live._status[face(card).name]
    assert "broken.safetensors" in live._status[face(card).name]

def test_the_timer_stops_when_there_is_nothing_to_do(addon) -> None:
    card = add_rig(addon)
    assert not addon.live._requests
    assert addon.live.poll_once() is None  # a timer function returning None is unregistered
    card.face_rig.seed = 4
    assert bpy.app.timers.is_registered(addon.live.poll_once)  # a request registers it again
    poll_until(addon.live, lambda: not addon.live._requests)


def test_undo_re_renders_the_face(addon) -> None:
    live = addon.live
    card = add_rig(addon)
    bpy.ops.ed.undo_push(message="before")
    card.face_rig.seed = 13
    poll_until(live, lambda: not live._requests and live._shown.get(face(card).name))
    at_13 = pixels(face(card))
    bpy.ops.ed.undo_push(message="seed 13")
    assert bpy.ops.ed.undo() == {"FINISHED"}
    card = bpy.data.objects["FaceRig"]  # undo replaced the datablocks
    assert card.face_rig.seed == 0
    poll_until(live, lambda: not live._requests and live._shown.get(face(card).name))
    assert not np.array_equal(pixels(face(card)), at_13)
    assert np.array_equal(pixels(face(card)), direct_pixels(addon, card))


def test_background_frames_leave_the_saved_node_settings_alone(addon) -> None:
    card = add_rig(addon)
    card.face_rig.seed = 1
    card.keyframe_insert("face_rig.seed", frame=1)
    card.face_rig.seed = 9
    card.keyframe_insert("face_rig.seed", frame=9)
    node = card.active_material.node_tree.nodes["NFR Face"]
    before = node.extension
    for frame in (2, 3, 4):
        bpy.context.scene.frame_set(frame)  # background mode: each renders the final face
        assert node.extension == before


def test_a_frozen_worker_is_flagged(addon) -> None:
    live = addon.live
    card = add_rig(addon)
    client = live._client
    client.frozen_after = 1.0
    os.kill(client.pid, signal.SIGSTOP)
    try:
        card.face_rig.seed = 17
        # Flagged, and nothing keeps waiting for a frozen worker.
        poll_until(live, lambda: "not responding" in live.status_text(card)
                   and not live._requests, timeout=20)
    finally:
        os.kill(client.pid, signal.SIGCONT)
        client.frozen_after = 20.0
    card.face_rig.seed = 18  # the next update replaces the frozen worker
    poll_until(live, lambda: not live._requests and live._shown.get(face(card).name))
    assert np.array_equal(pixels(face(card)), direct_pixels(addon, card))


FARM_SCRIPT = """
import sys
import bpy
import addon_utils
import numpy as np
addon_utils.enable("neural_face_rig", default_set=True)
bpy.ops.wm.read_homefile(use_empty=True)
bpy.context.preferences.addons["neural_face_rig"].preferences.models_dir = sys.argv[2]
scene = bpy.context.scene
scene.render.engine = "BLENDER_WORKBENCH"
scene.render.resolution_x = scene.render.resolution_y = 8
scene.render.filepath = sys.argv[3]
bpy.ops.object.camera_add()
scene.camera = bpy.context.object
bpy.ops.mesh.primitive_plane_add()
rig = bpy.context.object
rig.face_rig.is_rig = True
rig.face_rig.image_name = "Face"
rig.face_rig.failure_placeholder = sys.argv[1] == "placeholder"
image = bpy.data.images.new("Face", 4, 4, alpha=True, float_buffer=True)
bpy.ops.render.render(write_still=True)
values = np.empty(64, np.float32)
image.pixels.foreach_get(values)
print("RENDERED", np.unique(values.reshape(-1, 4), axis=0).tolist())
""" + SCRIPT_END


@pytest.mark.parametrize("mode", ["fail", "placeholder"])
def test_a_farm_frame_without_its_model_fails_the_render(tmp_path: Path, mode: str) -> None:
    """``blender -b`` must not report success for a frame whose face is wrong: the rig has
    no model on this node (empty models folder), so the render stops with the reason and a
    non-zero exit, unless the rig opts into magenta placeholders."""
    (tmp_path / "models").mkdir()
    result = subprocess.run(
        [sys.executable, "-c", FARM_SCRIPT, mode, str(tmp_path / "models"),
         str(tmp_path / "frame.png")],
        capture_output=True, text=True, timeout=120,
    )
    if mode == "fail":
        assert result.returncode == FAILED_FRAME_EXIT_CODE, result.stderr[-2000:]
        assert "render failed" in result.stderr and "No stylegan2 generator" in result.stderr
        assert "RENDERED" not in result.stdout
    else:
        assert result.returncode == 0, result.stderr[-2000:]
        assert "RENDERED [[1.0, 0.0, 1.0, 1.0]]" in result.stdout


def test_a_stylerig_face_starts_at_its_estimate_and_edits_from_there(addon) -> None:
    """Preferences (the trainer's own file, found in the models folder) -> worker -> pixels:
    the sliders start at the DFR's reading of the base face, which then renders unedited;
    a slider edits from there; Reset returns to the estimate."""
    live, prefs = addon.live, preferences()
    prefs.models_dir, prefs.rignet_path = str(addon.stylerig), ""
    try:
        card = add_rig(addon, "stylerig")
        poll_until(live, lambda: "nfr_rig_estimate" in card and not live._requests
                   and not live._estimating and live._shown.get(face(card).name))
        estimate = RigParams.from_vector(np.asarray(card["nfr_rig_estimate"], np.float32))
        rig = addon.rig_props.read_rig_params(card)
        for group in ("expression", "rotation", "illumination"):
            assert np.array_equal(getattr(rig, group), getattr(estimate, group)), group
        assert not np.array_equal(estimate.expression, np.zeros(64, np.float32))
        base = pixels(face(card))
        assert np.array_equal(base, direct_pixels(addon, card))
        unedited = engine_pixels(addon, RigState(backend="stylegan2", seed=card.face_rig.seed,
                                                 psi=card.face_rig.psi))
        assert np.array_equal(base, unedited)  # no edit asked: the base face

        card.face_rig.expression.c000 = float(estimate.expression[0]) + 2.0
        poll_until(live, lambda: not live._requests and live._shown.get(face(card).name))
        assert not np.array_equal(pixels(face(card)), base)
        assert np.array_equal(pixels(face(card)), direct_pixels(addon, card))

        bpy.context.view_layer.objects.active = card
        assert bpy.ops.nfr.reset_group(group="expression") == {"FINISHED"}
        assert card.face_rig.expression.c000 == estimate.expression[0]
        poll_until(live, lambda: not live._requests and live._shown.get(face(card).name))
        assert np.array_equal(pixels(face(card)), base)
    finally:
        prefs.models_dir = ""


def test_a_discofacegan_estimate_is_its_own_coefficients(addon) -> None:
    live = addon.live
    card = add_rig(addon, "discofacegan")
    card.face_rig.expression.c001 = 0.75
    card.face_rig.seed = 2  # a new base face: its estimate is asked for again
    poll_until(live, lambda: "nfr_rig_estimate" in card and not live._requests
               and not live._estimating)
    estimate = np.asarray(card["nfr_rig_estimate"], np.float32)
    assert np.array_equal(estimate, addon.rig_props.read_rig_params(card).to_vector())
    card.face_rig.expression.c001 = -1.0
    bpy.context.view_layer.objects.active = card
    assert bpy.ops.nfr.reset_group(group="expression") == {"FINISHED"}
    assert card.face_rig.expression.c001 == pytest.approx(0.75)


def test_sefa_directions_are_computed_by_the_worker(addon) -> None:
    live = addon.live
    card = add_rig(addon)
    addon.rig_props.add_sefa_slider(card, direction=0, layer_start=2, layer_end=4)
    assert live.compute_sefa_directions(card) is not None
    poll_until(live, lambda: live.sefa_directions(card) is not None)
    assert live.sefa_directions(card) == ((2, 3, 4), TINY_STYLEGAN2.w_dim)
    assert "16 directions" in live.status_text(card)


def test_disabling_the_extension_stops_the_worker(addon) -> None:
    """Runs last: the module fixture's teardown finds the extension already disabled."""
    card = add_rig(addon)
    assert card.face_rig.is_rig
    worker = addon.live._client._proc
    assert worker.poll() is None
    addon_utils.disable(MODULE, default_set=True)
    assert worker.poll() is not None  # stopped (and reaped) by unregister, not orphaned
    assert not bpy.app.timers.is_registered(addon.live.poll_once)
    assert addon.live.on_frame_change not in bpy.app.handlers.frame_change_post
