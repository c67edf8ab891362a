"""``nfr capture`` and ``nfr capture-arkit``: real files in, curves.json out, one-line errors."""

import cv2
import numpy as np
import pytest
import skimage.data
from neural_face_rig.neural.cli import main
from neural_face_rig.rig.curves_file import read_curves
from neural_face_rig.rig.face_model import write_face_model_mat
from neural_face_rig.rig.synthetic import make_synthetic_face_model
from test_capture_arkit import write_take


def test_capture_arkit_writes_curves(tmp_path, capsys):
    take = tmp_path / "take.csv"
    write_take(take, rows=61)
    out = tmp_path / "curves.json"
    code = main(["capture-arkit", str(take), "--out", str(out), "--scene-fps", "24",
                 "--frame-start", "1001"])
    assert code == 0
    curves = read_curves(out)
    assert curves.fps == 24 and curves.frame_start == 1001
    assert curves.frame_range == (1001.0, 1001.0 + 24)  # 1 s of capture at 24 fps
    assert "jawOpen" in curves.channels and "rotation.y" in curves.channels
    printed = capsys.readouterr().out
    assert "no rig target, ignored: " in printed and "TongueOut" in printed


def test_capture_arkit_bad_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("Time,Foo\n1,2\n")
    out = tmp_path / "curves.json"
    assert main(["capture-arkit", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.csv" in err[0] and "Timecode" in err[0]
    assert not out.exists()


def test_capture_video_writes_curves(tmp_path, capsys):
    model_path = tmp_path / "face.mat"
    write_face_model_mat(make_synthetic_face_model("tiny", expressions="actions"), model_path)
    photo = skimage.data.astronaut()
    photo[260:] = 0  # keep the suit's mission patch from passing for a face
    folder = tmp_path / "plate"
    folder.mkdir()
    for i in range(8):
        matrix = cv2.getRotationMatrix2D((220.0, 130.0), 3.0 * i, 1.0)
        frame = cv2.warpAffine(photo, matrix, (512, 512))
        cv2.imwrite(str(folder / f"plate.{i + 1:04d}.png"), frame[..., ::-1])
    out = tmp_path / "curves.json"
    code = main(["capture", str(folder), "--model", str(model_path), "--out", str(out),
                 "--fps", "25", "--gain", "mouth=1.2", "--every-frame"])
    assert code == 0, capsys.readouterr().err
    curves = read_curves(out)
    assert curves.fps == 25 and curves.frame_range == (1.0, 8.0)
    assert curves.source["detector_runs"] == 1 and curves.source["kind"] == "images"
    roll = curves.channels["rotation.z"].values
    # cv2 turns the photo counter-clockwise on screen by 3° a frame: the head rolls with it.
    assert np.abs(np.abs(np.degrees(roll[-1] - roll[0])) - 21.0) < 3.0
    assert "detector run 1x" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [(["--gain", "lips=2"], "expected one of"), (["--gain", "mouth"], "GROUP=NUMBER")],
)
def test_capture_bad_options(tmp_path, capsys, extra, message):
    out = tmp_path / "curves.json"
    code = main(["capture", str(tmp_path), "--model", str(tmp_path / "none.mat"),
                 "--out", str(out), *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
