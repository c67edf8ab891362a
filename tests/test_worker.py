"""The inference worker and its client: protocol, progressive streaming, latest-wins
cancellation, error replies, images, determinism across processes and clean shutdown.

Most tests run the worker in a thread of this process (fast, deterministic: a gated backend
holds synthesis between blocks); the process tests start the real ``python -m`` worker."""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import pytest
import torch
from neural_face_rig import bridge
from neural_face_rig.bridge import WorkerClient, WorkerError
from neural_face_rig.contract import protocol as wp
from neural_face_rig.contract.state import RigState, SefaSlider
from neural_face_rig.neural import worker as worker_mod
from neural_face_rig.neural.backends import BACKEND_LOADERS, StyleGAN2Backend
from neural_face_rig.neural.checkpoints import LoadedGenerator, load_generator, save_project
from neural_face_rig.neural.images import (
    encode_png,
    srgb_to_linear,
    stamp_text,
    text_mask,
    to_blender_rgba,
    to_srgb_uint,
)
from neural_face_rig.neural.stylegan2.config import StyleGAN2Config
from neural_face_rig.neural.stylegan2.generator import random_state_dict
from PIL import Image

CFG = StyleGAN2Config(
    z_dim=8, w_dim=16, img_resolution=32, mapping_layers=2, channel_base=512, channel_max=16
)
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_project(LoadedGenerator(CFG, random_state_dict(CFG, seed=5), "nfr", "ab" * 32), path)
    return path


def direct_render(model: Path, state: RigState) -> torch.Tensor:
    backend = StyleGAN2Backend.from_loaded(load_generator(model))
    return backend.render(state)


# ------------------------------------------------------------------ in-process worker


class GatedBackend(StyleGAN2Backend):
    """Pauses after the first block of seed-1 renders until the test opens the gate."""

    name = "gated"
    paused = threading.Event()
    gate = threading.Event()

    def render_progressive(self, state, cancel=None, shown_from=None):
        for index, block in enumerate(super().render_progressive(state, cancel, shown_from)):
            yield block
            if state.seed == 1 and index == 0:
                self.paused.set()
                self.gate.wait(TIMEOUT)


class Replies(io.RawIOBase):
    """The worker's reply stream: parsed messages into a queue; image slots are copied and
    released at once, like the client does."""

    def __init__(self) -> None:
        self.messages: queue.Queue[dict] = queue.Queue()
        self.worker: worker_mod.Worker | None = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        message = json.loads(bytes(data))
        if message["type"] == wp.IMAGE:
            slot = shared_memory.SharedMemory(name=message["slot"])
            message["pixels"] = wp.image_view(slot.buf, message["size"]).copy()
            slot.close()
            assert self.worker is not None
            self.worker.slots.release(message["slot"])
        self.messages.put(message)
        return len(data)

    def next(self, kind: str | None = None) -> dict:
        while True:
            message = self.messages.get(timeout=TIMEOUT)
            if kind is None or message["type"] == kind:
                return message


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch):
    """(send(message), replies): a Worker serving in a thread of this process."""
    monkeypatch.setitem(
        BACKEND_LOADERS,
        "gated",
        lambda path, device, files: GatedBackend.from_loaded(load_generator(path), device),
    )
    GatedBackend.paused.clear()
    GatedBackend.gate.clear()
    replies = Replies()
    worker = worker_mod.Worker(worker_mod.Channel(replies), "cpu", quit_grace=None)
    replies.worker = worker
    commands: queue.Queue[bytes | None] = queue.Queue()
    thread = threading.Thread(target=worker.serve, args=(iter(commands.get, None),))
    thread.start()
    assert replies.next()["type"] == wp.READY

    def send(message: dict | bytes) -> None:
        commands.put(message if isinstance(message, bytes) else wp.encode(message))

    yield send, replies
    GatedBackend.gate.set()
    commands.put(None)  # end of input: the parent is gone
    thread.join(TIMEOUT)
    assert not thread.is_alive()


def render(ident: int, model: Path, state: RigState, **job) -> dict:
    return wp.render_message(ident, wp.RenderJob(state, str(model), **job))


def test_progressive_images_stream_in_block_order_and_end_with_the_exact_final(
    served, model: Path
) -> None:
    send, replies = served
    state = RigState(seed=7)
    send(render(1, model, state, target="face", stream_from=8))
    images = [replies.next(wp.IMAGE) for _ in range(3)]
    assert [m["block"] for m in images] == [8, 16, 32]
    assert [m["final"] for m in images] == [False, False, True]
    assert {(m["id"], m["target"], m["final_size"]) for m in images} == {(1, "face", 32)}
    # Previews cross at their block's own size: 8 px is 1/16 of the final image's bytes.
    assert [m["size"] for m in images] == [8, 16, 32]
    assert [m["pixels"].size for m in images] == [8 * 8 * 4, 16 * 16 * 4, 32 * 32 * 4]
    expected = to_blender_rgba(direct_render(model, state))
    assert np.array_equal(images[-1]["pixels"], expected)
    # Previews are the earlier blocks, not the final image early.
    assert not np.array_equal(wp.upscale_pixels(images[0]["pixels"], 8, 32), expected)


def test_previews_are_scaled_up_on_arrival_by_whole_texels() -> None:
    pixels = np.arange(2 * 2 * 4, dtype=np.float32)
    big = wp.upscale_pixels(pixels, 2, 8).reshape(8, 8, 4)
    assert np.array_equal(big[:4, :4], np.broadcast_to(pixels.reshape(2, 2, 4)[0, 0], (4, 4, 4)))
    assert np.array_equal(big[4:, 4:], np.broadcast_to(pixels.reshape(2, 2, 4)[1, 1], (4, 4, 4)))
    for size, to in ((4, 16), (3, 8)):  # whole texels, and the general nearest texel
        texels = np.random.default_rng(size).random((size, size, 4), dtype=np.float32)
        expected = np.array([[texels[y * size // to, x * size // to] for x in range(to)]
                             for y in range(to)])
        assert np.array_equal(wp.upscale_pixels(texels.reshape(-1), size, to),
                              expected.reshape(-1))


def test_a_newer_request_for_a_target_cancels_the_running_one_between_blocks(
    served, model: Path
) -> None:
    send, replies = served
    send(render(1, model, RigState(backend="gated", seed=1), target="face", stream_from=4))
    assert replies.next(wp.PROGRESS)["stage"].startswith("loading ")
    first = replies.next()
    assert (first["type"], first["id"], first["block"]) == (wp.IMAGE, 1, 4)
    assert GatedBackend.paused.wait(TIMEOUT)
    # Another target is queued, not cancelled; the same target supersedes request 1.
    send(render(2, model, RigState(backend="gated", seed=2), target="other"))
    send(render(3, model, RigState(backend="gated", seed=3), target="face"))
    time.sleep(0.2)  # let the reader thread file both before the gate opens
    GatedBackend.gate.set()
    seen = [replies.next() for _ in range(3)]
    assert [(m["type"], m["id"]) for m in seen] == [
        (wp.CANCELLED, 1), (wp.IMAGE, 2), (wp.IMAGE, 3)
    ]
    assert all(m["final"] for m in seen[1:])


def test_a_queued_request_is_replaced_by_a_newer_one_for_the_same_target(
    served, model: Path
) -> None:
    send, replies = served
    send(render(1, model, RigState(backend="gated", seed=1), target="busy", stream_from=4))
    assert GatedBackend.paused.wait(TIMEOUT)
    send(render(2, model, RigState(seed=2), target="face"))
    send(render(3, model, RigState(seed=3), target="face"))
    cancelled = replies.next(wp.CANCELLED)
    assert cancelled["id"] == 2  # replaced while queued, never started
    GatedBackend.gate.set()
    finals: list[int] = []
    while len(finals) < 2:
        image = replies.next(wp.IMAGE)
        if image["final"]:
            finals.append(image["id"])
    assert finals == [1, 3]


def test_errors_are_reported_per_request_and_the_worker_keeps_serving(
    served, model: Path, tmp_path: Path
) -> None:
    send, replies = served
    send(render(1, tmp_path / "missing.safetensors", RigState(seed=1)))
    error = replies.next(wp.ERROR)
    assert error["id"] == 1 and "missing.safetensors" in error["message"]

    send(render(2, model, RigState(backend="no_such_backend", seed=1)))
    error = replies.next(wp.ERROR)
    assert error["id"] == 2 and "'no_such_backend'" in error["message"]
    assert "stylegan2" in error["message"]  # names what is available

    send(render(3, model, RigState(seed=1, resolution=12)))
    error = replies.next(wp.ERROR)
    assert error["id"] == 3 and "12" in error["message"]

    broken = render(4, model, RigState(seed=1))
    broken["job"]["state"]["psi"] = "high"
    send(broken)
    error = replies.next(wp.ERROR)
    assert error["id"] == 4 and "job.state.psi" in error["message"]

    send(b"{not json\n")
    error = replies.next(wp.ERROR)
    assert error["id"] is None and "not JSON" in error["message"]

    slider = SefaSlider(direction=99, value=1.0, layers=(0,))
    send(render(5, model, RigState(seed=1, sefa=(slider,))))
    error = replies.next(wp.ERROR)
    assert error["id"] == 5 and "direction 99" in error["message"]

    send(render(6, model, RigState(seed=1)))
    image = replies.next(wp.IMAGE)
    assert image["id"] == 6 and image["final"]


def test_written_output_is_a_16_bit_png_of_the_generator_values(
    served, model: Path, tmp_path: Path
) -> None:
    send, replies = served
    state = RigState(seed=4)
    out = tmp_path / "face_0001.png"
    send(render(1, model, state, output_path=str(out), output_root=str(tmp_path),
                stream_from=4))
    assert replies.next(wp.PROGRESS)["id"] == 1  # the model's load
    written = replies.next()
    assert (written["type"], written["path"]) == (wp.WRITTEN, str(out))
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left
    with Image.open(out) as png:
        assert png.mode.startswith("I;16") or png.mode == "RGB"
    expected = to_srgb_uint(direct_render(model, state), bits=16)
    decoded = _read_png16_rgb(out)
    assert np.array_equal(decoded, expected)


def _read_png16_rgb(path: Path) -> np.ndarray:
    """A 16-bit RGB PNG -> uint16 [H, W, 3] (PIL only reads such files as 8 bits)."""
    import struct
    import zlib

    blob = path.read_bytes()
    pos, idat, header = 8, b"", None
    while pos < len(blob):
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        kind, body = blob[pos + 4 : pos + 8], blob[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None and header[2:4] == (16, 2)
    width, height = header[:2]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * 6)
    assert not rows[:, 0].any()  # filter type 0 on every row
    return rows[:, 1:].copy().view(">u2").reshape(height, width, 3).astype(np.uint16)


def test_untrained_models_are_stamped(served, model: Path, tmp_path: Path) -> None:
    send, replies = served
    flagged = tmp_path / "untrained.safetensors"
    flagged.write_bytes(model.read_bytes())
    sidecar = json.loads(model.with_suffix(".json").read_text())
    flagged.with_suffix(".json").write_text(json.dumps({**sidecar, "untrained": True}))
    state = RigState(seed=2)
    send(render(1, flagged, state))
    image = replies.next(wp.IMAGE)
    assert image["untrained"] is True
    expected = to_blender_rgba(stamp_text(direct_render(model, state)[0]))
    assert np.array_equal(image["pixels"], expected)
    assert not np.array_equal(expected, to_blender_rgba(direct_render(model, state)))


def test_directions_reply_counts_the_sefa_directions(served, model: Path) -> None:
    send, replies = served
    job = wp.RenderJob(RigState(seed=0), str(model), target="face")
    send(wp.directions_message(9, job, (0, 1)))
    reply = replies.next(wp.DIRECTIONS)
    assert (reply["id"], reply["count"], reply["layers"]) == (9, CFG.w_dim, [0, 1])


# ------------------------------------------------------------------ protocol and images


def test_rig_state_survives_the_wire_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    state = RigState(
        backend="discofacegan", model_id="f" * 64, rig=rng.normal(size=257).astype(np.float32),
        seed=3, latent=rng.normal(size=(4, 16)).astype(np.float32), latent_space="w+",
        psi=0.7, cutoff=8, sefa=(SefaSlider(2, -1.25, (0, 1, 2)),), resolution=64,
        noise_mode="none", noise_seed=11, extras={"note": "x"},
    )
    job = wp.RenderJob(state, "/m.pkl", target="t", device="cuda:1",
                       files={"rignet": "b"})
    line = wp.encode(wp.render_message(5, job))
    back = wp.job_from_json(wp.decode(line, wp.PARENT_MESSAGES)["job"])
    assert back.key() == job.key()
    assert np.array_equal(back.state.rig, state.rig) and back.state.rig.dtype == np.float32
    assert np.array_equal(back.state.latent, state.latent)
    assert back.state.sefa == state.sefa and back.device == "cuda:1"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("device", "tpu", "job.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ("model_path", "", "job.model_path"),
        ("stream_from", 1.5, "job.stream_from: expected an integer"),
        ("files", {"stylerig": "/r.safetensors"}, "job.files: expected roles from generator"),
        ("output_path", "/out/face.png", "job.output_root: expected the folder"),
    ],
)
def test_bad_job_fields_are_named(field: str, value, expected: str) -> None:
    data = wp.job_to_json(wp.RenderJob(RigState(seed=1), "/m.pkl"))
    data[field] = value
    with pytest.raises(wp.ProtocolError, match=expected.replace("(", r"\(")):
        wp.job_from_json(data)


def test_nan_cannot_be_sent() -> None:
    state = RigState(rig=np.full(257, np.nan, np.float32))
    with pytest.raises(wp.ProtocolError, match="NaN"):
        wp.encode(wp.render_message(1, wp.RenderJob(state, "/m.pkl")))


def test_blender_pixels_are_linear_rgba_bottom_row_first() -> None:
    image = torch.full((1, 3, 2, 2), -1.0)
    image[0, :, 0, 0] = 1.0  # top-left white
    image[0, 0, 1, 1] = 0.0  # bottom-right: red channel sRGB 0.5
    pixels = to_blender_rgba(image).reshape(2, 2, 4)
    assert np.array_equal(pixels[1, 0], [1, 1, 1, 1])  # Blender's last row is the top
    assert pixels[0, 1, 0] == pytest.approx(0.2140, abs=1e-4)  # sRGB 0.5 -> linear
    assert np.array_equal(pixels[..., 3], np.ones((2, 2)))
    assert float(srgb_to_linear(torch.tensor(0.04045))) == pytest.approx(0.04045 / 12.92)


def test_png_encoder_round_trips_through_pil(tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    path.write_bytes(encode_png(pixels))
    with Image.open(path) as png:
        assert np.array_equal(np.asarray(png), pixels)


def test_stamp_writes_the_text_mask_in_white() -> None:
    mask = text_mask("UNTRAINED WEIGHTS")
    assert mask.shape == (7, 17 * 6 - 1)
    stamped = stamp_text(torch.zeros(3, 256, 256))
    assert int((stamped == 1.0).all(dim=0).sum()) == int(mask.sum()) * 2 * 2  # scale 2 at 256
    assert stamped[:, :200].eq(0).all()  # the face above the band is untouched


# ------------------------------------------------------------------ real processes


def test_client_round_trip_is_bit_identical_to_this_process(model: Path) -> None:
    client = WorkerClient()
    try:
        state = RigState(seed=3, sefa=(SefaSlider(1, 2.0, (0, 1)),))
        image = client.render_blocking(wp.RenderJob(state, str(model), target="t"), TIMEOUT)
        assert image.final and image.size == CFG.img_resolution
        assert np.array_equal(image.pixels, to_blender_rgba(direct_render(model, state)))
        with pytest.raises(WorkerError, match="missing"):
            client.render_blocking(wp.RenderJob(state, str(model) + ".missing"), TIMEOUT)
        slots = [name for name in client._slots]
        assert slots
    finally:
        client.stop()
    assert client.status == "stopped" and not client.is_running()
    for name in slots:  # the worker unlinked its shared memory on quit
        with pytest.raises(FileNotFoundError):
            shared_memory.SharedMemory(name=name)


def test_a_killed_worker_is_reported_and_replaced(model: Path) -> None:
    client = WorkerClient()
    try:
        job = wp.RenderJob(RigState(seed=1), str(model), target="t")
        client.render_blocking(job, TIMEOUT)
        first = client.pid
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + TIMEOUT
        crashed = []
        while not crashed and time.monotonic() < deadline:
            crashed = [e for e in client.poll() if getattr(e, "kind", "") == "crashed"]
            time.sleep(0.02)
        assert crashed and "exit code -9" in crashed[0].message
        assert "restarts" in client.status
        image = client.render_blocking(job, TIMEOUT)
        assert image.final and client.pid != first and client.crashes == 1
    finally:
        client.stop()


def _process_state(pid: int) -> str | None:
    """'R', 'S', 'Z', ... or None when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_the_worker_exits_when_its_parent_dies(model: Path) -> None:
    """A parent that dies without stopping its worker (Blender crashing) leaves no orphan."""
    parent = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            import os
            from neural_face_rig.bridge import WorkerClient
            from neural_face_rig.contract.protocol import RenderJob
            from neural_face_rig.contract.state import RigState
            client = WorkerClient()
            client.render_blocking(RenderJob(RigState(seed=1), {str(model)!r}), 60)
            print(client.pid, flush=True)
            os._exit(0)
        """)],
        capture_output=True, text=True, timeout=60,
    )
    assert parent.returncode == 0, parent.stderr
    pid = int(parent.stdout.split()[-1])
    deadline = time.monotonic() + 15
    while _process_state(pid) not in (None, "Z") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _process_state(pid) in (None, "Z")


# ------------------------------------------------------------------ hostile input


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"[" * 100_000 + b"]" * 100_000 + b"\n", "nested too deeply"),
        (b'{"type": "render", "id": ' + b"7" * 5000 + b', "job": {}}\n', "not JSON"),
        (b'{"type": "render", "id": ' + b"7" * 4000 + b', "job": {}}\n', "integer of"),
        (b"\xff\xfe\x00garbage\x80\n", "not JSON"),
        (b'{"type": "ping", "id": true}\n', "ping.id: expected an integer"),
        (b'{"type": "render", "id": 3, "job": {"model_path": "/m", "state": '
         + b'{"psi": ' + b"9" * 400 + b"}}}\n", "job.state.psi: expected a finite number"),
    ],
    ids=["nested-100000", "id-5000-digits", "id-4000-digits", "garbage", "bool-id",
         "psi-overflows"],
)
def test_the_worker_answers_any_line_and_keeps_serving(
    served, model: Path, line: bytes, expected: str
) -> None:
    send, replies = served
    send(line)
    error = replies.next(wp.ERROR)
    assert expected in error["message"] and len(error["message"]) < 300
    send(render(9, model, RigState(seed=1)))
    assert replies.next(wp.IMAGE)["id"] == 9  # the command thread survived


def test_an_oversize_line_is_cut_and_skipped_not_held() -> None:
    stream = io.BytesIO(b"x" * 50 + b"\n" + b'{"type":"quit"}\n')
    lines = list(wp.bounded_lines(stream, limit=20))
    assert [len(line) for line in lines] == [21, 16]  # the first is cut at limit + 1
    assert lines[1] == b'{"type":"quit"}\n'
    with pytest.raises(wp.ProtocolError, match="not JSON"):
        wp.decode(lines[0], wp.PARENT_MESSAGES)
    with pytest.raises(wp.ProtocolError, match=f"at most {wp.MAX_LINE_BYTES} bytes"):
        wp.decode(b" " * (wp.MAX_LINE_BYTES + 1), wp.PARENT_MESSAGES)


def test_a_ping_is_answered_while_a_render_runs(served, model: Path) -> None:
    send, replies = served
    send(render(1, model, RigState(backend="gated", seed=1), target="face", stream_from=4))
    assert GatedBackend.paused.wait(TIMEOUT)
    send({"type": wp.PING, "id": 2})
    pong = replies.next(wp.PONG)
    assert pong["id"] == 2 and pong["busy"]["id"] == 1 and pong["busy"]["type"] == wp.RENDER
    GatedBackend.gate.set()


def test_output_outside_the_jobs_folder_is_refused(served, model: Path, tmp_path: Path) -> None:
    send, replies = served
    bake = tmp_path / "bake"
    bake.mkdir()
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("keep me")
    (bake / "link.png").symlink_to(victim)
    (bake / "escape").symlink_to(victim.parent, target_is_directory=True)
    for ident, path in enumerate([bake / ".." / "outside" / "victim.txt", bake / "link.png",
                                  bake / "escape" / "face_0001.png", Path("/tmp/x.png")], 1):
        send(render(ident, model, RigState(seed=1), output_path=str(path),
                    output_root=str(bake)))
        error = replies.next(wp.ERROR)
        assert error["id"] == ident and str(path) in error["message"]
        assert "outside the job's folder" in error["message"]
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in bake.iterdir()) == ["escape", "link.png"]
    send(render(9, model, RigState(seed=1), output_path=str(bake / "face_0001.png"),
                output_root=str(bake)))
    assert replies.next(wp.WRITTEN)["path"] == str(bake / "face_0001.png")


def test_model_paths_must_be_regular_files(served, tmp_path: Path) -> None:
    send, replies = served
    fifo = tmp_path / "model.pkl"
    os.mkfifo(fifo)  # opening it for reading would block the worker forever
    send(render(1, fifo, RigState(seed=1)))
    error = replies.next(wp.ERROR)
    assert error["id"] == 1 and "FIFO" in error["message"] and str(fifo) in error["message"]
    send(render(2, tmp_path, RigState(seed=1)))
    assert "a folder" in replies.next(wp.ERROR)["message"]


def test_errors_never_echo_the_bytes_of_a_file(served, tmp_path: Path) -> None:
    send, replies = served
    secret = tmp_path / "passwords.txt"
    secret.write_bytes(b"hunter2-SECRET\n")
    send(render(1, secret, RigState(seed=1)))
    message = replies.next(wp.ERROR)["message"]
    assert str(secret) in message and "SECRET" not in message
    assert b"hunter2-SECRET"[:8].hex(" ") not in message and "68 75 6e" not in message


def test_a_stylegan2_model_has_no_rig_estimate(served, model: Path) -> None:
    send, replies = served
    job = wp.RenderJob(RigState(seed=4), str(model), target="face")
    send(wp.job_message(wp.ESTIMATE, 3, job))
    reply = replies.next(wp.ESTIMATE)
    assert (reply["id"], reply["rig"], reply["backend"]) == (3, None, "stylegan2")
    send(wp.job_message(wp.LOAD, 4, job))
    loaded = replies.next(wp.LOADED)
    assert loaded["id"] == 4 and loaded["resolution"] == CFG.img_resolution


def test_a_load_reports_its_stages_then_warms_the_model_up_for_the_first_render(
    served, model: Path
) -> None:
    send, replies = served
    job = wp.RenderJob(RigState(seed=6), str(model), target="face")
    send(wp.job_message(wp.LOAD, 1, job))
    stages = [replies.next(wp.PROGRESS) for _ in range(2)]
    assert [(m["id"], m["target"], m["done"], m["total"]) for m in stages] == [
        (1, "face", 0, 2), (1, "face", 1, 2)]
    assert stages[0]["stage"].startswith(f"loading {model.name} (")
    assert stages[1]["stage"] == "first synthesis"
    assert replies.next(wp.LOADED)["id"] == 1
    # The warm-up rendered this very face: its render runs no synthesis step at all.
    send(render(2, model, job.state, target="face"))
    final = replies.next(wp.IMAGE)
    assert final["final"] and final["id"] == 2
    (loaded,) = replies.worker.models._models.values()
    assert loaded.warmed_up and loaded.backend.engine.last_run.steps_executed == 0
    # A model already loaded and warmed up is loaded at once, without progress.
    send(wp.job_message(wp.LOAD, 3, job))
    assert replies.next()["type"] == wp.LOADED


def test_a_render_that_loads_its_model_says_so_first(served, model: Path) -> None:
    send, replies = served
    send(render(1, model, RigState(seed=2), target="face"))
    first = replies.next()
    assert (first["type"], first["id"], first["done"], first["total"]) == (wp.PROGRESS, 1, 0, 1)
    assert first["stage"].startswith(f"loading {model.name} (")
    assert replies.next(wp.IMAGE)["final"]


def test_a_frozen_worker_fails_a_blocking_render_at_once(model: Path) -> None:
    """A stopped worker answers no heartbeat: the frame fails with the reason after
    ``frozen_after`` seconds, not after the frame timeout, and the next job gets a new one."""
    client = WorkerClient()
    try:
        job = wp.RenderJob(RigState(seed=1), str(model), target="t")
        client.render_blocking(job, TIMEOUT)
        frozen = client.pid
        client.frozen_after = 1.0
        os.kill(frozen, signal.SIGSTOP)
        with pytest.raises(WorkerError, match="not responding"):
            client.render_blocking(job, 600.0)
        assert not client.is_running()
        client.frozen_after = bridge.FROZEN_AFTER
        image = client.render_blocking(job, TIMEOUT)
        assert image.final and client.pid != frozen
    finally:
        client.stop()


def test_a_file_beyond_the_reader_limits_fails_its_request_not_the_worker(
    served, model: Path, tmp_path: Path
) -> None:
    """A "billion laughs" pickle (each level holds the one below twice through the memo):
    the bounded reader refuses it, the request gets the error, the next one is served."""
    import pickle

    level: list = ["lol"]
    for _ in range(64):
        level = [level, level]
    bomb = tmp_path / "laughs.pkl"
    bomb.write_bytes(pickle.dumps({"G_ema": level}, protocol=4))
    send, replies = served
    send(render(1, bomb, RigState(seed=1)))
    error = replies.next(wp.ERROR)
    assert error["id"] == 1 and str(bomb) in error["message"]
    send(render(2, model, RigState(seed=1)))
    assert replies.next(wp.IMAGE)["id"] == 2


# ------------------------------------------------------------------ photo jobs


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from neural_face_rig.rig.face_model import write_face_model_mat
    from neural_face_rig.rig.synthetic import make_synthetic_face_model
    from skimage import data

    folder = tmp_path_factory.mktemp("photo")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(folder / "wall.png")
    write_face_model_mat(make_synthetic_face_model("tiny"), folder / "face_model.mat")
    return {"photo": folder / "astronaut.png", "wall": folder / "wall.png",
            "face_model": folder / "face_model.mat"}


def _photo_job(model: Path, files: dict[str, Path], **fields) -> wp.PhotoJob:
    job = {"photo": str(files["photo"]), "model_path": str(model), "backend": "stylegan2",
           "target": "Photo", "device": "cpu", "face_model": str(files["face_model"]),
           "steps": 2, **fields}
    return wp.PhotoJob(**job)


def _send_photo(client: WorkerClient, job: wp.PhotoJob) -> tuple[int, queue.Queue]:
    waiter: queue.Queue = queue.Queue()
    ident = client._submit(lambda i: wp.photo_message(i, job), waiter)
    return ident, waiter


def _until_done(waiter: queue.Queue) -> tuple[list, object]:
    """(progress events, the final event) of one photo request."""
    progress = []
    while True:
        event = waiter.get(timeout=120)
        if event.kind != wp.PROGRESS:
            return progress, event
        progress.append(event.data)


def test_a_photo_job_reports_progress_and_returns_the_rig_and_w_plus(
    model: Path, photo_files: dict[str, Path]
) -> None:
    client = WorkerClient()
    try:
        ident, waiter = _send_photo(client, _photo_job(model, photo_files))
        progress, final = _until_done(waiter)
    finally:
        client.stop()
    assert final.kind == wp.PHOTO_RESULT, final.message
    stages = [p["stage"] for p in progress]
    for stage in ("detect", "align", "rig", "encode", "refine", "done"):
        assert stage in stages
    assert [p["done"] for p in progress if p["stage"] == "refine"][-1] == 2
    assert all(p["id"] == ident for p in progress)
    result = wp.photo_result_from_json(final.data)
    assert result.backend == "stylegan2" and result.latent_space == "w+"
    assert result.latent.shape == (CFG.num_ws, CFG.w_dim)
    assert np.isfinite(result.latent).all() and result.rig.shape == (257,)
    assert result.rig_source == "landmarks" and result.controls  # the landmark fit ran
    assert result.rig[80:144].any()  # the photo's expression, not neutral
    x0, y0, x1, y1 = result.face_box
    assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512
    # The state the add-on builds from it renders the inverted face (same W+ bit for bit).
    state = RigState(backend="stylegan2", latent=result.latent, latent_space="w+")
    assert torch.isfinite(direct_render(model, state)).all()


def test_a_cancel_stops_a_running_photo_job_between_steps(
    model: Path, photo_files: dict[str, Path]
) -> None:
    client = WorkerClient()
    try:
        ident, waiter = _send_photo(client, _photo_job(model, photo_files, steps=50_000))
        while True:  # wait until the refinement runs
            event = waiter.get(timeout=120)
            assert event.kind == wp.PROGRESS, event.message
            if event.data["stage"] == "refine" and event.data["done"] >= 1:
                break
        start = time.monotonic()
        client._submit(lambda i: wp.cancel_message(i, "Photo"))
        _, final = _until_done(waiter)
        assert final.kind == wp.CANCELLED and final.request_id == ident
        assert time.monotonic() - start < 30  # long before 50 000 steps
        # The worker keeps serving: a second job for the target completes.
        _, again = _until_done(_send_photo(client, _photo_job(model, photo_files, steps=0,
                                                               backend="stylegan2"))[1])
    finally:
        client.stop()
    assert again.kind == wp.ERROR and "needs the e4e encoder" in again.message


def test_photo_job_errors_are_one_line_and_name_the_problem(
    model: Path, photo_files: dict[str, Path], tmp_path: Path
) -> None:
    client = WorkerClient()
    try:
        _, wall = _until_done(_send_photo(client, _photo_job(model, photo_files,
                                                              photo=str(photo_files["wall"])))[1])
        _, missing = _until_done(_send_photo(client, _photo_job(
            model, photo_files, photo=str(tmp_path / "nothing.png")))[1])
    finally:
        client.stop()
    assert wall.kind == wp.ERROR and "wall.png: no face found" in wall.message
    assert missing.kind == wp.ERROR and "nothing.png" in missing.message
    assert "\n" not in wall.message + missing.message
    with pytest.raises(wp.ProtocolError, match="job.steps: expected 0..100000"):
        wp.photo_job_from_json(dict(wp.photo_job_to_json(_photo_job(model, photo_files)),
                                    steps=-1))
    with pytest.raises(wp.ProtocolError, match="job.backend: expected one of"):
        wp.photo_job_from_json(dict(wp.photo_job_to_json(_photo_job(model, photo_files)),
                                    backend="vq"))


def test_a_discofacegan_photo_job_returns_its_input_z_as_coefficients_and_noise(
    photo_files: dict[str, Path], tmp_path: Path
) -> None:
    from fixtures.tiny_models import TINY_DFG, write_discofacegan
    from neural_face_rig.rig.params import RigParams

    generator = write_discofacegan(tmp_path)
    client = WorkerClient()
    try:
        _, final = _until_done(_send_photo(client, _photo_job(
            generator, photo_files, backend="auto", steps=2))[1])
    finally:
        client.stop()
    assert final.kind == wp.PHOTO_RESULT, final.message
    result = wp.photo_result_from_json(final.data)
    assert result.backend == "discofacegan" and result.latent_space == "z"
    assert result.latent.shape == (TINY_DFG.z_dim,)
    coefficients = RigParams.from_vector(result.rig).to_dfg_vector()
    # z = [the rig's coefficients, the optimised noise]: what the add-on rebuilds from the
    # sliders and the stored noise.
    np.testing.assert_array_equal(result.latent, np.concatenate([coefficients, result.noise]))
    assert result.noise.size == TINY_DFG.z_dim - coefficients.size and result.noise.any()


# ------------------------------------------------------------------ capture jobs

CAPTURE_FRAMES = 8


@pytest.fixture(scope="module")
def capture_clip(photo_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The astronaut portrait turned by a known in-plane angle per frame, as an image
    sequence (shot.0001.png ...): a real face moving, for the real detector and fit."""
    import cv2
    from skimage import data

    folder = tmp_path_factory.mktemp("capture_clip")
    photo = data.astronaut()
    for i in range(CAPTURE_FRAMES):
        matrix = cv2.getRotationMatrix2D((230.0, 150.0), 2.0 * i, 1.0)
        frame = cv2.warpAffine(photo, matrix, (512, 512), flags=cv2.INTER_LINEAR)
        cv2.imwrite(str(folder / f"shot.{i + 1:04d}.png"), frame[..., ::-1])
    return folder


def _capture_job(clip: Path, files: dict[str, Path], **fields) -> wp.CaptureJob:
    job = {"video": str(clip / "shot.0001.png"), "face_model": str(files["face_model"]),
           "target": "Capture", "frame_start": 101, "scene_fps": 24.0, **fields}
    return wp.CaptureJob(**job)


def _send_capture(client: WorkerClient, job: wp.CaptureJob) -> tuple[int, queue.Queue]:
    waiter: queue.Queue = queue.Queue()
    ident = client._submit(lambda i: wp.capture_message(i, job), waiter)
    return ident, waiter


def test_a_capture_job_reports_progress_and_returns_the_pipelines_curves(
    capture_clip: Path, photo_files: dict[str, Path]
) -> None:
    from neural_face_rig.neural.capture.pipeline import (
        CaptureOptions,
        CurveOptions,
        capture_video,
    )
    from neural_face_rig.rig.curves_file import curves_from_dict
    from neural_face_rig.rig.face_model import load_face_model

    job = _capture_job(capture_clip, photo_files, smoothing=2.0, every_frame=True,
                       gains={"head": 1.5})
    client = WorkerClient()
    try:
        ident, waiter = _send_capture(client, job)
        progress, final = _until_done(waiter)
    finally:
        client.stop()
    assert final.kind == wp.CAPTURE_RESULT, final.message
    assert all(p["id"] == ident for p in progress)
    stages = [p["stage"] for p in progress]
    assert stages.index("fit") > stages.index("landmarks")  # landmarks first, then the fit
    assert [p["done"] for p in progress if p["stage"] == "landmarks"][-1] == CAPTURE_FRAMES
    curves = curves_from_dict(wp.capture_curves_of(final.data))
    # Exactly what the pipeline gives in this process for the same options.
    expected = capture_video(
        job.video, load_face_model(job.face_model),
        CaptureOptions(scene_fps=24.0, frame_start=101,
                       curves=CurveOptions(smoothing=2.0, gains={"head": 1.5},
                                           every_frame=True))).curves
    assert sorted(curves.channels) == sorted(expected.channels)
    for name, channel in expected.channels.items():
        np.testing.assert_array_equal(curves.channels[name].frames, channel.frames)
        np.testing.assert_allclose(curves.channels[name].values, channel.values, atol=1e-9)
    roll = curves.channels["rotation.z"]
    assert roll.frames.tolist() == list(range(101, 101 + CAPTURE_FRAMES))  # every frame
    assert curves.source["smoothing"] == 2.0 and "head=1.5" in curves.source["gains"]


def test_a_cancel_stops_a_running_capture_job_and_the_worker_keeps_serving(
    capture_clip: Path, photo_files: dict[str, Path]
) -> None:
    client = WorkerClient()
    try:
        ident, waiter = _send_capture(client, _capture_job(capture_clip, photo_files))
        event = waiter.get(timeout=120)
        assert event.kind == wp.PROGRESS, event.message  # the first batch of landmarks
        client._submit(lambda i: wp.cancel_message(i, "Capture"))
        _, final = _until_done(waiter)
        assert final.kind == wp.CANCELLED and final.request_id == ident
        # A newer job for the same target replaces a queued or running one.
        first, first_waiter = _send_capture(client, _capture_job(capture_clip, photo_files))
        _, second_waiter = _send_capture(client, _capture_job(capture_clip, photo_files,
                                                              every_frame=True))
        _, replaced = _until_done(first_waiter)
        _, done = _until_done(second_waiter)
    finally:
        client.stop()
    assert replaced.kind == wp.CANCELLED and replaced.request_id == first
    assert done.kind == wp.CAPTURE_RESULT, done.message


def test_capture_job_errors_are_one_line_and_name_the_problem(
    capture_clip: Path, photo_files: dict[str, Path], tmp_path: Path
) -> None:
    client = WorkerClient()
    try:
        _, missing = _until_done(_send_capture(client, _capture_job(
            capture_clip, photo_files, video=str(tmp_path / "nothing.mov")))[1])
        _, gain = _until_done(_send_capture(client, _capture_job(
            capture_clip, photo_files, gains={"ears": 2.0}))[1])
        _, wall = _until_done(_send_capture(client, _capture_job(
            capture_clip, photo_files, video=str(photo_files["wall"])))[1])
    finally:
        client.stop()
    assert missing.kind == wp.ERROR and "nothing.mov" in missing.message
    assert gain.kind == wp.ERROR and "retarget gain for 'ears'" in gain.message
    assert wall.kind == wp.ERROR and "wall.png" in wall.message, wall.message
    assert "\n" not in missing.message + gain.message + wall.message
    good = wp.capture_job_to_json(_capture_job(capture_clip, photo_files))
    for field, value, expected in (("detector", "haar", "job.detector: expected one of"),
                                   ("smoothing", -1, "job.smoothing: expected 0.."),
                                   ("every_frame", 1, "job.every_frame: expected true"),
                                   ("frames", 3, "unknown capture job field")):
        with pytest.raises(wp.ProtocolError, match=expected):
            wp.capture_job_from_json(dict(good, **{field: value}))
    assert wp.capture_job_from_json(good) == _capture_job(capture_clip, photo_files)
