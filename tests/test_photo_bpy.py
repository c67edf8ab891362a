"""Face Rig from Photo on the real bpy module with the built zip installed: the photo is
inverted by the real worker into a tiny StyleGAN2 (the astronaut portrait, the landmark fit
with the synthetic face model), the rig starts at the photo's values, the latent is stored in
the .blend and a reopened file renders the same face without inverting again; a cancelled
job adds nothing.

The bpy module is background mode: the operator takes its synchronous path (the modal
progress bar needs a window); progress and cancel are driven through the same PhotoRun the
modal operator polls. No torch in this process: the tiny models, the photo and the
reference inversion come from the worker's Python (fixtures.worker_python).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import bpy
import numpy as np
import pytest
from fixtures import worker_python
from fixtures.live_addon import installed_extension, pixels, poll_until, preferences
from neural_face_rig.rig.key_light import KeyLight, key_light_to_sh, sh_to_key_light
from neural_face_rig.rig.params import RigParams

STEPS = 2


def _expected_inversion(photo: Path, generator: Path, face_model: Path) -> SimpleNamespace:
    """The same inversion run by the pipeline in the worker's Python (no worker, no Blender):
    the rig values, W+ and named controls the add-on must arrive at."""
    found = worker_python.run(
        "import json\n"
        "from neural_face_rig.neural.photo.invert_stylegan import RefineOptions\n"
        "from neural_face_rig.neural.photo.pipeline import InvertRequest, invert_photo\n"
        f"face = invert_photo(InvertRequest({str(photo)!r}, {str(generator)!r}, "
        f"backend='stylegan2', face_model={str(face_model)!r}, "
        f"refine=RefineOptions(steps={STEPS})))\n"
        "print(json.dumps({'rig': face.rig.tolist(), 'w_plus': face.w_plus.tolist(),\n"
        "                  'controls': face.meta['controls']}))\n"
    )
    assert isinstance(found, dict)
    return SimpleNamespace(rig=np.asarray(found["rig"], np.float32),
                           w_plus=np.asarray(found["w_plus"], np.float32),
                           controls=found["controls"])


@pytest.fixture(scope="module")
def addon(tmp_path_factory: pytest.TempPathFactory):
    models = tmp_path_factory.mktemp("models")
    face_model = worker_python.write_face_model(models / "BFM_model_front.mat", seed=3)
    tiny = worker_python.write_tiny_models(models)
    generator = tiny["stylegan2"]
    photo = tmp_path_factory.mktemp("photos") / "astronaut.png"
    worker_python.run(  # scikit-image's astronaut portrait (the worker's Python has it)
        "from PIL import Image\nfrom skimage import data\n"
        f"Image.fromarray(data.astronaut()).save({str(photo)!r})\nprint('{{}}')\n")
    expected = _expected_inversion(photo, generator, face_model)
    with installed_extension(tmp_path_factory.mktemp("dist")) as module:
        prefs = preferences()
        worker_python.configure(prefs)
        prefs.stylegan2_generator_path = str(generator)
        prefs.dfg_generator_path = str(tiny["dfg"])
        prefs.face_model_path = str(face_model)
        prefs.models_dir = str(models)
        prefs.device = "CPU"
        yield SimpleNamespace(live=module("live"), rig_props=module("rig_props"),
                              photo_import=module("photo_import"), prefs=prefs, photo=photo,
                              generator=generator, expected=expected)


def _contents() -> dict[str, set[str]]:
    return {name: set(getattr(bpy.data, name).keys())
            for name in ("objects", "meshes", "materials", "images", "cameras")}


def _face(card) -> bpy.types.Image:
    return bpy.data.images[card.face_rig.image_name]


def test_the_worker_reports_progress_and_a_cancel_adds_nothing(addon) -> None:
    bpy.ops.wm.read_homefile(use_empty=True)
    before = _contents()
    photo_import = addon.photo_import
    job = photo_import.photo_job(addon.prefs, str(addon.photo), "stylegan2", target="photo:t1",
                                 steps=STEPS)
    run = photo_import.PhotoRun(job)
    seen = []
    result = run.wait(progress=lambda stage, fraction: seen.append((stage, fraction)))
    stages = [stage for stage, _ in seen]
    assert {"detect", "refine"} <= set(stages) and run.stage == "done"
    fractions = [fraction for _, fraction in seen]
    assert fractions == sorted(fractions) and run.fraction == 1.0  # the bar only moves on
    np.testing.assert_allclose(result.rig, addon.expected.rig, atol=1e-5)
    assert result.latent.shape == addon.expected.w_plus.shape

    long = photo_import.PhotoRun(photo_import.photo_job(
        addon.prefs, str(addon.photo), "stylegan2", target="photo:t2", steps=50_000))
    poll_until(addon.live, lambda: long.poll() or (long.stage == "refine" and long.fraction > 0.3))
    long.cancel()
    assert long.done and long.result is None and long.cancelled
    with pytest.raises(photo_import.PhotoImportError, match="cancelled"):
        long.wait(timeout=1)
    assert _contents() == before  # nothing was added: the rig is made from a result only


def test_face_rig_from_photo_starts_at_the_photo_and_reopens_without_inverting(
    addon, tmp_path: Path
) -> None:
    bpy.ops.wm.read_homefile(use_empty=True)
    assert bpy.ops.nfr.face_rig_from_photo(filepath=str(addon.photo), backend="stylegan2",
                                           steps=STEPS) == {"FINISHED"}
    card = bpy.context.object
    state = addon.rig_props.rig_state(card)
    expected = addon.expected
    # The sliders (named controls + the raw remainder) start at the photo's values.
    np.testing.assert_allclose(state.rig, expected.rig, atol=1e-4)
    assert any(getattr(card.face_controls.named, n) != 0.0 for n in expected.controls)
    # ... the light as the key light's inverse fit (the raw SH keeps the rest: the total
    # above is the photo's).
    light = sh_to_key_light(RigParams.from_vector(expected.rig).illumination)
    assert card.face_controls.key_light.azimuth == pytest.approx(light.azimuth, abs=1e-3)
    assert card.face_controls.key_light.elevation == pytest.approx(light.elevation, abs=1e-3)
    # The base face is the inverted W+ (the worker's refinement of the same photo).
    assert state.latent_space == "w+" and state.latent.shape == expected.w_plus.shape
    np.testing.assert_allclose(state.latent, expected.w_plus, atol=1e-4)
    reference = bpy.data.objects[f"{card.name} Photo"]
    assert reference.parent == card and reference.location.x > 0
    assert reference.active_material.node_tree.nodes["NFR Face"].image.size[:] == (512, 512)
    stored = np.array(state.latent)
    name = card.name

    addon.live.render_now(card)
    shown = pixels(_face(card))

    path = tmp_path / "photo_rig.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.read_homefile(use_empty=True)
    photo_run = addon.photo_import.PhotoRun
    addon.photo_import.PhotoRun = None  # any attempt to invert again would fail loudly
    try:
        bpy.ops.wm.open_mainfile(filepath=str(path))
        card = bpy.data.objects[name]
        state = addon.rig_props.rig_state(card)
        assert np.array_equal(state.latent, stored)  # bit for bit from the .blend
        face = bpy.data.images[card.face_rig.image_name]
        face.pixels.foreach_set(np.zeros(len(face.pixels), np.float32))  # forget the old face
        addon.live._shown.clear()
        assert addon.live.render_now(card)
        np.testing.assert_array_equal(pixels(face), shown)
    finally:
        addon.photo_import.PhotoRun = photo_run
    # The photo's latent, not the rig's seed: without it the same rig shows another face.
    for key in addon.photo_import.PHOTO_PROPS:
        del card[key]
    addon.live._shown.clear()
    assert addon.live.render_now(card)
    assert not np.array_equal(pixels(face), shown)


def test_an_image_in_the_blend_can_be_the_photo(addon) -> None:
    bpy.ops.wm.read_homefile(use_empty=True)
    image = bpy.data.images.load(str(addon.photo))
    image.pack()
    image.filepath = "//nowhere/astronaut.png"  # only the packed copy exists
    temporary = set(os.listdir(bpy.app.tempdir))
    assert bpy.ops.nfr.face_rig_from_photo(image_name=image.name, backend="stylegan2",
                                           steps=STEPS) == {"FINISHED"}
    card = bpy.context.object
    reference = bpy.data.objects[f"{card.name} Photo"]
    assert reference.active_material.node_tree.nodes["NFR Face"].image == image
    np.testing.assert_allclose(addon.rig_props.rig_state(card).rig, addon.expected.rig,
                               atol=1e-4)
    assert set(os.listdir(bpy.app.tempdir)) == temporary  # its copy for the worker is gone
    # A generated image (painted, or made by a script) goes to the worker as a PNG of its
    # pixels: the same bytes, the same face.
    painted = bpy.data.images.new("Painted", *image.size)
    painted.pixels.foreach_set(pixels(image))
    assert bpy.ops.nfr.face_rig_from_photo(image_name=painted.name, backend="stylegan2",
                                           steps=STEPS) == {"FINISHED"}
    np.testing.assert_allclose(addon.rig_props.rig_state(bpy.context.object).rig,
                               addon.expected.rig, atol=1e-4)
    assert set(os.listdir(bpy.app.tempdir)) == temporary
    with pytest.raises(RuntimeError, match="No image 'missing' in this file"):
        bpy.ops.nfr.face_rig_from_photo(image_name="missing")


def test_a_discofacegan_rig_from_photo_keeps_its_noise_and_edits_its_coefficients(
    addon
) -> None:
    bpy.ops.wm.read_homefile(use_empty=True)
    photo_import = addon.photo_import
    run = photo_import.PhotoRun(photo_import.photo_job(
        addon.prefs, str(addon.photo), "discofacegan", target="photo:dfg", steps=STEPS))
    result = run.wait()
    assert result.latent_space == "z" and result.noise.size
    assert bpy.ops.nfr.face_rig_from_photo(filepath=str(addon.photo), backend="discofacegan",
                                           steps=STEPS) == {"FINISHED"}
    card = bpy.context.object
    assert card.face_rig.backend == "discofacegan"
    assert card.face_rig.psi == pytest.approx(result.psi)
    state = addon.rig_props.rig_state(card)
    # The base face is the photo's z: its coefficients from the sliders, its noise stored.
    assert state.latent_space == "z"
    np.testing.assert_allclose(state.latent, result.latent, atol=1e-4)
    noise = slice(state.latent.size - result.noise.size, None)
    card.face_rig.expression.c000 += 0.5
    edited = addon.rig_props.rig_state(card)
    assert not np.allclose(edited.latent, state.latent)  # the slider edits the face
    np.testing.assert_array_equal(edited.latent[noise], state.latent[noise])


def test_the_modal_steps_make_the_rig_and_esc_leaves_nothing_behind(addon) -> None:
    """What the modal operator does on its timer (``step``) and on Esc (``cancel``), with an
    image of the .blend whose worker copy is a temporary file."""
    bpy.ops.wm.read_homefile(use_empty=True)
    image = bpy.data.images.load(str(addon.photo))
    image.pack()
    before, temporary = _contents(), set(os.listdir(bpy.app.tempdir))
    photo_import = addon.photo_import
    cancelled = photo_import.PhotoImport(bpy.context, image_name=image.name,
                                         backend="stylegan2", steps=50_000, target="photo:esc")
    assert set(os.listdir(bpy.app.tempdir)) != temporary  # the copy the worker reads
    poll_until(addon.live, lambda: cancelled.step(bpy.context) != "running"
               or cancelled.run.stage == "refine")
    cancelled.cancel()
    assert cancelled.step(bpy.context) == "failed" and cancelled.error == ""
    assert _contents() == before and set(os.listdir(bpy.app.tempdir)) == temporary

    done = photo_import.PhotoImport(bpy.context, image_name=image.name, backend="stylegan2",
                                    steps=STEPS, target="photo:modal")
    states = []
    poll_until(addon.live, lambda: states.append(done.step(bpy.context)) or states[-1] != "running")
    assert states[-1] == "done" and "running" in states
    assert done.card is not None and bpy.context.object == done.card
    np.testing.assert_allclose(addon.rig_props.rig_state(done.card).rig, addon.expected.rig,
                               atol=1e-4)
    assert set(os.listdir(bpy.app.tempdir)) == temporary
    with pytest.raises(photo_import.PhotoImportError, match="Photo not found"):
        photo_import.PhotoImport(bpy.context, filepath="//missing.png")


def test_the_photos_light_becomes_the_key_light_and_the_total_stays(addon) -> None:
    bpy.ops.wm.read_homefile(use_empty=True)
    assert bpy.ops.nfr.add_rig(backend="discofacegan") == {"FINISHED"}
    card = bpy.context.object
    photo_sh = key_light_to_sh(KeyLight(30.0, 20.0, 1.5, (1.0, 0.9, 0.8), (0.5, 0.5, 0.6)))
    params = addon.rig_props.read_rig_params(card)
    params.illumination[:] = photo_sh
    addon.rig_props.set_rig_params(card, params)
    addon.photo_import._photo_key_light(card)
    light = card.face_controls.key_light
    assert light.azimuth == pytest.approx(30.0, abs=0.5)
    assert light.elevation == pytest.approx(20.0, abs=0.5)
    assert light.intensity == pytest.approx(1.5, rel=0.05)
    state = addon.rig_props.rig_state(card)
    np.testing.assert_allclose(RigParams.from_vector(state.rig).illumination, photo_sh,
                               atol=1e-5)
