"""Video -> landmarks: a real face (the astronaut portrait) moved by a known 2D similarity per
frame; the tracker follows it with the face detector run only where tracking is lost."""

import cv2
import numpy as np
import pytest
import skimage.data
from neural_face_rig.neural.capture import CaptureCancelled, CaptureError
from neural_face_rig.neural.capture.tracking import similarity_fit, track_landmarks
from neural_face_rig.neural.capture.video import FrameSource
from neural_face_rig.neural.landmarks import make_detector

N_FRAMES = 30
CUT_AT = 22  # from here on the face jumps by (150, 60) px: tracking must be lost and redone
BLANK_AT = 17  # an empty frame: no face at all


@pytest.fixture(scope="module")
def detector():
    return make_detector("dlib")


def known_motion(i: int, centre) -> np.ndarray:
    """[2, 3] photo -> frame: rotation by up to 8° about the face, translation up to 20 px."""
    angle = 8.0 * np.sin(i / 5)
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, 1.0)
    matrix[:, 2] += [20 * np.sin(i / 7), 10 * np.cos(i / 6) - 10]
    if i >= CUT_AT:
        matrix[:, 2] += [150, 60]
    return matrix


@pytest.fixture(scope="module")
def clip(tmp_path_factory, detector):
    photo = skimage.data.astronaut()
    centre = detector.detect([photo])[0].landmarks.mean(axis=0)
    folder = tmp_path_factory.mktemp("astronaut")
    matrices = []
    for i in range(N_FRAMES):
        matrix = known_motion(i, centre)
        frame = cv2.warpAffine(photo, matrix, (512, 512), flags=cv2.INTER_LINEAR)
        if i == BLANK_AT:
            frame[:] = 40
        cv2.imwrite(str(folder / f"shot.{1001 + i:04d}.png"), frame[..., ::-1])
        matrices.append(matrix)
    (folder / "notes.txt").write_text("not a frame")
    return folder, matrices


def test_image_sequence_info(clip):
    folder, _ = clip
    source = FrameSource(folder / "shot.1001.png", fps=25)
    info = source.info
    assert (info.kind, info.frame_count, info.size) == ("images", N_FRAMES, (512, 512))
    assert info.fps == 25
    assert info.first_frame_number == 1001
    assert info.timecode == "00:00:40:01"  # frame 1001 at 25 fps
    batches = list(source.batches(8))
    assert [len(b.images) for b in batches] == [8, 8, 8, 6]
    np.testing.assert_allclose(batches[1].seconds, np.arange(8, 16) / 25)


@pytest.mark.parametrize("batched", [False, True])
def test_follows_the_known_similarity(clip, detector, batched):
    folder, matrices = clip
    calls = []
    track = track_landmarks(
        FrameSource(folder, fps=30), detector, batch_size=8, progress=lambda d, t: calls.append(d),
        batched=batched,
    )
    assert calls == [8, 16, 24, 30]
    # The detector ran on the first frame, on the blank frame, and where the face jumped.
    assert np.flatnonzero(track.detected).tolist() == [0, BLANK_AT, CUT_AT]
    assert track.confidence[BLANK_AT] == 0.0
    assert (np.delete(track.confidence, BLANK_AT) > 0.5).all()
    first = track.landmarks[0].astype(np.float64)
    photo_points = cv2.invertAffineTransform(matrices[0])
    photo_first = first @ photo_points[:, :2].T + photo_points[:, 2]
    for i in range(N_FRAMES):
        if i == BLANK_AT:
            continue
        _, angle, _ = similarity_fit(photo_first, track.landmarks[i].astype(np.float64))
        # The warp's rotation in the same x-right, y-down pixel convention as similarity_fit.
        true_angle = np.arctan2(matrices[i][1, 0], matrices[i][0, 0])
        assert abs(np.degrees(angle - true_angle)) < 1.0, i
        centre = photo_first.mean(axis=0)
        expected = matrices[i][:, :2] @ centre + matrices[i][:, 2]
        assert np.linalg.norm(track.landmarks[i].mean(axis=0) - expected) < 2.0, i


def test_cancel(clip, detector):
    folder, _ = clip
    with pytest.raises(CaptureCancelled):
        track_landmarks(FrameSource(folder), detector, batch_size=4, cancel=lambda: True)


def test_video_file(tmp_path, detector):
    photo = skimage.data.astronaut()
    # Below the face, the suit's mission patch passes for a face of the same size once the
    # frame is JPEG-compressed; keep the first detection unambiguous.
    photo[260:] = 0
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 24.0, (512, 512))
    assert writer.isOpened()
    for i in range(6):
        writer.write(np.ascontiguousarray(np.roll(photo, 3 * i, axis=1)[..., ::-1]))
    writer.release()
    source = FrameSource(path)
    assert source.info.kind == "video" and source.info.fps == pytest.approx(24.0)
    assert source.info.frame_count == 6 and source.info.size == (512, 512)
    track = track_landmarks(source, detector, batch_size=4)
    assert track.landmarks.shape == (6, 68, 2) and track.detector_runs == 1
    np.testing.assert_allclose(track.seconds, np.arange(6) / 24.0)
    shift = track.landmarks[5].mean(axis=0) - track.landmarks[0].mean(axis=0)
    np.testing.assert_allclose(shift, [15.0, 0.0], atol=1.5)


def test_bad_sources(tmp_path):
    with pytest.raises(CaptureError, match="no such video"):
        FrameSource(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(CaptureError, match="not a video OpenCV can decode"):
        FrameSource(tmp_path / "junk.mp4")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CaptureError, match="holds no image"):
        FrameSource(empty)
