"""DiscoFaceGAN: the StyleGAN v1 generator, the TF pickle reader, the adapter (input layout,
attribute-preserving truncation, identity-average W), the backend and its CLI.

The reference below re-derives TF ``networks_stylegan.py`` in float64 straight from the
TF-named, TF-laid-out variables of the fixture (per-sample loops, explicit nearest-neighbour
tiling, explicit stride-2 scatter for the transposed convolution, shifted sums for the blur
and the 3x3 convolutions), so it shares neither the reader's renaming nor the generator's
way of executing the up-sampling layers."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch
from fixtures import dfg_formats as fx
from fixtures.stylegan_formats import TINY_CONFIG, marker_source, tiny_state, write_tf_pkl
from neural_face_rig.contract.state import RigState, SefaSlider
from neural_face_rig.neural import cli_dfg
from neural_face_rig.neural.backends import BACKEND_LOADERS, BackendError
from neural_face_rig.neural.backends.discofacegan import DiscoFaceGANBackend
from neural_face_rig.neural.discofacegan.adapter import (
    attribute_truncation,
    compute_average_w_id,
    dfg_input,
    identity_input,
    identity_term,
    load_average_w_id,
    map_truncated,
    noise_from_seed,
    official_draws,
    save_average_w_id,
    split_dfg_input,
)
from neural_face_rig.neural.discofacegan.backend import DFGEngine
from neural_face_rig.neural.discofacegan.config import DFGConfig, DFGConfigError
from neural_face_rig.neural.discofacegan.generator import (
    DFGGenerator,
    DFGSynthesisOptions,
    random_state_dict,
    transposed_kernel,
)
from neural_face_rig.neural.discofacegan.tf_reader import (
    is_stylegan1_tf_pickle,
    load_dfg_generator,
    read_dfg_project,
    save_dfg_project,
)
from neural_face_rig.neural.engine import SynthesisCancelled
from neural_face_rig.neural.errors import CheckpointError
from neural_face_rig.neural.stylegan2.generator import GeneratorInputError
from neural_face_rig.rig.dfg_vae import DFGVae
from neural_face_rig.rig.params import GROUP_SLICES, RigParams

CFG = fx.TINY_DFG


@pytest.fixture(scope="module")
def state():
    return random_state_dict(CFG, seed=1)


@pytest.fixture(scope="module")
def tf_vars(state):
    groups = fx.dfg_tf_variables(state, CFG)
    return {f"{k}/{n}" if k else n: np.asarray(v, np.float64)
            for k, items in groups.items() for n, v in items}


@pytest.fixture(scope="module")
def pkl(tmp_path_factory, state):
    return fx.write_dfg_pkl(tmp_path_factory.mktemp("dfg") / "dfg.pkl", state)


@pytest.fixture(scope="module")
def loaded(pkl):
    return load_dfg_generator(pkl)


@pytest.fixture(scope="module")
def generator(loaded):
    return DFGGenerator.from_state_dict(loaded.config, loaded.state_dict)


# ------------------------------------------------------------------ float64 TF reference


def lrelu(x):
    return np.where(x >= 0, x, 0.2 * x)


def ref_mapping(v, z):
    x = np.asarray(z, np.float64)
    for i in range(CFG.mapping_layers):
        w, b = v[f"mapping/Dense{i}/weight"], v[f"mapping/Dense{i}/bias"]
        x = lrelu(x @ (w * math.sqrt(2) / math.sqrt(w.shape[0]) * 0.01) + b * 0.01)
    return x


def conv_same(x, w, gain):
    """TF conv2d SAME, stride 1: x [C, H, W], w [k, k, C, O] -> [O, H, W]."""
    k = w.shape[0]
    w = w * gain / math.sqrt(k * k * w.shape[2])
    xp = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    h, wd = x.shape[1:]
    out = np.zeros((w.shape[3], h, wd))
    for a in range(k):
        for b in range(k):
            out += np.einsum("chw,co->ohw", xp[:, a : a + h, b : b + wd], w[a, b])
    return out


def upconv_fused(x, w):
    """TF upscale2d_conv2d fused: kernel padded and summed to 4x4, then conv2d_transpose
    stride 2 SAME (pad 1): out[2i + a - 1, 2j + b - 1] += x[i, j] w[a, b]."""
    w = w * math.sqrt(2) / math.sqrt(9 * w.shape[2])
    wp = np.pad(w, ((1, 1), (1, 1), (0, 0), (0, 0)))
    w4 = wp[1:, 1:] + wp[:-1, 1:] + wp[1:, :-1] + wp[:-1, :-1]
    c, h, wd = x.shape
    big = np.zeros((w.shape[3], 2 * h + 2, 2 * wd + 2))  # index + 1 = output position
    for a in range(4):
        for b in range(4):
            big[:, a : a + 2 * h : 2, b : b + 2 * wd : 2] += np.einsum("chw,co->ohw", x, w4[a, b])
    return big[:, 1 : 2 * h + 1, 1 : 2 * wd + 1]


def blur(x):
    f = np.array([1.0, 2.0, 1.0])
    k = np.outer(f, f) / 16
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    h, w = x.shape[1:]
    return sum(k[a, b] * xp[:, a : a + h, b : b + w] for a in range(3) for b in range(3))


def epilogue(v, scope, x, w_row, noise):
    x = x + noise[None] * v[f"{scope}/Noise/weight"][:, None, None]
    x = lrelu(x + v[f"{scope}/bias"][:, None, None])
    x = x - x.mean(axis=(1, 2), keepdims=True)
    x = x / np.sqrt(np.mean(x**2, axis=(1, 2), keepdims=True) + 1e-8)
    sw = v[f"{scope}/StyleMod/weight"]
    style = w_row @ (sw / math.sqrt(sw.shape[0])) + v[f"{scope}/StyleMod/bias"]
    c = x.shape[0]
    return x * (style[:c, None, None] + 1) + style[c:, None, None]


def torgb(v, x, lod):
    w = v[f"synthesis/ToRGB_lod{lod}/weight"]
    return conv_same(x, w, 1.0) + v[f"synthesis/ToRGB_lod{lod}/bias"][:, None, None]


def ref_synthesis(v, ws, noise=True):
    """One sample's W+ [num_ws, w_dim] -> {res: ToRGB_lod image} (TF 'recursive', lod 0)."""
    log2 = int(math.log2(CFG.img_resolution))

    def nz(i, res):
        return v[f"synthesis/noise{i}"][0, 0] if noise else np.zeros((res, res))

    x = v["synthesis/4x4/Const/const"][0]
    x = epilogue(v, "synthesis/4x4/Const", x, ws[0], nz(0, 4))
    x = conv_same(x, v["synthesis/4x4/Conv/weight"], math.sqrt(2))
    x = epilogue(v, "synthesis/4x4/Conv", x, ws[1], nz(1, 4))
    images = {4: torgb(v, x, log2 - 2)}
    for r in range(3, log2 + 1):
        res, scope = 2**r, f"synthesis/{2**r}x{2**r}"
        w_up = v[f"{scope}/Conv0_up/weight"]
        if res >= 128:
            x = upconv_fused(x, w_up)
        else:
            x = conv_same(x.repeat(2, axis=1).repeat(2, axis=2), w_up, math.sqrt(2))
        x = epilogue(v, f"{scope}/Conv0_up", blur(x), ws[2 * r - 4], nz(2 * r - 4, res))
        x = conv_same(x, v[f"{scope}/Conv1/weight"], math.sqrt(2))
        x = epilogue(v, f"{scope}/Conv1", x, ws[2 * r - 3], nz(2 * r - 3, res))
        images[res] = torgb(v, x, log2 - r)
    return images


def rig_inputs(n, seed=0):
    rng = np.random.default_rng(seed)
    rigs = [RigParams.sample(rng) for _ in range(n)]
    return torch.tensor(np.stack([dfg_input(r, noise_from_seed(i)) for i, r in enumerate(rigs)]))


def assert_close(actual, expected, tol=2e-4):
    actual = np.asarray(actual, np.float64)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * scale)


# ------------------------------------------------------------------ generator


def test_transposed_kernels_equal_the_textbook_up_sampling_ops():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 6))
    w = rng.standard_normal((3, 3, 3, 4))  # TF [k, k, in, out]
    scaled = torch.tensor(w * math.sqrt(2) / math.sqrt(27)).permute(3, 2, 0, 1)
    xt = torch.tensor(x)[None]

    def run(kind):
        k = transposed_kernel(scaled, kind)
        return torch.nn.functional.conv_transpose2d(xt, k, stride=2, padding=1)[0].numpy()

    expected = conv_same(x.repeat(2, axis=1).repeat(2, axis=2), w, math.sqrt(2))
    np.testing.assert_allclose(run("up"), expected, atol=1e-12)
    np.testing.assert_allclose(run("up_fused"), upconv_fused(x, w), atol=1e-12)


def test_mapping_and_synthesis_match_the_tf_reference(generator, tf_vars):
    z = rig_inputs(2)
    with torch.inference_mode():
        w = generator.mapping(z)
        ws = generator.map(z)
        image = generator.synthesis(ws)
    for n in range(2):
        w_ref = ref_mapping(tf_vars, z[n : n + 1].double().numpy())[0]
        assert_close(w[n].numpy(), w_ref, 1e-5)
        ref = ref_synthesis(tf_vars, np.repeat(w_ref[None], CFG.num_ws, 0))
        assert_close(image[n].numpy(), ref[CFG.img_resolution])


def test_progressive_heads_match_the_lower_lod_torgb(generator, tf_vars):
    engine = DFGEngine(generator, np.zeros((CFG.num_ws, CFG.w_dim), np.float32), cache=False)
    ws = torch.randn(1, CFG.num_ws, CFG.w_dim, generator=torch.Generator().manual_seed(3))
    blocks = list(engine.progressive(ws))
    ref = ref_synthesis(tf_vars, ws[0].double().numpy())
    assert [b.res for b in blocks] == list(CFG.block_resolutions)
    assert [b.final for b in blocks] == [False] * (len(blocks) - 1) + [True]
    for block in blocks:
        assert_close(block.image[0].numpy(), ref[block.res])
    none = engine.synthesize(ws, noise_mode="none")
    assert_close(none[0].numpy(), ref_synthesis(tf_vars, ws[0].double().numpy(), noise=False)[128])


def test_batch_independent_bits_and_seeded_random_noise(generator):
    ws = generator.map(rig_inputs(3))
    with torch.inference_mode():
        batch = generator.synthesis(ws)
        single = torch.cat([generator.synthesis(ws[i : i + 1]) for i in range(3)])
        rand = DFGSynthesisOptions(noise_mode="random", noise_seeds=(5, 6, 7))
        r1 = generator.synthesis(ws, rand)
        r2 = generator.synthesis(ws[1:2], DFGSynthesisOptions("random", (6,)))
    assert torch.equal(batch, single)
    assert torch.equal(r1[1:2], r2)
    assert not torch.allclose(r1, batch)
    with pytest.raises(GeneratorInputError, match=r"noise_seeds: expected 1 or 3 seeds"):
        generator.synthesis(ws, DFGSynthesisOptions("random", (1, 2)))
    with pytest.raises(GeneratorInputError, match=r"W\+: expected shape \[N, 12, 16\]"):
        generator.synthesis(ws[:, :5])


def test_config_rules_and_strict_state_loading(state):
    assert DFGConfig().num_ws == 14 and DFGConfig().channels(256) == 64
    assert [DFGConfig().layer_kind(i) for i in (0, 1, 2, 9, 10, 12)] == [
        "const", "conv", "up", "conv", "up_fused", "up_fused"]
    with pytest.raises(DFGConfigError, match=r"z_dim - noise_dim must be 254"):
        DFGConfig(z_dim=512)
    with pytest.raises(DFGConfigError, match=r"field blur_filter"):
        DFGConfig(blur_filter=(1, 2))
    broken = dict(state)
    del broken["synthesis.layer3.style.bias"]
    broken["synthesis.layer2.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing key synthesis.layer3.style.bias.*"
                       r"key synthesis.layer2.weight: expected shape \(16, 16, 3, 3\)"):
        DFGGenerator.from_state_dict(CFG, broken)


# ------------------------------------------------------------------ TF pickle reader


def test_reader_returns_the_written_weights_without_running_code(tmp_path, state):
    marker = tmp_path / "ran"
    path = fx.write_dfg_pkl(tmp_path / "g.pkl", state, build_module_src=marker_source(marker))
    loaded = load_dfg_generator(path)
    assert not marker.exists()
    assert loaded.config == CFG
    assert loaded.state_dict.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded.state_dict[key], value), key
    assert loaded.extras["network_version"] == 3 and loaded.extras["build_func_name"] == "G_style"
    assert is_stylegan1_tf_pickle(path)


def test_released_architecture_is_derived_from_a_realistic_kwarg_set(tmp_path):
    """A 256 px pickle with only the kwargs DiscoFaceGAN records (num_channels, resolution,
    label_size) -> the release's defaults (fmap_base 8192 -> 64 channels at 256, fused at
    128 and up); the mapping is cut to 1 layer and W to 8 dims to keep the file small."""
    cfg = DFGConfig(w_dim=8, mapping_layers=1)
    full = random_state_dict(cfg, seed=2)
    path = fx.write_dfg_pkl(tmp_path / "r.pkl", full, cfg, static_kwargs={
        "num_channels": 3, "resolution": 256, "label_size": 0})
    loaded = load_dfg_generator(path)
    assert loaded.config == cfg
    assert loaded.state_dict["synthesis.layer13.weight"].shape == (64, 64, 3, 3)


def _variables(state, **edits):
    groups = fx.dfg_tf_variables(state, CFG)
    for spec, value in edits.items():
        component, name = spec.split(":")
        items = [(n, v) for n, v in groups[component] if n != name]
        if value is not None:
            items.append((name, value))
        groups[component] = items
    return groups


@pytest.mark.parametrize(
    ("edits", "kwargs", "version", "message"),
    [
        ({}, None, 4, r"version 4.*a StyleGAN2 TF pickle"),
        ({"synthesis:16x16/Conv1/StyleMod/weight": None}, None, 3,
         r"missing TF variable synthesis/16x16/Conv1/StyleMod/weight \(needed for "
         r"synthesis.layer5\)"),
        ({"synthesis:16x16/Extra/weight": np.zeros(3, np.float32)}, None, 3,
         r"unexpected TF variable\(s\) .* synthesis/16x16/Extra/weight \(3,\)"),
        ({":lod": np.float32(1.5)}, None, 3, r"TF variable lod = 1.5: a snapshot taken while"),
        ({}, {**fx.tiny_dfg_kwargs(), "resolution": 256}, 3,
         r"kwarg resolution=256 contradicts the variables, which give img_resolution = 128"),
        ({}, {**fx.tiny_dfg_kwargs(), "use_pixel_norm": True}, 3,
         r"kwarg use_pixel_norm=True is not supported"),
        ({}, {**fx.tiny_dfg_kwargs(), "mystery": 1}, 3, r"unknown TF generator kwarg\(s\) mystery"),
        ({"mapping:Dense0/weight": np.zeros((512, 16), np.float32)}, None, 3,
         r"the mapping takes 512 inputs; DiscoFaceGAN's takes 286"),
        ({}, {**fx.tiny_dfg_kwargs(), "latent_size": 300}, 3,
         r"the mapping takes 286 inputs; DiscoFaceGAN's takes 300"),
    ],
)
def test_bad_generator_pickles_get_specific_errors(tmp_path, state, edits, kwargs, version,
                                                    message):
    path = fx.write_dfg_pkl(tmp_path / "bad.pkl", state, version=version, static_kwargs=kwargs,
                            variables=_variables(state, **edits))
    with pytest.raises(CheckpointError, match=message):
        load_dfg_generator(path)


def test_other_files_are_recognised_and_refused(tmp_path):
    sg2 = write_tf_pkl(tmp_path / "sg2.pkl", tiny_state(), TINY_CONFIG)
    assert not is_stylegan1_tf_pickle(sg2)
    with pytest.raises(CheckpointError, match=r"version 4"):
        load_dfg_generator(sg2)
    png = tmp_path / "face.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))
    assert not is_stylegan1_tf_pickle(png)
    with pytest.raises(CheckpointError, match=r"a PNG image"):
        load_dfg_generator(png)
    with pytest.raises(CheckpointError, match=r"no such file"):
        load_dfg_generator(tmp_path / "absent.pkl")


def test_converted_pair_round_trips_and_keeps_the_source_digest(tmp_path, loaded):
    sidecar = save_dfg_project(loaded, tmp_path / "dfg.safetensors")
    back = load_dfg_generator(tmp_path / "dfg.safetensors")
    assert back.sha256 == loaded.sha256 and back.config == loaded.config
    for key, value in loaded.state_dict.items():
        assert torch.equal(back.state_dict[key], value)
    doc = json.loads(sidecar.read_text())
    doc["format"] = "nfr-stylegan2"
    sidecar.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"field format: expected 'nfr-discofacegan'"):
        read_dfg_project(tmp_path / "dfg.safetensors")
    sidecar.unlink()
    with pytest.raises(CheckpointError, match=r"without their sidecar dfg.json"):
        read_dfg_project(tmp_path / "dfg.safetensors")


# ------------------------------------------------------------------ adapter


def test_input_layout_is_id_tex_exp_rot_gamma_noise():
    rig = RigParams.sample(np.random.default_rng(1))
    noise = np.arange(32, dtype=np.float32)
    z = dfg_input(rig, noise)
    assert z.shape == (286,)
    parts = [(0, 80, rig.identity), (80, 160, rig.reflectance), (160, 224, rig.expression),
             (224, 227, rig.rotation), (227, 254, rig.illumination), (254, 286, noise)]
    for start, stop, values in parts:
        np.testing.assert_array_equal(z[start:stop], values)
    back, back_noise = split_dfg_input(z)
    np.testing.assert_array_equal(back_noise, noise)
    expected = rig.to_vector()
    expected[GROUP_SLICES["translation"]] = 0
    np.testing.assert_array_equal(back.to_vector(), expected)
    ident = identity_input(torch.tensor(z)[None])[0].numpy()
    np.testing.assert_array_equal(ident[:160], z[:160])
    assert not ident[160:].any()


def test_noise_comes_from_the_seed():
    expected = np.random.RandomState(7).randn(32).astype(np.float32)
    np.testing.assert_array_equal(noise_from_seed(7), expected)
    assert not np.array_equal(noise_from_seed(7), noise_from_seed(8))
    with pytest.raises(GeneratorInputError, match=r"seed: expected an integer"):
        noise_from_seed(-1)


def test_attribute_truncation_formula():
    gen = torch.Generator().manual_seed(0)
    ws, ws_id = torch.randn(2, 14, 8, generator=gen), torch.randn(2, 14, 8, generator=gen)
    avg = torch.randn(14, 8, generator=gen)
    out = attribute_truncation(ws, ws_id, avg, psi=0.7, cutoff=8).numpy()
    w, wi, a = ws.numpy(), ws_id.numpy(), avg.numpy()
    np.testing.assert_allclose(out[:, :8], w[:, :8] + (a[None, :8] - wi[:, :8]) * 0.3, atol=1e-6)
    np.testing.assert_array_equal(out[:, 8:], w[:, 8:])
    assert torch.equal(attribute_truncation(ws, ws_id, avg, psi=1.0), ws)
    with pytest.raises(GeneratorInputError, match=r"cutoff: expected 0..14, found 15"):
        attribute_truncation(ws, ws_id, avg, cutoff=15)


def test_expression_edits_change_the_image_but_not_the_identity_term(generator):
    avg = torch.randn(CFG.num_ws, CFG.w_dim, generator=torch.Generator().manual_seed(4))
    rig = RigParams.sample(np.random.default_rng(2))
    smiling = rig.copy()
    smiling.expression = smiling.expression + 1.5
    other = rig.copy()
    other.identity = other.identity + 1.0
    z = torch.tensor(np.stack([dfg_input(r, noise_from_seed(3)) for r in (rig, smiling, other)]))
    with torch.inference_mode():
        terms = identity_term(generator.map(identity_input(z)), avg, 0.7, 8)
        ws = map_truncated(generator, z, avg)
        images = generator.synthesis(ws)
    assert torch.equal(terms[0], terms[1])
    assert not torch.allclose(terms[0], terms[2])
    assert (images[0] - images[1]).abs().mean() > 1e-3
    with torch.inference_mode():
        raw = generator.map(z)
    assert torch.equal(ws[:, 8:], raw[:, 8:])
    assert torch.allclose(ws[:, :8] - raw[:, :8], terms[:, :8])


def test_average_w_id_text_file(tmp_path):
    values = np.random.default_rng(0).standard_normal((CFG.num_ws, CFG.w_dim))
    save_average_w_id(tmp_path / "avg.txt", values)
    assert len((tmp_path / "avg.txt").read_text().splitlines()) == CFG.num_ws
    np.testing.assert_allclose(load_average_w_id(tmp_path / "avg.txt", CFG), values, rtol=1e-6)
    np.savetxt(tmp_path / "flat.txt", values.reshape(-1))
    np.testing.assert_allclose(load_average_w_id(tmp_path / "flat.txt", CFG), values, rtol=1e-6)
    np.savetxt(tmp_path / "short.txt", values[:3])
    with pytest.raises(CheckpointError, match=r"expected 12 x 16 = 192 values .* found 48"):
        load_average_w_id(tmp_path / "short.txt", CFG)
    (tmp_path / "junk.txt").write_text("hello world\n")
    with pytest.raises(CheckpointError, match=r"expected a text file of numbers"):
        load_average_w_id(tmp_path / "junk.txt", CFG)
    values[2, 3] = np.nan
    np.savetxt(tmp_path / "nan.txt", values)
    with pytest.raises(CheckpointError, match=r"non-finite"):
        load_average_w_id(tmp_path / "nan.txt", CFG)
    with pytest.raises(CheckpointError, match=r"cannot read"):
        load_average_w_id(tmp_path / "none.txt", CFG)


def test_official_draws_continue_the_per_sample_stream():
    z_id, noise = official_draws(5, seed=1)
    np.random.seed(1)
    for i in range(5):
        lats = np.random.normal(size=[1, 179])
        noise_ = np.random.normal(size=[1, 32])
        np.testing.assert_array_equal(z_id[i], lats[0, :128])
        np.testing.assert_array_equal(noise[i], noise_[0])


def test_average_w_id_is_the_mean_over_vae_identities(tmp_path, generator):
    fx.write_vae_weights(tmp_path, hidden=8)
    id_vae = DFGVae.load(tmp_path).factors["id"]
    calls = []
    avg = compute_average_w_id(generator, id_vae, samples=7, chunk=3,
                               progress=lambda d, t: calls.append((d, t)))
    assert calls == [(3, 7), (6, 7), (7, 7)]
    z_id, noise = official_draws(7)
    rows = []
    for i in range(7):
        z = np.zeros(286)
        z[:160] = id_vae.decode(z_id[i : i + 1])[0]
        z[254:] = noise[i]
        rows.append(ref_mapping(_tf_vars_of(generator), z[None])[0])
    assert avg.shape == (CFG.num_ws, CFG.w_dim)
    assert_close(avg, np.repeat(np.mean(rows, 0)[None], CFG.num_ws, 0), 1e-5)


def _tf_vars_of(generator):
    state = {k: v for k, v in generator.state_dict().items()}
    groups = fx.dfg_tf_variables(state, CFG)
    return {f"{k}/{n}" if k else n: np.asarray(v, np.float64)
            for k, items in groups.items() for n, v in items}


# ------------------------------------------------------------------ engine and backend


def test_engine_cancels_and_resumes_bit_identically(generator):
    avg = np.zeros((CFG.num_ws, CFG.w_dim), np.float32)
    engine = DFGEngine(generator, avg)
    ws = engine.map(rig_inputs(1))
    base = engine.synthesize(ws)
    edited = ws.clone()
    edited[:, 9:] += 0.5
    resumed = engine.synthesize(edited)
    assert engine.last_run is not None and engine.last_run.resumed_at_step > 0
    fresh = DFGEngine(generator, avg, cache=False).synthesize(edited)
    assert torch.equal(resumed, fresh) and not torch.equal(base, fresh)
    blocks = engine.progressive(ws, cancel=lambda: True)
    with pytest.raises(SynthesisCancelled, match=r"before the \d+ px block"):
        list(blocks)
    with pytest.raises(GeneratorInputError, match=r"stop_res: expected one of 4, 8"):
        engine.synthesize(ws, stop_res=12)
    with pytest.raises(GeneratorInputError, match=r"w_avg_id: expected shape \[12, 16\]"):
        DFGEngine(generator, np.zeros((14, 512)))
    bare = DFGEngine(generator, None)
    z = rig_inputs(1)
    assert torch.equal(bare.map(z, psi=1.0), generator.map(z))
    with pytest.raises(GeneratorInputError, match=r"psi 0.7 needs the identity-average W"):
        bare.map(z, psi=0.7)


def test_backend_renders_rig_states_and_sefa_sliders(tmp_path, loaded, generator):
    avg = np.random.default_rng(5).standard_normal((CFG.num_ws, CFG.w_dim)).astype(np.float32)
    backend = DiscoFaceGANBackend.from_dfg(loaded, avg, sefa_cache_dir=tmp_path)
    rig = RigParams.sample(np.random.default_rng(6))
    state = RigState(backend="discofacegan", rig=rig.to_vector(), seed=11, psi=0.7)
    image = backend.render(state)
    z = torch.tensor(dfg_input(rig, noise_from_seed(11)))[None]
    expected = generator.synthesis(map_truncated(generator, z, torch.tensor(avg), 0.7, 8))
    assert torch.equal(image, expected)
    # The worker's registry loads the same backend from files (the average W found beside).
    save_dfg_project(loaded, tmp_path / "dfg.safetensors")
    save_average_w_id(tmp_path / "dfg-average_w_id.txt", avg)
    registered = BACKEND_LOADERS["discofacegan"](str(tmp_path / "dfg.safetensors"), "cpu", {})
    assert isinstance(registered, DiscoFaceGANBackend)
    assert torch.equal(registered.render(state), image)
    other_seed = backend.render(RigState(backend="discofacegan", rig=rig.to_vector(), seed=12))
    assert not torch.equal(other_seed, image)

    layers = (0, 1, 2, 3)
    slider = SefaSlider(direction=0, value=3.0, layers=layers)
    edited = backend.latents(RigState(backend="discofacegan", rig=rig.to_vector(), seed=11,
                                      psi=0.7, sefa=(slider,)))
    m = np.concatenate([loaded.state_dict[f"synthesis.layer{i}.style.weight"].double().numpy().T
                        for i in layers], axis=1)
    m /= np.linalg.norm(m, axis=0, keepdims=True)
    values, vectors = np.linalg.eigh(m @ m.T)
    top = vectors[:, np.argmax(values)]
    delta = (edited - backend.latents(state))[0].double().numpy()
    assert np.allclose(delta[4:], 0)
    assert abs(abs(float(delta[0] @ top)) - 3.0) < 1e-4

    with pytest.raises(BackendError, match=r"rig: expected 257 values"):
        backend.render(RigState(backend="discofacegan", rig=np.zeros(254)))
    with pytest.raises(BackendError, match=r"latent_space: DiscoFaceGAN takes 'z'"):
        backend.render(RigState(backend="discofacegan", latent=np.zeros(16), latent_space="w"))
    with pytest.raises(BackendError, match=r"not 'discofacegan'"):
        backend.render(RigState(backend="stylegan2", rig=rig.to_vector()))


# ------------------------------------------------------------------ CLI


def _run(argv):
    parser = argparse.ArgumentParser()
    cli_dfg.add_commands(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_average_w_convert_and_generate(tmp_path, pkl, loaded, capsys):
    fx.write_vae_weights(tmp_path / "vae", hidden=8)
    out = tmp_path / "avg.txt"
    assert _run(["dfg", "average-w", "--weights", str(pkl), "--vae", str(tmp_path / "vae"),
                 "--out", str(out), "--samples", "6"]) == 0
    avg = load_average_w_id(out, CFG)
    generator = DFGGenerator.from_state_dict(loaded.config, loaded.state_dict)
    expected = compute_average_w_id(generator, DFGVae.load(tmp_path / "vae").factors["id"], 6)
    np.testing.assert_allclose(avg, expected, rtol=1e-6, atol=1e-7)
    assert "6/6" in capsys.readouterr().err

    assert _run(["dfg", "convert", str(pkl), str(tmp_path / "conv.safetensors")]) == 0
    assert load_dfg_generator(tmp_path / "conv.safetensors").sha256 == loaded.sha256

    rig_path = tmp_path / "rig.json"
    RigParams.sample(np.random.default_rng(0)).write_json(rig_path)
    assert _run(["dfg", "generate", "--weights", str(tmp_path / "conv.safetensors"),
                 "--average-w", str(out), "--rig", str(rig_path), "--seed", "3",
                 "--out", str(tmp_path / "face.png")]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "face.png").size == (CFG.img_resolution, CFG.img_resolution)


@pytest.mark.parametrize("channels_last", [False, True])
def test_instance_norm_is_two_pass_on_near_constant_maps(channels_last):
    """mean/std = 1000: the variance must come from the centred values (TF subtracts the
    mean first); E[x^2] - mean^2 in float32 loses it to cancellation."""
    from neural_face_rig.neural.discofacegan.generator import instance_norm_style

    gen = torch.Generator().manual_seed(0)
    x = (1000.0 + torch.randn(1, 8, 16, 16, generator=gen, dtype=torch.float64)).float()
    scale = 1.0 + 0.1 * torch.randn(8, generator=gen)
    shift = 0.1 * torch.randn(8, generator=gen)
    x64 = x.double()
    mean = x64.mean(dim=(2, 3), keepdim=True)
    var = (x64 - mean).square().mean(dim=(2, 3), keepdim=True)
    ref = (x64 - mean) / (var + 1e-8).sqrt() * scale.double()[:, None, None] + shift.double()[
        :, None, None
    ]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = instance_norm_style(x.contiguous(memory_format=fmt), scale, shift)
    assert (out.double() - ref).abs().max() < 1e-3


def test_bf16_synthesis_keeps_the_normalised_epilogue_in_float32():
    """bf16 convolutions, float32 noise/lrelu/instance norm/style with one rounding per layer,
    and the constant normalised in float32: the bf16 image stays within 5 % of the fp32 one
    (rounding each pass to bf16 gave 10-21 % on these weights)."""
    gen = DFGGenerator.from_state_dict(CFG, random_state_dict(CFG, 0))
    for seed in range(3):
        ws = torch.randn(1, CFG.num_ws, CFG.w_dim, generator=torch.Generator().manual_seed(seed))
        with torch.inference_mode():
            exact = gen.synthesis(ws)
            low = gen.synthesis(ws, DFGSynthesisOptions(precision="bf16"))
        err = (low - exact).abs().max() / (exact.max() - exact.min())
        assert low.dtype == torch.float32 and 0 < err < 0.05


def test_a_generator_built_in_inference_mode_renders():
    with torch.inference_mode():
        gen = DFGGenerator.from_state_dict(CFG, random_state_dict(CFG, 0))
        ws = torch.randn(1, CFG.num_ws, CFG.w_dim)
        assert torch.equal(gen.synthesis(ws), gen.synthesis(ws))
