"""The artist's checks of the add-on in real Blender (bpy module, the built zip installed, the
worker running tiny generators): copies of a rig, a rig without model files, preferences
across disable/enable, a second rig, renders of an unsaved file, resolution menus, colour
warnings, bakes that crash or are interrupted, panels that read no file while redrawing, and
the model files a .blend records for a farm node.

The worker runs in fixtures.worker_python.WORKER_PYTHON (the External Python in the
torch-free Blender-version venvs).
"""

from __future__ import annotations

import builtins
import hashlib
import os
import shutil
import signal
import types
from pathlib import Path
from types import SimpleNamespace

import bpy
import numpy as np
import pytest
from fixtures import worker_python
from fixtures.live_addon import (
    MODULE,
    addon_utils,
    installed_extension,
    pixels,
    poll_until,
    preferences,
)

PATH_SETTINGS = ("stylegan2_generator_path", "dfg_generator_path", "dfg_average_w_path",
                 "dfg_vae_dir", "rignet_path", "face_model_path", "models_dir")


@pytest.fixture(scope="module")
def addon(tmp_path_factory: pytest.TempPathFactory):
    models = tmp_path_factory.mktemp("models")
    paths = worker_python.write_tiny_models(models)
    with installed_extension(tmp_path_factory.mktemp("dist")) as module:
        prefs = preferences()
        worker_python.configure(prefs)
        prefs.device = "CPU"
        yield SimpleNamespace(module=module, live=module("live"), models=models, paths=paths,
                              empty=tmp_path_factory.mktemp("no_models"))


@pytest.fixture
def prefs(addon):
    """Preferences with no model file set and an empty models folder (a fresh install)."""
    bpy.ops.wm.read_homefile(use_empty=True)
    prefs = preferences()
    for name in PATH_SETTINGS:
        setattr(prefs, name, "")
    prefs.models_dir = str(addon.empty)
    return prefs


def _stylegan2_rig(addon, prefs) -> bpy.types.Object:
    prefs.stylegan2_generator_path = str(addon.paths["stylegan2"])
    assert bpy.ops.nfr.add_rig(backend="stylegan2") == {"FINISHED"}
    card = bpy.context.object
    _shown(addon, card)
    return card


def _shown(addon, card) -> None:
    live = addon.live
    poll_until(live, lambda: live._shown.get(card.face_rig.image_name) and not live._requests)


def _face(card) -> np.ndarray:
    return pixels(bpy.data.images[card.face_rig.image_name])


# -- copies of a rig ----------------------------------------------------------------------------


@pytest.mark.parametrize("linked", [False, True], ids=["shift_d", "alt_d"])
def test_a_duplicated_rig_gets_its_own_face(addon, prefs, linked: bool) -> None:
    original = _stylegan2_rig(addon, prefs)
    before = _face(original)
    for ob in bpy.context.selected_objects:
        ob.select_set(False)
    original.select_set(True)
    bpy.context.view_layer.objects.active = original
    assert bpy.ops.object.duplicate(linked=linked) == {"FINISHED"}
    copy = bpy.context.object
    assert copy != original and copy.face_rig.is_rig
    assert copy.face_rig.image_name != original.face_rig.image_name
    assert copy.active_material != original.active_material
    node = copy.active_material.node_tree.nodes["NFR Face"]
    assert node.image.name == copy.face_rig.image_name
    assert original.active_material.node_tree.nodes["NFR Face"].image.name == (
        original.face_rig.image_name)
    np.testing.assert_array_equal(_face(copy), before)  # starts as the original's face

    copy.face_rig.seed = 11
    _shown(addon, copy)
    assert np.abs(_face(copy) - before).max() > 0.05  # the copy changed ...
    np.testing.assert_array_equal(_face(original), before)  # ... the original did not


# -- no model files -----------------------------------------------------------------------------


def test_add_face_rig_without_model_files_adds_a_rig_that_says_what_is_missing(
    addon, prefs, capfd
) -> None:
    assert bpy.ops.nfr.add_rig() == {"FINISHED"}
    card = bpy.context.object
    out = capfd.readouterr().out
    assert "No StyleGAN2 generator set." in out and "ValueError" not in out
    assert card.face_rig.is_rig and card.face_rig.model_path == ""
    assert "No StyleGAN2 generator set." in addon.live.status_text(card)
    assert len(card.face_rig.model_files) == 0


def test_model_paths_survive_disable_and_enable(addon, prefs) -> None:
    prefs.stylegan2_generator_path = str(addon.paths["stylegan2"])
    prefs.dfg_generator_path = str(addon.paths["dfg"])
    prefs.device = "CUDA"
    addon_utils.disable(MODULE, default_set=True)
    addon_utils.enable(MODULE, default_set=True)
    again = preferences()
    assert again.stylegan2_generator_path == str(addon.paths["stylegan2"])
    assert again.dfg_generator_path == str(addon.paths["dfg"])
    assert again.models_dir == str(addon.empty)
    assert again.device == "CUDA"
    again.device = "CPU"
    worker_python.configure(again)
    addon.live = addon.module("live")  # the enable re-imported the modules


# -- a second rig -------------------------------------------------------------------------------


def test_a_second_rig_goes_beside_the_first_and_keeps_the_scene_settings(
    addon, prefs, capfd
) -> None:
    first = _stylegan2_rig(addon, prefs)
    scene = bpy.context.scene
    assert scene.camera.parent == first  # the first rig set the portrait up
    # The artist's own choices after that:
    scene.render.resolution_x, scene.render.resolution_y = 640, 360
    scene.cycles.samples = 77
    scene.view_settings.view_transform = "Filmic" if bpy.app.version < (4, 0, 0) else "AgX"
    own_camera = bpy.data.objects.new("Shot", bpy.data.cameras.new("Shot"))
    scene.collection.objects.link(own_camera)
    scene.camera = own_camera
    capfd.readouterr()

    assert bpy.ops.nfr.add_rig(backend="stylegan2") == {"FINISHED"}
    second = bpy.context.object
    assert "camera and render settings are unchanged" in capfd.readouterr().out
    assert (scene.render.resolution_x, scene.render.resolution_y) == (640, 360)
    assert scene.cycles.samples == 77
    assert scene.view_settings.view_transform == "AgX"
    assert scene.camera == own_camera
    card_size = first.dimensions.x
    assert (second.location - first.location).length >= card_size  # not on top
    assert second.children and second.children[0].type == "CAMERA"  # its own camera to use


# -- renders of an unsaved file -----------------------------------------------------------------


def test_render_portrait_of_an_unsaved_file_writes_into_the_user_folder(
    addon, prefs, tmp_path: Path, monkeypatch, capfd
) -> None:
    _stylegan2_rig(addon, prefs)
    assert not bpy.data.filepath
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    bpy.context.scene.render.engine = "BLENDER_WORKBENCH"
    capfd.readouterr()
    assert bpy.ops.nfr.render_portrait() == {"FINISHED"}
    out = capfd.readouterr().out
    assert list(cwd.iterdir()) == []  # nothing in the working directory
    renders = Path(bpy.utils.extension_path_user(MODULE, path="renders"))
    assert (renders / "render" / "portrait.png").is_file()
    assert str(renders / "render" / "portrait.png") in out
    assert "not saved" in out


def test_render_reports_name_a_colour_setting_that_changes_the_face(addon, prefs, tmp_path,
                                                                     capfd) -> None:
    _stylegan2_rig(addon, prefs)
    scene = bpy.context.scene
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.view_settings.view_transform = "AgX"
    capfd.readouterr()
    assert bpy.ops.nfr.render_portrait(filepath=str(tmp_path / "p.png")) == {"FINISHED"}
    out = capfd.readouterr().out
    assert "Warning" in out and "View transform is 'AgX'" in out


# -- resolution menus ---------------------------------------------------------------------------


def test_resolution_menus_offer_only_what_the_model_has(addon, prefs) -> None:
    card = _stylegan2_rig(addon, prefs)  # a 32 px generator
    face_rig = card.face_rig
    assert face_rig.model_resolution == 32
    for name in ("preview_resolution", "render_resolution"):
        with pytest.raises(TypeError, match="not found"):
            setattr(face_rig, name, "256")
        setattr(face_rig, name, "32")
    state = addon.module("rig_props").rig_state(card, final=True)
    assert state.resolution in (None, 32)


def test_resolution_menu_items(addon) -> None:
    properties = addon.module("properties")
    items = properties.resolution_items(SimpleNamespace(model_resolution=256), None)
    assert [item[0] for item in items] == ["FULL", "256", "128", "64", "32"]
    assert items[0][1] == "Full (256 px)"
    unknown = properties.resolution_items(SimpleNamespace(model_resolution=0), None)
    assert [item[0] for item in unknown] == [item[0] for item in properties.RESOLUTION_ITEMS]
    # Saved numbers stay those of the old fixed menu.
    assert {item[0]: item[3] for item in unknown}["256"] == 3
    assert properties.resolution_pixels("1024", 256) is None  # above the model: full size


# -- bakes --------------------------------------------------------------------------------------


def _saved_bake_rig(addon, prefs, tmp_path: Path) -> bpy.types.Object:
    card = _stylegan2_rig(addon, prefs)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 3
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "bake.blend"))
    return bpy.context.scene.objects[card.name]


def _bake_job(addon, card):
    bake = addon.module("operators.bake")
    job = bake.BakeJob(card, bpy.context.scene, bake.BAKE_FOLDER)
    job.start()
    return bake, job


def test_a_worker_crash_during_a_bake_retries_the_frame(addon, prefs, tmp_path: Path) -> None:
    card = _saved_bake_rig(addon, prefs, tmp_path)
    bake, job = _bake_job(addon, card)
    live = addon.live
    while job.index < 1:  # frame 1 done
        job.step()
    assert job.step() is False and job.pending is not None  # frame 2 submitted ...
    os.kill(live._client.pid, signal.SIGKILL)  # ... and the worker dies under it
    crashes = live._client.crashes
    poll_until(live, lambda: live._client.crashes > crashes)
    poll_until(live, lambda: job.step() or not job.active)
    assert job.retried == {2}
    job.finish()
    folder = tmp_path / "face_bake" / card.name
    assert sorted(p.name for p in folder.iterdir()) == [
        "face_0001.png", "face_0002.png", "face_0003.png"]
    assert not [p for p in (tmp_path / "face_bake").iterdir() if p.name.startswith(".")]
    assert live._paused == 0


def test_a_failing_bake_leaves_no_frames(addon, prefs, tmp_path: Path, monkeypatch) -> None:
    card = _saved_bake_rig(addon, prefs, tmp_path)
    live = addon.live
    original = live.job_for

    def job_for(ob, **kwargs):  # frame 3's model file vanished
        if bpy.context.scene.frame_current == 3:
            raise live.LiveError("Model file not found: gone.safetensors")
        return original(ob, **kwargs)

    monkeypatch.setattr(live, "job_for", job_for)
    with pytest.raises(RuntimeError, match="Bake failed at frame 3: Model file not found"):
        bpy.ops.nfr.bake_face()
    assert not list((tmp_path / "face_bake").iterdir())  # frames 1 and 2 are gone too
    assert live._paused == 0 and not live.is_baked(card)
    assert bpy.context.scene.frame_current == 1


def test_opening_a_file_during_a_bake_ends_it_cleanly(addon, prefs, tmp_path: Path) -> None:
    card = _saved_bake_rig(addon, prefs, tmp_path)
    bake, job = _bake_job(addon, card)
    job.step()
    assert addon.live._paused == 1 and os.path.isdir(job.partial)
    bpy.ops.wm.read_homefile(use_empty=True)  # load_pre
    assert not job.active and not bake.ACTIVE_BAKES
    assert addon.live._paused == 0  # the live preview works again
    assert not os.path.exists(job.partial)


# -- panels read no file while redrawing --------------------------------------------------------


class _Layout:
    def __getattr__(self, _name):
        return lambda *args, **kwargs: self


def test_panels_read_no_file_on_redraw(addon, prefs, monkeypatch) -> None:
    card = _stylegan2_rig(addon, prefs)
    panels = [addon.module("panels.model").NFR_PT_model,
              addon.module("panels.face_rig").NFR_PT_face_rig]
    sections = addon.module("preferences")
    prefs.worker_python, prefs.external_python = "EXTERNAL", worker_python.WORKER_PYTHON

    def draw_all() -> None:
        for panel in panels:
            panel.draw(types.SimpleNamespace(layout=_Layout()), bpy.context)
        for section in (sections.draw_face_model_section, sections.draw_models_section,
                        sections.draw_worker_section):
            section(_Layout(), prefs)

    bpy.context.view_layer.objects.active = card
    draw_all()  # the first draw may look at the files
    touched: list[str] = []
    stat, real_open = os.stat, builtins.open

    def counting_stat(path, *args, **kwargs):
        touched.append(f"stat {path}")
        return stat(path, *args, **kwargs)

    def counting_open(path, *args, **kwargs):
        touched.append(f"open {path}")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    monkeypatch.setattr(builtins, "open", counting_open)
    for _ in range(5):
        draw_all()
    assert touched == []
    prefs.face_model_path = "/nowhere/BFM_model_front.mat"  # a setting changed: look again
    draw_all()
    assert any("/nowhere/BFM_model_front.mat" in entry for entry in touched)
    worker_python.configure(prefs)


# -- the .blend records its model files ----------------------------------------------------------


def test_the_blend_records_its_model_files_and_a_farm_node_finds_them_by_digest(
    addon, prefs, tmp_path: Path
) -> None:
    # The generator is found in the models folder: the rig's Model field says so.
    shutil.copy(addon.paths["stylegan2"], addon.empty / "stylegan2.safetensors")
    shutil.copy(addon.paths["stylegan2"].with_suffix(".json"),
                addon.empty / "stylegan2.json")
    assert bpy.ops.nfr.add_rig(backend="stylegan2") == {"FINISHED"}
    card = bpy.context.object
    name = card.name
    generator = addon.empty / "stylegan2.safetensors"
    assert card.face_rig.model_path == str(generator)
    (record,) = card.face_rig.model_files
    assert (record.role, record.filename) == ("generator", "stylegan2.safetensors")
    assert record.size == str(generator.stat().st_size)
    assert record.sha256 == hashlib.sha256(generator.read_bytes()).hexdigest()
    blend = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))

    # A farm node: other folder, the file renamed, the artist's path absent.
    farm = tmp_path / "farm_models"
    farm.mkdir()
    shutil.move(generator, farm / "ffhq-v2.safetensors")
    shutil.move(addon.empty / "stylegan2.json", farm / "ffhq-v2.json")
    (farm / "stylegan2.safetensors").write_bytes(b"not this one")  # same name, other bytes
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    prefs = preferences()
    prefs.models_dir = str(farm)
    card = bpy.data.objects[name]
    rig_props = addon.module("rig_props")
    assert rig_props.model_path(card) == str(farm / "ffhq-v2.safetensors")
    job = addon.live.job_for(card, final=True)
    assert job.model_path == str(farm / "ffhq-v2.safetensors")


def test_saving_records_the_files_of_the_backend_in_use(addon, prefs, tmp_path: Path) -> None:
    card = _stylegan2_rig(addon, prefs)
    prefs.dfg_generator_path = str(addon.paths["dfg"])
    prefs.dfg_average_w_path = str(addon.paths["dfg"].parent / "average_w_id.txt")
    card.face_rig.model_path = ""
    card.face_rig.backend = "discofacegan"
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "dfg.blend"))
    card = bpy.data.objects[card.name]
    records = {record.role: record for record in card.face_rig.model_files}
    assert set(records) == {"generator", "average_w_id"}
    assert records["generator"].filename == "tiny_dfg.safetensors"
    assert records["average_w_id"].sha256 == hashlib.sha256(
        (addon.paths["dfg"].parent / "average_w_id.txt").read_bytes()).hexdigest()

    # On a machine without the average W file, saving keeps what the .blend said.
    prefs.dfg_average_w_path = str(tmp_path / "absent.txt")
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "dfg.blend"))
    card = bpy.data.objects[card.name]
    records = {record.role: record for record in card.face_rig.model_files}
    assert records["average_w_id"].filename == "average_w_id.txt"


def test_big_model_files_are_hashed_off_the_main_thread(addon, prefs, tmp_path: Path,
                                                        monkeypatch) -> None:
    rig_models = addon.module("rig_models")
    monkeypatch.setattr(rig_models, "SYNC_DIGEST_BYTES", 0)  # every file counts as big
    monkeypatch.setattr(rig_models, "_digests", {})
    card = _stylegan2_rig(addon, prefs)
    (record,) = card.face_rig.model_files
    assert record.sha256 == ""  # being hashed by the background thread, not here
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "big.blend"))  # save waits for it
    (record,) = bpy.data.objects[card.name].face_rig.model_files
    assert record.sha256 == hashlib.sha256(addon.paths["stylegan2"].read_bytes()).hexdigest()


def test_a_discofacegan_rig_follows_its_expression_through_the_external_worker(
    addon, prefs
) -> None:
    """On every Blender of the matrix: the rig-driven backend, preferences -> worker (the
    External Python in the torch-free venvs) -> pixels."""
    prefs.dfg_generator_path = str(addon.paths["dfg"])
    prefs.dfg_average_w_path = str(addon.paths["dfg"].parent / "average_w_id.txt")
    assert bpy.ops.nfr.add_rig(backend="discofacegan") == {"FINISHED"}
    card = bpy.context.object
    assert card.face_rig.backend == "discofacegan" and card.face_rig.model_resolution == 32
    estimates = addon.module("rig_estimate")
    live = addon.live
    # The backend reads the base face's rig values first and the sliders start there.
    poll_until(live, lambda: estimates.stored(card) is not None and not live._requests
               and live._shown.get(card.face_rig.image_name))
    neutral = _face(card).reshape(32, 32, 4)
    assert neutral[..., :3].std() > 0.01  # a picture, not a flat colour
    card.face_rig.expression.c000 += 3.0
    _shown(addon, card)
    assert np.abs(_face(card).reshape(32, 32, 4) - neutral).max() > 0.01
    assert "32 px" in live.status_text(card)
