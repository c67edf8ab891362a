"""The live neural face: rig and frame changes become worker requests, results become pixels.

- Interactive: a rig property change (``properties.RIG_CHANGE_LISTENERS``) or a frame change
  (``frame_change_post`` with the evaluated values; update callbacks do not fire on
  animation) sends a preview request; the worker streams progressive images; ``poll_once``,
  a ``bpy.app.timers`` function, copies the newest image of each face into its float buffer.
  It never blocks: it writes what has arrived and stops after ``POLL_BUDGET`` seconds, and
  it unregisters itself when nothing is outstanding. Undo/redo re-render every live face.
- Rendering and background mode (``blender -b``: timers never run): ``frame_change_post``
  with a RENDER depsgraph (each frame of a still or animation render), or any frame change in
  background mode, renders the frame's final face synchronously before Blender renders the
  frame (at most BLOCKING_TIMEOUT; a frozen worker fails it after the heartbeat's 20 s). A
  farm frame whose face fails ends ``blender -b`` with FAILED_FRAME_EXIT_CODE unless the rig
  asks for magenta placeholders. The same state twice is not redone.
- Backends that read rig values off their base face (catalogue ``estimate``) are asked for
  them when a base face is new; the sliders move there and Reset returns there.
- Baked rigs (the card shows an image sequence) are left alone: no worker is needed.

bpy is used on the main thread (or Blender's render thread, inside its handlers) only; the
worker client's threads never touch it.
"""

from __future__ import annotations

import atexit
import collections
import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import bpy
import numpy as np
from bpy.app.handlers import persistent
from bpy.types import Depsgraph, Object, Scene

from . import (
    dependencies,
    face_image,
    file_status,
    model_files,
    portrait,
    properties,
    rig_estimate,
    rig_props,
)
from .bridge import WorkerClient, WorkerError
from .contract import catalogue, protocol
from .contract.latest import LatestWins, obsolete
from .contract.protocol import FaceImage, RenderJob, WorkerEvent
from .preferences import addon_preferences

POLL_BUDGET = 0.012  # seconds of main-thread time per poll: stays well inside a 60 Hz frame
POLL_BUSY = 1.0 / 60.0
POLL_IDLE = 0.25
STREAM_FROM = 32  # smaller blocks are blurs not worth a texture upload
BLOCKING_TIMEOUT = 300.0
"""Longest wait for one frame's final face (renders, bakes, farm frames). A first 1024 px
frame on a slow CPU, model load included, takes well under a minute; a frozen worker is
caught much sooner by the client's heartbeat (bridge.FROZEN_AFTER, 20 s)."""
FAILED_FRAME_EXIT_CODE = 3
"""Exit code of ``blender -b`` when a frame's face cannot be rendered (the rig's
``failure_placeholder`` off): a farm must not keep a frame with a wrong face."""
DEFAULT_IMAGE_SIZE = 256
STATS_KEPT = 2000


class LiveError(Exception):
    """A rig cannot be rendered yet (no model file, worker Python unusable, ...)."""


_client: WorkerClient | None = None
_requests: dict[int, tuple[str, str]] = {}  # request id -> (face image name, job key)
_arrived: LatestWins[FaceImage] = LatestWins()  # newest image per face not yet written
_shown: dict[str, str] = {}  # face image name -> job key of the final image it shows
_status: dict[str, str] = {}  # face image name -> what happened last
_directions: dict[str, tuple[tuple[int, ...], int]] = {}  # face -> (W+ rows, count)
_estimating: dict[int, tuple[str, str]] = {}  # estimate request id -> (face, estimate key)
_touched: dict[str, str] = {}  # image node path -> its extension before a persistent render
_paused = 0
_rendering = False  # between render_init and render_complete/cancel: previews wait
ERROR_COLOUR = (1.0, 0.0, 1.0, 1.0)  # a frame whose face failed is unmistakable
POLL_SECONDS: collections.deque[float] = collections.deque(maxlen=STATS_KEPT)
"""Main-thread seconds of every ``poll_once`` call that handled results."""
UPLOAD_SECONDS: collections.deque[tuple[int, float]] = collections.deque(maxlen=STATS_KEPT)
"""(image size, seconds) of every pixel write."""
REQUEST_SECONDS: collections.deque[float] = collections.deque(maxlen=STATS_KEPT)
"""Main-thread seconds of every ``request_update`` that sent a request (the slider's side)."""


# ------------------------------------------------------------------ the worker


def client() -> WorkerClient:
    """The worker client for the preferences' worker Python (recreated when it changes)."""
    global _client
    try:
        command, env = dependencies.worker_command(addon_preferences(bpy.context))
    except dependencies.DependencyError as exc:
        raise LiveError(str(exc)) from None
    if _client is not None and _client.command != command:
        _client.stop()
        _client = None
    if _client is None:
        _client = WorkerClient(command, env)
    return _client


def stop_worker() -> None:
    """Stop the worker process (unregister, Blender exit)."""
    global _client
    if _client is not None:
        _client.stop()
        _client = None


def pause() -> None:
    """No live requests and no frame-handler renders until ``resume`` (bakes set frames)."""
    global _paused
    _paused += 1


def resume() -> None:
    global _paused
    _paused = max(0, _paused - 1)


@contextmanager
def paused() -> Iterator[None]:
    """``pause()`` for the duration of the block."""
    pause()
    try:
        yield
    finally:
        resume()


# ------------------------------------------------------------------ jobs


def face_name(ob: Object) -> str:
    return ob.face_rig.image_name


def is_baked(ob: Object) -> bool:
    """The card shows a baked image sequence instead of the live face."""
    node = portrait.face_node(ob)
    return node is not None and node.image is not None and node.image.source == "SEQUENCE"


def is_live(ob: Object) -> bool:
    return properties.is_face_rig(ob) and bool(face_name(ob)) and not is_baked(ob)


def job_for(
    ob: Object,
    *,
    depsgraph: Depsgraph | None = None,
    final: bool = False,
    target: str = "",
    output_path: str = "",
    output_root: str = "",
) -> RenderJob:
    """The worker job of ``ob``'s face (evaluated values when ``depsgraph`` is given): the
    rig's model file or the preferences' one, the preferences' device; previews stream.
    ``output_path`` (write the final image there) must lie in ``output_root``, the folder
    the caller writes into (default: the output path's own folder); the worker checks."""
    state = rig_props.rig_state(ob, depsgraph=depsgraph, final=final)
    prefs = addon_preferences(bpy.context)
    paths = model_files.model_paths(prefs, state.backend, rig_props.model_path(ob))
    model = paths.pop(catalogue.ROLE_GENERATOR, "")
    if not model:
        raise LiveError(
            f"No {state.backend} generator: set the rig's Model, or the generator in "
            "Preferences > Add-ons > Neural Face Rig (or put it in the models folder)"
        )
    if not os.path.isfile(model):
        raise LiveError(f"Model file not found: {model}")
    return RenderJob(
        state=state,
        model_path=model,
        target=target or face_name(ob),
        device=catalogue.device_from_item(prefs.device),
        files={role: path for role, path in paths.items() if path},
        stream_from=None if final else STREAM_FROM,
        output_path=output_path,
        output_root=output_root or (os.path.dirname(output_path) if output_path else ""),
    )


def request_update(ob: Object, depsgraph: Depsgraph | None = None) -> int | None:
    """Ask for ``ob``'s preview; returns the request id (None: nothing to do or a problem,
    which ``status_text`` shows)."""
    if _paused or not is_live(ob):
        return None
    start = time.perf_counter()
    name = face_name(ob)
    try:
        job = job_for(ob, depsgraph=depsgraph)
        ident = client().request(job)
    except (LiveError, WorkerError) as exc:
        _status[name] = str(exc)
        return None
    face_image.ensure_face_image(name, job.state.resolution or DEFAULT_IMAGE_SIZE)
    _requests[ident] = (name, job.key())
    _status[name] = "updating"
    _request_estimate(ob, job)
    _ensure_timer()
    REQUEST_SECONDS.append(time.perf_counter() - start)
    return ident


def _request_estimate(ob: Object, job: RenderJob) -> None:
    """Ask for the rig values of ``ob``'s base face when its backend reads them and they
    are not known for this base face yet (new rig, other seed, truncation or model)."""
    if not catalogue.backend(job.state.backend).estimate:
        return
    key = rig_estimate.estimate_key(job)
    if rig_estimate.stored_key(ob) == key or key in {k for _, k in _estimating.values()}:
        return
    try:
        ident = client().request_job(protocol.ESTIMATE, job)
    except WorkerError as exc:
        _status[face_name(ob)] = str(exc)
        return
    _estimating[ident] = (face_name(ob), key)


def _apply_estimate(event: WorkerEvent) -> None:
    """Store the estimate on its rig and move the sliders of the groups its backend honours
    there (the face then renders as its own base face: no edit asked)."""
    name, key = _estimating.pop(event.request_id or 0, ("", ""))
    values = event.data.get("rig")
    if not name or values is None:
        return
    for ob in bpy.data.objects:
        if properties.is_face_rig(ob) and face_name(ob) == name:
            params = rig_estimate.store(ob, np.asarray(values, np.float32), key)
            groups = catalogue.backend(ob.face_rig.backend).groups
            rig_props.set_rig_params(ob, params, groups)


def render_now(ob: Object, depsgraph: Depsgraph | None = None) -> bool:
    """Render ``ob``'s final face synchronously into its image (renders, background mode).
    Returns False when the image already shows this exact state."""
    name = face_name(ob)
    # Its own latest-wins key: a preview for the same face must not cancel the render's.
    job = job_for(ob, depsgraph=depsgraph, final=True, target=f"render:{name}")
    key = job.key()
    if _shown.get(name) == key and name in bpy.data.images:
        return False
    _status[name] = "rendering the final face"
    result = client().render_blocking(job, BLOCKING_TIMEOUT)
    assert isinstance(result, FaceImage)
    image = face_image.ensure_face_image(name, result.size)
    _write(image, result)
    _tag_for_persistent_render(image)
    _shown[name] = key
    _status[name] = _done_text(result)
    return True


def compute_sefa_directions(ob: Object, layers: Sequence[int] | None = None) -> int | None:
    """Ask the worker for the SeFa directions of ``ob``'s model over W+ rows ``layers``
    (default: the active slider's rows); ``status_text`` reports how many there are."""
    if layers is None:
        sliders = ob.face_rig.sefa_sliders
        index = ob.face_rig.sefa_active_index
        slider = sliders[index] if 0 <= index < len(sliders) else None
        layers = range(slider.layer_start, slider.layer_end + 1) if slider else (0,)
    name = face_name(ob)
    try:
        ident = client().request_directions(job_for(ob), tuple(layers))
    except (LiveError, WorkerError) as exc:
        _status[name] = str(exc)
        return None
    _requests[ident] = (name, "")
    _status[name] = "computing SeFa directions"
    _ensure_timer()
    return ident


def sefa_directions(ob: Object) -> tuple[tuple[int, ...], int] | None:
    """(W+ rows, number of directions) of the last directions reply for ``ob``."""
    return _directions.get(face_name(ob))


# ------------------------------------------------------------------ the timer


def poll_once() -> float | None:
    """Write the images that arrived into their faces, within POLL_BUDGET seconds of main
    thread time; returns the delay until the next call (the ``bpy.app.timers`` contract)."""
    start = time.perf_counter()
    handled = 0
    if _client is not None:
        for result in _client.poll():
            handled += 1
            if isinstance(result, FaceImage):
                _arrived.put(result.target, result.request_id, result)
            else:
                _note_event(result)
    if _requests and _client is not None and not _client.heartbeat():
        _note_frozen(_client.status, _client.last_sent)
    written = 0
    for name in list(_arrived) if not _rendering else ():  # a render owns the faces now
        if written and time.perf_counter() - start > POLL_BUDGET:
            break  # the rest waits for the next call
        result = _arrived.pop(name)
        image = bpy.data.images.get(name)
        if image is None or result is None:
            continue
        _write(image, result)
        written += 1
        if result.final:
            _shown[name] = _requests.get(result.request_id, (name, ""))[1]
            _forget_requests(name, result.request_id)
            _status[name] = _done_text(result)
        else:
            _shown[name] = ""
            _status[name] = f"preview {result.block} px"
    if handled or written:  # new pixels, or a status line (progress) to show
        _redraw()
        POLL_SECONDS.append(time.perf_counter() - start)
    if _arrived or _requests or _estimating:
        return POLL_BUSY
    return None  # nothing to wait for: the timer stops; the next request registers it


def _forget_requests(name: str, newest: int) -> None:
    """Requests for face ``name`` up to ``newest`` are done: the client hands over only the
    newest image of a face, so older ones may never be reported."""
    faces = {ident: face for ident, (face, _key) in _requests.items()}
    for ident in obsolete(faces, name, newest):
        del _requests[ident]


def _write(image: bpy.types.Image, result: FaceImage) -> None:
    start = time.perf_counter()
    face_image.write_pixels(image, result.pixels, result.size)
    UPLOAD_SECONDS.append((result.size, time.perf_counter() - start))


def _note_event(event: WorkerEvent) -> None:
    if event.kind == protocol.PROGRESS:  # a model load on the way to a request's reply
        _note_progress(event)
        return
    if event.kind == protocol.ESTIMATE or event.request_id in _estimating:
        if event.kind != protocol.ESTIMATE:  # the estimate failed: say so, keep the sliders
            name = _estimating.pop(event.request_id or 0, (event.target, ""))[0]
            _status[name] = f"error: {event.message}"
            return
        _apply_estimate(event)
        return
    if event.kind == "frozen":
        _note_frozen(event.message, int(event.data.get("last_request", 0)))
        return
    name = event.target
    if event.request_id is not None:
        name = _requests.pop(event.request_id, (name, ""))[0]
    if event.kind == "error":
        _status[name] = f"error: {event.message}"
    elif event.kind == "crashed":
        lost = [i for i in _requests if i <= int(event.data.get("last_request", 0))]
        for face in set(_status) | {_requests[i][0] for i in lost}:
            _status[face] = event.message
        for ident in lost:
            del _requests[ident]
    elif event.kind == protocol.LOADED:
        _status[name] = f"model loaded ({event.data.get('resolution')} px)"
    elif event.kind == "directions":
        layers = tuple(int(r) for r in event.data.get("layers", ()))
        _directions[name] = (layers, int(event.data.get("count", 0)))


def _note_frozen(message: str, last_request: int) -> None:
    """The worker stopped answering: requests up to ``last_request`` will never finish
    (newer ones go to the worker that replaces it)."""
    for requests in (_requests, _estimating):
        for ident in [i for i in requests if i <= last_request]:
            _status[requests.pop(ident)[0]] = message


def _note_progress(event: WorkerEvent) -> None:
    """Show a request's progress (``stage``, ``done`` of ``total``) on its face; the request
    stays open."""
    ident = event.request_id or 0
    name = (_requests.get(ident) or _estimating.get(ident) or (event.target, ""))[0]
    stage = str(event.data.get("stage", ""))[:200]
    done, total = int(event.data.get("done", 0)), int(event.data.get("total", 1))
    _status[name] = f"{stage} (step {done + 1} of {total})" if total > 1 else stage


def _done_text(result: FaceImage) -> str:
    text = f"{result.size} px in {result.seconds:.2f} s"
    return text + " (UNTRAINED WEIGHTS)" if result.untrained else text


def _ensure_timer() -> None:
    if not bpy.app.timers.is_registered(poll_once):
        bpy.app.timers.register(poll_once, first_interval=0.0, persistent=True)


def _redraw() -> None:
    window_manager = bpy.context.window_manager
    for window in window_manager.windows if window_manager is not None else ():
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "IMAGE_EDITOR"}:
                area.tag_redraw()


def poll_statistics() -> dict[str, float]:
    """Main-thread milliseconds (``nfr bench``): p95, p99 and max per poll that handled
    results and per request sent, and the mean pixel-upload milliseconds per image size."""
    stats: dict[str, float] = {}
    for label, seconds in (("poll", POLL_SECONDS), ("request", REQUEST_SECONDS)):
        if seconds:
            ms = np.array(seconds) * 1e3
            stats.update({f"{label}_p95_ms": float(np.percentile(ms, 95)),
                          f"{label}_p99_ms": float(np.percentile(ms, 99)),
                          f"{label}_max_ms": float(ms.max()), f"{label}s": float(len(ms))})
    for size in sorted({s for s, _ in UPLOAD_SECONDS}):
        times = [t for s, t in UPLOAD_SECONDS if s == size]
        stats[f"upload_{size}_ms"] = float(np.mean(times) * 1e3)
    return stats


# ------------------------------------------------------------------ status


def status_text(ob: Object) -> str:
    """One line for the Model panel: the model problem, the bake, or the last update."""
    if is_baked(ob):
        node = portrait.face_node(ob)
        return f"Baked sequence {node.image.filepath}: live preview off"
    face_rig = ob.face_rig
    prefs = addon_preferences(bpy.context)
    for status in file_status.model_status(prefs, face_rig.backend, face_rig.model_path):
        if status.required and not status.ok:
            return status.problem or "model file missing"
    if _client is None:
        return "Worker not started: change a value to start it"
    if not _client.is_running() and _client.crashes:
        return _client.status
    if _client.is_frozen():
        return f"Worker not responding for {_client.seconds_silent():.0f} s (frozen?)"
    text = f"Worker {_client.status}"
    last = _status.get(face_name(ob))
    if last:
        text += f"; {last}"
    directions = _directions.get(face_name(ob))
    if directions:
        rows, count = directions
        text += f"; SeFa: {count} directions for W+ rows {rows[0]}-{rows[-1]}"
    return text


# ------------------------------------------------------------------ handlers


def on_rig_changed(ob: Object) -> None:
    """RIG_CHANGE_LISTENERS entry: a property of ``ob``'s rig changed."""
    request_update(ob)


@persistent
def on_frame_change(scene: Scene, depsgraph: Depsgraph | None = None) -> None:
    """Every face follows the frame: synchronously in renders and background mode."""
    if _paused:
        return
    rigs = [ob for ob in scene.objects if is_live(ob)]
    if not rigs:
        return
    synchronous = bpy.app.background or (depsgraph is not None and depsgraph.mode == "RENDER")
    for ob in rigs:
        if not synchronous:
            request_update(ob, depsgraph)
            continue
        try:
            render_now(ob, depsgraph)
        except Exception as exc:  # never raise into Blender's frame change
            if not isinstance(exc, (LiveError, WorkerError)):
                traceback.print_exc()
            reason = f"frame {scene.frame_current}: {exc}"
            _show_failure(ob, reason)
            rendering = depsgraph is not None and depsgraph.mode == "RENDER"
            if bpy.app.background and rendering and not ob.face_rig.failure_placeholder:
                _fail_farm_render(ob, reason)


def _fail_farm_render(ob: Object, reason: str) -> None:
    """End ``blender -b`` with FAILED_FRAME_EXIT_CODE: an exception raised in a handler is
    printed and ignored by Blender, so the render would finish with exit code 0 and a
    frame whose face is wrong. The worker ends by itself when its stdin closes."""
    print(f"Neural Face Rig: render failed: {ob.name}: {reason}. Set the rig's 'Magenta on "
          "Failure' to render a placeholder instead.", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(FAILED_FRAME_EXIT_CODE)


def _show_failure(ob: Object, message: str) -> None:
    """A face that could not be rendered turns magenta (a stale face would pass unnoticed
    on a farm) and the console and the panel say why."""
    name = face_name(ob)
    _status[name] = message
    _shown.pop(name, None)
    print(f"Neural Face Rig: {ob.name}: {message}", flush=True)
    image = bpy.data.images.get(name)
    if image is not None:
        colour = np.tile(np.asarray(ERROR_COLOUR, np.float32), image.size[0] * image.size[1])
        face_image.write_pixels(image, colour, image.size[0])
        _tag_for_persistent_render(image)


def _tag_for_persistent_render(image: bpy.types.Image) -> None:
    """Cycles with persistent data keeps its copy of an image across frames and ignores
    pixel writes and update tags; only a changed shader-node property makes it sync the
    image again. So during such a render only, the face's image nodes alternate their
    extension with a twin that samples the same texels inside 0..1 UVs, and the original
    setting is restored when the render ends: a saved file never sees the change."""
    scene = bpy.context.scene
    if not (_rendering and scene.render.engine == "CYCLES" and scene.render.use_persistent_data):
        return
    for node in face_image.image_nodes(image):
        path = f"{node.id_data.name}/{node.name}"
        original = _touched.setdefault(path, node.extension)
        node.extension = _TWIN[original] if node.extension == original else original


_TWIN = {"EXTEND": "MIRROR", "MIRROR": "EXTEND", "REPEAT": "EXTEND", "CLIP": "EXTEND"}


def _restore_touched() -> None:
    for path, extension in _touched.items():
        tree, _, node_name = path.partition("/")
        material = bpy.data.materials.get(tree)
        nodes = material.node_tree.nodes if material and material.node_tree else None
        node = nodes.get(node_name) if nodes is not None else None
        if node is not None:
            node.extension = extension
    _touched.clear()


@persistent
def on_render_init(*_args: object) -> None:
    global _rendering
    _rendering = True


@persistent
def on_render_end(*_args: object) -> None:
    global _rendering
    _rendering = False
    _restore_touched()


@persistent
def on_undo_redo(*_args: object) -> None:
    """Undo and redo roll the rig's values back without any update callback: re-render
    every live face from the values it has now."""
    _shown.clear()
    _arrived.clear()
    for ob in bpy.data.objects:
        if is_live(ob):
            request_update(ob)


@persistent
def on_load_post(*_args: object) -> None:
    """A file was opened: forget what the images showed and relink each card to its face
    image (saved files carry the pixels packed; a missing image is made again)."""
    _arrived.clear()
    _shown.clear()
    _requests.clear()
    _estimating.clear()
    _status.clear()
    for ob in bpy.data.objects:
        if not properties.is_face_rig(ob) or not face_name(ob):
            continue
        missing = face_name(ob) not in bpy.data.images
        image = face_image.ensure_face_image(face_name(ob), DEFAULT_IMAGE_SIZE)
        node = portrait.face_node(ob)
        if node is not None and node.image is None:
            node.image = image
        if missing and not bpy.app.background:
            request_update(ob)
        else:  # background too: the worker warms up while the farm node reads the scene
            preload(ob)


def preload(ob: Object) -> int | None:
    """Start the worker and load ``ob``'s model now (torch import and model load take
    seconds), so the first slider move only pays for synthesis."""
    if _paused or not is_live(ob):
        return None
    try:
        ident = client().request_job(protocol.LOAD, job_for(ob))
    except (LiveError, WorkerError) as exc:
        _status[face_name(ob)] = str(exc)
        return None
    _requests[ident] = (face_name(ob), "")
    _status[face_name(ob)] = "loading the model"
    _ensure_timer()
    return ident


@persistent
def on_save_pre(*_args: object) -> None:
    """Pack every live face image, so the saved file shows the faces without a worker."""
    for ob in bpy.data.objects:
        if properties.is_face_rig(ob) and face_name(ob) in bpy.data.images:
            face_image.pack_for_save(bpy.data.images[face_name(ob)])


HANDLERS = (
    (bpy.app.handlers.frame_change_post, on_frame_change),
    (bpy.app.handlers.render_init, on_render_init),
    (bpy.app.handlers.render_complete, on_render_end),
    (bpy.app.handlers.render_cancel, on_render_end),
    (bpy.app.handlers.load_post, on_load_post),
    (bpy.app.handlers.undo_post, on_undo_redo),
    (bpy.app.handlers.redo_post, on_undo_redo),
    (bpy.app.handlers.save_pre, on_save_pre),
)


def register() -> None:
    properties.RIG_CHANGE_LISTENERS.append(on_rig_changed)
    for handlers, handler in HANDLERS:
        handlers.append(handler)
    atexit.register(stop_worker)


def unregister() -> None:
    atexit.unregister(stop_worker)
    for handlers, handler in reversed(HANDLERS):
        if handler in handlers:
            handlers.remove(handler)
    if on_rig_changed in properties.RIG_CHANGE_LISTENERS:
        properties.RIG_CHANGE_LISTENERS.remove(on_rig_changed)
    if bpy.app.timers.is_registered(poll_once):
        bpy.app.timers.unregister(poll_once)
    stop_worker()
    for state in (_requests, _arrived, _shown, _status, _directions, _estimating):
        state.clear()
