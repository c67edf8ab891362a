"""Write-then-rename: a file either keeps its old content or gets the complete new content.

The data goes to a hidden temporary file in the destination's folder (same file system, so the
final ``os.replace`` is atomic); on any error the temporary file is removed and the
destination is untouched. Pure standard library: usable from every layer.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; it replaces ``path`` when the block
    exits normally, and is deleted if the block raises. ``mode`` is "wb" or "w"; keyword
    arguments (encoding, newline) go to ``open``. The folder of ``path`` must exist.

    Example: ``with atomic_open(out, "w", encoding="utf-8") as f: json.dump(doc, f)``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    # "x" creates exclusively with the umask's permissions (mkstemp would force 0o600).
    handle = open(temp, mode.replace("w", "x"), **kwargs)  # closed by the with below
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists():
            os.chmod(temp, target.stat().st_mode & 0o777)  # replacing keeps the old permissions
        os.replace(temp, target)
    except BaseException:
        # Also on KeyboardInterrupt: never leave a half-written temporary file behind.
        temp.unlink(missing_ok=True)
        raise
