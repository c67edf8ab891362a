"""``nfr photo align / invert / edit`` end to end on the astronaut portrait with generator,
encoder and face-model files written in their real formats by the tests; the face file."""

import json

import numpy as np
import pytest
import torch
from fixtures.tiny_models import write_discofacegan
from neural_face_rig.neural.checkpoints import load_generator
from neural_face_rig.neural.cli import main
from neural_face_rig.neural.photo import PhotoError
from neural_face_rig.neural.photo.face_file import FaceFile, read_face, write_face
from neural_face_rig.neural.photo.optimise import InversionCancelled
from neural_face_rig.neural.photo.pipeline import InvertRequest, invert_photo
from neural_face_rig.neural.stylegan2.config import StyleGAN2Config
from neural_face_rig.rig.face_model import write_face_model_mat
from neural_face_rig.rig.synthetic import make_synthetic_face_model
from PIL import Image
from skimage import data
from test_photo_align import ffhq_place
from test_photo_e4e import official_encoder_state, write_official_e4e
from test_photo_rnet import official_state, write_epoch_20

# An e4e file whose decoder is a 32 px StyleGAN2 (stylegan_size 32: 8 W+ rows of 512).
DECODER_32 = StyleGAN2Config(z_dim=512, w_dim=512, img_resolution=32, mapping_layers=2,
                             channel_base=512, channel_max=16)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photo")
    photo = folder / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    e4e = folder / "e4e_tiny.pt"
    write_official_e4e(e4e, official_encoder_state(DECODER_32.num_ws), config=DECODER_32)
    face_model = folder / "BFM_model_front.mat"
    write_face_model_mat(make_synthetic_face_model("tiny"), face_model)
    return {"folder": folder, "photo": photo, "e4e": e4e, "face_model": face_model}


def run(*argv):
    return main([str(a) for a in argv])


def test_align_names_the_faces_of_a_group_photo(tmp_path, capsys):
    face = data.astronaut()[20:260, 110:350]
    group = np.full((300, 620, 3), 200, np.uint8)
    group[30:270, 20:260] = face
    group[60:240, 400:580] = np.asarray(Image.fromarray(face).resize((180, 180)))
    Image.fromarray(group).save(tmp_path / "group.png")
    assert run("photo", "align", tmp_path / "group.png", "--face", 1, "--size", 64,
               "--out", tmp_path / "second.png") == 0
    err = capsys.readouterr().err
    assert "found 2 faces (largest first" in err and "using 1 (--face N" in err
    assert run("photo", "align", tmp_path / "group.png", "--face", 2,
               "--out", tmp_path / "third.png") == 2
    assert "found 2 face(s), expected 0..1" in capsys.readouterr().err


def test_align_writes_the_crop_and_its_transform(files, tmp_path):
    out, transform = tmp_path / "aligned.png", tmp_path / "aligned.json"
    assert run("photo", "align", files["photo"], "--out", out, "--size", 256,
               "--transform", transform) == 0
    assert Image.open(out).size == (256, 256)
    document = json.loads(transform.read_text())
    points = np.asarray(document["landmarks"])
    eyes = np.stack([points[36:42].mean(0), points[42:48].mean(0)])
    matrix = np.asarray(document["photo_to_crop"])
    np.testing.assert_allclose(eyes @ matrix[:, :2].T + matrix[:, 2],
                               [ffhq_place(e, points, 256) for e in eyes], atol=1e-6)
    assert run("photo", "align", files["photo"], "--kind", "d3d", "--out", tmp_path / "d.png",
               "--face-model", files["face_model"]) == 0
    assert Image.open(tmp_path / "d.png").size == (224, 224)


def test_invert_stylegan2_with_e4e_and_landmark_fit(files, tmp_path, capsys):
    out = tmp_path / "face.json"
    assert run("photo", "invert", files["photo"], "--weights", files["e4e"], "--encoder",
               files["e4e"], "--face-model", files["face_model"], "--steps", 2,
               "--out", out) == 0
    face = read_face(out)
    assert face.backend == "stylegan2" and face.w_plus.shape == (8, 512)
    assert face.meta["rig_source"] == "landmarks"
    assert face.model_sha256 == load_generator(files["e4e"]).sha256
    assert set(face.meta["controls"]) >= {"jawOpen", "eyeBlinkLeft"}
    assert {"azimuth", "elevation", "intensity"} <= set(face.meta["key_light"])
    assert len(face.meta["inversion"]["refine"]["losses"]) == 2
    assert "refine 2/2" in capsys.readouterr().err
    np.testing.assert_array_equal(face.rig, face.photo_rig)  # no RigNet: the photo's values
    # Unedited render works; rig edits on a plain StyleGAN2 are refused with the reason.
    assert run("photo", "edit", out, "--out", tmp_path / "same.png") == 0
    assert Image.open(tmp_path / "same.png").size == (32, 32)
    assert run("photo", "edit", out, "--set", "exp_3=1.5", "--out", tmp_path / "x.png") == 2
    assert "no RigNet for its generator" in capsys.readouterr().err


def test_invert_into_stylerig_starts_at_the_dfr_estimate_and_edits(files, tmp_path, capsys):
    from neural_face_rig.neural.stylerig.backend import TrainingSetup, load_stylerig, save_stylerig
    from neural_face_rig.neural.stylerig.data import FaceCrop
    from neural_face_rig.neural.stylerig.dfr import DFR, DFRConfig
    from neural_face_rig.neural.stylerig.rignet import RigNet, RigNetConfig

    sha = load_generator(files["e4e"]).sha256
    torch.manual_seed(0)
    folder = tmp_path / "rigs"
    folder.mkdir()
    rignet = RigNet(RigNetConfig(8, 512))
    with torch.no_grad():  # a trained RigNet's last layer is not zero (untrained: identity)
        rignet.decoder1_weight.normal_(0.0, 0.05)
    stylerig = save_stylerig(folder, DFR(DFRConfig(8, 512)), rignet,
                             TrainingSetup(sha, {"name": "synthetic", "sha256": "0" * 64}, 224,
                                           FaceCrop(0.0, 0.0, 1.0), 1.0), {})
    out = tmp_path / "face.json"
    assert run("photo", "invert", files["photo"], "--weights", files["e4e"], "--encoder",
               files["e4e"], "--face-model", files["face_model"], "--stylerig", stylerig,
               "--out", out) == 0
    face = read_face(out)
    assert isinstance(face, FaceFile) and face.backend == "stylerig"
    with torch.no_grad():
        estimate = load_stylerig(stylerig).dfr(torch.from_numpy(face.w_plus)[None])[0]
    np.testing.assert_allclose(face.rig, estimate.numpy(), atol=1e-6)
    plain, edited = tmp_path / "plain.png", tmp_path / "smile.png"
    assert run("photo", "edit", out, "--out", plain) == 0
    assert run("photo", "edit", out, "--set", "jawOpen=0.9", "--set", "yaw=0.4",
               "--out", edited) == 0
    assert not np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(edited)))
    assert run("photo", "edit", out, "--set", "smile", "--out", edited) == 2
    assert "expected NAME=NUMBER" in capsys.readouterr().err


def test_invert_discofacegan_and_edit(files, tmp_path):
    weights = write_discofacegan(tmp_path)
    out = tmp_path / "face.json"
    assert run("photo", "invert", files["photo"], "--weights", weights, "--face-model",
               files["face_model"], "--steps", 3, "--out", out) == 0
    face = read_face(out)
    assert face.backend == "discofacegan" and face.noise.shape == (32,)
    assert face.meta["model"]["psi"] == 0.7  # average_w_id.txt found beside the model
    for group in (slice(80, 144), slice(224, 257)):  # expression, pose, light, translation
        np.testing.assert_array_equal(face.rig[group], face.photo_rig[group])
    assert run("photo", "edit", out, "--set", "yaw=0.5", "--out", tmp_path / "yaw.png") == 0
    assert run("photo", "edit", out, "--out", tmp_path / "same.png") == 0
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "yaw.png")),
                              np.asarray(Image.open(tmp_path / "same.png")))
    # With Deep3DFaceRecon's R-Net file the coefficients come from it, not the landmarks.
    rnet = tmp_path / "epoch_20.pth"
    write_epoch_20(rnet, official_state(2))
    assert run("photo", "invert", files["photo"], "--weights", weights, "--rnet", rnet,
               "--steps", 1, "--out", out) == 0
    face = read_face(out)
    assert face.meta["rig_source"] == "rnet" and "controls" not in face.meta
    np.testing.assert_array_equal(face.rig[80:144], face.photo_rig[80:144])


def test_no_face_cancel_and_damaged_face_file(files, tmp_path, capsys):
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 240, 3), 128, np.uint8)).save(blank)
    out = tmp_path / "face.json"
    assert run("photo", "invert", blank, "--weights", files["e4e"], "--encoder", files["e4e"],
               "--out", out) == 2
    assert "wall.png: no face found" in capsys.readouterr().err
    assert not out.exists()
    stages = []

    def cancel():
        return "align" in stages

    with pytest.raises(InversionCancelled, match="before rig"):
        invert_photo(InvertRequest(str(files["photo"]), str(files["e4e"]),
                                   encoder=str(files["e4e"])),
                     progress=lambda stage, done, total: stages.append(stage), cancel=cancel)
    assert run("photo", "invert", files["photo"], "--weights", files["e4e"], "--out", out,
               "--encoder", files["e4e"], "--steps", 1, "--lpips-weight", 1.0) == 2
    assert "refinement option lpips_weight: LPIPS needs" in capsys.readouterr().err
    assert not out.exists()
    face = FaceFile("stylegan2", "ab" * 32, np.zeros(257, np.float32),
                    np.zeros(257, np.float32), np.zeros((68, 2), np.float32),
                    w_plus=np.ones((8, 512), np.float32), meta={"model": {"path": "g.pt"}})
    write_face(out, face)
    assert read_face(out).w_plus.shape == (8, 512)
    blob = bytearray(out.with_suffix(".safetensors").read_bytes())
    blob[-1] ^= 0xFF
    out.with_suffix(".safetensors").write_bytes(bytes(blob))
    with pytest.raises(PhotoError, match="do not match their sidecar"):
        read_face(out)
