"""Which model files a rig needs, recorded in the .blend, and where this machine has them.

Each rig keeps ``face_rig.model_files``: role, file name, size and SHA-256 of every file its
backend reads. A render-farm node whose paths differ from the artist's finds the generator in
its own models folder: first under the recorded file name (size and digest must match, a
different file of the same name is not the model), then any file of the recorded size whose
digest matches.

Digests are cached per (path, size, modification time). Hashing runs on the main thread only
for files up to ``SYNC_DIGEST_BYTES`` (a few milliseconds); bigger checkpoints are hashed on
one background thread (hashlib releases the GIL) and the rig's record is completed by a timer,
or at the latest when the file is saved (``complete_digests``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import bpy
from bpy.app.handlers import persistent
from bpy.types import Object

from .contract import catalogue
from .properties import is_face_rig, set_model_resolution

DIGEST_CHUNK = 1 << 20
SYNC_DIGEST_BYTES = 4 << 20  # ~7 ms at 570 MiB/s: within a frame
TIMER_SECONDS = 0.5
# Output size when neither the model file (a project .safetensors' sidecar states it) nor the
# backend's catalogue entry says: FFHQ StyleGAN2's.
FALLBACK_RESOLUTION = 1024

_FileKey = tuple[str, int, int]
_digests: dict[_FileKey, str] = {}
_pending: dict[_FileKey, Future[str]] = {}
_executor: ThreadPoolExecutor | None = None


# ------------------------------------------------------------------ digests


def _file_key(path: str) -> _FileKey | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def sha256_file(path: str) -> str:
    """Hex SHA-256 of the file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(DIGEST_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: str, *, wait: bool = False) -> str:
    """The SHA-256 of ``path`` ("" when it is not a readable file, or when it is big and
    ``wait`` is False: it is then being hashed in the background)."""
    key = _file_key(path)
    if key is None or not os.path.isfile(path):
        return ""
    if key in _digests:
        return _digests[key]
    future = _pending.get(key)
    if future is None and (wait or key[1] <= SYNC_DIGEST_BYTES):
        try:
            _digests[key] = sha256_file(path)
        except OSError:
            return ""
        return _digests[key]
    if future is None:
        global _executor
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nfr-digest")
        _pending[key] = _executor.submit(sha256_file, path)
        _ensure_timer()
        return ""
    if not wait and not future.done():
        return ""
    del _pending[key]
    try:
        _digests[key] = future.result()
    except OSError:
        return ""
    return _digests[key]


# ------------------------------------------------------------------ the record


def record_model_files(ob: Object, paths: Mapping[str, str], *, wait: bool = False) -> None:
    """Replace ``ob``'s record with ``paths`` (role -> absolute path; empty paths skipped)."""
    records = ob.face_rig.model_files
    records.clear()
    for role, path in paths.items():
        if not path or not os.path.isfile(path):
            continue
        record = records.add()
        record.role = role
        record.filename = os.path.basename(path)
        record.size = str(os.path.getsize(path))
        record.sha256 = file_digest(path, wait=wait)


def recorded(ob: Object, role: str):
    """``ob``'s record of the file of ``role``, or None."""
    return next((record for record in ob.face_rig.model_files if record.role == role), None)


def _matches(record, path: str) -> bool:
    try:
        size = os.path.getsize(path)
    except OSError:
        return False
    if record.size and str(size) != record.size:
        return False
    return not record.sha256 or file_digest(path, wait=True) == record.sha256


def find_recorded(ob: Object, role: str, folder: str) -> str:
    """The file of ``role`` that ``ob`` recorded, found in ``folder`` by name or digest ("":
    not there). Reads and hashes files: call it when a path is missing, not while drawing."""
    record = recorded(ob, role)
    if record is None or not folder or not os.path.isdir(folder):
        return ""
    by_name = os.path.join(folder, record.filename)
    if os.path.isfile(by_name) and _matches(record, by_name):
        return by_name
    if not record.sha256 or not record.size:
        return ""
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if (entry.is_file() and str(entry.stat().st_size) == record.size
                and file_digest(entry.path, wait=True) == record.sha256):
            return entry.path
    return ""


def complete_digests(*, wait: bool = True) -> None:
    """Fill the digests still missing from every rig's record (save_pre, the timer)."""
    for ob in bpy.data.objects:
        if not is_face_rig(ob) or ob.library is not None:
            continue
        for record in ob.face_rig.model_files:
            if record.sha256:
                continue
            path = _record_path(ob, record.role)
            if path and os.path.basename(path) == record.filename:
                record.sha256 = file_digest(path, wait=wait)


def refresh_record(ob: Object, *, wait: bool = True) -> None:
    """Bring ``ob``'s record up to date with the files its backend reads now (the backend or
    a preference may have changed since): a role whose file exists here is recorded afresh,
    one whose file is missing keeps its old record (a farm node saving keeps what it was
    given)."""
    from .model_files import model_paths
    from .preferences import addon_preferences
    from .rig_props import model_path

    face_rig = ob.face_rig
    paths = model_paths(addon_preferences(bpy.context), face_rig.backend, model_path(ob))
    fresh = {role: path for role, path in paths.items() if path and os.path.isfile(path)}
    kept = {record.role: (record.filename, record.size, record.sha256)
            for record in face_rig.model_files
            if record.role in paths and record.role not in fresh}
    record_model_files(ob, fresh, wait=wait)
    for role, (filename, size, sha256) in kept.items():
        record = face_rig.model_files.add()
        record.role, record.filename, record.size, record.sha256 = role, filename, size, sha256


@persistent
def on_save_pre(*_args: object) -> None:
    """The saved file states every model file its rigs need, with digests."""
    for ob in bpy.data.objects:
        if is_face_rig(ob) and ob.library is None:
            refresh_record(ob, wait=True)


def _record_path(ob: Object, role: str) -> str:
    from .model_files import model_paths
    from .preferences import addon_preferences
    from .rig_props import model_path

    prefs = addon_preferences(bpy.context)
    return model_paths(prefs, ob.face_rig.backend, model_path(ob)).get(role, "")


def _digest_timer() -> float | None:
    complete_digests(wait=False)
    return TIMER_SECONDS if _pending else None


def _ensure_timer() -> None:
    if not bpy.app.background and not bpy.app.timers.is_registered(_digest_timer):
        bpy.app.timers.register(_digest_timer, first_interval=TIMER_SECONDS, persistent=True)


def shutdown() -> None:
    """Stop the hashing thread and the timer (unregister)."""
    global _executor
    if bpy.app.timers.is_registered(_digest_timer):
        bpy.app.timers.unregister(_digest_timer)
    if _executor is not None:
        _executor.shutdown(wait=False, cancel_futures=True)
        _executor = None
    _pending.clear()


# ------------------------------------------------------------------ the model's size


def model_resolution(path: str, backend: str) -> int:
    """Full output size of a model: its project sidecar's config when it has one, else the
    backend's usual size (the worker knows for sure once it loads the file)."""
    if path.endswith(".safetensors"):
        sidecar = Path(path).with_suffix(".json")
        try:
            size = json.loads(sidecar.read_text(encoding="utf-8"))["config"]["img_resolution"]
            if isinstance(size, int) and size > 0:
                return size
        except (OSError, ValueError, KeyError, TypeError):
            pass  # the worker reports a missing or damaged sidecar when it loads the model
    return default_resolution(backend)


def default_resolution(backend: str) -> int:
    """The backend's usual output size (contract catalogue), FALLBACK_RESOLUTION if it has
    none or is unknown."""
    spec = catalogue.BACKENDS.get(backend)
    return (spec.default_resolution if spec is not None else None) or FALLBACK_RESOLUTION


def model_path_changed(ob: Object) -> None:
    """The rig's model field changed: its size and its record follow (Model update)."""
    from .model_files import model_paths
    from .preferences import addon_preferences
    from .rig_props import model_path

    face_rig = ob.face_rig
    prefs = addon_preferences(bpy.context)
    paths = model_paths(prefs, face_rig.backend, model_path(ob, farm=False))
    generator = paths.get("generator", "")
    set_model_resolution(face_rig,
                         model_resolution(generator, face_rig.backend) if generator else 0)
    record_model_files(ob, paths)
