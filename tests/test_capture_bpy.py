"""Capture imports in real Blender (the bpy module): a Live Link Face CSV in the app's exact
layout and a curves.json become F-curves on the rig's named controls and rotation, in one
undo step, in an action that saves, reopens and is replaced by a re-import."""

from __future__ import annotations

import importlib
import json
import types

import bpy
import numpy as np
import pytest
from fixtures.fcurves import fcurves_by_path, keys
from neural_face_rig.rig.curves_file import CaptureCurves, Channel
from test_capture_arkit import APP_HEADER, CAPTURE_FPS, write_take

addon_utils = importlib.import_module("addon_utils")  # on sys.path once bpy is imported

MODULE = "neural_face_rig"
SCENE_FPS = 24
SCENE_START = 1001


@pytest.fixture(scope="module", autouse=True)
def addon():
    addon_utils.enable(MODULE, default_set=True)
    yield
    addon_utils.disable(MODULE, default_set=True)


@pytest.fixture()
def rig() -> bpy.types.Object:
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = SCENE_FPS, 1.0
    scene.frame_start = SCENE_START
    ob = bpy.data.objects.new("FaceRig", None)
    scene.collection.objects.link(ob)
    ob.face_rig.is_rig = True
    bpy.context.view_layer.objects.active = ob
    return ob


def _import_csv(path, **kwargs) -> set[str]:
    """The operator as a button click does it (undo on). Blender remembers an operator's last
    options: every call here names them all."""
    options = {"frame_offset": 0, "rate": "SCENE", "action_mode": "REPLACE", **kwargs}
    return bpy.ops.nfr.import_arkit_csv("EXEC_DEFAULT", True, filepath=str(path), **options)


def _import_curves(path, **kwargs) -> set[str]:
    options = {"frame_offset": 0, "rate": "SCENE", "action_mode": "REPLACE", **kwargs}
    return bpy.ops.nfr.import_capture_curves("EXEC_DEFAULT", True, filepath=str(path),
                                             **options)


def test_live_link_csv_becomes_fcurves_on_the_scene_timeline(rig, tmp_path) -> None:
    csv_path = tmp_path / "take.csv"
    truth = write_take(csv_path, rows=121)  # 2 s at 60 fps
    assert _import_csv(csv_path, frame_offset=10, rate="NATIVE") == {"FINISHED"}
    curves = fcurves_by_path(rig)
    assert rig.animation_data.action.name == "FaceRig capture"
    assert {"face_controls.named.jawOpen", "face_controls.named.eyeBlinkLeft",
            "face_rig.rotation.c000", "face_rig.rotation.c001", "face_rig.rotation.c002"} <= set(
        curves)
    assert "face_controls.named.tongueOut" not in curves  # no such control: reported instead
    # Native rate: one key per row at start + offset + (t - t0) * scene fps (sub-frames kept).
    frames = SCENE_START + 10 + (truth["t"] - truth["t"][0]) * SCENE_FPS
    jaw = keys(curves["face_controls.named.jawOpen"])
    np.testing.assert_allclose(jaw[:, 0], frames, atol=1e-3)
    np.testing.assert_allclose(jaw[:, 1], truth["jawOpen"], atol=1e-6)
    yaw = keys(curves["face_rig.rotation.c001"])  # HeadYaw -> yaw, radians
    np.testing.assert_allclose(yaw[:, 1], truth["yaw"], atol=1e-6)
    pitch = keys(curves["face_rig.rotation.c000"])
    np.testing.assert_allclose(pitch[:, 1], truth["pitch"], atol=1e-6)
    assert {p.interpolation for p in curves["face_controls.named.jawOpen"].keyframe_points} == {
        "LINEAR"}
    # Playing the timeline gives the captured values on the rig's properties.
    scene = bpy.context.scene
    scene.frame_set(int(frames[60]), subframe=float(frames[60] % 1))
    assert rig.face_controls.named.jawOpen == pytest.approx(truth["jawOpen"][60], abs=1e-5)
    assert rig.face_rig.rotation.c001 == pytest.approx(truth["yaw"][60], abs=1e-5)


def test_scene_rate_resamples_onto_whole_frames(rig, tmp_path) -> None:
    csv_path = tmp_path / "take.csv"
    truth = write_take(csv_path, rows=121)
    assert _import_csv(csv_path) == {"FINISHED"}
    blink = keys(fcurves_by_path(rig)["face_controls.named.eyeBlinkLeft"])
    sample_frames = SCENE_START + (truth["t"] - truth["t"][0]) * SCENE_FPS
    assert blink[0, 0] == SCENE_START and np.all(np.diff(blink[:, 0]) == 1)
    assert blink[-1, 0] == np.floor(sample_frames[-1] + 1e-6)
    np.testing.assert_allclose(
        blink[:, 1], np.interp(blink[:, 0], sample_frames, truth["eyeBlinkLeft"]), atol=1e-6)


def test_the_import_is_one_undo_step(rig, tmp_path) -> None:
    csv_path = tmp_path / "take.csv"
    write_take(csv_path, rows=30)
    rig.face_controls.named.jawOpen = 0.25
    bpy.ops.ed.undo_push(message="Original")
    assert _import_csv(csv_path) == {"FINISHED"}
    assert bpy.data.objects["FaceRig"].animation_data.action is not None
    assert bpy.ops.ed.undo() == {"FINISHED"}
    restored = bpy.data.objects["FaceRig"]  # undo replaced the datablocks: fetch them again
    assert restored.animation_data is None or restored.animation_data.action is None
    assert "FaceRig capture" not in bpy.data.actions
    assert restored.face_controls.named.jawOpen == 0.25


def test_the_action_saves_and_reopens(rig, tmp_path) -> None:
    csv_path = tmp_path / "take.csv"
    truth = write_take(csv_path, rows=61)
    assert _import_csv(csv_path, rate="NATIVE") == {"FINISHED"}
    blend = tmp_path / "capture.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    reopened = bpy.data.objects["FaceRig"]
    assert reopened.animation_data.action.name == "FaceRig capture"
    jaw = keys(fcurves_by_path(reopened)["face_controls.named.jawOpen"])
    np.testing.assert_allclose(jaw[:, 1], truth["jawOpen"], atol=1e-6)


def test_a_reimport_replaces_instead_of_stacking(rig, tmp_path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    write_take(first, rows=121)
    write_take(second, rows=31, extra={"JawOpen": 0.5})
    assert _import_csv(first) == {"FINISHED"}
    count = len(fcurves_by_path(rig))
    assert _import_csv(second) == {"FINISHED"}
    curves = fcurves_by_path(rig)
    assert len(curves) == count  # the same channels, once each
    assert [a.name for a in bpy.data.actions] == ["FaceRig capture"]
    jaw = keys(curves["face_controls.named.jawOpen"])
    assert len(jaw) == 1 + int(30 / CAPTURE_FPS * SCENE_FPS)  # the second take's frames
    np.testing.assert_allclose(jaw[:, 1], 0.5)
    # "New Action" keeps the earlier capture.
    assert _import_csv(first, action_mode="NEW") == {"FINISHED"}
    assert rig.animation_data.action.name == "FaceRig capture.001"
    assert bpy.data.actions["FaceRig capture"].use_fake_user


def test_a_bad_csv_leaves_the_rig_untouched(rig, tmp_path) -> None:
    csv_path = tmp_path / "bad.csv"
    write_take(csv_path, rows=3)
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines[:2] + [lines[2].replace("0.", "x.", 1)]) + "\n")
    with pytest.raises(RuntimeError, match=r"bad\.csv: line 3: .*expected a finite number"):
        _import_csv(csv_path)
    assert rig.animation_data is None
    assert len(bpy.data.actions) == 0


def test_unknown_columns_are_named_in_the_report(rig, tmp_path, capfd) -> None:
    csv_path = tmp_path / "odd.csv"
    write_take(csv_path, rows=5, header=APP_HEADER.replace("JawOpen", "jaw_open") + ",Mystery")
    capfd.readouterr()
    assert _import_csv(csv_path) == {"FINISHED"}
    assert "face_controls.named.jawOpen" not in fcurves_by_path(rig)
    printed = [line for line in capfd.readouterr().out.splitlines() if line.startswith("Info:")]
    assert len(printed) == 1 and "unknown columns skipped: jaw_open" in printed[0]
    from neural_face_rig.capture_import import import_live_link_csv

    report = import_live_link_csv(rig, bpy.context.scene, csv_path).summary()
    assert "\n" not in report
    assert "unknown columns skipped: jaw_open (did you mean JawOpen?), Mystery" in report
    assert "no rig target, ignored: " in report and "TongueOut" in report


def test_curves_json_is_retimed_to_the_scene_and_keeps_interpolation(rig, tmp_path) -> None:
    path = tmp_path / "curves.json"
    CaptureCurves(
        fps=48.0, frame_start=1,
        channels={
            "jawOpen": Channel(np.array([1.0, 49.0, 97.0]), np.array([0.0, 0.8, 0.2]),
                               ("LINEAR", "CONSTANT", "LINEAR")),
            "rotation.z": Channel.linear([1.0, 97.0], [0.1, -0.2]),
            "translation.x": Channel.linear([1.0], [0.05]),
            "expression.c017": Channel.linear([1.0, 49.0], [0.3, -0.3]),
            "tongueOut": Channel.linear([1.0], [1.0]),
        },
        source={"kind": "video"},
    ).write(path)
    assert _import_curves(path, frame_offset=5) == {"FINISHED"}
    curves = fcurves_by_path(rig)
    assert set(curves) == {"face_controls.named.jawOpen", "face_rig.rotation.c002",
                           "face_rig.translation.c000", "face_rig.expression.c017"}
    jaw = curves["face_controls.named.jawOpen"]
    # 48 fps -> 24 fps: 1 s after frame 1 is 24 scene frames later; then +5.
    np.testing.assert_allclose(keys(jaw)[:, 0], [6.0, 30.0, 54.0])
    assert [p.interpolation for p in jaw.keyframe_points] == ["LINEAR", "CONSTANT", "LINEAR"]
    assert jaw.evaluate(42.0) == pytest.approx(0.8)  # held by CONSTANT
    assert jaw.evaluate(18.0) == pytest.approx(0.4)
    # Native rate: frames as written.
    assert _import_curves(path, rate="NATIVE") == {"FINISHED"}
    np.testing.assert_allclose(keys(fcurves_by_path(rig)["face_controls.named.jawOpen"])[:, 0],
                               [1.0, 49.0, 97.0])


def test_a_bad_curves_json_leaves_the_rig_untouched(rig, tmp_path) -> None:
    path = tmp_path / "curves.json"
    path.write_text(json.dumps({"format": "nfr-curves", "version": 2, "fps": 24,
                                "frame_start": 1, "channels": {}}))
    with pytest.raises(RuntimeError, match="version: this build reads version 1"):
        _import_curves(path)
    assert rig.animation_data is None


class _RecordingLayout:
    def __init__(self, log: list) -> None:
        self.log = log

    def column(self, **_kwargs) -> _RecordingLayout:
        return self

    def operator(self, idname: str, **_kwargs) -> None:
        self.log.append(("operator", idname))

    def label(self, text: str = "", **_kwargs) -> None:
        self.log.append(("label", text))


def test_the_capture_panel_offers_capture_and_imports_on_a_face_rig_only(rig, tmp_path) -> None:
    from neural_face_rig.panels.capture import NFR_PT_capture

    plain = bpy.data.objects.new("Plain", None)
    assert NFR_PT_capture.poll(types.SimpleNamespace(object=rig))
    assert not NFR_PT_capture.poll(types.SimpleNamespace(object=plain))
    log: list = []
    NFR_PT_capture.draw(types.SimpleNamespace(layout=_RecordingLayout(log)), bpy.context)
    assert log == [("operator", "nfr.capture_from_video"), ("operator", "nfr.import_arkit_csv"),
                   ("operator", "nfr.import_capture_curves")]
    csv_path = tmp_path / "take.csv"
    write_take(csv_path, rows=5)
    assert _import_csv(csv_path) == {"FINISHED"}
    log.clear()
    NFR_PT_capture.draw(types.SimpleNamespace(layout=_RecordingLayout(log)), bpy.context)
    assert log[-1] == ("label", "Action: FaceRig capture")
    bpy.context.view_layer.objects.active = None
    assert not bpy.ops.nfr.import_arkit_csv.poll()
