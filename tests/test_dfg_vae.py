"""TF V2 checkpoint bundles read without TensorFlow, and DiscoFaceGAN's coefficient VAEs.

Fixtures are written by tests/fixtures/dfg_formats.py (its own CRC, protobuf and SSTable
code, following TF's format); the reader must return exactly the arrays written, reject
damaged files with specific errors, and its VAEs must compute the TwoStageVAE MLPs."""

import struct

import numpy as np
import pytest
from fixtures import dfg_formats as fx
from neural_face_rig.rig import dfg_vae as vae
from neural_face_rig.rig.dfg_vae import (
    DFGVae,
    TFCheckpoint,
    VaeInputError,
    crc32c,
    find_checkpoint_prefix,
    load_factor_vae,
    mask_crc,
    read_table,
    unmask_crc,
)
from neural_face_rig.rig.errors import PriorModelError as CheckpointError
from neural_face_rig.rig.params import GROUP_SLICES, RigParams


@pytest.mark.parametrize(
    ("data", "expected"),
    [  # RFC 3720 (iSCSI) appendix B.4 test vectors, and the usual check value
        (b"\x00" * 32, 0x8A9136AA),
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
        (b"123456789", 0xE3069283),
    ],
)
def test_crc32c_known_answers(data, expected):
    assert crc32c(data) == expected
    assert fx.crc32c(data) == expected


def test_crc_mask_round_trip_and_is_not_identity():
    for value in (0, 1, 0xE3069283, 0xFFFFFFFF):
        assert unmask_crc(mask_crc(value)) == value
    assert mask_crc(crc32c(b"foo")) != crc32c(b"foo")
    assert mask_crc(crc32c(b"foo")) == fx.masked_crc(b"foo")


def _tensors():
    rng = np.random.default_rng(3)
    return {
        "a/kernel": rng.standard_normal((5, 7)).astype(np.float32),
        "a/bias": rng.standard_normal(7).astype(np.float32),
        "b/double": rng.standard_normal((2, 3, 4)),
        "b/step": np.array(12345, np.int32),
        "b/long": np.arange(6, dtype=np.int64).reshape(3, 2) - 3,
        "c/scalar": np.array(2.5, np.float32),
        **{f"many/t{i:03d}": np.full(3, i, np.float32) for i in range(40)},
    }


def test_bundle_reads_back_every_tensor_exactly_across_several_blocks(tmp_path):
    tensors = _tensors()
    index = fx.write_tf_checkpoint(tmp_path / "model.ckpt", tensors, block_size=256)
    entries = read_table(index.read_bytes(), str(index))
    assert len(entries) == len(tensors) + 1  # the header + one entry per tensor
    ckpt = TFCheckpoint(tmp_path / "model.ckpt")
    assert ckpt.names() == sorted(tensors)
    assert ckpt.num_shards == 1
    for name, array in tensors.items():
        got = ckpt.read(name)
        assert got.dtype == array.dtype and got.shape == array.shape, name
        np.testing.assert_array_equal(got, array)


def test_index_file_layout_follows_the_table_format(tmp_path):
    index = fx.write_tf_checkpoint(tmp_path / "m.ckpt", _tensors(), block_size=256)
    raw = index.read_bytes()
    assert raw[-8:] == bytes.fromhex("57fb808b247547db")  # magic, little-endian fixed64
    # Footer: meta-index handle, then the index block handle; with 256-byte blocks the index
    # block points at several data blocks, each followed by type 0 + masked CRC.
    _, _, pos = vae._block_handle(raw[-48:], 0, "footer")
    offset, size, _ = vae._block_handle(raw[-48:], pos, "footer")
    handles = list(vae._block_entries(raw[offset : offset + size], "index", "index block"))
    assert len(handles) >= 3
    for _, handle in handles:
        start, length, _ = vae._block_handle(handle, 0, "handle")
        block = raw[start : start + length]
        assert raw[start + length] == 0
        assert raw[start + length + 1 : start + length + 5] == struct.pack(
            "<I", fx.masked_crc(block + b"\x00"))
    entries = read_table(raw, "index")
    assert entries[0] == (b"", fx.bundle_header())
    keys = [k for k, _ in entries]
    assert keys == sorted(keys)


def _corrupt(path, offset, byte=None):
    data = bytearray(path.read_bytes())
    data[offset] = (data[offset] ^ 0xFF) if byte is None else byte
    path.write_bytes(bytes(data))


def test_flipped_data_byte_fails_the_tensor_crc(tmp_path):
    fx.write_tf_checkpoint(tmp_path / "m.ckpt", {"w": np.ones(4, np.float32)})
    _corrupt(tmp_path / "m.ckpt.data-00000-of-00001", 5)
    with pytest.raises(CheckpointError, match=r"bytes of w fail their CRC-32C"):
        TFCheckpoint(tmp_path / "m.ckpt").read("w")


def test_flipped_index_byte_fails_the_block_crc(tmp_path):
    index = fx.write_tf_checkpoint(tmp_path / "m.ckpt", {"w": np.ones(4, np.float32)})
    _corrupt(index, 3)
    with pytest.raises(CheckpointError, match=r"data block \(bytes 0\.\.\d+\) fails its CRC-32C"):
        TFCheckpoint(tmp_path / "m.ckpt")


def test_bad_magic_short_file_and_missing_files(tmp_path):
    index = fx.write_tf_checkpoint(tmp_path / "m.ckpt", {"w": np.ones(4, np.float32)})
    _corrupt(index, len(index.read_bytes()) - 1)
    with pytest.raises(CheckpointError, match=r"not a TF checkpoint index \(table magic"):
        TFCheckpoint(tmp_path / "m.ckpt")
    index.write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match=r"20 bytes, too short for a TF table"):
        TFCheckpoint(tmp_path / "m.ckpt")
    with pytest.raises(CheckpointError, match=r"nothing\.ckpt\.index: cannot read"):
        TFCheckpoint(tmp_path / "nothing.ckpt")
    fx.write_tf_checkpoint(tmp_path / "n.ckpt", {"w": np.ones(4, np.float32)})
    (tmp_path / "n.ckpt.data-00000-of-00001").unlink()
    with pytest.raises(CheckpointError, match=r"data-00000-of-00001: cannot read"):
        TFCheckpoint(tmp_path / "n.ckpt").read("w")


def test_truncated_data_and_wrong_entry_size(tmp_path):
    fx.write_tf_checkpoint(tmp_path / "m.ckpt", {"w": np.ones(4, np.float32)})
    data = tmp_path / "m.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:10])
    with pytest.raises(CheckpointError, match=r"truncated: w needs bytes 0\.\.16"):
        TFCheckpoint(tmp_path / "m.ckpt").read("w")
    entry = fx.bundle_entry(np.ones(4, np.float32), 0)
    bad = entry.replace(b"\x28\x10", b"\x28\x0c")  # size 16 -> 12
    fx.write_table(tmp_path / "x.ckpt.index", [(b"", fx.bundle_header()), (b"w", bad)])
    with pytest.raises(CheckpointError, match=r"12 bytes for shape \(4,\) of float32"):
        TFCheckpoint(tmp_path / "x.ckpt").read("w")


def test_compressed_blocks_newer_formats_slices_and_strings_are_refused(tmp_path):
    contents = b"\x00\x00\x00\x00\x01\x00\x00\x00"  # an empty block
    raw = bytearray(contents + b"\x01" + struct.pack("<I", fx.masked_crc(contents + b"\x01")))
    handle = fx.varint(0) + fx.varint(len(contents))
    raw += (handle + handle).ljust(40, b"\x00") + struct.pack("<Q", 0xDB4775248B80FB57)
    (tmp_path / "s.ckpt.index").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"snappy compressed"):
        TFCheckpoint(tmp_path / "s.ckpt")

    fx.write_table(tmp_path / "v.ckpt.index", [(b"", fx.bundle_header(min_consumer=7))])
    with pytest.raises(CheckpointError, match=r"needs a reader of version >= 7"):
        TFCheckpoint(tmp_path / "v.ckpt")

    sliced = fx.bundle_entry(np.ones(2, np.float32), 0) + b"\x3a\x00"  # field 7: a slice
    string = b"\x08\x07\x12\x00"  # DT_STRING scalar
    fx.write_table(tmp_path / "p.ckpt.index",
                   [(b"", fx.bundle_header()), (b"s", sliced), (b"t", string)])
    ckpt = TFCheckpoint(tmp_path / "p.ckpt")
    with pytest.raises(CheckpointError, match=r"tensor s is saved in slices"):
        ckpt.read("s")
    with pytest.raises(CheckpointError, match=r"tensor t has TF dtype enum 7"):
        ckpt.read("t")
    with pytest.raises(CheckpointError, match=r"no tensor named u"):
        ckpt.read("u")


# ------------------------------------------------------------------ VAEs


def _mlp(tensors, root, x, layers, head):
    for i in range(layers):
        x = np.maximum(x @ tensors[f"{root}/fc{i}/kernel"] + tensors[f"{root}/fc{i}/bias"], 0)
    return x @ tensors[f"{root}/{head}/kernel"] + tensors[f"{root}/{head}/bias"]


def test_factor_vae_decodes_and_encodes_like_the_tf_mlps(tmp_path):
    tensors = fx.vae_tensors("exp", hidden=8, seed=5)
    fx.write_tf_checkpoint(tmp_path / "stage1_epoch_395.ckpt", tensors)
    vae = load_factor_vae(find_checkpoint_prefix(tmp_path), "exp")
    assert (vae.spec.coeff_dim, vae.spec.latent_dim, vae.spec.hidden) == (64, 32, 8)
    z = np.random.default_rng(0).standard_normal((3, 32))
    np.testing.assert_allclose(
        vae.decode(z), _mlp(tensors, "exp/stage1/decoder", z, 3, "x_hat"), rtol=1e-5, atol=1e-6
    )
    x = np.random.default_rng(1).standard_normal((2, 64))
    mu, log_sd = vae.encode(x)
    np.testing.assert_allclose(
        mu, _mlp(tensors, "exp/stage1/encoder", x, 3, "dense"), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        log_sd, _mlp(tensors, "exp/stage1/encoder", x, 3, "dense_1"), rtol=1e-5, atol=1e-6
    )


def test_dfg_vae_samples_rig_groups_in_factor_order(tmp_path):
    fx.write_vae_weights(tmp_path, hidden=8)
    vae = DFGVae.load(tmp_path)
    base = RigParams.sample(np.random.default_rng(9))
    rig = vae.sample(np.random.default_rng(4), base=base, factors=("id", "rot"))
    rng = np.random.default_rng(4)
    z_id, z_rot = rng.standard_normal((1, 128)), rng.standard_normal((1, 3))
    id_tensors = fx.vae_tensors("id", 8, 0)
    id_tex = _mlp(id_tensors, "id/stage1/decoder", z_id, 3, "x_hat")[0]
    rot = _mlp(fx.vae_tensors("rot", 8, 3), "rot/stage1/decoder", z_rot, 3, "x_hat")[0]
    np.testing.assert_allclose(rig.identity, id_tex[:80], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rig.reflectance, id_tex[80:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rig.rotation, rot, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(rig.expression, base.expression)
    np.testing.assert_array_equal(rig.illumination, base.illumination)
    np.testing.assert_array_equal(rig.translation, base.translation)

    mu = vae.encode(rig)
    expected = _mlp(id_tensors, "id/stage1/encoder",
                    np.concatenate([rig.identity, rig.reflectance])[None], 3, "dense")[0]
    np.testing.assert_allclose(mu["id"], expected, rtol=1e-5, atol=1e-5)
    assert {k: v.shape for k, v in mu.items()} == {
        "id": (128,), "exp": (32,), "gamma": (16,), "rot": (3,)}
    vector = rig.to_vector()
    assert np.array_equal(vector[GROUP_SLICES["rotation"]], rig.rotation)


def test_vae_folder_and_checkpoint_mismatches_are_named(tmp_path):
    fx.write_vae_weights(tmp_path, hidden=4)
    (tmp_path / "gamma" / "stage1_epoch_395.ckpt.index").rename(tmp_path / "gamma" / "x.index")
    (tmp_path / "gamma" / "y.index").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"expected one TF checkpoint index"):
        DFGVae.load(tmp_path)
    with pytest.raises(CheckpointError, match=r"missing VAE folder\(s\) id"):
        DFGVae.load(tmp_path / "exp")
    prefix = find_checkpoint_prefix(tmp_path / "exp")
    with pytest.raises(CheckpointError, match=r"no rot/stage1/encoder/fc0/kernel .* under exp"):
        load_factor_vae(prefix, "rot")
    with pytest.raises(VaeInputError, match=r"VAE factor 'hair'"):
        load_factor_vae(prefix, "hair")
    tensors = fx.vae_tensors("rot", 4, 0)
    tensors["rot/stage1/decoder/x_hat/kernel"] = np.zeros((4, 5), np.float32)
    fx.write_tf_checkpoint(tmp_path / "bad.ckpt", tensors)
    with pytest.raises(CheckpointError, match=r"x_hat: expected kernel \[4, 3\]"):
        load_factor_vae(tmp_path / "bad.ckpt", "rot")
