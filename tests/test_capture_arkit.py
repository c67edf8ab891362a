"""Live Link Face CSV import: the app's exact layout -> curves with the right names, values
and timing; unknown columns reported, not guessed."""

import math

import numpy as np
import pytest
from neural_face_rig.rig.arkit_csv import (
    ARKIT_BLENDSHAPE_COLUMNS,
    LIVE_LINK_FACE_COLUMNS,
    read_live_link_csv,
)
from neural_face_rig.rig.controls import ARKIT_BLENDSHAPES, CONTROL_NAMES, UNDEFINABLE
from neural_face_rig.rig.curves_file import CaptureError, read_curves
from neural_face_rig.rig.timecode import timecode_seconds

# The header exactly as the app writes it (typed out here, not taken from the module).
APP_HEADER = (
    "Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,"
    "EyeLookUpLeft,EyeSquintLeft,EyeWideLeft,EyeBlinkRight,EyeLookDownRight,EyeLookInRight,"
    "EyeLookOutRight,EyeLookUpRight,EyeSquintRight,EyeWideRight,JawForward,JawRight,JawLeft,"
    "JawOpen,MouthClose,MouthFunnel,MouthPucker,MouthRight,MouthLeft,MouthSmileLeft,"
    "MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,MouthDimpleRight,"
    "MouthStretchLeft,MouthStretchRight,MouthRollLower,MouthRollUpper,MouthShrugLower,"
    "MouthShrugUpper,MouthPressLeft,MouthPressRight,MouthLowerDownLeft,MouthLowerDownRight,"
    "MouthUpperUpLeft,MouthUpperUpRight,BrowDownLeft,BrowDownRight,BrowInnerUp,BrowOuterUpLeft,"
    "BrowOuterUpRight,CheekPuff,CheekSquintLeft,CheekSquintRight,NoseSneerLeft,NoseSneerRight,"
    "TongueOut,HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,"
    "RightEyePitch,RightEyeRoll"
)
CAPTURE_FPS = 60


def timecode(frame_index: int, start=(14, 3, 52, 28)) -> str:
    """Timecode of capture frame ``frame_index`` after ``start`` at 60 fps, with the app's
    millisecond-like sub-frame field."""
    h, m, s, f = start
    total = ((h * 60 + m) * 60 + s) * CAPTURE_FPS + f + frame_index
    f = total % CAPTURE_FPS
    s_total = total // CAPTURE_FPS
    clock = f"{s_total // 3600:02d}:{s_total // 60 % 60:02d}:{s_total % 60:02d}"
    return f"{clock}:{f:02d}.{(7 * frame_index) % 1000:03d}"


def write_take(path, rows: int, header: str = APP_HEADER, extra=None):
    """A take: JawOpen = ramp, EyeBlinkLeft = sine, HeadYaw = 0.2 sin, the rest small."""
    names = header.split(",")
    lines = [header]
    truth = {"jawOpen": [], "eyeBlinkLeft": [], "yaw": [], "pitch": [], "t": []}
    for i in range(rows):
        t = timecode_seconds(timecode(i), CAPTURE_FPS)
        values = {name: 0.01 * (k % 7) for k, name in enumerate(names[2:])}
        values["JawOpen"] = i / (rows - 1)
        values["EyeBlinkLeft"] = 0.5 + 0.5 * math.sin(i / 5)
        values["HeadYaw"] = 0.2 * math.sin(i / 9)
        values["HeadPitch"] = -0.1 + 0.001 * i
        if extra:
            values.update(extra)
        truth["jawOpen"].append(values["JawOpen"])
        truth["eyeBlinkLeft"].append(values["EyeBlinkLeft"])
        truth["yaw"].append(values["HeadYaw"])
        truth["pitch"].append(values["HeadPitch"])
        truth["t"].append(t)
        cells = [timecode(i), "61"] + [f"{values.get(n, 0.0):.6f}" for n in names[2:]]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return {k: np.array(v) for k, v in truth.items()}


def test_layout_matches_the_app_header():
    assert ",".join(LIVE_LINK_FACE_COLUMNS) == APP_HEADER
    # The app's 52 columns are ARKit's 52 blendshapes (in the app's own order).
    assert sorted(c[0].lower() + c[1:] for c in ARKIT_BLENDSHAPE_COLUMNS) == sorted(
        ARKIT_BLENDSHAPES
    )


def test_timecode_to_seconds():
    assert timecode_seconds("01:02:03:30.500", 60) == pytest.approx(3723 + 30.5 / 60)
    with pytest.raises(CaptureError, match="frame 60 does not exist"):
        timecode_seconds("00:00:00:60", 60)
    with pytest.raises(CaptureError, match="drop-frame"):
        timecode_seconds("00:00:00;10", 29.97)


def test_every_row_on_its_own_frame(tmp_path):
    csv_path = tmp_path / "take.csv"
    truth = write_take(csv_path, rows=121)
    curves, report = read_live_link_csv(
        csv_path, scene_fps=24, frame_start=101, capture_fps=CAPTURE_FPS, resample=False
    )
    # Names: the rig's named controls (ARKit camelCase) plus pitch/yaw/roll.
    assert set(curves.channels) == set(CONTROL_NAMES) | {"rotation.x", "rotation.y", "rotation.z"}
    assert report.unknown_columns == [] and report.rows == 121
    eyes = {"LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw", "RightEyePitch",
            "RightEyeRoll"}
    # The blendshapes without a rig control are reported with the reason, never guessed.
    undefinable = {name[0].upper() + name[1:] for name in UNDEFINABLE}
    assert set(report.ignored_columns) == eyes | undefinable
    assert "tongue" in report.ignored_reasons["TongueOut"]
    # Timing: each row at 101 + (t - t0) * 24, sub-frame fraction included.
    frames = 101 + (truth["t"] - truth["t"][0]) * 24
    jaw = curves.channels["jawOpen"]
    np.testing.assert_allclose(jaw.frames, frames, atol=1e-9)
    np.testing.assert_allclose(jaw.values, truth["jawOpen"], atol=1e-6)
    np.testing.assert_allclose(curves.channels["rotation.y"].values, truth["yaw"], atol=1e-6)
    np.testing.assert_allclose(curves.channels["rotation.x"].values, truth["pitch"], atol=1e-6)
    assert curves.source["timecode_start"] == timecode(0)


def test_resampled_to_scene_frames_and_round_trips(tmp_path):
    csv_path = tmp_path / "take.csv"
    truth = write_take(csv_path, rows=121)  # 2 s at 60 fps
    curves, _ = read_live_link_csv(csv_path, scene_fps=30, frame_start=1, capture_fps=60)
    blink = curves.channels["eyeBlinkLeft"]
    assert blink.frames[0] == 1 and np.all(np.diff(blink.frames) == 1)
    sample_frames = 1 + (truth["t"] - truth["t"][0]) * 30
    assert blink.frames[-1] == math.floor(sample_frames[-1] + 1e-6)
    expect = np.interp(blink.frames, sample_frames, truth["eyeBlinkLeft"])
    np.testing.assert_allclose(blink.values, expect, atol=1e-6)
    out = tmp_path / "curves.json"
    curves.write(out)
    again = read_curves(out)
    assert again.fps == 30 and again.frame_start == 1
    assert set(again.channels) == set(curves.channels)
    np.testing.assert_array_equal(again.channels["eyeBlinkLeft"].values, blink.values)


def test_unknown_columns_are_reported_not_guessed(tmp_path):
    header = APP_HEADER.replace("JawOpen", "jaw_open") + ",Mystery"
    csv_path = tmp_path / "odd.csv"
    write_take(csv_path, rows=5, header=header)
    curves, report = read_live_link_csv(csv_path)
    assert report.unknown_columns == ["jaw_open", "Mystery"]
    assert report.hints == {"jaw_open": "JawOpen"}
    assert report.missing_columns == ["JawOpen"]
    assert "jawOpen" not in curves.channels and "mystery" not in curves.channels
    assert any("did you mean JawOpen" in line for line in report.lines())


def test_degrees_and_signs(tmp_path):
    csv_path = tmp_path / "deg.csv"
    write_take(csv_path, rows=4, extra={"HeadRoll": 10.0})
    curves, _ = read_live_link_csv(
        csv_path, head_scale=math.pi / 180, head_signs=(1.0, 1.0, -1.0), resample=False
    )
    np.testing.assert_allclose(curves.channels["rotation.z"].values, -math.radians(10.0))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda lines: lines[:1], "no data rows"),
        (lambda lines: [lines[0].replace("Timecode", "Time")] + lines[1:], "starting with"),
        (lambda lines: lines[:2] + [lines[2].replace("0.", "x.", 1)], "expected a finite number"),
        (lambda lines: lines[:1] + [lines[2], lines[1]], "goes back in time"),
        (lambda lines: lines[:2] + [lines[2] + ",1"], "expected 63 fields"),
    ],
)
def test_bad_files_fail_with_a_clear_message(tmp_path, mutate, message):
    csv_path = tmp_path / "bad.csv"
    write_take(csv_path, rows=3)
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(mutate(lines)) + "\n")
    with pytest.raises(CaptureError, match=message):
        read_live_link_csv(csv_path)
