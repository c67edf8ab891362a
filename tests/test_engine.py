"""Inference engine, StyleGAN2 backend and `nfr generate` / `nfr info` on tiny random
generators: seeds, truncation, progressive output, cancellation, bit-identical incremental
re-synthesis, batching and the reduced-precision paths."""

import sys
import threading

import numpy as np
import pytest
import torch
from neural_face_rig.contract.state import RigState, SefaSlider
from neural_face_rig.neural import engine as engine_mod
from neural_face_rig.neural.backends import BackendError, StyleGAN2Backend
from neural_face_rig.neural.checkpoints import LoadedGenerator, save_project
from neural_face_rig.neural.cli import main
from neural_face_rig.neural.engine import (
    EngineError,
    StyleGAN2Engine,
    SynthesisCancelled,
    offset_rows,
    upscale,
)
from neural_face_rig.neural.stylegan2.config import StyleGAN2Config
from neural_face_rig.neural.stylegan2.generator import (
    BF16_MIN_RES,
    Generator,
    GeneratorInputError,
    random_state_dict,
)
from PIL import Image

CFG = StyleGAN2Config(
    z_dim=8, w_dim=16, img_resolution=32, mapping_layers=2, channel_base=512, channel_max=16
)
STATE = random_state_dict(CFG, seed=3)


def make_engine(**kwargs):
    return StyleGAN2Engine(Generator.from_state_dict(CFG, STATE), "cpu", **kwargs)


def fresh_render(ws, **kwargs):
    return make_engine(cache=False).synthesize(ws, **kwargs)


def random_ws(n=1, seed=0):
    return torch.randn(n, CFG.num_ws, CFG.w_dim, generator=torch.Generator().manual_seed(seed))


def test_seed_gives_nvidia_z_and_mapping_with_truncation():
    eng = make_engine()
    expected_z = np.random.RandomState(42).randn(1, CFG.z_dim)
    assert torch.equal(eng.z_from_seed(42), torch.from_numpy(expected_z).float())
    ws = eng.w_from_seed(42, psi=0.5, cutoff=2)
    with torch.no_grad():
        w = eng.generator.mapping(torch.from_numpy(expected_z).float())
    w_avg = eng.generator.mapping.w_avg
    torch.testing.assert_close(ws[:, 0], w_avg + 0.5 * (w - w_avg))
    torch.testing.assert_close(ws[:, 2], w)
    with pytest.raises(GeneratorInputError, match="seed"):
        eng.z_from_seed(-1)


def test_synthesize_equals_the_generator_and_is_deterministic():
    eng = make_engine(cache=False)
    ws = random_ws()
    img = eng.synthesize(ws)
    with torch.no_grad():
        direct = eng.generator.synthesis(ws)
    assert img.shape == (1, 3, 32, 32) and img.dtype == torch.float32
    assert torch.equal(img, direct)
    assert torch.equal(img, eng.synthesize(ws))
    assert torch.equal(eng.synthesize(ws[0, 0][None]), eng.synthesize(ws[:, :1].repeat(1, 8, 1)))


def test_progressive_yields_every_block_and_stops_at_preview_resolution():
    eng = make_engine(cache=False)
    ws = random_ws()
    blocks = list(eng.progressive(ws))
    assert [b.res for b in blocks] == [4, 8, 16, 32]
    assert [b.final for b in blocks] == [False, False, False, True]
    assert all(b.image.shape == (1, 3, b.res, b.res) for b in blocks)
    assert torch.equal(blocks[-1].image, eng.synthesize(ws))
    preview = eng.synthesize(ws, stop_res=16)
    assert torch.equal(preview, blocks[2].image)
    assert eng.last_run.steps_executed == 8  # 2 + 3 + 3 steps, the 32 px block skipped
    assert upscale(preview, 32).shape == (1, 3, 32, 32)
    assert torch.equal(blocks[1].upscaled(8), blocks[1].image)
    assert blocks[1].upscaled(32).shape == (1, 3, 32, 32)
    with pytest.raises(GeneratorInputError, match="stop_res"):
        eng.synthesize(ws, stop_res=12)
    with pytest.raises(GeneratorInputError, match=r"W\+: expected shape \[N, 8, 16\]"):
        eng.progressive(torch.zeros(1, 3, 16))  # checked at the call, before iterating


def test_cancel_stops_between_blocks_and_keeps_partial_work():
    eng = make_engine()
    ws = random_ws()
    calls = []

    def cancel_after_two_blocks():
        calls.append(1)
        return len(calls) > 2

    seen = []
    with pytest.raises(SynthesisCancelled):
        for block in eng.progressive(ws, cancel=cancel_after_two_blocks):
            seen.append(block.res)
    assert seen == [4, 8]
    event = threading.Event()
    event.set()
    with pytest.raises(SynthesisCancelled):
        make_engine().synthesize(ws, cancel=event)
    # The blocks computed before the cancel are reused, and the result is exact.
    img = eng.synthesize(ws)
    assert eng.last_run.resumed_at_step == 5
    assert torch.equal(img, fresh_render(ws))


@pytest.mark.parametrize("first_row", [1, 3, 6, 7])
def test_incremental_resynthesis_is_bit_identical_and_skips_unchanged_blocks(first_row):
    eng = make_engine()
    ws = random_ws(seed=1)
    eng.synthesize(ws)
    edited = ws.clone()
    edited[:, first_row:] += 0.7
    img = eng.synthesize(edited)
    assert torch.equal(img, fresh_render(edited))
    first_consumer = min(s.index for s in eng.generator.synthesis.steps if s.w_index == first_row)
    assert eng.last_run.resumed_at_step == first_consumer > 0
    assert eng.last_run.steps_executed == eng.last_run.total_steps - first_consumer
    # Going back to the original W+ is exact as well, and an unchanged W+ costs nothing.
    assert torch.equal(eng.synthesize(ws), fresh_render(ws))
    eng.synthesize(ws)
    assert eng.last_run.steps_executed == 0


def test_output_does_not_depend_on_the_thread_count():
    """Farm nodes differ in cores: a frame must not change with torch's thread count."""
    cfg = StyleGAN2Config(img_resolution=64, channel_base=2048, channel_max=64, w_dim=32,
                          z_dim=32, mapping_layers=2)
    eng = StyleGAN2Engine.from_state_dict(cfg, random_state_dict(cfg), cache=False)
    threads = torch.get_num_threads()
    try:
        images = []
        for n in (1, 2):
            torch.set_num_threads(n)
            images.append(eng.synthesize(eng.w_from_seed(5, psi=0.7)))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(images[0], images[1])


def test_cache_is_keyed_by_noise_and_precision_options():
    eng = make_engine()
    ws = random_ws()
    const = eng.synthesize(ws)
    none = eng.synthesize(ws, noise_mode="none")
    assert eng.last_run.resumed_at_step == 0
    assert not torch.equal(const, none)
    assert torch.equal(none, fresh_render(ws, noise_mode="none"))
    r1 = eng.synthesize(ws, noise_mode="random", noise_seed=5)
    r2 = eng.synthesize(ws, noise_mode="random", noise_seed=6)
    assert not torch.equal(r1, r2)
    assert torch.equal(r1, fresh_render(ws, noise_mode="random", noise_seed=5))
    with pytest.raises(GeneratorInputError, match="noise_seeds"):
        eng.synthesize(ws, noise_mode="random")


def test_results_do_not_alias_the_cache():
    eng = make_engine()
    ws = random_ws()
    img = eng.synthesize(ws)
    expected = img.clone()
    original = ws.clone()
    img.zero_()
    ws.add_(1.0)  # the caller's tensors are theirs to modify
    assert torch.equal(eng.synthesize(original), expected)
    assert eng.last_run.steps_executed == 0  # served from the cache, which was not touched


def test_sequences_render_in_batches_with_per_frame_identical_bits():
    eng = make_engine()
    frames = list(random_ws(5, seed=2))
    batched = list(eng.render_sequence(frames, batch_size=2))
    assert len(batched) == 5 and batched[0].shape == (3, 32, 32)
    for frame, image in zip(frames, batched, strict=True):
        assert torch.equal(image, fresh_render(frame[None])[0])


def test_per_layer_offsets_touch_only_the_chosen_rows():
    ws = random_ws(2)
    offset = torch.randn(CFG.w_dim)
    edited = offset_rows(ws, offset, [2, 5])
    assert torch.equal(edited[:, [2, 5]], ws[:, [2, 5]] + offset)
    untouched = [r for r in range(CFG.num_ws) if r not in (2, 5)]
    assert torch.equal(edited[:, untouched], ws[:, untouched])
    assert torch.equal(offset_rows(ws, offset, slice(6, None))[:, 6:], ws[:, 6:] + offset)


def test_precision_checks_and_bf16_preview(monkeypatch):
    with pytest.raises(EngineError, match="CUDA only"):
        make_engine(precision="fp16")
    monkeypatch.setattr(engine_mod, "bf16_supported", lambda device="cpu": False)
    with pytest.raises(EngineError, match="native bfloat16"):
        make_engine(precision="bf16")
    assert make_engine().preview_candidate is None
    monkeypatch.undo()
    if engine_mod.bf16_supported("cpu"):
        ws = random_ws()
        eng = make_engine(precision="bf16")
        img = eng.synthesize(ws)
        ref = fresh_render(ws)
        err = (img - ref).abs().max() / (ref.max() - ref.min())
        assert img.dtype == torch.float32 and 0 < err < 0.05
        assert torch.equal(img, eng.synthesize(ws + 0))  # deterministic (and cached)


def test_process_configuration_tunes_the_allocator_only_when_asked():
    threads = torch.get_num_threads()
    applied = engine_mod.configure_inference_process()
    assert torch.get_num_threads() == threads and "threads" not in applied
    if sys.platform.startswith("linux"):
        assert applied["malloc_tuned"] is True
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark


def test_bf16_detection_follows_the_cpu_probes(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not engine_mod.bf16_supported("cpu")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not engine_mod.bf16_supported("cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert engine_mod.bf16_supported("cpu") == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_stylegan2_backend_seed_latent_and_sefa_sliders():
    directions = np.linalg.qr(np.random.RandomState(0).randn(CFG.w_dim, CFG.w_dim))[0].T
    asked = []

    def directions_for(layers):
        asked.append(layers)
        return directions

    backend = StyleGAN2Backend(make_engine(), "model-a", directions_for)
    eng = backend.engine
    base = RigState(seed=7, psi=0.7, model_id="model-a")
    assert torch.equal(backend.latents(base), eng.w_from_seed(7, psi=0.7))
    slider = SefaSlider(direction=2, value=1.5, layers=(0, 1, 2))
    ws = backend.latents(RigState(seed=7, psi=0.7, sefa=(slider,)))
    expected = eng.w_from_seed(7, psi=0.7)
    expected[:, :3] += 1.5 * torch.from_numpy(directions[2]).float()
    torch.testing.assert_close(ws, expected)
    assert asked == [(0, 1, 2)]
    image = backend.render(RigState(seed=7, psi=0.7, sefa=(slider,), resolution=16))
    assert image.shape == (1, 3, 16, 16)
    assert torch.equal(image, fresh_render(expected, stop_res=16))
    w_plus = np.asarray(expected[0])
    assert torch.equal(
        backend.latents(RigState(latent=w_plus, latent_space="w+")), torch.from_numpy(w_plus)[None]
    )
    for bad, match in [
        (RigState(), "neither a latent nor a seed"),
        (RigState(latent=np.zeros(5), latent_space="w"), r"expected shape \[16\]"),
        (RigState(seed=1, sefa=(SefaSlider(99, 1.0, (0,)),)), "direction 99"),
        (RigState(seed=1, sefa=(SefaSlider(0, 1.0, (0, 8)),)), "layers"),
    ]:
        with pytest.raises(BackendError, match=match):
            backend.latents(bad)
    with pytest.raises(BackendError, match="model"):
        backend.render(RigState(seed=1, model_id="model-b"))


@pytest.fixture()
def weights(tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_project(LoadedGenerator(CFG, STATE, "nvidia-pkl", "ab" * 32), path)
    return path


def test_cli_generate_seed_png_and_npy(weights, tmp_path, capsys):
    out, npy = tmp_path / "face.png", tmp_path / "face.npy"
    code = main(["generate", "--weights", str(weights), "--seed", "4", "--psi", "0.7",
                 "--out", str(out), "--out-npy", str(npy)])
    assert code == 0
    array = np.load(npy)
    eng = make_engine()
    expected = eng.synthesize(eng.w_from_seed(4, psi=0.7)).numpy()
    assert array.dtype == np.float32 and array.shape == (1, 3, 32, 32)
    assert np.array_equal(array, expected)
    png = np.asarray(Image.open(out))
    assert png.shape == (32, 32, 3)
    assert np.abs(png.astype(float) - (np.clip(expected[0], -1, 1).transpose(1, 2, 0) + 1)
                  * 127.5).max() <= 0.5 + 1e-6


def test_cli_generate_from_w_file_with_preview_resolution(weights, tmp_path):
    ws = random_ws(2).numpy()
    np.save(tmp_path / "w.npy", ws)
    npy = tmp_path / "out.npy"
    assert main(["generate", "--weights", str(weights), "--w", str(tmp_path / "w.npy"),
                 "--res", "16", "--out-npy", str(npy), "--out", str(tmp_path / "x.png")]) == 0
    assert np.array_equal(np.load(npy), fresh_render(torch.from_numpy(ws), stop_res=16).numpy())
    assert (tmp_path / "x_0001.png").is_file()
    z = np.random.RandomState(1).randn(3, CFG.z_dim)
    np.save(tmp_path / "z.npy", z)
    assert main(["generate", "--weights", str(weights), "--z", str(tmp_path / "z.npy"),
                 "--out-npy", str(npy)]) == 0
    assert np.load(npy).shape == (3, 3, 32, 32)


def test_cli_reports_bad_latent_files_and_prints_info(weights, tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros((3, 7), np.float32))
    code = main(["generate", "--weights", str(weights), "--w", str(tmp_path / "bad.npy"),
                 "--out-npy", str(tmp_path / "o.npy")])
    assert code == 2
    assert "bad.npy: expected w of shape" in capsys.readouterr().err
    assert not (tmp_path / "o.npy").exists()
    assert main(["info", "--weights", str(weights)]) == 0
    text = capsys.readouterr().out
    assert "32 px" in text and "8 W+ rows" in text and "2 mapping layers" in text
    n_params = sum(v.numel() for k, v in STATE.items()
                   if not k.endswith(("noise_const", "resample_filter", "w_avg")))
    assert f"{n_params:,}" in text


# ------------------------------------------------------------------ live bf16 previews


def _previews_and_final(eng, ws):
    blocks = list(eng.progressive(ws))
    return blocks[:-1], blocks[-1]


@pytest.fixture(params=["this CPU", "any CPU"])
def bf16_engine(request, monkeypatch):
    """An engine where bf16 is native: this CPU's own probe (skipped where it has none), or
    the probe forced on (bf16 then runs through plain torch, slowly but correctly)."""
    if request.param == "this CPU":
        if not engine_mod.bf16_supported("cpu"):
            pytest.skip("this CPU lacks native bf16 (AVX512-BF16 or AMX with a bf16 oneDNN)")
    else:
        monkeypatch.setattr(engine_mod, "bf16_supported", lambda device="cpu": True)
    # The calibration stops timing at the delay budget, which a loaded machine (or plain-torch
    # bf16) can pass on these tiny blocks: tests that rely on the budget set it themselves.
    monkeypatch.setattr(engine_mod, "PREVIEW_DELAY_BUDGET_MS", 1e9)
    return make_engine()


def test_live_previews_run_in_bf16_and_the_final_image_stays_fp32_exact(bf16_engine):
    eng = bf16_engine
    assert eng.preview_candidate == "bf16" and eng.preview_error is None
    ws = random_ws(seed=4)
    previews, final = _previews_and_final(eng, ws)  # first run: fp32, then measured
    assert [b.precision for b in previews] == ["fp32"] * 3
    assert eng.preview_error is not None and 0 < eng.preview_error <= 0.01
    assert sorted(eng.preview_speedups) == [4, 8, 16]
    assert all(v > 0 for v in eng.preview_speedups.values())
    assert eng.last_run.total_steps == eng.last_run.steps_executed
    # The speed criteria are measured (and load-dependent), so they are set here: bf16 twice
    # as fast on every block, well within the delay budget.
    eng.preview_speedups = {r: 2.0 for r in eng.preview_speedups}
    eng.preview_times_ms = {r: 1.0 for r in eng.preview_speedups}
    assert eng.previews_enabled and eng.preview_max_res == 16
    exact = {b.res: b.image for b in make_engine(cache=False).progressive(ws, previews=False)}
    for edit_row in (None, 7, 2):  # a new latent, then slider-like edits (cached resumes)
        if edit_row is not None:
            ws = ws.clone()
            ws[:, edit_row:] += 0.5
            exact = {b.res: b.image
                     for b in make_engine(cache=False).progressive(ws, previews=False)}
        previews, final = _previews_and_final(eng, ws)
        assert [(b.res, b.precision, b.final) for b in previews] == [
            (4, "bf16", False), (8, "bf16", False), (16, "bf16", False)]
        assert final.precision == "fp32" and final.final
        assert torch.equal(final.image, exact[32])  # bit-exact fp32
        for b in previews:  # 4 and 8 px run in float32 in a bf16 run (BF16_MIN_RES)
            ref = exact[b.res]
            err = (b.image - ref).abs().max() / (ref.max() - ref.min())
            assert (0 < err <= 0.01) if b.res >= BF16_MIN_RES else err == 0
    assert torch.equal(eng.synthesize(ws, stop_res=16), exact[16])  # synthesize: no previews


def test_previews_stay_exact_when_the_measured_error_is_too_large(bf16_engine, monkeypatch):
    monkeypatch.setattr(engine_mod, "PREVIEW_TOLERANCE", 0.0)
    eng = bf16_engine
    ws = random_ws(seed=5)
    _previews_and_final(eng, ws)
    # The bf16 blocks (from 16 px, generator.BF16_MIN_RES) fail; smaller ones run in float32.
    assert eng.preview_errors[16] > 0 and (eng.preview_max_res or 0) < 16
    previews, final = _previews_and_final(eng, ws)
    exact = list(eng.progressive(ws, previews=False))
    assert all(torch.equal(p.image, e.image) for p, e in zip(previews, exact, strict=False))
    assert [b.precision for b in previews][2:] == ["fp32"]
    assert torch.equal(final.image, fresh_render(ws))


def test_no_live_previews_without_native_bf16_or_with_an_explicit_precision(monkeypatch):
    monkeypatch.setattr(engine_mod, "bf16_supported", lambda device="cpu": False)
    eng = make_engine()
    assert eng.preview_candidate is None
    for _ in range(2):
        previews, _ = _previews_and_final(eng, random_ws())
        assert [b.precision for b in previews] == ["fp32"] * 3
    assert eng.preview_error is None
    monkeypatch.setattr(engine_mod, "bf16_supported", lambda device="cpu": True)
    eng = make_engine()
    for _ in range(2):
        blocks = list(eng.progressive(random_ws(), precision="fp32"))
        assert {b.precision for b in blocks} == {"fp32"}
    assert eng.preview_error is None  # an explicit precision is never second-guessed


def test_only_blocks_up_to_the_first_one_over_tolerance_are_previewed_in_bf16(bf16_engine):
    eng = bf16_engine
    ws = random_ws(seed=6)
    _previews_and_final(eng, ws)
    assert sorted(eng.preview_errors) == [4, 8, 16]
    eng.preview_errors = {4: 0.001, 8: 0.5, 16: 0.001}  # as if the 8 px block had failed
    eng.preview_speedups = {4: 2.0, 8: 2.0, 16: 2.0}
    eng.preview_times_ms = {4: 1.0, 8: 1.0, 16: 1.0}
    assert eng.preview_max_res == 4
    previews, final = _previews_and_final(eng, ws + 0.25)
    exact = {b.res: b.image
             for b in make_engine(cache=False).progressive(ws + 0.25, previews=False)}
    assert [(b.res, b.precision) for b in previews] == [(4, "bf16"), (8, "fp32"), (16, "fp32")]
    assert torch.equal(previews[1].image, exact[8]) and torch.equal(final.image, exact[32])


def test_blocks_bf16_reaches_no_sooner_than_fp32_are_not_previewed_in_bf16(bf16_engine):
    eng = bf16_engine
    ws = random_ws(seed=7)
    _previews_and_final(eng, ws)
    eng.preview_errors = {4: 0.001, 8: 0.001, 16: 0.001}
    eng.preview_times_ms = {4: 1.0, 8: 1.0, 16: 1.0}
    eng.preview_speedups = {4: 0.5, 8: 0.8, 16: 0.9}  # bf16 slower everywhere
    assert eng.preview_max_res is None and not eng.previews_enabled
    previews, final = _previews_and_final(eng, ws + 0.5)
    assert [b.precision for b in previews] == ["fp32"] * 3
    eng.preview_speedups = {4: 0.5, 8: 1.5, 16: 0.9}  # the 8 px image comes sooner in bf16
    assert eng.preview_max_res == 8
    previews, final = _previews_and_final(eng, ws + 0.5)
    assert [b.precision for b in previews] == ["bf16", "bf16", "fp32"]
    assert torch.equal(final.image, fresh_render(ws + 0.5))


def test_a_cached_first_run_is_timed_again_from_scratch(bf16_engine):
    eng = bf16_engine
    ws = random_ws(seed=8)
    eng.synthesize(ws)  # fills the fp32 cache: the first progressive run resumes from it
    list(eng.progressive(ws))
    assert eng.last_run.resumed_at_step == eng.last_run.total_steps
    assert sorted(eng.preview_speedups) == [4, 8, 16]
    assert all(0 < v < float("inf") for v in eng.preview_speedups.values())


def test_the_calibration_times_no_block_past_the_delay_budget(bf16_engine, monkeypatch):
    eng = bf16_engine
    monkeypatch.setattr(engine_mod, "PREVIEW_DELAY_BUDGET_MS", 0.0)  # every block is past it
    _previews_and_final(eng, random_ws(seed=10))
    assert sorted(eng.preview_errors) == [4, 8, 16]  # the error of every block is measured
    assert sorted(eng.preview_times_ms) == sorted(eng.preview_speedups) == [4]
    assert eng.preview_max_res is None  # untimed blocks are never previewed in bf16


def test_previews_that_would_not_be_shown_are_not_computed(bf16_engine):
    eng = bf16_engine
    ws = random_ws(seed=11)
    final_only = list(eng.progressive(ws, shown_from=32))  # the caller shows the last image
    assert eng.preview_errors is None  # no calibration either
    _previews_and_final(eng, ws + 0.25)  # measures
    eng.preview_errors = {4: 0.001, 8: 0.001, 16: 0.001}
    eng.preview_speedups = {4: 2.0, 8: 2.0, 16: 2.0}
    eng.preview_times_ms = {4: 1.0, 8: 1.0, 16: 1.0}
    eng.preview_errors[16] = 0.5  # bf16 previews up to 8 px only
    blocks = list(eng.progressive(ws + 0.5, shown_from=16))  # the caller shows 16 px on
    assert [b.precision for b in blocks] == ["fp32"] * 4
    assert eng.last_run.steps_executed == eng.last_run.total_steps  # one plain pass
    blocks = list(eng.progressive(ws + 0.75, shown_from=8))
    assert [b.precision for b in blocks] == ["bf16", "bf16", "fp32", "fp32"]
    assert torch.equal(final_only[-1].image, fresh_render(ws))


def test_blocks_beyond_the_preview_delay_budget_are_not_previewed_in_bf16(bf16_engine):
    eng = bf16_engine
    ws = random_ws(seed=9)
    _previews_and_final(eng, ws)
    assert sorted(eng.preview_times_ms) == [4, 8, 16]
    eng.preview_errors = {4: 0.001, 8: 0.001, 16: 0.001}
    eng.preview_speedups = {4: 2.0, 8: 2.0, 16: 2.0}
    budget = engine_mod.PREVIEW_DELAY_BUDGET_MS
    eng.preview_times_ms = {4: 1.0, 8: budget + 1.0, 16: 2 * budget}  # the final would wait
    assert eng.preview_max_res == 4
    previews, final = _previews_and_final(eng, ws + 0.5)
    assert [b.precision for b in previews] == ["bf16", "fp32", "fp32"]
    assert torch.equal(final.image, fresh_render(ws + 0.5))
