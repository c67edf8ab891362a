"""The allow-listed unpickler: weights come through, code never runs, abuse is refused."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import subprocess
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from neural_face_rig.neural.checkpoints.safe_pickle import (
    MAX_MARK_DEPTH,
    EasyDict,
    PersistentRecord,
    load_pickle,
    load_pickle_file,
)
from neural_face_rig.neural.errors import CheckpointError, UnsafePickleError


def _load(data: bytes) -> object:
    return load_pickle(io.BytesIO(data), "test.pkl")


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _body(obj: object) -> bytes:
    """Protocol-2 opcodes that push ``obj`` (no header, no STOP; optimize() drops the unused
    memo PUTs, so bodies can be spliced together)."""
    return pickletools.optimize(pickle.dumps(obj, protocol=2))[2:-1]


def _call(module: str, name: str, *args: object) -> bytes:
    """A pickle that calls module.name(*args) on load."""
    return b"\x80\x02" + _global(module, name) + _body(tuple(args)) + b"R."


# --- what must load ------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_weights_content_round_trips(protocol: int) -> None:
    obj = {
        "param": torch.nn.Parameter(torch.randn(3, 4), requires_grad=False),
        "half_view": torch.randn(6).half()[2:],
        "array": np.arange(12, dtype=np.float32).reshape(3, 4),
        "fortran": np.asfortranarray(np.random.default_rng(0).standard_normal((2, 5))),
        "scalar": np.float64(0.5),
        "ordered": OrderedDict(b=1, a=2),
        "set": {"x", "y"},
        "blob": b"\x00\x01raw",
    }
    out = _load(pickle.dumps(obj, protocol=protocol))
    assert isinstance(out, dict)
    assert isinstance(out["param"], torch.nn.Parameter)
    assert torch.equal(out["param"], obj["param"])
    assert torch.equal(out["half_view"], obj["half_view"])
    assert out["half_view"].dtype == torch.float16
    np.testing.assert_array_equal(out["array"], obj["array"])
    np.testing.assert_array_equal(out["fortran"], obj["fortran"])
    assert out["scalar"] == 0.5 and out["set"] == {"x", "y"} and out["blob"] == b"\x00\x01raw"
    assert list(out["ordered"]) == ["b", "a"]


def test_easydict_and_persistent_record_stand_ins() -> None:
    meta = {"type": "class", "version": 6, "module_src": "raise SystemExit", "class_name": "Net",
            "state": {"_init_kwargs": {"z_dim": 8}}}
    data = (b"\x80\x02" + _global("torch_utils.persistence", "_reconstruct_persistent_obj")
            + _body(meta) + b"\x85R.")
    record = _load(data)
    assert isinstance(record, PersistentRecord)
    assert record.class_name == "Net" and record.version == 6
    assert record.state == {"_init_kwargs": {"z_dim": 8}}
    assert not hasattr(record, "module_src")
    easy = _load(b"\x80\x02" + _global("dnnlib.util", "EasyDict") + _body(({"a": 1},)) + b"R.")
    assert isinstance(easy, EasyDict) and easy.a == 1


def test_numpy2_module_paths_are_accepted() -> None:
    # numpy >= 2 writes numpy._core.*; numpy < 2 wrote numpy.core.*. Both must load.
    data = pickle.dumps(np.arange(4, dtype=np.float32), protocol=2)
    assert b"numpy.core.multiarray" in data
    renamed = data.replace(b"numpy.core.multiarray", b"numpy._core.multiarray")
    np.testing.assert_array_equal(_load(renamed), np.arange(4, dtype=np.float32))


# --- what must never run -------------------------------------------------------------------


class _Payload:
    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


@pytest.fixture()
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


def _evil_cases(marker: Path) -> list[tuple[bytes, str]]:
    cmd = f"touch {marker}"
    touch = f"open({str(marker)!r}, 'w').write('x')"
    tensors = [torch.zeros(2), np.zeros(2, np.float32)]
    return [
        (pickle.dumps([*tensors, _Payload(os.system, cmd)], protocol=4), "posix.system"),
        (_call("os", "system", cmd), "os.system"),
        (_call("posix", "system", cmd), "posix.system"),
        (_call("builtins", "eval", touch), "builtins.eval"),
        (_call("builtins", "exec", touch), "builtins.exec"),
        (_call("subprocess", "Popen", ["touch", str(marker)]), "subprocess.Popen"),
        (_call("subprocess", "check_call", ["touch", str(marker)]), "subprocess.check_call"),
        (_call("builtins", "__import__", "os"), "builtins.__import__"),
        (_call("builtins", "getattr", "x", "upper"), "builtins.getattr"),
        (_call("importlib", "import_module", "os"), "importlib.import_module"),
        (_call("torch", "load", str(marker)), "torch.load"),
        (_call("pickle", "loads", b"."), "pickle.loads"),
        (_call("copyreg", "_reconstructor", "x", "y", "z"), "copyreg._reconstructor"),
        # the same payload in a protocol-4 STACK_GLOBAL and behind a valid prefix
        (pickle.dumps({"G_ema": torch.ones(1),
                       "x": _Payload(subprocess.Popen, ["touch", str(marker)])}, protocol=4),
         "subprocess.Popen"),
        (pickle.dumps(_Payload(eval, touch), protocol=0), "__builtin__.eval"),
    ]


def test_payloads_are_live_under_the_default_unpickler(tmp_path: Path) -> None:
    # Control: the payloads used below really run code when loaded the default way.
    live = tmp_path / "live"
    pickle.loads(_call("builtins", "exec", f"open({str(live)!r}, 'w').write('x')"))
    assert live.exists()


def test_refuses_code_execution_globals(marker: Path) -> None:
    for data, name in _evil_cases(marker):
        with pytest.raises(UnsafePickleError, match=rf"'{name}'"):
            _load(data)
    assert not marker.exists()


def test_refuses_code_in_embedded_torch_storage(marker: Path) -> None:
    # A storage blob is a torch.save file; torch's weights_only loader must refuse it.
    buf = io.BytesIO()
    torch.save(_Payload(os.system, f"touch {marker}"), buf, _use_new_zipfile_serialization=False)
    data = pickle.dumps(_Payload(torch.storage._load_from_bytes, buf.getvalue()), protocol=4)
    with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
        _load(data)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_call("numpy", "dtype", "O8", False, True), "numeric"),
        (_call("_codecs", "encode", "abc", "rot13"), "latin1"),
        (_call("torch._utils", "_rebuild_tensor_v2", "not a storage", 0, (1,), (1,), False,
               OrderedDict()), "tensor rebuild"),
        (_call("torch._utils", "_rebuild_parameter", "x", False, OrderedDict()), "parameter"),
        (_call("torch.storage", "_load_from_bytes", "text"), "storage"),
        (_call("numpy.core.multiarray", "_reconstruct", "x", (0,), b"b"), "_reconstruct"),
        (_call("torch_utils.persistence", "_reconstruct_persistent_obj",
               {"type": "function", "version": 6, "class_name": "f", "state": {}}), "'class'"),
    ],
)
def test_allowed_callables_check_their_arguments(data: bytes, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        _load(data)


def test_tensors_with_python_attributes_load_without_them() -> None:
    # torch pickles such tensors via _rebuild_from_type_v2 / _rebuild_parameter_with_state.
    tensor = torch.arange(3.0)
    tensor.note = "x"
    param = torch.nn.Parameter(torch.ones(2))
    param.note = "y"
    out = _load(pickle.dumps({"t": tensor, "p": param}, protocol=4))
    assert torch.equal(out["t"], tensor) and type(out["t"]) is torch.Tensor
    assert isinstance(out["p"], torch.nn.Parameter) and torch.equal(out["p"], param)
    assert not hasattr(out["t"], "note") and not hasattr(out["p"], "note")


def test_rebuild_from_type_only_wraps_tensor_rebuilders() -> None:
    data = (b"\x80\x02" + _global("torch._tensor", "_rebuild_from_type_v2")
            + b"(" + _global("collections", "OrderedDict") + _global("torch", "Tensor")
            + b")}t" + b"R.")
    with pytest.raises(UnsafePickleError, match="tensor rebuild via"):
        _load(data)
    # The torch.Tensor global is a token, not a callable constructor.
    with pytest.raises(UnsafePickleError, match="calls torch.Tensor directly"):
        _load(b"\x80\x02" + _global("torch", "Tensor") + _body((3,)) + b"R.")


def test_build_on_persistent_record_is_refused() -> None:
    meta = {"type": "class", "version": 6, "class_name": "Net", "state": {}}
    data = (b"\x80\x02" + _global("torch_utils.persistence", "_reconstruct_persistent_obj")
            + _body(meta) + b"\x85R}b.")
    with pytest.raises(UnsafePickleError, match="BUILD"):
        _load(data)


# --- malformed and abusive streams ---------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x04r\xff\xff\xff\x0f.", r"memo index 268435455 skips ahead"),  # 4 GB memo
        (b"\x80\x04N\x94r\x05\x00\x00\x00.", "memo index 5 skips ahead of 1"),
        (b"\x80\x04h\x05.", "memo index 5 was never stored"),
        (b"\x80\x04j\x00\x00\x00\x01.", "never stored"),
        (b"\x80\x04\x8e\xff\xff\xff\xff\xff\x00\x00\x00.", "truncated"),  # 1 TB bytes claim
        (b"\x80\x04B\xff\xff\xff\x7fabc.", "truncated"),
        (b"\x80\x040.", "underflow"),
        (b"\x80\x04e.", "no MARK"),
        (b"\x80\x04(((.", "exactly one object"),
        (b"\x80\x04K\x01K\x02.", "exactly one object"),
        (b"\x80\x04" + b"(" * (MAX_MARK_DEPTH + 1) + b".", "mark depth"),
        (b"\x80\x04N", "truncated"),  # no STOP
        (b"", "truncated"),
        (b"\x80\x09N.", "protocol 9"),
        (b"\x80\x02P1\n.", "persistent ids"),
        (b"\x80\x02N\x51.", "persistent ids"),
        (b"\x80\x02\x82\x01.", "extension registry"),
        (b"\x80\x05\x97.", "out-of-band"),
        (b"\x80\x04\xfe.", "not a complete pickle"),  # unknown opcode
        (b"\x80\x04K\x01K\x02a.", "malformed pickle.*append"),  # APPEND onto an int
        (b"\x80\x04}]K\x01s.", "malformed pickle.*unhashable"),
    ],
)
def test_malformed_streams_are_refused_up_front(data: bytes, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        _load(data)


def test_stack_depth_is_bounded() -> None:
    data = b"\x80\x04" + b"N" * 100_001 + b"."
    with pytest.raises(CheckpointError, match="stack depth"):
        _load(data)


def test_every_truncation_of_a_valid_pickle_is_a_checkpoint_error(tmp_path: Path) -> None:
    data = pickle.dumps({"w": torch.randn(4, 4), "a": np.ones(3, np.float32)}, protocol=4)
    for cut in range(0, len(data) - 1, 7):
        path = tmp_path / "cut.pkl"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=str(path)):
            load_pickle_file(path)


@pytest.mark.parametrize("legacy", [False, True])
def test_torch_files_read_like_torch_load(tmp_path: Path, legacy: bool) -> None:
    import argparse

    from neural_face_rig.neural.checkpoints.torch_file import read_torch_file

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    obj = {
        "view": base[1:3, 2:5],  # a strided view sharing base's storage
        "base": base,
        "t": base.t(),
        "half": torch.ones(3, dtype=torch.float16),
        "bf16": torch.ones(2, dtype=torch.bfloat16),
        "long": torch.arange(5),
        "bool": torch.tensor([True, False]),
        "param": torch.nn.Parameter(torch.randn(2, 2)),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(3.5),
        "nested": OrderedDict(a=[1, 2.5, "x", None, (True,)], b={"c": torch.zeros(2)}),
        "args": argparse.Namespace(size=1024, lr=0.002),
    }
    path = tmp_path / "x.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    ours, theirs = read_torch_file(path), torch.load(path, weights_only=False)
    for key, value in theirs.items():
        if isinstance(value, torch.Tensor):
            assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key
            assert ours[key].stride() == value.stride(), key
    assert type(ours["param"]) is torch.nn.Parameter
    assert ours["view"].untyped_storage().data_ptr() == ours["base"].untyped_storage().data_ptr()
    assert ours["nested"]["a"] == theirs["nested"]["a"]
    assert vars(ours["args"]) == vars(theirs["args"])


def test_cycles_and_wide_integers_are_refused() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(CheckpointError, match="reference cycle"):
        _load(pickle.dumps(cyclic, protocol=2))
    with pytest.raises(CheckpointError,
                       match="at most 128 bits in a weights file, found one of 4000 bits"):
        _load(pickle.dumps({"x": 1 << 3999}, protocol=2))
