"""Build the installable Blender extension: ``dist/neural_face_rig-<version>.zip``.

The zip has the package shape of the editable install: the contents of ``blender_addon/``
(manifest, ``__init__.py`` and its modules) at the root, and ``contract/``, ``rig/``,
``neural/``, ``operators/``, ``panels/`` as subfolders, so relative imports resolve the same
way inside Blender (``bl_ext.<repo>.neural_face_rig``). It ships only what users run: the
development tools (benchmarks, the demo and benchmark stages, the RigNet trainer and its
commands, ``DEV_ONLY``) stay in the repository; nothing the add-on or the worker imports
needs them. The build is deterministic: sorted entries, fixed
timestamps and permissions, so the same sources give the same bytes.

Usage: ``python build_addon.py [--out DIR]`` (prints the path of the zip). Stdlib only.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent
EXTENSION_ROOT = "blender_addon"
SUBPACKAGES = ("contract", "rig", "neural", "operators", "panels")
MANIFEST_NAME = "blender_manifest.toml"

# The earliest time a zip can store; any fixed value makes the archive reproducible.
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644
EXCLUDED_DIR_NAMES = frozenset({"__pycache__", "tests"})
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".zip")
DEV_ONLY = (
    "bench_stage.py",  # nfr bench's Blender half
    "demo_stage.py",  # demo.py's Blender half
    "neural/bench_*.py",
    "neural/cli_bench.py",
    "neural/cli_train.py",
    "neural/stylerig/trainer.py",
    "neural/stylerig/losses.py",  # the trainer's
    "neural/stylerig/evaluate.py",  # nfr train evaluate
)
"""Zip names (fnmatch patterns) of development tools left out of the user zip."""


class BuildError(Exception):
    """The sources cannot be packaged (missing manifest or folder, bad field, name clash)."""


def read_manifest(root: Path = REPO_ROOT) -> dict:
    """The parsed ``blender_addon/blender_manifest.toml`` (the version's single source)."""
    path = root / EXTENSION_ROOT / MANIFEST_NAME
    try:
        with path.open("rb") as handle:
            manifest = tomllib.load(handle)
    except FileNotFoundError:
        raise BuildError(f"{path}: extension manifest not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise BuildError(f"{path}: not valid TOML ({exc})") from None
    for key in ("id", "version"):
        value = manifest.get(key)
        if not isinstance(value, str) or not value:
            raise BuildError(f"{path}: key {key!r} must be a non-empty string, found {value!r}")
    return manifest


def _is_excluded(relative: Path) -> bool:
    if any(part in EXCLUDED_DIR_NAMES or part.startswith(".") for part in relative.parts):
        return True
    return relative.name.endswith(EXCLUDED_SUFFIXES)


def _files_under(folder: Path) -> list[Path]:
    """Relative paths of every file to package under ``folder``."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(folder):
        for filename in filenames:
            relative = (Path(dirpath) / filename).relative_to(folder)
            if not _is_excluded(relative):
                found.append(relative)
    return found


def is_dev_only(arcname: str) -> bool:
    """True for a zip name of a development tool (DEV_ONLY)."""
    return any(fnmatch.fnmatchcase(arcname, pattern) for pattern in DEV_ONLY)


def extension_files(root: Path = REPO_ROOT) -> list[tuple[str, Path]]:
    """``(name in the zip, source file)`` pairs, sorted by name, development tools left out."""
    sources = [(EXTENSION_ROOT, "")] + [(name, f"{name}/") for name in SUBPACKAGES]
    entries: dict[str, Path] = {}
    for folder_name, prefix in sources:
        folder = root / folder_name
        if not folder.is_dir():
            raise BuildError(f"{folder}: package folder not found")
        for relative in _files_under(folder):
            arcname = prefix + relative.as_posix()
            if is_dev_only(arcname):
                continue
            if arcname in entries:
                raise BuildError(
                    f"{folder / relative} and {entries[arcname]} would both be stored as {arcname}"
                )
            entries[arcname] = folder / relative
    return sorted(entries.items())


def _zip_info(arcname: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(arcname, date_time=ZIP_TIMESTAMP)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, on every platform, so the permission bits mean the same.
    info.external_attr = (0o100000 | FILE_MODE) << 16
    return info


def build_extension(out_dir: Path | None = None, root: Path = REPO_ROOT) -> Path:
    """Write ``<out_dir>/<id>-<version>.zip`` (default ``<root>/dist``) and return its path.

    The archive is written to a temporary file in ``out_dir`` and renamed into place, so a
    reader never sees a half-written zip.
    """
    manifest = read_manifest(root)
    out_dir = Path(out_dir) if out_dir is not None else root / "dist"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    entries = extension_files(root)

    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=out_dir)
    os.close(handle)
    try:
        with zipfile.ZipFile(temp_name, "w") as archive:
            for arcname, source in entries:
                archive.writestr(_zip_info(arcname), source.read_bytes(), compresslevel=9)
        os.chmod(temp_name, FILE_MODE)
        os.replace(temp_name, target)
    except BaseException:
        os.unlink(temp_name)
        raise
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: dist/ in the repository)"
    )
    args = parser.parse_args(argv)
    try:
        path = build_extension(args.out)
    except (BuildError, OSError) as exc:
        print(f"build_addon: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
