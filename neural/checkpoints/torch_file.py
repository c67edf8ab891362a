"""``torch.save`` files read without ``torch.load``: bounded, verified, allow-listed.

Both layouts torch writes are read here through the project's allow-listed unpickler
(:mod:`.safe_pickle`), with storages resolved by this module from bytes it has checked:

- **zip** (torch >= 1.6): ``<prefix>/data.pkl`` plus one stored entry per storage,
  ``<prefix>/data/<key>``. The archive is verified first: the end record's central-directory
  offset must be where the directory really is, every entry's local header must match its
  directory entry, entries may not overlap, entries must be stored uncompressed (as torch
  writes them: a compressed entry could inflate without bound), each entry read is checked
  against its CRC-32, and a storage's element count must equal its entry's size.
- **legacy** (``_use_new_zipfile_serialization=False``, and every storage embedded in an
  NVIDIA ``.pkl``): magic number, protocol, system info and data pickles, the storage keys,
  then each storage as an int64 element count followed by its bytes. Each storage the data
  pickle names is allocated only after the sizes declared so far were checked against the
  bytes left in the file after that pickle; the raw bytes are then read straight into the
  storages, each checked against its own size field.

Nothing a file says is allocated before it is compared with the bytes actually present.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from typing import IO, Any

import torch

from ...rig.file_limits import CHECKPOINT_MAX_BYTES, open_regular_file
from ..errors import CheckpointError, UnsafePickleError
from .safe_pickle import StorageType, load_pickle

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
DATA_PKL_MAX_BYTES = 256 << 20
"""``data.pkl`` of a torch file holds structure only (tensors are separate entries): a
rosinality training checkpoint's is ~100 KB; 256 MiB bounds what the unpickler is fed."""
ZIP_MAX_ENTRIES = 100_000
"""One entry per storage: an e4e checkpoint has ~1500; more is a crafted archive."""

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_LOCAL_MAGIC = b"PK\x03\x04"


def _parse_pid(pid: object, label: str, legacy: bool) -> tuple[StorageType, str, int]:
    """(storage type, key, element count) of a torch persistent id
    ``('storage', type, key, location, numel[, view_metadata])``."""
    size = 6 if legacy else 5
    if not (isinstance(pid, tuple) and len(pid) == size and pid[0] == "storage"):
        raise UnsafePickleError(f"{label}: persistent id {pid!r:.80} is not a torch storage id")
    storage_type, key, location, numel = pid[1:5]
    if not isinstance(storage_type, StorageType):
        raise UnsafePickleError(f"{label}: storage type {storage_type!r:.40} refused")
    if not (isinstance(key, str) and isinstance(location, str) and type(numel) is int
            and numel >= 0):
        raise CheckpointError(f"{label}: malformed storage id {pid!r:.120}")
    if legacy and pid[5] is not None:
        raise CheckpointError(f"{label}: storage {key} is a view of another storage (a torch "
                              "format before 1.0, not supported)")
    return storage_type, key, numel


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


# ------------------------------------------------------------------ legacy layout


def _empty_storage(nbytes: int, dtype: torch.dtype) -> torch.storage.TypedStorage:
    return torch.storage.TypedStorage(wrap_storage=torch.UntypedStorage(nbytes), dtype=dtype,
                                      _internal=True)


def _bytes_of(storage: torch.storage.TypedStorage) -> memoryview:
    """A writable byte view of a storage (to read a file straight into it)."""
    untyped = storage._untyped_storage
    flat = torch.empty(0, dtype=torch.uint8).set_(untyped)  # type: ignore[call-overload]
    return memoryview(flat.numpy()).cast("B")  # type: ignore[arg-type]


def read_legacy_torch(stream: IO[bytes], label: str, size: int) -> Any:
    """The object of a legacy ``torch.save`` stream of ``size`` bytes (at its start).

    Storages are created while the data pickle is read, each only after the sum of the sizes
    declared so far was checked against the bytes the file has after that pickle (so what is
    allocated is bounded by the file); their bytes are then read straight into them, each
    checked against its own size field."""
    magic = load_pickle(stream, label)  # type: ignore[arg-type]
    if magic != LEGACY_MAGIC:
        raise CheckpointError(f"{label}: not a torch file (magic number {magic!r:.40})")
    protocol = load_pickle(stream, label)  # type: ignore[arg-type]
    if protocol != LEGACY_PROTOCOL:
        raise CheckpointError(f"{label}: torch legacy protocol {protocol!r:.40}, expected "
                              f"{LEGACY_PROTOCOL}")
    info = load_pickle(stream, label)  # type: ignore[arg-type]
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise CheckpointError(f"{label}: expected a little-endian torch file, found system "
                              f"info {info!r:.80}")
    storages: dict[str, tuple[torch.storage.TypedStorage, StorageType, int]] = {}
    room = [0]  # bytes after the data pickle: what all storages together may occupy

    def scanned(end: int) -> None:
        room[0] = size - end

    def resolve(pid: object) -> Any:
        storage_type, key, numel = _parse_pid(pid, label, legacy=True)
        if key in storages:
            known = storages[key]
            if (known[1], known[2]) != (storage_type, numel):
                raise CheckpointError(f"{label}: storage {key} is declared twice differently")
            return known[0]
        nbytes = numel * _itemsize(storage_type.dtype)
        room[0] -= nbytes + 8  # + its int64 size field
        if room[0] < 0:
            raise CheckpointError(
                f"{label}: truncated or crafted: storage {key} declares {numel} elements "
                f"({nbytes} bytes), more than the file has left after its data"
            )
        storage = _empty_storage(nbytes, storage_type.dtype)
        storages[key] = (storage, storage_type, numel)
        return storage

    value = load_pickle(stream, label, resolve, on_scanned=scanned)  # type: ignore[arg-type]
    keys = load_pickle(stream, label)  # type: ignore[arg-type]
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) \
            or sorted(keys) != sorted(storages):
        raise CheckpointError(f"{label}: the storage key list does not match the storages the "
                              "data refers to")
    for key in keys:
        storage, storage_type, numel = storages[key]
        head = stream.read(8)
        if len(head) != 8:
            raise CheckpointError(f"{label}: truncated: storage {key} has no size field")
        (found,) = struct.unpack("<q", head)
        if found != numel:
            raise CheckpointError(f"{label}: storage {key}: the data declares {numel} elements, "
                                  f"its size field {found}")
        target = _bytes_of(storage) if numel else memoryview(b"")
        got = stream.readinto(target) if numel else 0  # type: ignore[attr-defined]
        if got != len(target):
            raise CheckpointError(f"{label}: truncated: storage {key} needs {len(target)} bytes, "
                                  f"{got} remain")
    return value


# ------------------------------------------------------------------ zip layout


_END = struct.Struct("<4s4H2LH")


def _check_end_record(stream: IO[bytes], end: list[Any], label: str, size: int) -> None:
    """The classic end record must agree with the zip64 one torch also writes (each field
    equal, or the all-ones "see zip64" mark): readers use either, so a disagreement means a
    damaged or doctored directory."""
    tail_start = max(0, size - _END.size - 0xFFFF)
    stream.seek(tail_start)
    tail = stream.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _END.size:
        raise CheckpointError(f"{label}: damaged zip archive: no end-of-directory record")
    _, _, _, _, count, cd_size, cd_offset, _ = _END.unpack_from(tail, at)
    expected = ((count, end[zipfile._ECD_ENTRIES_TOTAL], 0xFFFF),  # type: ignore[attr-defined]
                (cd_size, end[zipfile._ECD_SIZE], 0xFFFFFFFF),  # type: ignore[attr-defined]
                (cd_offset, end[zipfile._ECD_OFFSET], 0xFFFFFFFF))  # type: ignore[attr-defined]
    for (found, wanted, mark), what in zip(expected, ("entry count", "directory size",
                                                     "directory offset"), strict=True):
        if found not in (wanted, mark):
            raise CheckpointError(
                f"{label}: damaged zip archive: the end record's {what} is {found}, the zip64 "
                f"record's {wanted}"
            )


def _check_archive(stream: IO[bytes], archive: zipfile.ZipFile, label: str, size: int) -> None:
    """Central directory where the end record says, local headers matching it, no overlap,
    stored entries only."""
    try:
        end = zipfile._EndRecData(stream)  # type: ignore[attr-defined]
    except OSError:
        end = None
    if not end:
        raise CheckpointError(f"{label}: damaged zip archive: no end-of-directory record")
    concat = end[zipfile._ECD_LOCATION] - end[zipfile._ECD_SIZE] - end[zipfile._ECD_OFFSET]  # type: ignore[attr-defined]
    if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:  # type: ignore[attr-defined]
        concat -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator  # type: ignore[attr-defined]
    if concat != 0:
        raise CheckpointError(
            f"{label}: damaged zip archive: the end record puts the central directory at byte "
            f"{end[zipfile._ECD_OFFSET]}, expected byte {end[zipfile._ECD_OFFSET] + concat}"  # type: ignore[attr-defined]
        )
    _check_end_record(stream, end, label, size)
    infos = archive.infolist()
    if len(infos) > ZIP_MAX_ENTRIES:
        raise CheckpointError(f"{label}: expected at most {ZIP_MAX_ENTRIES} zip entries, found "
                              f"{len(infos)}")
    spans = []
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise CheckpointError(
                f"{label}: zip entry {info.filename}: expected a stored (uncompressed) entry "
                f"as torch.save writes, found compression method {info.compress_type} "
                f"({info.compress_size} -> {info.file_size} bytes)"
            )
        stream.seek(info.header_offset)
        raw = stream.read(_LOCAL_HEADER.size)
        if len(raw) != _LOCAL_HEADER.size or raw[:4] != _LOCAL_MAGIC:
            raise CheckpointError(f"{label}: damaged zip archive: entry {info.filename} has no "
                                  f"local header at byte {info.header_offset}")
        fields = _LOCAL_HEADER.unpack(raw)
        name_len, extra_len = fields[9], fields[10]
        start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        spans.append((info.header_offset, start + info.compress_size, info.filename))
    spans.sort()
    directory = end[zipfile._ECD_OFFSET]  # type: ignore[attr-defined]
    for (begin, stop, name), following in zip(spans, [*spans[1:], (directory, 0, "")],
                                              strict=True):
        if stop > following[0] or stop > size:
            raise CheckpointError(f"{label}: damaged zip archive: entry {name} (bytes {begin}.."
                                  f"{stop}) overlaps what follows it at byte {following[0]}")


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> bytearray:
    """An entry's bytes, CRC-checked (zipfile raises BadZipFile on a mismatch)."""
    buf = bytearray(info.file_size)
    try:
        with archive.open(info) as entry:
            view = memoryview(buf)
            got = 0
            while got < len(buf):
                n = entry.readinto(view[got:])  # type: ignore[attr-defined]
                if not n:
                    break
                got += n
            if got != len(buf) or entry.read(1):
                raise CheckpointError(f"{label}: zip entry {info.filename} is not "
                                      f"{info.file_size} bytes long")
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"{label}: damaged zip entry {info.filename} ({exc})") from None
    return buf


def _read_storage(stream: IO[bytes], info: zipfile.ZipInfo, dtype: torch.dtype, label: str
                  ) -> torch.storage.TypedStorage:
    """A stored entry's bytes read straight into a new storage, then CRC-checked (its local
    header was checked by ``_check_archive``)."""
    stream.seek(info.header_offset)
    fields = _LOCAL_HEADER.unpack(stream.read(_LOCAL_HEADER.size))
    stream.seek(info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10])
    storage = _empty_storage(info.file_size, dtype)
    if not info.file_size:
        return storage
    target = _bytes_of(storage)
    if stream.readinto(target) != info.file_size:  # type: ignore[attr-defined]
        raise CheckpointError(f"{label}: zip entry {info.filename} is cut short")
    if zlib.crc32(target) != info.CRC:
        raise CheckpointError(f"{label}: damaged zip entry {info.filename} (Bad CRC-32: the "
                              "stored bytes differ from the ones written)")
    return storage


def read_torch_zip(stream: IO[bytes], label: str, size: int) -> Any:
    """The object of a zip ``torch.save`` file (stream at its start, ``size`` bytes)."""
    try:
        archive = zipfile.ZipFile(stream)  # type: ignore[arg-type]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(f"{label}: truncated or damaged zip archive ({exc})") from None
    with archive:
        _check_archive(stream, archive, label, size)
        pkls = [i for i in archive.infolist() if i.filename.endswith("/data.pkl")]
        if len(pkls) != 1:
            raise CheckpointError(f"{label}: expected one */data.pkl in the torch archive, found "
                                  f"{len(pkls)}")
        prefix = pkls[0].filename[: -len("data.pkl")]
        if pkls[0].file_size > DATA_PKL_MAX_BYTES:
            raise CheckpointError(f"{label}: data.pkl of {pkls[0].file_size} bytes exceeds "
                                  f"{DATA_PKL_MAX_BYTES}")
        byteorder = f"{prefix}byteorder"
        if byteorder in archive.NameToInfo and \
                bytes(_read_entry(archive, archive.NameToInfo[byteorder], label)) != b"little":
            raise CheckpointError(f"{label}: expected a little-endian torch file")
        storages: dict[str, torch.storage.TypedStorage] = {}

        def resolve(pid: object) -> Any:
            storage_type, key, numel = _parse_pid(pid, label, legacy=False)
            if key in storages:
                return storages[key]
            info = archive.NameToInfo.get(f"{prefix}data/{key}")
            if info is None:
                raise CheckpointError(f"{label}: storage {key} has no entry data/{key}")
            nbytes = numel * _itemsize(storage_type.dtype)
            if info.file_size != nbytes:
                raise CheckpointError(
                    f"{label}: storage {key}: expected {nbytes} bytes ({numel} x "
                    f"{storage_type.dtype}), its archive entry holds {info.file_size}"
                )
            storages[key] = _read_storage(stream, info, storage_type.dtype, label)
            return storages[key]

        data = _read_entry(archive, pkls[0], label)
        return load_pickle(io.BytesIO(bytes(data)), label, resolve)


def read_torch_file(path: str | os.PathLike[str]) -> Any:
    """The object of a ``torch.save`` file of either layout, read as described above."""
    label = os.fspath(path)
    with open_regular_file(label, "checkpoint", CHECKPOINT_MAX_BYTES, CheckpointError) as stream:
        size = os.fstat(stream.fileno()).st_size
        head = stream.read(4)
        stream.seek(0)
        if head == _LOCAL_MAGIC:
            return read_torch_zip(stream, label, size)
        return read_legacy_torch(stream, label, size)
