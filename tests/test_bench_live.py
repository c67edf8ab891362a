"""``nfr bench --suite live`` at tiny scale: the same code path as the real suite (models
written in the product's formats, Add Face Rig per backend in a bpy child, slider edits through
the real worker, the offline references in this process), checked for what it reports, not
for its timings."""

import dataclasses
import time
from pathlib import Path

import pytest
from fixtures.tiny_models import TINY_DFG, TINY_STYLEGAN2
from neural_face_rig.contract import catalogue
from neural_face_rig.neural.bench_live import (
    discofacegan_model,
    measure,
    run,
    stylegan2_model,
)
from neural_face_rig.neural.cli_bench import BenchReport
from neural_face_rig.neural.errors import NeuralError

MODELS = (
    stylegan2_model("sg", TINY_STYLEGAN2, ("final_vs_offline", 1e9)),
    discofacegan_model("dfg", TINY_DFG, ("final_minus_offline_ms", 1e9)),
)


def test_the_live_bench_reports_every_model_against_its_offline_render() -> None:
    report = BenchReport()
    run(report, MODELS, edits=2, repeats=1)
    for label in ("sg", "dfg"):
        for name in ("cold_start_ms", "first_preview_ms", "final_ms", "offline_ms",
                     "final_minus_offline_ms", "final_vs_offline"):
            assert f"live_{label}_{name}" in report.metrics, name
        assert report.metrics[f"live_{label}_offline_ms"] > 0.0
        assert (report.metrics[f"live_{label}_final_ms"]
                >= report.metrics[f"live_{label}_first_preview_ms"] > 0.0)
    models = report.notes["live"]["models"]
    assert models["dfg"]["backend"] == catalogue.DISCOFACEGAN.id
    assert models["dfg"]["edit"] == "expression.c000"
    assert models["sg"]["edit"] == "seed"
    for label, config in (("sg", TINY_STYLEGAN2), ("dfg", TINY_DFG)):
        # every timed edit changed every W+ row: each was a full synthesis
        assert models[label]["rows_changed"] == models[label]["num_ws"] == config.num_ws
        assert models[label]["size"] == config.img_resolution
    assert report.notes["live"]["targets_met"]["dfg_final_minus_offline_ms <= 1e+09"]
    assert set(report.notes["live"]["targets_met"]) == {
        "sg_first_preview_ms <= 100", "sg_final_vs_offline <= 1e+09", "sg_cold_start_ms <= 5000",
        "dfg_first_preview_ms <= 100", "dfg_final_minus_offline_ms <= 1e+09",
        "dfg_cold_start_ms <= 5000", "poll_main_thread_p99_ms <= 16",
        "edit_main_thread_max_ms <= 16"}
    assert report.metrics["live_edit_main_thread_max_ms"] > 0
    for kind in ("poll", "request"):  # the main thread's share, timed in Blender
        assert (0 < report.metrics[f"live_{kind}_main_thread_p95_ms"]
                <= report.metrics[f"live_{kind}_main_thread_p99_ms"]
                <= report.metrics[f"live_{kind}_main_thread_max_ms"])


def test_the_live_bench_stops_with_the_workers_message_on_an_unreadable_model() -> None:
    """A generator file that is not one: the worker's error ends the stage at once (not
    after the edit timeout) and the bench reports it instead of numbers."""
    def write(folder: Path) -> dict[str, str]:
        path = folder / "broken.safetensors"
        path.write_bytes(b"not a model")
        return {catalogue.ROLE_GENERATOR: str(path)}

    broken = dataclasses.replace(stylegan2_model("broken", TINY_STYLEGAN2), write=write)
    start = time.monotonic()
    with pytest.raises(NeuralError, match="live bench stage failed") as failure:
        measure([broken], edits=1, repeats=1)
    assert "no face for FaceRig Face: error:" in str(failure.value)
    assert "broken.safetensors" in str(failure.value)
    assert time.monotonic() - start < 120.0
