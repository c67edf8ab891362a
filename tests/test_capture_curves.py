"""curves.json: writer and guarded reader (schema, duplicate keys, size cap)."""

import json

import numpy as np
import pytest
from neural_face_rig.rig import curves_file as curves
from neural_face_rig.rig.curves_file import CaptureCurves, CaptureError, Channel, read_curves


def sample_curves() -> CaptureCurves:
    return CaptureCurves(
        fps=25.0,
        frame_start=10,
        channels={
            "jawOpen": Channel.linear([10, 14, 20.5], [0.0, 0.8, 0.25]),
            "rotation.y": Channel(np.array([10.0, 30.0]), np.array([0.1, -0.2]),
                                  ("CONSTANT", "LINEAR")),
            "expression.c007": Channel.linear([10], [0.5]),
        },
        source={"kind": "video", "path": "clip.mp4", "fps": 25.0},
    )


def test_round_trip(tmp_path):
    path = tmp_path / "curves.json"
    sample_curves().write(path)
    again = read_curves(path)
    assert again.fps == 25.0 and again.frame_start == 10
    assert again.source == {"kind": "video", "path": "clip.mp4", "fps": 25.0}
    np.testing.assert_array_equal(again.channels["jawOpen"].frames, [10, 14, 20.5])
    assert again.channels["rotation.y"].interpolation == ("CONSTANT", "LINEAR")
    # Evaluation: linear between keys, held by CONSTANT, clamped outside.
    np.testing.assert_allclose(again.channels["jawOpen"].evaluate([12, 30]), [0.4, 0.25])
    np.testing.assert_allclose(again.channels["rotation.y"].evaluate([20, 30]), [0.1, -0.2])
    assert again.frame_range == (10.0, 30.0)


def _write(tmp_path, text: str):
    path = tmp_path / "c.json"
    path.write_text(text)
    return path


def test_duplicate_keys_are_refused(tmp_path):
    text = json.dumps(sample_curves().to_dict())
    text = text.replace('"fps": 25.0', '"fps": 25.0, "fps": 30.0')
    with pytest.raises(CaptureError, match="'fps' twice"):
        read_curves(_write(tmp_path, text))


def test_size_cap(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    sample_curves().write(path)
    monkeypatch.setattr(curves, "MAX_FILE_BYTES", 100)
    with pytest.raises(CaptureError, match="at most 100 bytes"):
        read_curves(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(format="other"), "format: expected 'nfr-curves'"),
        (lambda d: d.update(version=2), "version"),
        (lambda d: d.update(extra=1), "unknown field"),
        (lambda d: d["channels"]["jawOpen"]["keys"].reverse(), "strictly increase"),
        (lambda d: d["channels"]["jawOpen"]["keys"][0].__setitem__(2, "BEZIER"), "'BEZIER'"),
        (lambda d: d["channels"].update({"rotation.w": {"keys": [[1, 0, "LINEAR"]]}}),
         "rotation.x, .y or .z"),
        (lambda d: d["channels"].update({"expression.c064": {"keys": [[1, 0, "LINEAR"]]}}),
         "c000..c063"),
        (lambda d: d["channels"]["jawOpen"].update(keys=[]), "non-empty"),
    ],
)
def test_bad_documents(tmp_path, edit, message):
    document = sample_curves().to_dict()
    edit(document)
    with pytest.raises(CaptureError, match=message):
        read_curves(_write(tmp_path, json.dumps(document)))


def test_nan_refused(tmp_path):
    text = json.dumps(sample_curves().to_dict()).replace("0.8", "NaN")
    with pytest.raises(CaptureError, match="finite numbers, found NaN"):
        read_curves(_write(tmp_path, text))
