"""DiscoFaceGAN's coefficient VAEs, read from the released TF1 checkpoints without TensorFlow.

A TF V2 checkpoint ``<prefix>`` is a tensor bundle: ``<prefix>.index`` is an SSTable (the
LevelDB table format: data blocks of prefix-compressed key/value entries with a restart
array, each block followed by a 1-byte compression type and a masked CRC-32C; an index block
of block handles; a 48-byte footer ending in the magic 0xdb4775248b80fb57) mapping the empty
key to a ``BundleHeaderProto`` and every tensor name to a ``BundleEntryProto`` (dtype, shape,
shard_id, offset, size, masked crc32c of the raw bytes); the bytes live in
``<prefix>.data-{shard:05d}-of-{num_shards:05d}``.

The VAEs (TwoStageVAE stage 1), per factor f in id/exp/gamma/rot: encoder
``f/stage1/encoder/fc{0,1,2}`` (dense + ReLU) -> ``dense`` (mu) and ``dense_1`` (log sd);
decoder ``f/stage1/decoder/fc{0,1,2}`` (dense + ReLU) -> ``x_hat`` (linear). Kernels are
[in, out]. Decoders turn N(0, I) draws into coefficients, encoders map coefficients back to
the Gaussian factors. Numpy only: Blender's own process draws new identities with it, so
it lives in ``rig`` (a learned prior over rig values), not with the generator in ``neural``.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..contract.errors import ContractError
from ..contract.files import VAE_FACTORS, vae_checkpoint_prefix
from .errors import PriorModelError, RigError
from .file_limits import CHECKPOINT_MAX_BYTES, open_regular_file, read_regular_file
from .params import GROUP_SLICES, RigParams

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
CRC_MASK_DELTA = 0xA282EAD8
BUNDLE_VERSION = 1  # kTensorBundleVersion: readers accept min_consumer <= this
TF_INDEX_MAX_BYTES = 64 << 20
"""A TF checkpoint index lists names, shapes and offsets (~KB per tensor); DiscoFaceGAN's VAE
indexes are a few KB. 64 MiB refuses a device or a mistaken data shard."""
# TF DataType enum -> numpy dtype (little-endian); strings and variants are not tensors of
# numbers and are never needed here.
TF_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"),
    5: np.dtype("<i2"), 6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"),
    17: np.dtype("<u2"), 19: np.dtype("<f2"), 22: np.dtype("<u4"), 23: np.dtype("<u8"),
}


class VaeInputError(RigError, ValueError):
    """A VAE was asked for a factor it does not have."""


# ------------------------------------------------------------------ CRC-32C


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32c(data: bytes | memoryview, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing from ``crc``."""
    table = _CRC_TABLE
    crc ^= 0xFFFFFFFF
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """LevelDB/TF masked CRC: rotate right by 15 and add a constant."""
    return (((crc >> 15) | (crc << 17)) + CRC_MASK_DELTA) & 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    rot = (masked - CRC_MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ------------------------------------------------------------------ varints and protobuf


def _varint(buf: bytes, pos: int, where: str) -> tuple[int, int]:
    """Unsigned varint at ``pos`` -> (value, next position)."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise PriorModelError(f"{where}: truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _proto_fields(buf: bytes, where: str) -> dict[int, list[int | bytes]]:
    """Protobuf wire format -> field number -> values (varints/fixed as ints, length-
    delimited as bytes)."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, where)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos, where)
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            if pos + size > len(buf):
                raise PriorModelError(f"{where}: truncated fixed-size protobuf field {number}")
            value = int.from_bytes(buf[pos : pos + size], "little")
            pos += size
        elif wire == 2:
            size, pos = _varint(buf, pos, where)
            if pos + size > len(buf):
                raise PriorModelError(f"{where}: protobuf field {number} runs past its message")
            value = buf[pos : pos + size]
            pos += size
        else:
            raise PriorModelError(f"{where}: unsupported protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _int_field(fields: dict[int, list[int | bytes]], number: int, default: int = 0) -> int:
    values = fields.get(number)
    value = values[-1] if values else default
    if not isinstance(value, int):
        raise TypeError(number)
    return value - (1 << 64) if value >= 1 << 63 else value


def _message_field(fields: dict[int, list[int | bytes]], number: int) -> bytes | None:
    values = fields.get(number)
    if not values:
        return None
    value = values[-1]
    if not isinstance(value, bytes):
        raise TypeError(number)
    return value


# ------------------------------------------------------------------ SSTable


def _block_handle(buf: bytes, pos: int, where: str) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos, where)
    size, pos = _varint(buf, pos, where)
    return offset, size, pos


def _read_block(data: bytes, offset: int, size: int, label: str, what: str) -> bytes:
    end = offset + size + BLOCK_TRAILER_SIZE
    if end > len(data) - FOOTER_SIZE:
        raise PriorModelError(
            f"{label}: {what} at bytes {offset}..{end} runs past the table ({len(data)} bytes)"
        )
    contents = data[offset : offset + size]
    kind = data[offset + size]
    (stored,) = struct.unpack_from("<I", data, offset + size + 1)
    if unmask_crc(stored) != crc32c(data[offset : offset + size + 1]):
        raise PriorModelError(
            f"{label}: {what} (bytes {offset}..{offset + size}) fails its CRC-32C check"
        )
    if kind != 0:
        names = {1: "snappy"}
        raise PriorModelError(
            f"{label}: {what} is {names.get(kind, f'type-{kind}')} compressed; TF checkpoint "
            "indexes are written uncompressed and only those are supported"
        )
    return contents


def _block_entries(block: bytes, label: str, what: str) -> Iterator[tuple[bytes, bytes]]:
    """Key/value pairs of one block, in order (prefix compression undone)."""
    if len(block) < 4:
        raise PriorModelError(f"{label}: {what} is {len(block)} bytes, too short for a block")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 * (restarts + 1)
    if restarts < 1 or limit < 0:
        raise PriorModelError(f"{label}: {what} has an invalid restart count {restarts}")
    offsets = struct.unpack_from(f"<{restarts}I", block, limit)
    if any(o >= max(limit, 1) for o in offsets) or offsets[0] != 0:
        raise PriorModelError(f"{label}: {what} has restart offsets outside its entries")
    pos, key = 0, b""
    while pos < limit:
        where = f"{label}: {what} entry at byte {pos}"
        shared, pos = _varint(block, pos, where)
        unshared, pos = _varint(block, pos, where)
        value_size, pos = _varint(block, pos, where)
        if shared > len(key) or pos + unshared + value_size > limit:
            raise PriorModelError(f"{where}: key/value lengths run past the block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_size]
        pos += value_size


def read_table(data: bytes, label: str) -> list[tuple[bytes, bytes]]:
    """All entries of an SSTable file's bytes, in key order."""
    if len(data) < FOOTER_SIZE:
        raise PriorModelError(
            f"{label}: {len(data)} bytes, too short for a TF table (footer {FOOTER_SIZE} bytes)"
        )
    footer = data[-FOOTER_SIZE:]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)
    if magic != TABLE_MAGIC:
        raise PriorModelError(
            f"{label}: not a TF checkpoint index (table magic {magic:#018x}, expected "
            f"{TABLE_MAGIC:#018x})"
        )
    _, _, pos = _block_handle(footer, 0, f"{label}: footer")
    index_offset, index_size, _ = _block_handle(footer, pos, f"{label}: footer")
    index = _read_block(data, index_offset, index_size, label, "index block")
    entries: list[tuple[bytes, bytes]] = []
    for _, handle in _block_entries(index, label, "index block"):
        offset, size, _ = _block_handle(handle, 0, f"{label}: index entry")
        block = _read_block(data, offset, size, label, "data block")
        entries.extend(_block_entries(block, label, f"data block at byte {offset}"))
    keys = [k for k, _ in entries]
    if keys != sorted(keys) or len(set(keys)) != len(keys):
        raise PriorModelError(f"{label}: table keys are not strictly increasing")
    return entries


# ------------------------------------------------------------------ tensor bundle


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor's bytes are: dtype (TF enum), shape, shard, byte range, masked crc."""

    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int
    sliced: bool


def _parse_shape(buf: bytes | None, where: str) -> tuple[int, ...]:
    if buf is None:
        return ()
    fields = _proto_fields(buf, where)
    if _int_field(fields, 3):
        raise PriorModelError(f"{where}: the tensor's shape has unknown rank")
    dims = []
    for dim in fields.get(2, []):
        if not isinstance(dim, bytes):
            raise PriorModelError(f"{where}: malformed shape dimension")
        size = _int_field(_proto_fields(dim, where), 1)
        if size < 0:
            raise PriorModelError(f"{where}: shape dimension {size} is not a known size")
        dims.append(size)
    return tuple(dims)


def _parse_entry(value: bytes, where: str) -> BundleEntry:
    try:
        fields = _proto_fields(value, where)
        return BundleEntry(
            dtype=_int_field(fields, 1),
            shape=_parse_shape(_message_field(fields, 2), where),
            shard_id=_int_field(fields, 3),
            offset=_int_field(fields, 4),
            size=_int_field(fields, 5),
            crc32c=_int_field(fields, 6),
            sliced=bool(fields.get(7)),
        )
    except TypeError as exc:
        raise PriorModelError(f"{where}: protobuf field {exc} has the wrong wire type") from None


class TFCheckpoint:
    """A TF V2 checkpoint (``prefix.index`` + data shards), tensors read on demand."""

    def __init__(self, prefix: str | os.PathLike[str]) -> None:
        self.prefix = os.fspath(prefix)
        index_path = self.prefix + ".index"
        data = read_regular_file(index_path, "TF checkpoint index", TF_INDEX_MAX_BYTES,
                                 PriorModelError)
        entries = read_table(data, index_path)
        if not entries or entries[0][0] != b"":
            raise PriorModelError(f"{index_path}: no bundle header entry (empty key) first")
        header = _proto_fields(entries[0][1], f"{index_path}: header")
        self.num_shards = _int_field(header, 1)
        big_endian = _int_field(header, 2) == 1
        version = _proto_fields(_message_field(header, 3) or b"", f"{index_path}: version")
        min_consumer = _int_field(version, 2)
        if min_consumer > BUNDLE_VERSION:
            raise PriorModelError(
                f"{index_path}: bundle format needs a reader of version >= {min_consumer}; "
                f"this reader implements version {BUNDLE_VERSION}"
            )
        if self.num_shards < 1:
            raise PriorModelError(f"{index_path}: header num_shards {self.num_shards} < 1")
        self._byteorder: Literal["<", ">"] = ">" if big_endian else "<"
        self.entries: dict[str, BundleEntry] = {}
        for key, value in entries[1:]:
            name = key.decode("utf-8", errors="replace")
            self.entries[name] = _parse_entry(value, f"{index_path}: entry {name}")
        self._label = index_path

    def names(self) -> list[str]:
        return sorted(self.entries)

    def data_path(self, shard: int) -> str:
        return f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}"

    def read(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a numpy array (native byte order), its bytes CRC-checked."""
        entry = self.entries.get(name)
        if entry is None:
            raise PriorModelError(f"{self._label}: no tensor named {name}")
        where = f"{self._label}: tensor {name}"
        if entry.sliced:
            raise PriorModelError(f"{where} is saved in slices (partitioned); not supported")
        if entry.dtype not in TF_DTYPES:
            raise PriorModelError(f"{where} has TF dtype enum {entry.dtype}; expected numbers")
        if not 0 <= entry.shard_id < self.num_shards:
            raise PriorModelError(f"{where}: shard {entry.shard_id} of {self.num_shards}")
        dtype = TF_DTYPES[entry.dtype].newbyteorder(self._byteorder)
        count = math.prod(entry.shape)  # Python ints: [2**32, 2**32] must not wrap to 0
        if entry.size != count * dtype.itemsize:
            raise PriorModelError(
                f"{where}: {entry.size} bytes for shape {entry.shape} of {dtype.name} "
                f"(expected {count * dtype.itemsize})"
            )
        path = self.data_path(entry.shard_id)
        with open_regular_file(path, "TF checkpoint data", CHECKPOINT_MAX_BYTES,
                               PriorModelError) as stream:
            available = os.fstat(stream.fileno()).st_size
            if entry.offset < 0 or entry.offset + entry.size > available:
                raise PriorModelError(
                    f"{path}: truncated: {name} needs bytes {entry.offset}.."
                    f"{entry.offset + entry.size}, the file has {available}"
                )
            try:
                stream.seek(entry.offset)
                raw = stream.read(entry.size)
            except OSError as exc:
                raise PriorModelError(f"{path}: cannot read the checkpoint data ({exc})") from None
        if len(raw) != entry.size:
            raise PriorModelError(
                f"{path}: truncated: {name} needs bytes {entry.offset}..{entry.offset + entry.size}"
            )
        if crc32c(raw) != unmask_crc(entry.crc32c):
            raise PriorModelError(f"{path}: the bytes of {name} fail their CRC-32C check")
        return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("=")).reshape(entry.shape)


# ------------------------------------------------------------------ VAEs


@dataclass(frozen=True)
class FactorSpec:
    """A factor's coefficient size, latent size and hidden width. Coefficient and latent
    sizes define DiscoFaceGAN's layout; the hidden width is read from the checkpoint."""

    name: str
    coeff_dim: int
    latent_dim: int
    hidden: int


# Released sizes: id 160 -> 128 (512 wide), exp 64 -> 32 (256), gamma 27 -> 16
# (128), rot 3 -> 3 (32).
RELEASED: dict[str, FactorSpec] = {
    "id": FactorSpec("id", 160, 128, 512),
    "exp": FactorSpec("exp", 64, 32, 256),
    "gamma": FactorSpec("gamma", 27, 16, 128),
    "rot": FactorSpec("rot", 3, 3, 32),
}
DEPTH = 3
# The rig groups each factor's coefficients are, in the factor's own order.
FACTOR_GROUPS: dict[str, tuple[str, ...]] = {
    "id": ("identity", "reflectance"),
    "exp": ("expression",),
    "gamma": ("illumination",),
    "rot": ("rotation",),
}
# Order of the Gaussian factors in DiscoFaceGAN's z (generate_images.py): 128 + 32 + 16 + 3.
Z_ORDER = VAE_FACTORS


@dataclass(frozen=True)
class MLPLayer:
    """A TF ``tf.layers.dense``: x @ kernel + bias, then ReLU if asked."""

    kernel: np.ndarray  # [in, out] float32
    bias: np.ndarray  # [out]

    def __call__(self, x: np.ndarray, relu: bool) -> np.ndarray:
        y = x @ self.kernel + self.bias
        return np.maximum(y, 0) if relu else y


@dataclass(frozen=True)
class FactorVAE:
    """One factor's stage-1 VAE: encoder fc0-2 -> (mu, log sd); decoder fc0-2 -> x_hat."""

    spec: FactorSpec
    encoder: tuple[MLPLayer, ...]
    mu: MLPLayer
    log_sd: MLPLayer
    decoder: tuple[MLPLayer, ...]
    x_hat: MLPLayer

    def decode(self, z: np.ndarray) -> np.ndarray:
        """z [N, latent] -> coefficients [N, coeff_dim] float32."""
        y = np.asarray(z, np.float32)
        for layer in self.decoder:
            y = layer(y, relu=True)
        return self.x_hat(y, relu=False).astype(np.float32)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """coefficients [N, coeff_dim] -> (mu, log sd) [N, latent] float32."""
        y = np.asarray(x, np.float32)
        for layer in self.encoder:
            y = layer(y, relu=True)
        return self.mu(y, relu=False).astype(np.float32), self.log_sd(y, relu=False).astype(
            np.float32
        )


def _dense(ckpt: TFCheckpoint, scope: str, fan_in: int, fan_out: int) -> MLPLayer:
    kernel = ckpt.read(f"{scope}/kernel")
    bias = ckpt.read(f"{scope}/bias")
    if kernel.shape != (fan_in, fan_out) or bias.shape != (fan_out,):
        raise PriorModelError(
            f"{ckpt.prefix}: {scope}: expected kernel [{fan_in}, {fan_out}] and bias "
            f"[{fan_out}], found {list(kernel.shape)} and {list(bias.shape)}"
        )
    if kernel.dtype.kind != "f" or not (np.isfinite(kernel).all() and np.isfinite(bias).all()):
        raise PriorModelError(f"{ckpt.prefix}: {scope} holds non-finite or non-float values")
    return MLPLayer(kernel.astype(np.float32), bias.astype(np.float32))


def load_factor_vae(prefix: str | os.PathLike[str], factor: str) -> FactorVAE:
    """Read factor ``factor`` (id, exp, gamma, rot) from the checkpoint ``prefix``."""
    released = RELEASED.get(factor)
    if released is None:
        raise VaeInputError(f"VAE factor {factor!r}: expected one of {', '.join(RELEASED)}")
    ckpt = TFCheckpoint(prefix)
    root = f"{factor}/stage1"
    first = f"{root}/encoder/fc0/kernel"
    if first not in ckpt.entries:
        found = sorted({name.split("/")[0] for name in ckpt.entries})
        raise PriorModelError(
            f"{ckpt.prefix}: no {first} (a checkpoint of the {factor!r} VAE was expected; its "
            f"variables are under {', '.join(found) or 'nothing'})"
        )
    shape = ckpt.entries[first].shape
    h = shape[1] if len(shape) == 2 else 0
    spec = FactorSpec(factor, released.coeff_dim, released.latent_dim, h)
    enc = [spec.coeff_dim, h, h, h]
    dec = [spec.latent_dim, h, h, h]
    return FactorVAE(
        spec=spec,
        encoder=tuple(
            _dense(ckpt, f"{root}/encoder/fc{i}", enc[i], enc[i + 1]) for i in range(DEPTH)
        ),
        mu=_dense(ckpt, f"{root}/encoder/dense", h, spec.latent_dim),
        log_sd=_dense(ckpt, f"{root}/encoder/dense_1", h, spec.latent_dim),
        decoder=tuple(
            _dense(ckpt, f"{root}/decoder/fc{i}", dec[i], dec[i + 1]) for i in range(DEPTH)
        ),
        x_hat=_dense(ckpt, f"{root}/decoder/x_hat", h, spec.coeff_dim),
    )


def find_checkpoint_prefix(folder: str | os.PathLike[str]) -> str:
    """The checkpoint prefix inside a factor folder (contract/files.py's layout)."""
    try:
        return vae_checkpoint_prefix(folder)
    except ContractError as exc:
        raise PriorModelError(str(exc)) from None


@dataclass(frozen=True)
class DFGVae:
    """The four factor VAEs of DiscoFaceGAN (``vae/weights/{id,exp,gamma,rot}``)."""

    factors: dict[str, FactorVAE]

    @classmethod
    def load(cls, weights_dir: str | os.PathLike[str]) -> DFGVae:
        """``weights_dir`` holds one folder per factor, each with its checkpoint."""
        root = Path(weights_dir)
        missing = [f for f in Z_ORDER if not (root / f).is_dir()]
        if missing:
            raise PriorModelError(
                f"{root}: missing VAE folder(s) {', '.join(missing)} (expected id, exp, gamma "
                "and rot, as in DiscoFaceGAN's vae/weights)"
            )
        return cls({f: load_factor_vae(find_checkpoint_prefix(root / f), f) for f in Z_ORDER})

    def decode_groups(self, z: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Gaussian factors {factor: [N, latent]} -> rig groups {group: [N, size]} float32."""
        groups: dict[str, np.ndarray] = {}
        for factor, latent in z.items():
            coeffs = self.factors[factor].decode(latent)
            start = 0
            for group in FACTOR_GROUPS[factor]:
                size = GROUP_SLICES[group].stop - GROUP_SLICES[group].start
                groups[group] = coeffs[:, start : start + size]
                start += size
        return groups

    def sample(
        self, rng: np.random.Generator, base: RigParams | None = None,
        factors: tuple[str, ...] = Z_ORDER,
    ) -> RigParams:
        """Rig values with ``factors`` decoded from N(0, I) draws (drawn in Z_ORDER), the other
        groups (and translation) kept from ``base`` (default neutral)."""
        unknown = [f for f in factors if f not in self.factors]
        if unknown:
            raise VaeInputError(f"VAE factors {unknown}: expected some of {', '.join(Z_ORDER)}")
        z = {f: rng.standard_normal((1, self.factors[f].spec.latent_dim))
             for f in Z_ORDER if f in factors}
        vector = (base or RigParams.neutral()).to_vector()
        for group, values in self.decode_groups(z).items():
            vector[GROUP_SLICES[group]] = values[0]
        return RigParams.from_vector(vector)

    def encode(self, rig: RigParams) -> dict[str, np.ndarray]:
        """Rig values -> {factor: mu [latent]}: the Gaussian factors of these coefficients."""
        vector = rig.to_vector()
        out = {}
        for factor, vae in self.factors.items():
            x = np.concatenate([vector[GROUP_SLICES[g]] for g in FACTOR_GROUPS[factor]])
            out[factor] = vae.encode(x[None])[0][0]
        return out

