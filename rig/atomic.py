"""Write-then-rename: a file either keeps its old content or gets the complete new content.

The data goes to a hidden temporary file in the destination's folder (same file system, so the
final ``os.replace`` is atomic); on any error the temporary file is removed and the
destination is untouched. A process killed mid-write (SIGKILL, power loss) cannot remove its
temporary file, so temporary files are named ``.<target>.<host>-<pid>.<token>.nfr-tmp`` and
every later write of the same target first removes those whose process on this host is gone
(:func:`clean_stale_temporaries`). :class:`AtomicPair` writes two files that belong together
(weights + sidecar): both are complete on disk before either is renamed.
Pure standard library: usable from every layer.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".nfr-tmp"
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_TEMP = re.compile(r"^\.(?P<target>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>\d{1,10})\.[0-9a-f]{12}"
                   + re.escape(TEMP_SUFFIX) + "$")


def temporary_path(target: str | os.PathLike[str]) -> Path:
    """A fresh hidden temporary name next to ``target``, owned by this process."""
    path = Path(target)
    return path.with_name(f".{path.name}.{_HOST}-{os.getpid()}.{secrets.token_hex(6)}"
                          f"{TEMP_SUFFIX}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's live process, or a pid we cannot judge: keep the file
    return True


def clean_stale_temporaries(folder: str | os.PathLike[str], target_name: str | None = None
                            ) -> list[Path]:
    """Remove temporary files left in ``folder`` by writers on this host that are no longer
    running (only those of ``target_name`` when given); returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None or match["host"] != _HOST:
            continue
        if target_name is not None and match["target"] != target_name:
            continue
        if not _alive(int(match["pid"])):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def _finish(temp: Path, target: Path) -> None:
    if target.exists():
        os.chmod(temp, target.stat().st_mode & 0o777)  # replacing keeps the old permissions


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _require_replaceable(target: Path) -> None:
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise IsADirectoryError(errno.EISDIR, f"{target} is {kind}; expected a file path to "
                                "write", str(target))


def _create(temp: Path, target: Path, mode: str, **kwargs: Any) -> IO[Any]:
    """Open ``temp``; errors name ``target`` (the file the user asked for), not the temporary."""
    try:
        return open(temp, mode, **kwargs)
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, str(target)) from None


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; it replaces ``path`` when the block
    exits normally, and is deleted if the block raises. ``mode`` is "wb" or "w"; keyword
    arguments (encoding, newline) go to ``open``. The folder of ``path`` must exist.

    Example: ``with atomic_open(out, "w", encoding="utf-8") as f: json.dump(doc, f)``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    clean_stale_temporaries(target.parent, target.name)
    temp = temporary_path(target)
    # "x" creates exclusively with the umask's permissions (mkstemp would force 0o600).
    handle = _create(temp, target, mode.replace("w", "x"), **kwargs)  # closed by the with below
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _require_replaceable(target)
        _finish(temp, target)
        os.replace(temp, target)
    except BaseException:
        # Also on KeyboardInterrupt: never leave a half-written temporary file behind.
        temp.unlink(missing_ok=True)
        raise


class AtomicPair:
    """Write two files that belong together (``first`` = weights, ``second`` = its sidecar).

    ``with AtomicPair(a, b) as pair: pair.first.write(...); pair.second.write(...)`` writes
    both to temporary files; when the block exits normally and both are flushed to disk,
    ``first`` is renamed into place, then ``second``. If the block raises, or ``second``'s path
    cannot take a file (a folder), nothing is replaced and both temporary files are removed.
    A crash between the two renames leaves the new ``first`` beside the old ``second``: the
    reader must detect that (the sidecar carries the weights' digest)."""

    def __init__(self, first: str | os.PathLike[str], second: str | os.PathLike[str]) -> None:
        self.targets = (Path(first), Path(second))
        self.temps: tuple[Path, Path] | None = None
        self.first: IO[bytes]
        self.second: IO[bytes]

    def __enter__(self) -> AtomicPair:
        for target in self.targets:
            clean_stale_temporaries(target.parent, target.name)
            _require_replaceable(target)
        temps = (temporary_path(self.targets[0]), temporary_path(self.targets[1]))
        self.first = _create(temps[0], self.targets[0], "xb")
        try:
            self.second = _create(temps[1], self.targets[1], "xb")
        except BaseException:
            self.first.close()
            temps[0].unlink(missing_ok=True)
            raise
        self.temps = temps
        return self

    def __exit__(self, kind: object, value: object, tb: object) -> None:
        assert self.temps is not None
        try:
            for handle in (self.first, self.second):
                if kind is None:
                    handle.flush()
                    os.fsync(handle.fileno())
                handle.close()
            if kind is None:
                for target in self.targets:
                    _require_replaceable(target)
                for temp, target in zip(self.temps, self.targets, strict=True):
                    _finish(temp, target)
                for temp, target in zip(self.temps, self.targets, strict=True):
                    os.replace(temp, target)
                _fsync_folder(self.targets[0].parent)
        finally:
            for temp in self.temps:
                temp.unlink(missing_ok=True)
