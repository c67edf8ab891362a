"""e4e encoder from a fixture in the official checkpoint layout (IR-SE-50 body, FPN, style
blocks, progressive deltas from w0, latent_avg), against a float64 reference written here
from the official module definitions; refused options are named."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures.stylegan_formats import rosinality_state
from neural_face_rig.neural.checkpoints import load_generator
from neural_face_rig.neural.errors import CheckpointError
from neural_face_rig.neural.photo.e4e_encoder import encode, encoder_input, load_e4e_encoder
from neural_face_rig.neural.stylegan2.config import StyleGAN2Config
from neural_face_rig.neural.stylegan2.generator import random_state_dict
from PIL import Image
from skimage import data

STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))  # get_blocks(50)


def official_encoder_state(style_count, seed=0):
    """``encoder.*`` keys of pSp/e4e's Encoder4Editing(50, 'ir_se') state_dict."""
    g = torch.Generator().manual_seed(seed)
    state = {}

    def conv(name, out, inp, k, bias=False):
        state[f"{name}.weight"] = torch.randn(out, inp, k, k, generator=g) * math.sqrt(
            2.0 / (inp * k * k))
        if bias:
            state[f"{name}.bias"] = 0.05 * torch.randn(out, generator=g)

    def bn(name, c, gamma=1.0):
        state[f"{name}.weight"] = gamma * (0.5 + torch.rand(c, generator=g))
        state[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)
        state[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=g)
        state[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=g)
        state[f"{name}.num_batches_tracked"] = torch.tensor(500000)

    def prelu(name, c):
        state[f"{name}.weight"] = 0.25 + 0.05 * torch.randn(c, generator=g)

    conv("encoder.input_layer.0", 64, 3, 3)
    bn("encoder.input_layer.1", 64)
    prelu("encoder.input_layer.2", 64)
    unit = 0
    for in_channel, depth, count in STAGES:
        for j in range(count):
            p = f"encoder.body.{unit}"
            cin = in_channel if j == 0 else depth
            if cin != depth:
                conv(f"{p}.shortcut_layer.0", depth, cin, 1)
                bn(f"{p}.shortcut_layer.1", depth)
            bn(f"{p}.res_layer.0", cin)
            conv(f"{p}.res_layer.1", depth, cin, 3)
            prelu(f"{p}.res_layer.2", depth)
            conv(f"{p}.res_layer.3", depth, depth, 3)
            bn(f"{p}.res_layer.4", depth, gamma=0.3)
            conv(f"{p}.res_layer.5.fc1", depth // 16, depth, 1)
            conv(f"{p}.res_layer.5.fc2", depth, depth // 16, 1)
            unit += 1
    for i in range(style_count):
        spatial = 16 if i < 3 else 32 if i < 7 else 64
        for k in range(int(math.log2(spatial))):
            conv(f"encoder.styles.{i}.convs.{2 * k}", 512, 512, 3, bias=True)
        state[f"encoder.styles.{i}.linear.weight"] = 0.3 * torch.randn(512, 512, generator=g)
        state[f"encoder.styles.{i}.linear.bias"] = 0.1 * torch.randn(512, generator=g)
    conv("encoder.latlayer1", 512, 256, 1, bias=True)
    conv("encoder.latlayer2", 512, 128, 1, bias=True)
    return state


DECODER = StyleGAN2Config(z_dim=512, w_dim=512, img_resolution=256, mapping_layers=2,
                          channel_base=256, channel_max=16)


def write_official_e4e(path, encoder, *, encoder_type="Encoder4Editing", config=DECODER,
                       **opts_extra):
    """The file coach.py saves: pSp state_dict, vars(opts), latent_avg [18 or n, 512]."""
    decoder = random_state_dict(config, 3)
    state = dict(encoder)
    state.update((f"decoder.{k}", v) for k, v in rosinality_state(decoder, config).items())
    latent_avg = 0.3 * torch.randn(config.num_ws, 512, generator=torch.Generator().manual_seed(4))
    opts = {"exp_dir": "experiments/ffhq", "encoder_type": encoder_type,
            "stylegan_size": config.img_resolution,
            "start_from_latent_avg": True, "checkpoint_path": None, "batch_size": 8,
            "learning_rate": 0.0001, "progressive_start": 20000, "progressive_step_every": 2000,
            "w_discriminator_lambda": 0.1, **opts_extra}
    torch.save({"state_dict": state, "opts": opts, "latent_avg": latent_avg}, path)
    return latent_avg


def reference(state, x, style_count, latent_avg, e4e=True):
    """Encoder4Editing.forward (+ pSp's latent_avg) in float64 from the official code's ops."""
    s = {k[len("encoder."):]: v.double() for k, v in state.items()}

    def bn(x, n):
        return F.batch_norm(x, s[f"{n}.running_mean"], s[f"{n}.running_var"], s[f"{n}.weight"],
                            s[f"{n}.bias"], False, 0.0, 1e-5)

    x = F.prelu(bn(F.conv2d(x, s["input_layer.0.weight"], padding=1), "input_layer.1"),
                s["input_layer.2.weight"])
    feats = {}
    unit = 0
    for in_channel, depth, count in STAGES:
        for j in range(count):
            p, stride = f"body.{unit}", 2 if j == 0 else 1
            cin = in_channel if j == 0 else depth
            if cin == depth:
                shortcut = x[:, :, ::stride, ::stride]  # MaxPool2d(1, stride)
            else:
                shortcut = bn(F.conv2d(x, s[f"{p}.shortcut_layer.0.weight"], stride=stride),
                              f"{p}.shortcut_layer.1")
            r = bn(x, f"{p}.res_layer.0")
            r = F.prelu(F.conv2d(r, s[f"{p}.res_layer.1.weight"], padding=1),
                        s[f"{p}.res_layer.2.weight"])
            r = bn(F.conv2d(r, s[f"{p}.res_layer.3.weight"], stride=stride, padding=1),
                   f"{p}.res_layer.4")
            se = F.adaptive_avg_pool2d(r, 1)
            se = torch.sigmoid(F.conv2d(F.relu(F.conv2d(se, s[f"{p}.res_layer.5.fc1.weight"])),
                                        s[f"{p}.res_layer.5.fc2.weight"]))
            x = r * se + shortcut
            feats[unit] = x
            unit += 1
    c1, c2, c3 = feats[6], feats[20], feats[23]

    def up_add(a, b):
        return F.interpolate(a, size=b.shape[2:], mode="bilinear", align_corners=True) + b

    p2 = up_add(c3, F.conv2d(c2, s["latlayer1.weight"], s["latlayer1.bias"]))
    p1 = up_add(p2, F.conv2d(c1, s["latlayer2.weight"], s["latlayer2.bias"]))

    def style(i, f):
        k = 0
        while f"styles.{i}.convs.{2 * k}.weight" in s:
            f = F.leaky_relu(F.conv2d(f, s[f"styles.{i}.convs.{2 * k}.weight"],
                                      s[f"styles.{i}.convs.{2 * k}.bias"], stride=2, padding=1),
                             0.01)
            k += 1
        f = f.reshape(-1, 512)
        return F.linear(f, s[f"styles.{i}.linear.weight"] / math.sqrt(512),
                        s[f"styles.{i}.linear.bias"])

    sources = [c3 if i < 3 else p2 if i < 7 else p1 for i in range(style_count)]
    if e4e:
        w0 = style(0, c3)
        w = w0.repeat(style_count, 1, 1).permute(1, 0, 2).clone()
        for i in range(1, style_count):
            w[:, i] += style(i, sources[i])
    else:
        w = torch.stack([style(i, sources[i]) for i in range(style_count)], dim=1)
    return w + latent_avg.double()


@pytest.fixture(scope="module")
def aligned_face():
    from neural_face_rig.neural.photo.align import align_ffhq
    from neural_face_rig.neural.photo.detect import default_detector, detect_face

    photo = data.astronaut()
    found, _ = detect_face(photo, default_detector("dlib"))
    return align_ffhq(photo, found.landmarks, 256).image


@pytest.fixture(scope="module")
def encoder_state():
    return official_encoder_state(DECODER.num_ws)


def test_e4e_encoder_matches_float64_reference(tmp_path, encoder_state, aligned_face):
    path = tmp_path / "e4e_ffhq_encode.pt"
    latent_avg = write_official_e4e(path, encoder_state)
    encoder = load_e4e_encoder(path)
    ws = encode(encoder, aligned_face)
    assert ws.shape == (1, 14, 512) and ws.dtype == torch.float32
    expected = reference(encoder_state, encoder_input(aligned_face).double(), 14, latent_avg)
    scale = expected.abs().max().item()
    assert 0.5 < scale < 100  # features neither vanish nor explode through the 24 units
    np.testing.assert_allclose(ws.numpy(), expected.numpy(), atol=1e-5, rtol=0)
    # The same file still gives its decoder to the generator reader.
    assert load_generator(path).config.img_resolution == 256


def test_pSp_gradual_style_encoder_layout(tmp_path, encoder_state, aligned_face):
    path = tmp_path / "psp.pt"
    latent_avg = write_official_e4e(path, encoder_state, encoder_type="GradualStyleEncoder")
    small = np.asarray(Image.fromarray(aligned_face))
    ws = encode(load_e4e_encoder(path), small)
    expected = reference(encoder_state, encoder_input(small).double(), 14, latent_avg, e4e=False)
    np.testing.assert_allclose(ws.numpy(), expected.numpy(), atol=1e-5, rtol=0)


def test_e4e_refuses_what_it_does_not_implement(tmp_path, encoder_state):
    cases = [
        ({"encoder_type": "BackboneEncoderUsingLastLayerIntoW"},
         "encoder_type 'BackboneEncoderUsingLastLayerIntoW' is not supported"),
        ({"input_nc": 1}, "input_nc 1"),
    ]
    for index, (opts, message) in enumerate(cases):
        path = tmp_path / f"bad{index}.pt"
        write_official_e4e(path, encoder_state, **opts)
        with pytest.raises(CheckpointError, match=message):
            load_e4e_encoder(path)
    broken = {k: v for k, v in encoder_state.items() if "styles.13." not in k}
    write_official_e4e(tmp_path / "short.pt", broken)
    with pytest.raises(CheckpointError, match=r"missing \['encoder.styles.13"):
        load_e4e_encoder(tmp_path / "short.pt")
    with pytest.raises(CheckpointError, match="no such e4e checkpoint"):
        load_e4e_encoder(tmp_path / "nothing.pt")
