"""Landmark detectors (dlib on the real astronaut portrait; FAN offline with random weights),
five points and FFHQ alignment."""

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from neural_face_rig.neural.landmarks import (
    Detection,
    DetectorUnavailableError,
    LandmarkError,
    five_points,
    make_detector,
)
from neural_face_rig.neural.landmarks.align import align_face, ffhq_quad
from neural_face_rig.neural.landmarks.dlib_detector import DlibDetector, packaged_model_path
from neural_face_rig.neural.landmarks.fan_detector import (
    FAN_WEIGHTS,
    SFD_WEIGHTS,
    WEIGHT_URLS,
    heatmap_peaks,
)
from PIL import Image
from skimage import data

# Measured once by eye on 20x nearest-neighbour zooms of skimage.data.astronaut(): outer eye
# corners where the upper and lower lid lines meet, nose tip at the centre of the pronasale
# highlight. iBUG indices 36, 45, 30.
TRUE_POINTS = {36: (194.0, 100.0), 45: (256.0, 103.0), 30: (225.0, 127.0)}
TOLERANCE_PX = 4.0


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


@pytest.fixture(scope="module")
def dlib_detector():
    return make_detector("dlib")


@pytest.fixture(scope="module")
def astronaut_landmarks(dlib_detector, astronaut):
    return dlib_detector.detect([astronaut])[0].landmarks


# ------------------------------------------------------------------ dlib


def test_dlib_lands_eye_corners_and_nose_tip(dlib_detector, astronaut):
    (found,) = dlib_detector.detect([astronaut])
    assert isinstance(found, Detection)
    assert found.landmarks.shape == (68, 2) and found.landmarks.dtype == np.float32
    for index, true_place in TRUE_POINTS.items():
        error = np.hypot(*(found.landmarks[index] - true_place))
        assert error < TOLERANCE_PX, (index, found.landmarks[index], true_place)
    x0, y0, x1, y1 = found.box
    assert x0 < 194 and 256 < x1 and y0 < 100 and 127 < y1
    assert found.score is not None and found.score > 0


def test_dlib_batch_forms_agree_and_no_face_gives_none(dlib_detector, astronaut):
    blank = np.full((200, 240, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    from_list = dlib_detector.detect([astronaut, blank, noise])
    assert from_list[1] is None and from_list[2] is None
    tensor = torch.from_numpy(astronaut).permute(2, 0, 1)[None].float() / 127.5 - 1
    from_tensor = dlib_detector.detect(tensor)[0]
    from_array = dlib_detector.detect(astronaut[None])[0]
    assert from_list[0] is not None and from_tensor is not None and from_array is not None
    np.testing.assert_array_equal(from_tensor.landmarks, from_list[0].landmarks)
    np.testing.assert_array_equal(from_array.landmarks, from_list[0].landmarks)
    assert dlib_detector.detect([]) == []


def test_dlib_with_given_box_skips_detection(dlib_detector, astronaut):
    detected = dlib_detector.detect([astronaut])[0]
    blank = np.full((64, 64, 3), 128, np.uint8)
    given = dlib_detector.detect([astronaut, blank], boxes=[detected.box, None])
    assert given[1] is None
    assert given[0] is not None and given[0].score is None
    np.testing.assert_array_equal(given[0].landmarks, detected.landmarks)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((64, 64, 3), np.uint8), "pass a list"),
        ([np.zeros((64, 64, 3), np.float32)], "dtype uint8"),
        ([np.zeros((64, 64, 4), np.uint8)], "[H, W, 3]"),
        ([np.zeros((64, 64), np.uint8)], "[H, W, 3]"),
        ([[0, 1, 2]], "numpy array"),
        ("face.png", "found str"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "must be float"),
        (torch.zeros(1, 32, 32, 3), "[B, 3, H, W]"),
        (torch.full((1, 3, 32, 32), 255.0), "[-1, 1]"),
    ],
)
def test_bad_images_raise_clear_errors(dlib_detector, images, message):
    with pytest.raises(LandmarkError) as info:
        dlib_detector.detect(images)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([[0, 0, 10, 10], None], "one entry per image"),
        ([[0, 0, 10]], "4 finite numbers"),
        ([[0, 0, 10, float("nan")]], "4 finite numbers"),
        ([[10, 0, 5, 10]], "x1 > x0"),
    ],
)
def test_bad_boxes_raise_clear_errors(dlib_detector, boxes, message):
    with pytest.raises(LandmarkError) as info:
        dlib_detector.detect([np.zeros((32, 32, 3), np.uint8)], boxes=boxes)
    assert message in str(info.value)


def test_dlib_missing_or_wrong_model_files_are_named(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere.dat"
    with pytest.raises(DetectorUnavailableError, match="nowhere.dat"):
        DlibDetector(predictor_path=missing)
    garbage = tmp_path / "garbage.dat"
    garbage.write_bytes(b"not a model")
    with pytest.raises(DetectorUnavailableError, match="garbage.dat"):
        DlibDetector(predictor_path=garbage)
    five = DlibDetector(predictor_path=packaged_model_path("shape_predictor_5_face_landmarks.dat"))
    with pytest.raises(DetectorUnavailableError, match="predicts 5 points"):
        five.detect([data.astronaut()])
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "face_recognition_models" else real_find_spec(name, *a),
    )
    with pytest.raises(DetectorUnavailableError, match="face-recognition-models"):
        DlibDetector()


def test_make_detector_rejects_unknown_names():
    with pytest.raises(LandmarkError, match="dlib, fan"):
        make_detector("mediapipe")
    with pytest.raises(LandmarkError, match="'cpu' or 'cuda'"):
        make_detector("fan", device="meta")


# ------------------------------------------------------------------ five points


def test_five_points_numpy_and_torch():
    landmarks = np.random.default_rng(1).normal(size=(3, 68, 2)).astype(np.float32)
    five = five_points(landmarks)
    assert five.shape == (3, 5, 2)
    np.testing.assert_allclose(five[:, 0], (landmarks[:, 36] + landmarks[:, 39]) / 2, atol=1e-6)
    np.testing.assert_allclose(five[:, 1], (landmarks[:, 42] + landmarks[:, 45]) / 2, atol=1e-6)
    np.testing.assert_allclose(five[:, 2:], landmarks[:, [30, 48, 54]], atol=1e-6)
    points = torch.from_numpy(landmarks).requires_grad_(True)
    five_torch = five_points(points)
    np.testing.assert_allclose(five_torch.detach().numpy(), five, atol=1e-6)
    five_torch.sum().backward()
    assert points.grad is not None and points.grad.abs().sum() > 0
    with pytest.raises(LandmarkError, match=r"\[\.\.\., 68, 2\]"):
        five_points(np.zeros((5, 2)))


# ------------------------------------------------------------------ FFHQ alignment


def expected_output_place(point, landmarks, size):
    """Where docs/REFERENCE.md §6.2 puts a photo point in the output: coordinates along the square's
    axes (x = eye_to_eye - rot90(eye_to_mouth), scaled; y = rot90(x)) around its centre."""
    eye_left, eye_right = landmarks[36:42].mean(0), landmarks[42:48].mean(0)
    eye_avg, eye_to_eye = (eye_left + eye_right) / 2, eye_right - eye_left
    eye_to_mouth = (landmarks[48] + landmarks[54]) / 2 - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x *= max(2 * np.linalg.norm(eye_to_eye), 1.8 * np.linalg.norm(eye_to_mouth)) / np.linalg.norm(x)
    y = np.array([-x[1], x[0]])
    offset = point - (eye_avg + 0.1 * eye_to_mouth)
    along = np.array([offset @ x, offset @ y]) / (x @ x)  # -1..1 across the square
    return (along + 1) / 2 * size - 0.5


def eye_centres(landmarks):
    return np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0)])


@pytest.mark.parametrize("left_cut", [0, 150])  # 150: the square leaves the photo -> padding
def test_alignment_puts_eyes_where_ffhq_does(
    dlib_detector, astronaut, astronaut_landmarks, left_cut
):
    photo = np.ascontiguousarray(astronaut[:, left_cut:])
    landmarks = astronaut_landmarks.astype(np.float64) - (left_cut, 0)
    size = 256
    aligned = align_face(photo, landmarks, output_size=size)
    assert aligned.image.shape == (size, size, 3) and aligned.image.dtype == np.uint8
    expected = np.stack([expected_output_place(p, landmarks, size) for p in eye_centres(landmarks)])
    mapped = eye_centres(landmarks) @ aligned.matrix[:, :2].T + aligned.matrix[:, 2]
    np.testing.assert_allclose(mapped, expected, atol=1e-6)
    # The pixels moved there too: dlib finds the eyes of the aligned image at those places.
    redetected = dlib_detector.detect([aligned.image])[0]
    assert redetected is not None
    np.testing.assert_allclose(eye_centres(redetected.landmarks), expected, atol=2.0)
    # Where the square leaves the photo, the padding fills in (no black fill).
    assert aligned.image[:, :8].mean() > 60


def test_alignment_shrinks_large_photos_consistently(astronaut, astronaut_landmarks):
    big = np.asarray(Image.fromarray(astronaut).resize((1536, 1536), Image.Resampling.BICUBIC))
    landmarks = (astronaut_landmarks.astype(np.float64) + 0.5) * 3 - 0.5
    small = align_face(astronaut, astronaut_landmarks, output_size=64)
    large = align_face(big, landmarks, output_size=64)  # pre-shrinks by 5
    difference = np.abs(small.image.astype(int) - large.image.astype(int)).mean()
    assert difference < 6, difference


def test_alignment_rejects_bad_input(astronaut, astronaut_landmarks):
    with pytest.raises(LandmarkError, match=r"\[68, 2\]"):
        ffhq_quad(np.zeros((5, 2)))
    with pytest.raises(LandmarkError, match="uint8 RGB"):
        align_face(astronaut.astype(np.float32), astronaut_landmarks)
    with pytest.raises(LandmarkError, match="transform_size"):
        align_face(astronaut, astronaut_landmarks, output_size=64, transform_size=32)


# ------------------------------------------------------------------ FAN (offline)


def test_fan_missing_weights_names_files_folder_and_urls(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    with pytest.raises(DetectorUnavailableError) as info:
        make_detector("fan", device="cpu")
    message = str(info.value)
    for name, url in WEIGHT_URLS.items():
        assert name in message and url in message
    assert str(folder) in message
    folder.mkdir(parents=True)
    (folder / SFD_WEIGHTS).write_bytes(b"")
    with pytest.raises(DetectorUnavailableError) as info:
        make_detector("fan", device="cpu")
    assert FAN_WEIGHTS in str(info.value) and f"{SFD_WEIGHTS}  (from" not in str(info.value)


@pytest.fixture(scope="module")
def fan_detector(tmp_path_factory):
    """FAN built offline from random weights of the official architectures, saved under the
    official names in a temporary TORCH_HOME."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    torch_home = tmp_path_factory.mktemp("torch_home")
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), folder / FAN_WEIGHTS)
    torch.save(s3fd().state_dict(), folder / SFD_WEIGHTS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(torch_home))
        return make_detector("fan", device="cpu", flip_input=False, max_batch_size=2)


def test_fan_random_weights_give_structured_output(fan_detector, astronaut):
    images = [astronaut, np.ascontiguousarray(astronaut[100:300, 100:340])]
    boxes = [(170.0, 70.0, 280.0, 190.0), (60.0, 10.0, 180.0, 140.0)]
    found = fan_detector.detect(images, boxes=boxes)
    assert len(found) == 2
    for detection, box in zip(found, boxes, strict=True):
        assert detection is not None and detection.score is None
        assert detection.landmarks.shape == (68, 2) and detection.landmarks.dtype == np.float32
        assert np.isfinite(detection.landmarks).all()
        np.testing.assert_array_equal(detection.box, np.float32(box))
    # The sfd path runs too (random weights: a face or none, but the right structure).
    (searched,) = fan_detector.detect([np.ascontiguousarray(astronaut[::4, ::4])])
    assert searched is None or (searched.landmarks.shape == (68, 2) and searched.score is not None)


def test_fan_geometry_round_trip(fan_detector, monkeypatch):
    """A stand-in network whose heatmaps are the crop's brightness: the decoded point must be
    the bright dot's place in the photo, through crop, batching, flip and inverse mapping."""

    def brightness_heatmaps(crops):
        return [F.avg_pool2d(crops.mean(1, keepdim=True), 4).expand(-1, 68, -1, -1)]

    monkeypatch.setattr(fan_detector, "_network", brightness_heatmaps)
    monkeypatch.setattr(fan_detector, "flip_input", True)
    dots = [(100, 80), (37, 51), (150, 30)]
    boxes = [(60, 40, 140, 130), (10, 20, 70, 90), (120, 5, 190, 70)]
    images = []
    for (x, y), shape in zip(dots, [(240, 320), (120, 100), (100, 200)], strict=True):
        image = np.zeros((*shape, 3), np.uint8)
        image[y, x] = 255
        images.append(image)
    found = fan_detector.detect(images, boxes=boxes)
    for detection, dot in zip(found, dots, strict=True):
        assert detection is not None
        # One heatmap pixel is ~2.7 image pixels for these boxes; the decoder resolves a quarter.
        np.testing.assert_allclose(detection.landmarks, np.broadcast_to(dot, (68, 2)), atol=1.5)


def test_heatmap_decoding_matches_face_alignment():
    from face_alignment.utils import _get_preds_fromhm

    heatmaps = np.random.default_rng(2).random((2, 68, 64, 64)).astype(np.float32)
    heatmaps[0, 0, 0, 5] = heatmaps[1, 1, 63, 63] = heatmaps[1, 2, 30, 40] = 5.0
    index = heatmaps.reshape(2, 68, -1).argmax(-1)
    # The pure-Python body of face-alignment's numba function (no compile in tests).
    reference, _ = _get_preds_fromhm.py_func(heatmaps, index, None, None)
    np.testing.assert_array_equal(heatmap_peaks(torch.from_numpy(heatmaps)).numpy(), reference)


def test_stylerig_landmark_source_reads_generator_images(dlib_detector, astronaut):
    """The StyleRig trainer's adapter: [-1, 1] generator-style images in, the detector's
    68 points out, with a found flag per image."""
    import torch
    from neural_face_rig.neural.stylerig.data import detector_source

    face = torch.from_numpy(astronaut).permute(2, 0, 1).float() / 127.5 - 1.0
    images = torch.stack([face, torch.zeros_like(face)])
    points, found = detector_source(dlib_detector)(images)
    assert found.tolist() == [True, False]
    expected = dlib_detector.detect([astronaut])[0].landmarks
    assert torch.allclose(points[0], torch.from_numpy(expected), atol=1e-4)
    assert points.shape == (2, 68, 2) and not points[1].any()
