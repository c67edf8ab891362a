"""Hostile, corrupt and mismatched inputs: each is refused within 1 GB and 20 s, by name.

Every case builds its tiny hostile file here, at test time. All cases run in one child
process whose address space is capped at 1 GB (``RLIMIT_AS``) and whose every call has a
20 s alarm; the child reports, per case, the error class, its message and the seconds taken.
A case passes when the project's own error (not a traceback, not a MemoryError) comes back on
one line naming the file and matching the case's specific message, in time. The classes of
files follow the red-team report: memo-reference ("billion laughs") pickles, zero-stride and
out-of-storage tensor views, numpy allocations at will, zip and zlib bombs, absurd
architecture fields, devices and FIFOs, damaged zips, mismatched sidecars, duplicate keys,
deep or huge-integer JSON, overflowing TF bundle shapes and allow-list-valid but malformed
structures. The last test kills ``nfr convert`` / ``nfr rig convert-bfm`` mid-write and checks
that no temporary file survives the next run.
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import fixtures.dfg_formats as dfx
import numpy as np
import pytest
import torch
from fixtures.bfm_raw import write_raw_bfm
from fixtures.stylegan_formats import (
    TINY_CONFIG,
    _NvidiaTree,
    _Persistent,
    dump_pickle,
    tf_static_kwargs,
    tiny_state,
    write_e4e,
    write_rosinality,
    write_tf_pkl,
)
from neural_face_rig.neural.checkpoints import LoadedGenerator, load_generator, save_project
from neural_face_rig.neural.checkpoints.project_format import sidecar_path
from neural_face_rig.neural.discofacegan.generator import random_state_dict as dfg_state
from neural_face_rig.neural.discofacegan.tf_reader import load_dfg_generator, save_dfg_project
from neural_face_rig.neural.stylerig.backend import write_artifact

MEMORY_LIMIT = 1 << 30
SECONDS_PER_CASE = 20
TESTS = Path(__file__).resolve().parent


# ------------------------------------------------------------------ building blocks


def laughs(depth: int = 64) -> list[Any]:
    """A list whose every level holds the level below twice: ~10 bytes per level pickled
    (memo references), 2**depth leaves when traversed."""
    level: list[Any] = ["lol"]
    for _ in range(depth):
        level = [level, level]
    return level


def deep_snapshot(path: Path, depth: int) -> Path:
    """A real tiny NVIDIA snapshot whose training_set_kwargs is a list nested ``depth`` deep
    (spliced in as opcodes: Python's own pickler cannot write one that deep)."""
    marker = "DEEP-LIST-GOES-HERE"
    tree = _NvidiaTree(tiny_state(), TINY_CONFIG, "", "ada", ())
    dump_pickle({"G_ema": tree.generator(), "training_set_kwargs": marker}, path, 2)
    spelled = b"X" + struct.pack("<I", len(marker)) + marker.encode()
    data = path.read_bytes()
    assert data.count(spelled) == 1
    path.write_bytes(data.replace(spelled, b"]" * depth + b"a" * (depth - 1)))
    return path


class View:
    """Pickles as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``: the
    geometry a hostile file chooses, over a real (tiny) storage."""

    def __init__(self, numel: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage = torch.zeros(numel).untyped_storage()
        self.size, self.stride = size, stride

    def __reduce__(self) -> Any:
        typed = torch.storage.TypedStorage(wrap_storage=self.storage, dtype=torch.float32,
                                           _internal=True)
        return (torch._utils._rebuild_tensor_v2,
                (typed, 0, self.size, self.stride, False, OrderedDict()))


class Call:
    """Pickles as ``func(*args)``."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> Any:
        return (self.func, self.args)


def nvidia_snapshot(path: Path, g_ema_state: dict[str, Any], **extra: Any) -> Path:
    g_ema = _Persistent("Generator", g_ema_state, "")
    return dump_pickle({"G_ema": g_ema, **extra}, path, 4)


def module_state(params: dict[str, Any], init_kwargs: Any = None) -> dict[str, Any]:
    return {"_parameters": params, "_buffers": {}, "_modules": {},
            "_non_persistent_buffers_set": set(), "_init_args": (),
            "_init_kwargs": {} if init_kwargs is None else init_kwargs}


def nvidia_with(path: Path, **extra: Any) -> Path:
    """A real tiny NVIDIA snapshot with extra top-level entries."""
    tree = _NvidiaTree(tiny_state(), TINY_CONFIG, "", "ada", ())
    return dump_pickle({"G_ema": tree.generator(), **extra}, path, 4)


def resave(path: Path, edit: Any) -> Path:
    """Load one of our own fixture files (trusted), edit it, save it again."""
    ckpt = torch.load(path, weights_only=False)
    edit(ckpt)
    torch.save(ckpt, path)
    return path


def rezip(path: Path, change: Any) -> Path:
    """Rewrite a torch zip entry by entry; ``change(info, data)`` -> (data, compress_type)."""
    source = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data, method = change(info, source.read(info))
            target.writestr(info.filename, data, compress_type=method)
    path.write_bytes(out.getvalue())
    return path


def bundle(prefix: Path, shape: tuple[int, ...], size: int) -> Path:
    """A TF checkpoint bundle whose one float32 entry declares ``shape`` and ``size`` bytes."""
    dims = b"".join(dfx._field(2, 2, dfx.varint(len(d)) + d)
                    for d in (dfx._field(1, 0, dfx.varint(s)) for s in shape))
    entry = (dfx._field(1, 0, dfx.varint(1)) + dfx._field(2, 2, dfx.varint(len(dims)) + dims)
             + dfx._field(5, 0, dfx.varint(size)) + dfx._field(6, 5, struct.pack("<I", 0)))
    dfx.write_table(Path(f"{prefix}.index"), [(b"", dfx.bundle_header()), (b"w", entry)])
    Path(f"{prefix}.data-00000-of-00001").write_bytes(b"\0" * 64)
    return prefix


def mat_bomb(path: Path, inflated: int) -> Path:
    """A MAT v5 file whose one compressed element inflates to ``inflated`` bytes of zeros
    under an honest miMATRIX tag (a zlib bomb)."""
    header = b"MATLAB 5.0 MAT-file, bomb".ljust(116, b" ") + b"\0" * 8 + b"\x00\x01IM"
    inner = struct.pack("<II", 14, inflated)
    packer = zlib.compressobj(1)
    body = packer.compress(inner)
    chunk = bytes(1 << 20)
    for _ in range(inflated // len(chunk)):
        body += packer.compress(chunk)
    body += packer.flush()
    path.write_bytes(header + struct.pack("<II", 15, len(body)) + body)
    return path


# ------------------------------------------------------------------ the cases


def build_cases(root: Path) -> list[dict[str, Any]]:
    """(name, call, path, expected message) of every hostile input, files written now."""
    cases: list[dict[str, Any]] = []

    def case(name: str, call: str, path: Path | str, expect: str, names: Path | None = None
             ) -> None:
        cases.append({"name": name, "call": call, "path": str(path), "expect": expect,
                      "names": str(names or path)})

    def file(name: str) -> Path:
        return root / name

    bomb = "memo-reference bomb"
    # --- memory and time: billion laughs in every pickle-based format
    case("nvidia laughs", "nfr-info", nvidia_with(file("laughs.pkl"),
                                                  training_set_kwargs=laughs()), bomb)
    case("tf laughs", "nfr-info", write_tf_pkl(
        file("laughs_tf.pkl"), tiny_state(),
        static_kwargs={**tf_static_kwargs(TINY_CONFIG), "structure": laughs()}), bomb)
    e4e = write_e4e(file("laughs_e4e.pt"), tiny_state())
    case("e4e laughs", "nfr-info", resave(e4e, lambda c: c["opts"].update(x=laughs())), bomb)
    ros = write_rosinality(file("laughs_args.pt"), tiny_state(), training=True)
    case("rosinality args laughs", "nfr-info",
         resave(ros, lambda c: setattr(c["args"], "augment", laughs())), bomb)
    dfg = dfx.write_dfg_pkl(file("laughs_dfg.pkl"), dfg_state(dfx.TINY_DFG),
                            static_kwargs={**dfx.tiny_dfg_kwargs(), "structure": laughs()})
    case("discofacegan laughs", "load-dfg", dfg, bomb)
    case("20000-deep list", "nfr-info", deep_snapshot(file("deep.pkl"), 20_000),
         "nested at most 200 levels")

    # --- zero strides, views beyond their storage, numpy allocation at will
    zero = View(1, (100_000, 100_000), (0, 0))
    case("nvidia zero stride", "nfr-info",
         nvidia_snapshot(file("zero.pkl"), module_state({"w": zero})), "zero or negative strides")
    case("rosinality zero stride", "nfr-info", _torch_save(
        file("zero_ros.pt"), {"g_ema": {"style.1.weight": zero}, "latent_avg": torch.zeros(32)}),
        "zero or negative strides")
    beyond = View(4, (1 << 28,), (1,))
    case("rosinality view beyond storage", "nfr-info", _torch_save(
        file("beyond_ros.pt"), {"g_ema": {"style.1.weight": beyond}}),
        "needs more than the 4 elements its storage holds")
    case("e4e view beyond storage", "nfr-info", _torch_save(
        file("beyond_e4e.pt"), {"state_dict": {"decoder.style.1.weight": beyond}}),
        "needs more than the 4 elements its storage holds")
    overlap = View(16, (1 << 14, 1 << 14), (1, 1))
    case("nvidia overlapping as_strided", "nfr-info",
         nvidia_snapshot(file("overlap.pkl"), module_state({"w": overlap})),
         "needs more than the 16 elements")
    tf_vars = {"": [("dlatent_avg", Call(np.ndarray, (10**10,)))], "mapping": [],
               "synthesis": []}
    case("tf numpy.ndarray allocation", "nfr-info", dfx.dump_tf_snapshot(
        file("ndarray.pkl"), tf_vars, tf_static_kwargs(TINY_CONFIG),
        {"": "G_main", "synthesis": "G_synthesis_stylegan2", "D": "D_stylegan2"}, 8, "", 4),
        "calls numpy.ndarray directly")

    # --- bombs
    zipped = write_rosinality(file("bomb.pt"), tiny_state())
    case("pt zip bomb", "nfr-info", rezip(zipped, lambda info, data: (
        (bytes(64 << 20), zipfile.ZIP_DEFLATED) if info.filename.endswith("/data/0")
        else (data, zipfile.ZIP_STORED))), "expected a stored \\(uncompressed\\) entry")
    case("mat zlib bomb", "face-model", mat_bomb(file("bomb.mat"), 128 << 20),
         "expected a compressed field to inflate to at most")

    # --- absurd architecture fields
    project = file("tiny.safetensors")
    save_project(load_generator(nvidia_with(file("tiny.pkl"))), project)
    huge_layers = _project_variant(project, file("layers.safetensors"), mapping_layers=10**9)
    case("sidecar 1e9 mapping layers", "nfr-info", huge_layers,
         "mapping_layers: expected at most 32, found 1000000000", names=sidecar_path(huge_layers))
    dfg_project = file("dfg.safetensors")
    save_dfg_project(load_dfg_generator(dfx.write_dfg_pkl(file("dfg_ok.pkl"),
                                                          dfg_state(dfx.TINY_DFG))), dfg_project)
    dfg_layers = _project_variant(dfg_project, file("dfg_layers.safetensors"),
                                  mapping_layers=10**9)
    case("dfg sidecar 1e9 mapping layers", "load-dfg", dfg_layers,
         "mapping_layers: expected at most 32", names=sidecar_path(dfg_layers))
    case("tf resample kernel of 100000 taps", "nfr-info", write_tf_pkl(
        file("kernel.pkl"), tiny_state(),
        static_kwargs={**tf_static_kwargs(TINY_CONFIG), "resample_kernel": [1] * 100_000}),
        "FIR kernel of at most 16 taps, found 100000 taps")

    # --- devices, FIFOs, folders
    fifo = file("fifo")
    os.mkfifo(fifo)
    for call, role in (("rig-params", "rig params"), ("face-model", "face model"),
                       ("nfr-info", "checkpoint"), ("load-dfg", "checkpoint")):
        case(f"/dev/zero as {call}", call, "/dev/zero",
             f"expected the {role} as a regular file, found a character device")
        case(f"FIFO as {call}", call, fifo,
             f"expected the {role} as a regular file, found a FIFO")
    case("folder as checkpoint", "nfr-info", root,
         "expected the checkpoint as a regular file, found a folder")
    case("missing folder", "nfr-info", root / "nowhere" / "g.pkl",
         "the folder .*nowhere does not exist")

    # --- damaged zips
    data = bytearray(write_rosinality(file("cd.pt"), tiny_state()).read_bytes())
    end = data.rfind(b"PK\x05\x06")
    offset = struct.unpack_from("<I", data, end + 16)[0]
    struct.pack_into("<I", data, end + 16, offset - 10)
    file("cd.pt").write_bytes(bytes(data))
    case("pt corrupted directory offset", "nfr-info", file("cd.pt"),
         "the end record's directory offset is")
    flipped = bytearray(write_rosinality(file("flip.pt"), tiny_state()).read_bytes())
    entry = zipfile.ZipFile(file("flip.pt")).getinfo("flip/data/0")
    name_len, extra_len = struct.unpack_from("<HH", flipped, entry.header_offset + 26)
    flipped[entry.header_offset + 30 + name_len + extra_len + 5] ^= 0xFF  # inside the tensor
    file("flip.pt").write_bytes(bytes(flipped))
    case("pt flipped stored byte", "nfr-info", file("flip.pt"), "Bad CRC-32")
    file("short.pt").write_bytes(file("cd.pt").read_bytes()[:17])
    case("pt truncated to 17 bytes", "nfr-info", file("short.pt"),
         "truncated or damaged zip archive")
    _torch_save(file("payload.pt"), {"g_ema": Call(os.system, "true")})
    case("pt code payload", "nfr-info", file("payload.pt"), "posix.system")

    # --- pairs that disagree
    other = file("other.safetensors")
    state = {k: v + 1 for k, v in load_generator(project).state_dict.items()}
    save_project(LoadedGenerator(TINY_CONFIG, state, "nvidia-pkl", "cd" * 32), other)
    stolen = file("stolen.safetensors")
    stolen.write_bytes(project.read_bytes())
    sidecar_path(stolen).write_text(sidecar_path(other).read_text())
    case("sidecar from another model", "nfr-info", stolen,
         "does not match stolen.json, which describes weights with sha256")
    torn = file("torn.safetensors")
    torn.write_bytes(other.read_bytes())  # a crash after the weights' rename, before the sidecar's
    sidecar_path(torn).write_text(sidecar_path(project).read_text())
    case("crash between the two renames", "nfr-info", torn, "an interrupted write")

    # --- JSON: duplicate keys, ranges, depth, huge integers
    doc = {"schema": "neural_face_rig/rig_params", "version": 1}
    file("dup.json").write_text(json.dumps(doc)[:-1] + ', "version": 1}')
    case("rig params duplicate keys", "rig-params", file("dup.json"),
         "expected each key once, found 'version' twice")
    file("max.json").write_text(json.dumps({**doc, "identity": [3.4028234e38] * 80}))
    case("rig params float32 max", "rig-params", file("max.json"),
         "field 'identity' index 0 \\(Identity 0\\): expected a value within ±5")
    file("deep.json").write_text("[" * 100_000 + "]" * 100_000)
    case("rig params nested 100000 deep", "rig-params", file("deep.json"),
         "expected JSON nested at most 32 levels")
    file("digits.json").write_text(json.dumps(doc)[:-1] + ', "identity": [' + "7" * 5000 + "]}")
    case("rig params 5000-digit integer", "rig-params", file("digits.json"),
         "expected integers of at most 30 digits, found one of 5000 digits")
    deep_sidecar = _project_copy(project, file("deep_sidecar.safetensors"))
    sidecar_path(deep_sidecar).write_text("[" * 100_000 + "]" * 100_000)
    case("sidecar nested 100000 deep", "nfr-info", deep_sidecar, "nested at most 32 levels",
         names=sidecar_path(deep_sidecar))
    big_int = _project_copy(project, file("int_sidecar.safetensors"))
    text = sidecar_path(big_int).read_text()
    sidecar_path(big_int).write_text(text.replace('"version": 2', '"version": ' + "9" * 5000))
    case("sidecar 5000-digit integer", "nfr-info", big_int, "at most 30 digits",
         names=sidecar_path(big_int))
    rig = file("stylerig.safetensors")
    write_artifact(rig, {"w": torch.zeros(2)}, {"format": "nfr-stylerig", "version": 1})
    sidecar_path(rig).write_text(sidecar_path(rig).read_text()[:-2] + ', "version": 1}\n')
    case("stylerig sidecar duplicate keys", "stylerig", rig, "found 'version' twice",
         names=sidecar_path(rig))

    # --- TF bundle sizes counted with Python ints
    case("vae entry [2^32, 2^32]", "vae", bundle(file("wrap.ckpt"), (1 << 32, 1 << 32), 0),
         "0 bytes for shape \\(4294967296, 4294967296\\) of float32 \\(expected "
         "73786976294838206464\\)")
    case("vae entry [250000, 250000]", "vae",
         bundle(file("big.ckpt"), (250_000, 250_000), 250_000**2 * 4),
         "truncated: w needs bytes 0..250000000000, the file has 64")

    # --- allow-list-valid but malformed structures
    case("_init_kwargs = 5", "nfr-info",
         nvidia_snapshot(file("kwargs.pkl"), module_state({}, init_kwargs=5)),
         "_init_kwargs / _init_args: expected a dict of names")
    case("int parameter name", "nfr-info",
         nvidia_snapshot(file("intname.pkl"), module_state({7: torch.zeros(1)})),
         "_parameters: expected names \\(strings\\), found the int 7")
    obj_vars = {"": [("dlatent_avg", np.array([None, 1], dtype=object))], "mapping": [],
                "synthesis": []}
    case("object-dtype TF variable", "nfr-info", dfx.dump_tf_snapshot(
        file("object.pkl"), obj_vars, tf_static_kwargs(TINY_CONFIG),
        {"": "G_main", "synthesis": "G_synthesis_stylegan2", "D": "D_stylegan2"}, 8, "", 4),
        "object dtypes are not allowed|only numeric type codes|numpy.core.multiarray|"
        "'numpy._core.multiarray._reconstruct'")
    return cases


def _torch_save(path: Path, obj: Any) -> Path:
    torch.save(obj, path)
    return path


def _project_copy(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    sidecar_path(target).write_text(sidecar_path(source).read_text())
    return target


def _project_variant(source: Path, target: Path, **config: Any) -> Path:
    _project_copy(source, target)
    doc = json.loads(sidecar_path(target).read_text())
    doc["config"].update(config)
    sidecar_path(target).write_text(json.dumps(doc))
    return target


# ------------------------------------------------------------------ the child process


def _run_case(case: dict[str, Any]) -> int | None:
    from neural_face_rig.neural import cli
    from neural_face_rig.neural.stylerig.backend import read_artifact
    from neural_face_rig.rig.dfg_vae import TFCheckpoint
    from neural_face_rig.rig.face_model import load_face_model
    from neural_face_rig.rig.params import RigParams

    path = case["path"]
    call = case["call"]
    if call == "nfr-info":
        return cli.main(["info", "--weights", path])
    if call == "load-dfg":
        load_dfg_generator(path)
    elif call == "rig-params":
        RigParams.read_json(path)
    elif call == "face-model":
        load_face_model(path)
    elif call == "stylerig":
        read_artifact(Path(path), "nfr-stylerig")
    elif call == "vae":
        TFCheckpoint(path).read("w")
    else:
        raise AssertionError(call)
    return None


def _timeout(signum: int, frame: Any) -> None:
    raise TimeoutError(f"no answer within {SECONDS_PER_CASE} s")


def child(cases_file: str) -> None:
    """Run every case under RLIMIT_AS; print one JSON result per case."""
    import contextlib
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    from neural_face_rig.neural.errors import NeuralError
    from neural_face_rig.rig.errors import RigError

    signal.signal(signal.SIGALRM, _timeout)
    results = []
    for case in json.loads(Path(cases_file).read_text()):
        stderr = io.StringIO()
        start = time.perf_counter()
        signal.alarm(SECONDS_PER_CASE)
        try:
            with contextlib.redirect_stderr(stderr):
                rc = _run_case(case)
            kind, message, ours = "returned", f"rc={rc}", False
            if rc == 2:
                kind, message, ours = "nfr exit 2", stderr.getvalue().strip(), True
        except (NeuralError, RigError) as exc:
            kind, message, ours = type(exc).__name__, str(exc), True
        except BaseException as exc:  # noqa: BLE001 - reported, then asserted on
            kind, message, ours = type(exc).__name__, repr(exc)[:500], False
        finally:
            signal.alarm(0)
        results.append({"name": case["name"], "kind": kind, "message": message, "ours": ours,
                        "seconds": time.perf_counter() - start})
    print(json.dumps({"results": results, "peak_rss": _peak_rss()}))


def _peak_rss() -> int:
    """This process's own peak resident set (bytes). ``ru_maxrss`` is not: after fork + exec
    it keeps the high-water mark of the parent (the whole pytest process) at fork time, while
    /proc's VmHWM belongs to the exec'd program's own address space."""
    import resource

    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ------------------------------------------------------------------ the tests


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("redteam")
    cases = build_cases(root)
    listing = root / "cases.json"
    listing.write_text(json.dumps(cases))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(TESTS))
    done = subprocess.run([sys.executable, __file__, "child", str(listing)], env=env,
                          capture_output=True, text=True, timeout=20 * 60)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    by_name = {r["name"]: r for r in report["results"]}
    return {"cases": cases, "results": by_name, "peak_rss": report["peak_rss"]}


def test_every_hostile_input_is_refused_in_bounds_with_its_message(outcomes) -> None:
    import re

    failures = []
    for case in outcomes["cases"]:
        got = outcomes["results"][case["name"]]
        problems = []
        if not got["ours"]:
            problems.append(f"not the project's error: {got['kind']}")
        if got["seconds"] >= SECONDS_PER_CASE:
            problems.append(f"took {got['seconds']:.1f} s")
        if "\n" in got["message"]:
            problems.append("more than one line")
        if case["names"] not in got["message"]:
            problems.append("does not name the file")
        if "weights_only" in got["message"]:
            problems.append("relays torch's weights_only advice")
        if not re.search(case["expect"], got["message"]):
            problems.append(f"expected /{case['expect']}/")
        if problems:
            failures.append(f"{case['name']}: {'; '.join(problems)} -- {got['message'][:300]}")
    assert not failures, "\n".join(failures)
    assert outcomes["peak_rss"] < MEMORY_LIMIT


def test_cli_refusals_exit_2_on_one_line(outcomes) -> None:
    for case in outcomes["cases"]:
        if case["call"] == "nfr-info":
            got = outcomes["results"][case["name"]]
            assert got["kind"] == "nfr exit 2", (case["name"], got)
            assert got["message"].startswith("nfr: error: ") and "Traceback" not in got["message"]


# ------------------------------------------------------------------ killed writers


def _kill_when_temporary_appears(argv: list[str], folder: Path, env: dict[str, str]) -> bool:
    """Start ``argv``; SIGKILL it as soon as a temporary file shows in ``folder``. Returns
    whether it was killed mid-write (False: it finished first)."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if any(p.name.endswith(".nfr-tmp") for p in folder.iterdir()):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.0005)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _slow_writes() -> str:
    """Child-process prelude: every write into a temporary file pauses, so the kill lands
    while the file is half-written (a real full-size conversion spends seconds there)."""
    return (
        "import builtins, time\n"
        "_open = builtins.open\n"
        "class Slow:\n"
        "    def __init__(self, f): self._f = f\n"
        "    def write(self, data): time.sleep(0.5); return self._f.write(data)\n"
        "    def __getattr__(self, name): return getattr(self._f, name)\n"
        "    def __enter__(self): return self\n"
        "    def __exit__(self, *a): return self._f.__exit__(*a)\n"
        "def slow_open(file, mode='r', *a, **k):\n"
        "    f = _open(file, mode, *a, **k)\n"
        "    return Slow(f) if str(file).endswith('.nfr-tmp') else f\n"
        "builtins.open = slow_open\n"
        "import sys\n"
        "from neural_face_rig.neural.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )


@pytest.mark.parametrize("command", ["convert", "convert-bfm"])
def test_no_temporary_file_survives_a_killed_run(tmp_path: Path, command: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    if command == "convert":
        source = nvidia_with(tmp_path / "g.pkl")
        argv = ["convert", str(source), str(out / "g.safetensors")]
        made = ["g.json", "g.safetensors"]
    else:
        (tmp_path / "bfm").mkdir()
        write_raw_bfm(tmp_path / "bfm")
        argv = ["rig", "convert-bfm", "--bfm-dir", str(tmp_path / "bfm"), "--out",
                str(out / "face.mat")]
        made = ["face.mat"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(TESTS))
    killed = _kill_when_temporary_appears(
        [sys.executable, "-c", _slow_writes(), *argv], out, env)
    assert killed, "the run finished before it could be killed mid-write"
    assert [p.name for p in out.iterdir() if p.name.endswith(".nfr-tmp")], "nothing to clean"
    from neural_face_rig.neural.cli import main

    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == made


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "child":
    child(sys.argv[2])
