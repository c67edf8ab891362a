"""Photo detection and alignment on the real astronaut portrait: FFHQ crop (NVIDIA's recipe)
and Deep3DFaceRecon's 5-point crop, both mapping back to the photo; several faces; no face."""

import numpy as np
import pytest
from neural_face_rig.neural.landmarks.align import apply_affine, to_photo
from neural_face_rig.neural.photo.align import (
    align_d3d,
    align_ffhq,
    invert_affine,
    pos,
    standard_points,
)
from neural_face_rig.neural.photo.detect import NoFaceError, default_detector, detect_face
from neural_face_rig.rig.synthetic import make_synthetic_face_model
from PIL import Image
from skimage import data


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


@pytest.fixture(scope="module")
def detector():
    return default_detector("dlib")


@pytest.fixture(scope="module")
def landmarks(astronaut, detector):
    found, count = detect_face(astronaut, detector)
    assert count == 1
    return found.landmarks.astype(np.float64)


@pytest.fixture(scope="module")
def lm3d():
    return standard_points(make_synthetic_face_model("full"))


def eye_centres(points):
    return np.stack([points[36:42].mean(0), points[42:48].mean(0)])


def ffhq_place(point, points, size):
    """Where NVIDIA's recipe puts a photo point, written out independently: coordinates along
    the oriented square's axes x = e2e - rot90(e2m) (scaled to max(2|e2e|, 1.8|e2m|)) and
    y = rot90(x), centre eye_avg + 0.1 e2m, mapped so the square spans the output."""
    eye_left, eye_right = eye_centres(points)
    eye_avg, e2e = (eye_left + eye_right) / 2, eye_right - eye_left
    e2m = (points[48] + points[54]) / 2 - eye_avg
    x = e2e - np.array([-e2m[1], e2m[0]])
    x *= max(2 * np.linalg.norm(e2e), 1.8 * np.linalg.norm(e2m)) / np.linalg.norm(x)
    y = np.array([-x[1], x[0]])
    offset = point - (eye_avg + 0.1 * e2m)
    return (np.array([offset @ x, offset @ y]) / (x @ x) + 1) / 2 * size - 0.5


def with_blobs(photo, centres, sigma=1.5, amplitude=110.0):
    """The photo with bright Gaussian dots at ``centres`` (pixel centres at integers)."""
    ys, xs = np.mgrid[: photo.shape[0], : photo.shape[1]]
    added = sum(
        amplitude * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
        for cx, cy in centres
    )
    return np.clip(np.rint(photo + added[..., None]), 0, 255).astype(np.uint8)


def blob_centroid(with_dot, without, near, radius):
    """Brightness-weighted centre of the added dot inside a window around ``near``."""
    difference = with_dot.astype(np.float64).sum(-1) - without.astype(np.float64).sum(-1)
    ys, xs = np.mgrid[: difference.shape[0], : difference.shape[1]]
    window = (np.hypot(xs - near[0], ys - near[1]) < radius) & (difference > 0)
    weight = difference * window
    return np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()


@pytest.mark.parametrize(("left_cut", "size"), [(0, 256), (150, 256), (0, 1024)])
def test_ffhq_alignment_puts_eyes_where_ffhq_does_and_maps_back(astronaut, landmarks, left_cut,
                                                                size):
    """left_cut 150 moves the square out of the photo: the reflect padding + blur path."""
    photo = np.ascontiguousarray(astronaut[:, left_cut:])
    points = landmarks - (left_cut, 0)
    eyes = eye_centres(points)
    expected = np.stack([ffhq_place(p, points, size) for p in eyes])
    plain = align_ffhq(photo, points, size)
    dotted = align_ffhq(with_blobs(photo, eyes), points, size)
    assert plain.image.shape == (size, size, 3)
    np.testing.assert_allclose(apply_affine(plain.matrix, eyes), expected, atol=1e-6)
    radius = 10 * size / 256
    found = np.stack([blob_centroid(dotted.image, plain.image, e, radius) for e in expected])
    np.testing.assert_allclose(found, expected, atol=1.0)  # the pixels moved there too
    np.testing.assert_allclose(to_photo(plain, found), eyes, atol=1.0)
    np.testing.assert_allclose(to_photo(plain, apply_affine(plain.matrix, points)), points,
                               atol=1e-6)
    if left_cut:
        assert plain.image[:, :8].mean() > 60  # padding filled in, not black


def test_ffhq_alignment_of_a_large_photo_tracks_nvidias_shrink(astronaut, landmarks):
    """A 3x photo is pre-shrunk (NVIDIA's quad /= shrink); the matrix follows the pixels."""
    big = np.asarray(Image.fromarray(astronaut).resize((1536, 1536), Image.Resampling.BICUBIC))
    points = (landmarks + 0.5) * 3 - 0.5
    eyes = eye_centres(points)
    size = 128
    plain = align_ffhq(big, points, size)
    dotted = align_ffhq(with_blobs(big, eyes, sigma=4.0), points, size)
    expected = apply_affine(plain.matrix, eyes)
    np.testing.assert_allclose(expected, [ffhq_place(p, points, size) for p in eyes], atol=0.3)
    found = np.stack([blob_centroid(dotted.image, plain.image, e, 6) for e in expected])
    np.testing.assert_allclose(found, expected, atol=0.5)


def test_pos_recovers_a_scaled_orthographic_camera(lm3d):
    rotation = np.array([[0.98, -0.17, 0.1], [0.18, 0.98, -0.05]])
    rotation /= np.linalg.norm(rotation, axis=1, keepdims=True)
    projected = 210.0 * lm3d @ rotation.T + (123.0, 77.0)
    t, s = pos(projected, lm3d)
    np.testing.assert_allclose(t, (123.0, 77.0), atol=1e-6)
    assert s == pytest.approx(210.0, rel=1e-6)


def test_d3d_alignment_matches_deep3dfacerecon_and_maps_back(astronaut, landmarks, lm3d):
    crop = align_d3d(astronaut, landmarks, lm3d)
    assert crop.image.shape == (224, 224, 3) and crop.image.dtype == np.uint8
    w0, h0, s, tx, ty = crop.trans_params
    assert (w0, h0) == (512, 512)
    # Deep3DFaceRecon's own landmark formula (y up), then rows down. It is not its pixels'
    # map exactly: it flips y as H - 1 - y but crops around H / 2 (s' - 1 px) and truncates the
    # resized size and the crop corner to whole pixels (< 1 px): so 1.5 px here; the matrix
    # follows the pixels (the dots below).
    flipped = landmarks.copy()
    flipped[:, 1] = h0 - 1 - flipped[:, 1]
    w, h = int(w0 * s), int(h0 * s)
    theirs = (flipped - (tx, ty) + (w0 / 2, h0 / 2)) * s - (w / 2 - 112, h / 2 - 112)
    theirs[:, 1] = 223 - theirs[:, 1]
    np.testing.assert_allclose(crop.landmarks, theirs, atol=1.5)
    # The five points land on the standard face at 102 px per dm around the crop centre.
    eyes = eye_centres(crop.landmarks)
    np.testing.assert_allclose(np.linalg.norm(eyes[1] - eyes[0]),
                               102 * np.linalg.norm(lm3d[1] - lm3d[0]), rtol=0.1)
    # Pixels: dots at the eye centres appear where the matrix says; back to the photo.
    photo_eyes = eye_centres(landmarks)
    dotted = align_d3d(with_blobs(astronaut, photo_eyes), landmarks, lm3d)
    found = np.stack([blob_centroid(dotted.image, crop.image, e, 8) for e in eyes])
    np.testing.assert_allclose(found, eyes, atol=1.0)
    np.testing.assert_allclose(apply_affine(invert_affine(crop.matrix), found), photo_eyes,
                               atol=1.0)


def test_several_faces_largest_first_and_index_chooses(astronaut, detector):
    face = astronaut[20:260, 110:350]  # the portrait's face and some margin
    small = np.asarray(Image.fromarray(face).resize((180, 180), Image.Resampling.BICUBIC))
    group = np.full((300, 620, 3), 200, np.uint8)
    group[30:270, 20:260] = face
    group[60:240, 400:580] = small
    first, count = detect_face(group, detector)
    second, _ = detect_face(group, detector, index=1)
    assert count == 2
    assert first.landmarks[:, 0].mean() < 260 < second.landmarks[:, 0].mean()
    with pytest.raises(NoFaceError, match=r"found 2 face\(s\), expected 0\.\.1"):
        detect_face(group, detector, index=2)


def test_no_face_is_a_clear_message(detector):
    blank = np.full((200, 240, 3), 128, np.uint8)
    with pytest.raises(NoFaceError, match="blank.png: no face found by the dlib detector"):
        detect_face(blank, detector, label="blank.png")


def test_default_detector_is_fan_when_its_weights_are_present(tmp_path, monkeypatch):
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN
    from neural_face_rig.neural.landmarks.fan_detector import FAN_WEIGHTS, SFD_WEIGHTS

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert default_detector().name == "dlib"  # no FAN weights: the offline default
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(FAN(4).state_dict(), folder / FAN_WEIGHTS)
    torch.save(s3fd().state_dict(), folder / SFD_WEIGHTS)
    assert default_detector().name == "fan"


def test_read_photo_refuses_bad_files_before_decoding(tmp_path, monkeypatch):
    from neural_face_rig.neural.photo import PhotoError, detect
    from neural_face_rig.neural.photo.detect import read_photo

    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(PhotoError, match="notes.png: not a readable image"):
        read_photo(tmp_path / "notes.png")
    with pytest.raises(PhotoError, match="no such image file"):
        read_photo(tmp_path / "absent.jpg")
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "wide.png")
    monkeypatch.setattr(detect, "MAX_PIXELS", 1999)
    with pytest.raises(PhotoError, match="image of 50x40 px is larger than"):
        read_photo(tmp_path / "wide.png")
    monkeypatch.setattr(detect, "MAX_PIXELS", 2000)
    assert read_photo(tmp_path / "wide.png").shape == (40, 50, 3)
