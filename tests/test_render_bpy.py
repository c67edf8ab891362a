"""Renders of the face rig with Blender's own engines (bpy module, the built zip installed):
the portrait equals the generator's output within 2/255 in Cycles, EEVEE and Workbench under
the add-on's portrait setup (item 6), a 3-frame animation render gives three different faces
each equal to the engine's (also with Cycles persistent data), the render operators write
where they say, and a baked sequence renders without the worker."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import bpy
import numpy as np
import pytest
from fixtures import worker_python
from fixtures.live_addon import MODULE, installed_extension, poll_until, preferences
from PIL import Image

TOLERANCE = 2  # of 255


@pytest.fixture(scope="module")
def addon(tmp_path_factory: pytest.TempPathFactory):
    models = tmp_path_factory.mktemp("models")
    generator = worker_python.write_tiny_models(models)["stylegan2"]
    with installed_extension(tmp_path_factory.mktemp("dist")) as module:
        prefs = preferences()
        worker_python.configure(prefs)
        prefs.stylegan2_generator_path = str(generator)
        prefs.face_model_path = ""
        prefs.device = "CPU"
        yield SimpleNamespace(live=module("live"), rig_props=module("rig_props"),
                              generator=generator, expected={})


@pytest.fixture
def rig(addon):
    """A fresh file with a rig whose SeFa slider is keyed 0 -> 4 over frames 1..3."""
    bpy.ops.wm.read_homefile(use_empty=True)
    assert bpy.ops.nfr.add_rig(backend="stylegan2") == {"FINISHED"}
    card = bpy.context.object
    card.face_rig.psi = 1.0
    slider = addon.rig_props.add_sefa_slider(card, direction=0, layer_start=0, layer_end=5)
    for frame, value in ((1, 0.0), (3, 4.0)):
        slider.value = value
        card.keyframe_insert("face_rig.sefa_sliders[0].value", frame=frame)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 3
    scene.frame_set(1)
    return card


def expected_at(addon, card, frame: int) -> np.ndarray:
    """The generator's output for the rig at ``frame`` as 8-bit sRGB [H, W, 3] (rendered by
    the backend in the worker's Python, without Blender; remembered per state)."""
    bpy.context.scene.frame_set(frame)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    state = addon.rig_props.rig_state(card, depsgraph=depsgraph, final=True)
    key = (state.seed, state.psi, tuple(s.value for s in state.sefa), state.resolution)
    if key not in addon.expected:
        addon.expected[key] = worker_python.reference_render(addon.generator, state)
    return addon.expected[key]


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as png:
        return np.asarray(png.convert("RGB")).astype(int)


def use_engine(engine: str) -> None:
    scene = bpy.context.scene
    engines = scene.render.bl_rna.properties["engine"].enum_items.keys()
    if engine == "BLENDER_EEVEE" and engine not in engines:
        engine = "BLENDER_EEVEE_NEXT"  # its name in Blender 4.2-4.5
    scene.render.engine = engine
    if engine == "CYCLES":
        scene.cycles.device = "CPU"
        scene.cycles.samples = 2


@pytest.mark.parametrize("engine", ["CYCLES", "BLENDER_WORKBENCH", "BLENDER_EEVEE"])
def test_the_portrait_equals_the_generator_output(addon, rig, engine, tmp_path: Path) -> None:
    use_engine(engine)
    rig.face_rig.render_resolution = "FULL"
    out = tmp_path / "portrait.png"
    assert bpy.ops.nfr.render_portrait(filepath=str(out)) == {"FINISHED"}
    assert [p.name for p in tmp_path.iterdir()] == ["portrait.png"]  # no temporary file left
    rendered = read_png(out)
    expected = expected_at(addon, rig, 1)
    assert rendered.shape == expected.shape == (32, 32, 3)
    assert np.abs(rendered - expected).max() <= TOLERANCE
    assert expected.std() > 10  # a real image, not a flat colour both sides agree on


def test_agx_would_not_match(addon, rig, tmp_path: Path) -> None:
    """Why the setup sets "Standard": Blender's default view transform changes the values."""
    use_engine("BLENDER_WORKBENCH")
    bpy.context.scene.view_settings.view_transform = "AgX"
    out = tmp_path / "agx.png"
    bpy.ops.nfr.render_portrait(filepath=str(out))
    assert np.abs(read_png(out) - expected_at(addon, rig, 1)).max() > 10


@pytest.mark.parametrize(("engine", "persistent"),
                         [("BLENDER_WORKBENCH", False), ("CYCLES", True)])
def test_an_animation_render_gives_each_frame_its_face(
    addon, rig, engine: str, persistent: bool, tmp_path: Path
) -> None:
    use_engine(engine)
    bpy.context.scene.render.use_persistent_data = persistent
    prefix = tmp_path / "frames" / "face_"
    assert bpy.ops.nfr.render_sequence(filepath=str(prefix)) == {"FINISHED"}
    frames = [read_png(Path(f"{prefix}{n:04d}.png")) for n in (1, 2, 3)]
    for n, rendered in enumerate(frames, start=1):
        assert np.abs(rendered - expected_at(addon, rig, n)).max() <= TOLERANCE, f"frame {n}"
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert np.abs(frames[a] - frames[b]).max() > 10


def test_a_baked_sequence_renders_without_the_worker(addon, rig, tmp_path: Path) -> None:
    use_engine("BLENDER_WORKBENCH")
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "farm.blend"))
    assert bpy.ops.nfr.bake_face() == {"FINISHED"}
    expected = expected_at(addon, rig, 2)
    addon.live.stop_worker()
    bpy.context.scene.frame_set(2)
    out = tmp_path / "farm.png"
    assert bpy.ops.nfr.render_portrait(filepath=str(out)) == {"FINISHED"}
    assert addon.live._client is None  # the farm node never needed PyTorch
    assert np.abs(read_png(out) - expected).max() <= TOLERANCE


def test_the_live_preview_keeps_working_after_a_render(addon, rig, tmp_path: Path) -> None:
    """Renders write the final face; the next slider change streams previews again."""
    use_engine("BLENDER_WORKBENCH")
    bpy.ops.nfr.render_portrait(filepath=str(tmp_path / "p.png"))
    rig.face_rig.seed = 9
    live = addon.live
    poll_until(live, lambda: not live._requests and live._shown.get(rig.face_rig.image_name))
    assert "32 px" in live.status_text(rig)


def test_the_colour_check_names_a_changed_view_transform(addon, rig) -> None:
    portrait = __import__(f"{MODULE}.portrait", fromlist=["portrait"])
    scene = bpy.context.scene
    assert portrait.colour_problem(scene) is None  # what Add Face Rig set up
    scene.view_settings.view_transform = "AgX"
    assert "'AgX'" in portrait.colour_problem(scene)
