"""The StyleGAN2 generator against an independent float64 re-derivation of docs/REFERENCE.md
§1 (per-sample loops, explicit padding/zero-insertion, no torch conv ops), plus the
invariances the architecture implies and the strict NVIDIA state-dict loading."""

import math
import os

import numpy as np
import pytest
import torch
from neural_face_rig.neural.errors import CheckpointError, NeuralError
from neural_face_rig.neural.stylegan2.config import (
    GeneratorConfigError,
    StyleGAN2Config,
    expected_state_shapes,
)
from neural_face_rig.neural.stylegan2.generator import (
    Generator,
    GeneratorInputError,
    SynthesisOptions,
    random_noise,
    random_state_dict,
    synthesis_steps,
)

TINY = StyleGAN2Config(
    z_dim=12, w_dim=16, img_resolution=32, mapping_layers=3, channel_base=512, channel_max=24
)  # channels: 4..16 px 24, 32 px 16


# ------------------------------------------------------------------ float64 reference

SQRT2 = math.sqrt(2)
REF_ACT = {  # NVIDIA bias_act: function, default gain
    "linear": (lambda y: y, 1.0),
    "relu": (lambda y: np.maximum(y, 0), SQRT2),
    "lrelu": (lambda y: np.where(y >= 0, y, 0.2 * y), SQRT2),
    "tanh": (np.tanh, 1.0),
    "sigmoid": (lambda y: 1 / (1 + np.exp(-y)), 1.0),
    "elu": (lambda y: np.where(y > 0, y, np.expm1(np.minimum(y, 0))), 1.0),
    "selu": (lambda y: 1.0507009873554805 * np.where(
        y > 0, y, 1.6732632423543772 * np.expm1(np.minimum(y, 0))), 1.0),
    "softplus": (lambda y: np.logaddexp(0, y), 1.0),
    "swish": (lambda y: y / (1 + np.exp(-y)), SQRT2),
}


def ref_act(y, name):
    f, gain = REF_ACT[name]
    return f(y) * gain


def ref_fc(p, name, x, lr, act):
    w = p[f"{name}.weight"] * (lr / math.sqrt(x.shape[-1]))
    y = x @ w.T + p[f"{name}.bias"] * lr
    return ref_act(y, act)


def ref_mapping(p, cfg, z, c=None):
    x = z / np.sqrt(np.mean(z**2, axis=1, keepdims=True) + 1e-8)
    if cfg.c_dim:
        y = ref_fc(p, "mapping.embed", c, 1.0, "linear")
        x = np.concatenate([x, y / np.sqrt(np.mean(y**2, axis=1, keepdims=True) + 1e-8)], 1)
    for i in range(cfg.mapping_layers):
        x = ref_fc(p, f"mapping.fc{i}", x, cfg.mapping_lr_multiplier, cfg.mapping_activation)
    return x


def ref_fir(cfg):
    k = np.asarray(cfg.resample_kernel, np.float64)
    f = np.outer(k, k)
    return f / f.sum() * 4.0  # gain up^2


def ref_correlate(x, f, pad0, pad1):
    """Depthwise 2-D correlation of x [C, H, W] with f [K, K] after zero padding."""
    xp = np.pad(x, ((0, 0), (pad0, pad1), (pad0, pad1)))
    k = f.shape[0]
    h, w = xp.shape[1] - k + 1, xp.shape[2] - k + 1
    out = np.zeros((x.shape[0], h, w))
    for u in range(k):
        for v in range(k):
            out += f[u, v] * xp[:, u : u + h, v : v + w]
    return out


def ref_layer(p, cfg, name, x, w, up, noise):
    wt = p[f"{name}.weight"]  # [O, I, 3, 3]
    s = w @ (p[f"{name}.affine.weight"] / math.sqrt(cfg.w_dim)).T + p[f"{name}.affine.bias"]
    wm = wt * s[None, :, None, None]
    wm = wm / np.sqrt((wm**2).sum(axis=(1, 2, 3), keepdims=True) + 1e-8)
    cout, (_, h, wd) = wt.shape[0], x.shape
    if up:  # transposed conv, stride 2: every input pixel scatters a 3x3 stamp
        y = np.zeros((cout, 2 * h + 1, 2 * wd + 1))
        for dy in range(3):
            for dx in range(3):
                y[:, dy : dy + 2 * h : 2, dx : dx + 2 * wd : 2] += np.einsum(
                    "oi,ihw->ohw", wm[:, :, dy, dx], x
                )
        pad = len(cfg.resample_kernel) // 2 - 1  # NVIDIA conv2d_resample, up=2, padding=1
        y = ref_correlate(y, ref_fir(cfg), pad, pad)
    else:
        xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
        y = np.zeros((cout, h, wd))
        for dy in range(3):
            for dx in range(3):
                y += np.einsum("oi,ihw->ohw", wm[:, :, dy, dx], xp[:, dy : dy + h, dx : dx + wd])
    if noise is not None:
        y = y + noise * p[f"{name}.noise_strength"]
    y = y + p[f"{name}.bias"][:, None, None]
    y = ref_act(y, cfg.synthesis_activation)
    if cfg.conv_clamp is not None:  # conv_clamp * gain, the layer gain being 1 (skip)
        y = np.clip(y, -cfg.conv_clamp, cfg.conv_clamp)
    return y


def ref_torgb(p, cfg, name, x, w):
    cin = x.shape[0]
    s = w @ (p[f"{name}.affine.weight"] / math.sqrt(cfg.w_dim)).T + p[f"{name}.affine.bias"]
    s = s / math.sqrt(cin)
    y = np.einsum("oi,ihw->ohw", p[f"{name}.weight"][:, :, 0, 0] * s[None, :], x)
    y = y + p[f"{name}.bias"][:, None, None]
    return y if cfg.conv_clamp is None else np.clip(y, -cfg.conv_clamp, cfg.conv_clamp)


def ref_upsample(img, cfg):
    c, h, w = img.shape
    z = np.zeros((c, 2 * h, 2 * w))
    z[:, ::2, ::2] = img
    k = len(cfg.resample_kernel)
    return ref_correlate(z, ref_fir(cfg), k // 2, k // 2 - 1)


def ref_synthesis(p, cfg, ws, noise_for):
    """ws [N, num_ws, w_dim]; noise_for(name, res, n) -> [res, res] or None."""
    images = []
    for n in range(ws.shape[0]):
        x = p["synthesis.b4.const"]
        img = None
        for k, res in enumerate(cfg.block_resolutions):
            b = f"synthesis.b{res}"
            if res == 4:  # REFERENCE.md §1.4: b4 uses rows 0, 1
                x = ref_layer(p, cfg, f"{b}.conv1", x, ws[n, 0], False, noise_for(f"{b}.conv1", n))
                rgb, w_rgb = None, ws[n, 1]
            else:  # block 2^(k+2) uses rows 2k-1, 2k, 2k+1
                x = ref_layer(p, cfg, f"{b}.conv0", x, ws[n, 2 * k - 1], True,
                              noise_for(f"{b}.conv0", n))
                x = ref_layer(p, cfg, f"{b}.conv1", x, ws[n, 2 * k], False,
                              noise_for(f"{b}.conv1", n))
                w_rgb = ws[n, 2 * k + 1]
            rgb = ref_torgb(p, cfg, f"{b}.torgb", x, w_rgb)
            img = rgb if img is None else ref_upsample(img, cfg) + rgb
        images.append(img)
    return np.stack(images)


def as64(state):
    return {k: v.double().numpy() for k, v in state.items()}


def const_noise(p):
    return lambda name, n: p[f"{name}.noise_const"]


# ------------------------------------------------------------------ tests


def make(cfg=TINY, seed=0):
    state = random_state_dict(cfg, seed)
    return Generator.from_state_dict(cfg, state), as64(state)


def test_config_keys_match_the_nvidia_1024_key_list():
    ref = {}
    keys = os.path.join(os.path.dirname(__file__), "fixtures", "stylegan2_keys_1024.txt")
    with open(keys) as f:
        for line in f:
            if line.startswith("## rosinality"):
                break
            if not line.startswith("#"):
                key, shape = line.split(" ", 1)
                ref[key] = tuple(int(s) for s in shape.strip("()\n ").split(",") if s.strip())
    assert expected_state_shapes(StyleGAN2Config()) == ref


def test_mapping_matches_reference_with_truncation_cutoff():
    gen, p = make()
    z = torch.randn(3, TINY.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ws = gen.map(z, truncation_psi=0.6, truncation_cutoff=3).double().numpy()
    w = ref_mapping(p, TINY, z.double().numpy())
    w_avg = p["mapping.w_avg"]
    assert ws.shape == (3, TINY.num_ws, TINY.w_dim)
    np.testing.assert_allclose(ws[:, 0], w_avg + 0.6 * (w - w_avg), atol=1e-5)
    np.testing.assert_allclose(ws[:, 2], w_avg + 0.6 * (w - w_avg), atol=1e-5)
    np.testing.assert_allclose(ws[:, 3], w, atol=1e-5)
    np.testing.assert_allclose(ws[:, -1], w, atol=1e-5)


def test_synthesis_matches_float64_reference_on_distinct_w_rows():
    gen, p = make()
    ws = torch.randn(2, TINY.num_ws, TINY.w_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        img = gen.synthesis(ws).double().numpy()
    ref = ref_synthesis(p, TINY, ws.double().numpy(), const_noise(p))
    assert img.shape == (2, 3, 32, 32)
    assert np.abs(ref).max() > 0.5  # a meaningful signal, not a vanishing one
    np.testing.assert_allclose(img, ref, atol=1e-5, rtol=0)


def clamped_noise_cases():
    """A 16 px model clamping at 0.8, W+ of a batch of 2, one noise seed per sample, and per
    noise mode the reference's noise (layer name, sample -> [R, R] float64 or None):
    (cfg, gen, params, ws, seeds, cases)."""
    cfg = StyleGAN2Config(**{**TINY.to_dict(), "conv_clamp": 0.8, "img_resolution": 16})
    gen, p = make(cfg, seed=3)
    ws = torch.randn(2, cfg.num_ws, cfg.w_dim, generator=torch.Generator().manual_seed(4))
    steps = {f"synthesis.b{s.res}.{s.layer}": s for s in synthesis_steps(cfg)}
    seeds = (11, 12)
    cases = {
        "const": const_noise(p),
        "none": lambda name, n: None,
        "random": lambda name, n: random_noise(seeds[n], steps[name].index, steps[name].res)[
            0, 0
        ].double().numpy(),
    }
    return cfg, gen, p, ws, seeds, cases


@pytest.mark.parametrize("channels_last, fused", [(True, False), (False, False), (True, True)])
def test_clamp_and_noise_modes_match_reference(channels_last, fused):
    """Generic path in both layouts, and the fused oneDNN path (polyphase up-convolutions,
    noise as input channels, fused lrelu) forced on every block."""
    cfg, gen, p, ws, seeds, cases = clamped_noise_cases()
    w64 = ws.double().numpy()
    images = {}
    for mode, noise_for in cases.items():
        opts = SynthesisOptions(
            noise_mode=mode, noise_seeds=seeds, channels_last=channels_last, fused=fused
        )
        with torch.no_grad():
            images[mode] = gen.synthesis(ws, opts).double().numpy()
        np.testing.assert_allclose(images[mode], ref_synthesis(p, cfg, w64, noise_for), atol=1e-5)
    assert np.abs(images["const"] - images["none"]).max() > 1e-2
    assert np.abs(images["const"] - images["random"]).max() > 1e-2
    unclamped = StyleGAN2Config(**{**cfg.to_dict(), "conv_clamp": None})
    assert np.abs(ref_synthesis(p, unclamped, w64, cases["const"]) - images["const"]).max() > 1e-2


def test_conditional_mapping_embeds_and_normalises_the_label():
    cfg = StyleGAN2Config(**{**TINY.to_dict(), "c_dim": 5})
    gen, p = make(cfg, seed=5)
    z = torch.randn(2, cfg.z_dim)
    c = torch.eye(5)[[1, 3]]
    with torch.no_grad():
        w = gen.mapping(z, c).double().numpy()
    np.testing.assert_allclose(w, ref_mapping(p, cfg, z.double().numpy(), c.double().numpy()),
                               atol=1e-5)
    with pytest.raises(GeneratorInputError, match="conditional"):
        gen.mapping(z)


def test_demodulation_makes_conv_weight_scale_irrelevant_but_not_torgb_scale():
    state = random_state_dict(TINY, 6)
    ws = torch.randn(1, TINY.num_ws, TINY.w_dim)
    base = Generator.from_state_dict(TINY, state).synthesis(ws)
    scaled = dict(state)
    scaled["synthesis.b8.conv0.weight"] = state["synthesis.b8.conv0.weight"] * 7.5
    scaled["synthesis.b16.conv1.weight"] = state["synthesis.b16.conv1.weight"] * 0.1
    same = Generator.from_state_dict(TINY, scaled).synthesis(ws)
    torch.testing.assert_close(same, base, atol=1e-5, rtol=0)
    scaled["synthesis.b16.torgb.weight"] = state["synthesis.b16.torgb.weight"] * 2.0
    assert (Generator.from_state_dict(TINY, scaled).synthesis(ws) - base).abs().max() > 1e-2


def test_each_w_row_reaches_exactly_the_layers_of_methods_1_4():
    gen, _ = make()
    net = gen.synthesis
    ws = torch.randn(1, TINY.num_ws, TINY.w_dim)
    consumers = {r: set() for r in range(TINY.num_ws)}
    for row in range(TINY.num_ws):
        edited = ws.clone()
        edited[:, row] += 1.0
        state = (None, None)
        for step in net.steps:  # same input state, original vs edited W+
            a = net.run_step(step, state, ws, SynthesisOptions())
            b = net.run_step(step, state, edited, SynthesisOptions())
            if any(u is not None and not torch.equal(u, v) for u, v in zip(a, b, strict=True)):
                consumers[row].add((step.res, step.layer))
            state = a
    expected = {0: {(4, "conv1")}, 1: {(4, "torgb"), (8, "conv0")}}
    for k, res in enumerate(TINY.block_resolutions[1:], start=1):
        expected.setdefault(2 * k - 1, set()).add((res, "conv0"))
        expected[2 * k] = {(res, "conv1")}
        expected[2 * k + 1] = {(res, "torgb")} | (
            {(res * 2, "conv0")} if res < TINY.img_resolution else set()
        )
    assert consumers == expected


def test_batch_samples_are_bitwise_independent_of_the_batch():
    gen, _ = make()
    ws = torch.randn(3, TINY.num_ws, TINY.w_dim)
    with torch.inference_mode():
        batch = gen.synthesis(ws)
        singles = torch.cat([gen.synthesis(ws[i : i + 1]) for i in range(3)])
        again = gen.synthesis(ws)
    assert torch.equal(batch, singles)
    assert torch.equal(batch, again)


def test_gradients_flow_through_synthesis_for_latent_optimisation():
    gen, _ = make()
    ws = torch.randn(1, TINY.num_ws, TINY.w_dim, requires_grad=True)
    gen.synthesis(ws).square().mean().backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0
    with pytest.raises(GeneratorInputError, match="no autograd"):
        gen.synthesis(ws, SynthesisOptions(fused=True))


def test_polyphase_up_kernel_equals_transposed_conv_then_fir():
    from neural_face_rig.neural.stylegan2 import ops

    weight = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    fir = ops.resample_filter((1, 3, 3, 1)).double()
    direct = ref_correlate(
        torch.nn.functional.conv_transpose2d(x, weight.transpose(0, 1), stride=2)[0].numpy(),
        ref_fir(TINY), 1, 1,
    )
    poly = torch.nn.functional.conv2d(x, ops.polyphase_up_kernel(weight, fir).double(), padding=1)
    out = torch.empty(2, 7, 12, 12, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last
    )
    ops.pixel_shuffle_into(out[:1], poly[:1].contiguous(memory_format=torch.channels_last))
    np.testing.assert_allclose(out[0, :5].numpy(), direct, atol=1e-12)


def test_bf16_matches_the_float64_reference_in_every_noise_mode_sample_by_sample():
    """bf16 adds the noise inside oneDNN's convolutions where ``kernels.conv_add_supported``
    (per-sample noise buffers), else separately: either way every noise mode stays close to
    the float64 reference, and each sample of a batch equals its own render bit for bit."""
    cfg, gen, p, ws, seeds, cases = clamped_noise_cases()
    images = {}
    for mode, noise_for in cases.items():
        ref = ref_synthesis(p, cfg, ws.double().numpy(), noise_for)
        opts = SynthesisOptions(noise_mode=mode, noise_seeds=seeds, precision="bf16")
        with torch.inference_mode():
            images[mode] = gen.synthesis(ws, opts)
            for n in range(2):
                one = SynthesisOptions(noise_mode=mode, noise_seeds=seeds[n : n + 1],
                                       precision="bf16")
                assert torch.equal(gen.synthesis(ws[n : n + 1], one), images[mode][n : n + 1])
        err = np.abs(images[mode].double().numpy() - ref).max() / (ref.max() - ref.min())
        assert 0 < err < 0.02, mode
    for mode in ("const", "random"):  # the noise is there: far more than the bf16 error
        assert (images[mode] - images["none"]).abs().max() > 0.05


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_blocks_stay_close_to_fp32(precision):
    cfg = StyleGAN2Config(**{**TINY.to_dict(), "num_fp16_res": 2, "conv_clamp": 256})
    gen, _ = make(cfg, seed=7)
    ws = torch.randn(1, cfg.num_ws, cfg.w_dim)
    marked = [r for r in cfg.block_resolutions if cfg.uses_fp16(r)]
    assert marked == [16, 32]  # the last two blocks, as NVIDIA's num_fp16_res counts
    opts = SynthesisOptions(precision=precision)
    low_dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    assert opts.block_dtype(cfg, 16) == low_dtype
    # bf16 starts at BF16_MIN_RES = 16 px too: the 4 and 8 px blocks stay float32.
    assert opts.block_dtype(cfg, 8) == torch.float32
    with torch.inference_mode():
        ref = gen.synthesis(ws)
        low = gen.synthesis(ws, opts)
        exact, reduced = (None, None), (None, None)
        for step in gen.synthesis.steps:
            exact = gen.synthesis.run_step(step, exact, ws, SynthesisOptions())
            reduced = gen.synthesis.run_step(step, reduced, ws, opts)
            if step.res < 16:  # bit for bit the float32 run
                assert all(a is b is None or torch.equal(a, b)
                           for a, b in zip(exact, reduced, strict=True))
            elif step.layer != "torgb":
                assert reduced[0].dtype == low_dtype
    assert low.dtype == torch.float32
    err = (low - ref).abs().max() / (ref.max() - ref.min())
    assert 0 < err < 0.05


def test_loading_reports_missing_and_misshaped_keys():
    state = random_state_dict(TINY)
    bad = dict(state)
    del bad["synthesis.b8.conv1.bias"]
    bad["synthesis.b16.torgb.weight"] = torch.zeros(3, 5, 1, 1)
    with pytest.raises(CheckpointError) as info:
        Generator.from_state_dict(TINY, bad, source="x.pkl")
    msg = str(info.value)
    assert "x.pkl" in msg and "missing key synthesis.b8.conv1.bias" in msg
    assert "key synthesis.b16.torgb.weight: expected shape (3, 24, 1, 1), found (3, 5, 1, 1)" in msg
    wrong_filter = dict(state)
    wrong_filter["synthesis.b8.resample_filter"] = torch.full((4, 4), 1 / 16)
    with pytest.raises(CheckpointError, match="resample_filter"):
        Generator.from_state_dict(TINY, wrong_filter)


def test_config_validation_and_json_round_trip():
    assert StyleGAN2Config.from_json(TINY.to_json()) == TINY
    assert StyleGAN2Config().num_ws == 18 and TINY.num_ws == 8
    assert [StyleGAN2Config().channels(r) for r in (4, 128, 1024)] == [512, 256, 32]
    for bad, field in [
        ({"architecture": "resnet"}, "architecture"),
        ({"img_resolution": 48}, "img_resolution"),
        ({"resample_kernel": [1, 2, 1]}, "resample_kernel"),
        ({"mapping_layers": 0}, "mapping_layers"),
        ({"channel_base": 16}, "channel_base"),
    ]:
        with pytest.raises(GeneratorConfigError, match=field):
            StyleGAN2Config(**bad)
    with pytest.raises(GeneratorConfigError, match="unknown generator config field"):
        StyleGAN2Config.from_dict({"z_dim": 512, "zdim": 3}, "model.json")
    assert issubclass(GeneratorConfigError, NeuralError)


def test_wrong_latent_shape_is_a_clear_error():
    gen, _ = make()
    with pytest.raises(GeneratorInputError, match=r"W\+: expected shape \[N, 8, 16\]"):
        gen.synthesis(torch.zeros(1, 7, 16))


SMALL = StyleGAN2Config(**{**TINY.to_dict(), "img_resolution": 16})


def _ws(cfg, seed, n=1):
    return torch.randn(n, cfg.num_ws, cfg.w_dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("fused", [False, True])
def test_layers_clamp_at_conv_clamp_times_the_skip_gain_of_1(fused):
    """NVIDIA clamps a synthesis layer at conv_clamp * gain (gain 1 in the skip architecture),
    after the activation gain: with a clamp the activations reach, every layer's output tops
    out at exactly conv_clamp, never at conv_clamp * sqrt(2)."""
    cfg = StyleGAN2Config(**{**SMALL.to_dict(), "conv_clamp": 0.5})
    gen, _ = make(cfg, seed=8)
    ws = _ws(cfg, 9)
    peaks = []
    state = (None, None)
    with torch.no_grad():
        for step in gen.synthesis.steps:
            state = gen.synthesis.run_step(step, state, ws, SynthesisOptions(fused=fused))
            if step.layer != "torgb":
                peaks.append(float(state[0][:, : gen.synthesis.block(step.res).conv1.out_channels]
                                   .abs().max()))
    assert max(peaks) == pytest.approx(0.5, abs=1e-7)
    assert sum(p == pytest.approx(0.5, abs=1e-7) for p in peaks) >= len(peaks) // 2


@pytest.mark.parametrize("act", ["linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu",
                                 "softplus", "swish"])
def test_every_nvidia_activation_matches_reference(act):
    cfg = StyleGAN2Config(**{**SMALL.to_dict(), "mapping_activation": act,
                             "synthesis_activation": act, "conv_clamp": 2.0})
    gen, p = make(cfg, seed=10)
    z = torch.randn(2, cfg.z_dim, generator=torch.Generator().manual_seed(11))
    ws = _ws(cfg, 12)
    with torch.no_grad():
        w = gen.mapping(z).double().numpy()
        img = gen.synthesis(ws).double().numpy()
    np.testing.assert_allclose(w, ref_mapping(p, cfg, z.double().numpy()), atol=1e-5)
    ref = ref_synthesis(p, cfg, ws.double().numpy(), const_noise(p))
    np.testing.assert_allclose(img, ref, atol=1e-5)
    lrelu = StyleGAN2Config(**{**cfg.to_dict(), "synthesis_activation": "lrelu"})
    if act != "lrelu":  # the option is honoured, not ignored
        other = ref_synthesis(p, lrelu, ws.double().numpy(), const_noise(p))
        assert np.abs(other - img).max() > 1e-2
    fusable = act in ("linear", "relu", "lrelu")
    if fusable:
        with torch.no_grad():
            fused = gen.synthesis(ws, SynthesisOptions(fused=True)).double().numpy()
        np.testing.assert_allclose(fused, ref, atol=1e-5)
    else:
        with torch.no_grad(), pytest.raises(GeneratorInputError, match=f"activation.*{act}"):
            gen.synthesis(ws, SynthesisOptions(fused=True))


def test_unknown_activation_is_refused_by_name():
    for field in ("mapping_activation", "synthesis_activation"):
        with pytest.raises(GeneratorConfigError, match=f"{field}.*'gelu'"):
            StyleGAN2Config(**{field: "gelu"})


def test_non_default_fir_applies_to_up_layers_and_images_but_not_conv1():
    cfg = StyleGAN2Config(**{**SMALL.to_dict(), "resample_kernel": [1, 1]})
    shapes = expected_state_shapes(cfg)
    assert shapes["synthesis.b8.resample_filter"] == (2, 2)
    assert shapes["synthesis.b8.conv0.resample_filter"] == (2, 2)
    assert shapes["synthesis.b8.conv1.resample_filter"] == (4, 4)  # NVIDIA's default
    assert shapes["synthesis.b4.conv1.resample_filter"] == (4, 4)
    gen, p = make(cfg, seed=13)
    ws = _ws(cfg, 14)
    with torch.no_grad():
        img = gen.synthesis(ws).double().numpy()
    ref = ref_synthesis(p, cfg, ws.double().numpy(), const_noise(p))
    np.testing.assert_allclose(img, ref, atol=1e-5)
    default = ref_synthesis(p, SMALL, ws.double().numpy(), const_noise(p))
    assert np.abs(default - img).max() > 1e-2
    with torch.no_grad(), pytest.raises(GeneratorInputError, match="4-tap resample_kernel"):
        gen.synthesis(ws, SynthesisOptions(fused=True))
    state = random_state_dict(cfg, 13)
    state["synthesis.b8.conv1.resample_filter"] = torch.full((4, 4), 1 / 16)
    with pytest.raises(CheckpointError, match=r"conv1.resample_filter.*default.*\[1, 3, 3, 1\]"):
        Generator.from_state_dict(cfg, state)


def test_a_generator_built_in_inference_mode_renders():
    """Weights created in inference mode keep no version counter: they count as frozen."""
    with torch.inference_mode():
        gen, _ = make()
        ws = torch.randn(1, TINY.num_ws, TINY.w_dim)
        img = gen.synthesis(ws)
        assert torch.equal(img, gen.synthesis(ws))
        assert gen.map(torch.randn(1, TINY.z_dim)).shape == (1, TINY.num_ws, TINY.w_dim)
