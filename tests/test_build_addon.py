"""build_addon.py: the extension zip's contents, manifest, determinism and atomic writes."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("blender_addon", "contract", "rig", "neural", "operators", "panels")


def _load_build_addon():
    spec = importlib.util.spec_from_file_location("build_addon", REPO / "build_addon.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_addon"] = module  # dataclass/typing helpers look the module up by name
    spec.loader.exec_module(module)
    return module


build_addon = _load_build_addon()


@pytest.fixture()
def source_tree(tmp_path: Path) -> Path:
    """A copy of the package folders, so tests can plant files without touching the repo."""
    root = tmp_path / "src"
    for name in PACKAGE_FOLDERS:
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _manifest() -> dict:
    with (REPO / "blender_addon" / "blender_manifest.toml").open("rb") as handle:
        return tomllib.load(handle)


def test_zip_has_the_editable_package_shape(tmp_path: Path) -> None:
    path = build_addon.build_extension(tmp_path / "out")
    assert path.name == f"neural_face_rig-{_manifest()['version']}.zip"
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert archive.testzip() is None
        for expected in (
            "blender_manifest.toml",
            "__init__.py",
            "registration.py",
            "preferences.py",
            "head_mesh.py",
            "contract/__init__.py",
            "contract/protocol.py",
            "rig/__init__.py",
            "rig/face_model.py",
            "neural/__init__.py",
            "operators/__init__.py",
            "operators/add_head.py",
            "panels/__init__.py",
            "panels/face_rig.py",
        ):
            assert expected in names
        # Every packaged file is the source file, byte for byte.
        for name in names:
            in_subpackage = name.split("/")[0] in PACKAGE_FOLDERS[1:]
            source = REPO / name if in_subpackage else REPO / "blender_addon" / name
            assert archive.read(name) == source.read_bytes(), name
    # And every source .py file is packaged, except the development tools.
    for folder in PACKAGE_FOLDERS:
        prefix = "" if folder == "blender_addon" else f"{folder}/"
        for source in (REPO / folder).rglob("*.py"):
            if "__pycache__" in source.parts:
                continue
            name = prefix + source.relative_to(REPO / folder).as_posix()
            assert (name in names) != build_addon.is_dev_only(name), name


def test_the_zip_ships_no_development_tools_and_runs_without_them(tmp_path: Path) -> None:
    """Benchmarks, the demo and benchmark stages and the trainer stay out, and every module
    the zip does ship imports without them (the add-on, the worker, the remaining CLI)."""
    path = build_addon.build_extension(tmp_path / "out")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        # Under another package name, so the editable install cannot stand in for a module.
        archive.extractall(tmp_path / "site" / "nfr_zip")
    for left_out in ("bench_stage.py", "demo_stage.py", "neural/bench_rig.py",
                     "neural/bench_timing.py", "neural/cli_bench.py", "neural/cli_train.py",
                     "neural/stylerig/trainer.py"):
        assert (REPO / ("blender_addon/" + left_out if "/" not in left_out else left_out)
                ).is_file(), left_out  # the pattern is not stale
        assert left_out not in names, left_out
    for pattern in build_addon.DEV_ONLY:  # each pattern still names a file
        sources = [f"{folder}/{p.relative_to(REPO / folder).as_posix()}" for folder in
                   PACKAGE_FOLDERS for p in (REPO / folder).rglob("*.py")]
        shipped = [s.removeprefix("blender_addon/") for s in sources]
        assert any(build_addon.fnmatch.fnmatchcase(s, pattern) for s in shipped), pattern
    modules = sorted(
        "nfr_zip." + name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for name in names if name.endswith(".py")
    )
    modules = [m.removesuffix(".__init__") for m in modules]
    code = f"""
import importlib, json, subprocess, sys
failed = {{}}
for name in {modules!r}:
    try:
        module = importlib.import_module(name)
        assert module.__file__.startswith({str(tmp_path / "site")!r}), module.__file__
    except Exception as exc:
        failed[name] = f"{{type(exc).__name__}}: {{exc}}"
from nfr_zip.neural.cli import build_parser
commands = sorted(build_parser()._subparsers._group_actions[0].choices)
print(json.dumps({{"failed": failed, "commands": commands}}))
"""
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    found = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    assert found["failed"] == {}
    assert "train" not in found["commands"] and "bench" not in found["commands"]
    assert {"rig", "convert"} <= set(found["commands"])


def test_caches_tests_and_hidden_files_are_left_out(source_tree: Path, tmp_path: Path) -> None:
    planted = [
        "rig/__pycache__/face_model.cpython-311.pyc",
        "neural/stale.pyc",
        "neural/tests/test_inside.py",
        "blender_addon/.hidden_notes.py",
        "panels/.cache/x.py",
        "operators/old_build.zip",
    ]
    for name in planted:
        (source_tree / name).parent.mkdir(parents=True, exist_ok=True)
        (source_tree / name).write_bytes(b"x")
    path = build_addon.build_extension(tmp_path / "out", root=source_tree)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".zip"))]
    assert not [n for n in names if "tests/" in n or "/." in n or n.startswith(".")]
    assert "rig/face_model.py" in names


def test_manifest_fields_follow_blenders_rules() -> None:
    manifest = _manifest()
    for key in ("schema_version", "id", "version", "name", "tagline", "maintainer", "type",
                "blender_version_min", "license"):
        assert manifest.get(key), key
    assert manifest["schema_version"] == "1.0.0"
    assert manifest["id"] == "neural_face_rig"
    assert manifest["type"] == "add-on"
    assert tuple(map(int, manifest["blender_version_min"].split("."))) >= (4, 2, 0)
    assert manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])
    assert len(manifest["tagline"]) <= 64 and manifest["tagline"][-1].isalnum()
    assert set(manifest["permissions"]) == {"files", "network"}
    for reason in manifest["permissions"].values():
        assert 0 < len(reason) <= 64 and not reason.endswith(".")


def test_pyproject_version_equals_the_manifest_version() -> None:
    with (REPO / "pyproject.toml").open("rb") as handle:
        pyproject = tomllib.load(handle)
    assert pyproject["project"]["version"] == _manifest()["version"]


@pytest.mark.bpy  # each Blender version validates with its own rules
def test_blenders_own_validator_accepts_the_zip(tmp_path: Path) -> None:
    """Blender's ``extension validate`` (its bundled CLI script) checks manifest and layout."""
    bpy_root = Path(importlib.util.find_spec("bpy").origin).parent
    (cli,) = bpy_root.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py")
    (tags,) = bpy_root.glob("*/scripts/modules/_bpy_internal/extensions/tags.py")
    path = build_addon.build_extension(tmp_path / "out")
    result = subprocess.run(
        [sys.executable, str(cli), "validate", str(path), f"--valid-tags={tags}"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_build_is_deterministic(source_tree: Path, tmp_path: Path) -> None:
    first = build_addon.build_extension(tmp_path / "a", root=source_tree)
    # New modification times must not change a single byte.
    for path in source_tree.rglob("*"):
        os.utime(path, (2_000_000_000, 2_000_000_000))
    second = build_addon.build_extension(tmp_path / "b", root=source_tree)
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        infos = archive.infolist()
    names = [info.filename for info in infos]
    assert names == sorted(names)
    assert {info.date_time for info in infos} == {build_addon.ZIP_TIMESTAMP}


def test_rebuild_replaces_the_zip_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f"neural_face_rig-{_manifest()['version']}.zip"
    stale.write_bytes(b"not a zip")
    path = build_addon.build_extension(out)
    assert path == stale and zipfile.is_zipfile(path)
    assert sorted(p.name for p in out.iterdir()) == [path.name]


def test_name_clash_fails_without_writing_anything(source_tree: Path, tmp_path: Path) -> None:
    (source_tree / "blender_addon" / "rig").mkdir()
    (source_tree / "blender_addon" / "rig" / "face_model.py").write_text("")
    with pytest.raises(build_addon.BuildError, match="rig/face_model.py"):
        build_addon.build_extension(tmp_path / "out", root=source_tree)
    assert list((tmp_path / "out").iterdir()) == []


def test_cli_prints_the_zip_path(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "build_addon.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == tmp_path / f"neural_face_rig-{_manifest()['version']}.zip"
    assert zipfile.is_zipfile(result.stdout.strip())


def test_missing_manifest_is_a_clear_error(source_tree: Path, tmp_path: Path) -> None:
    (source_tree / "blender_addon" / "blender_manifest.toml").unlink()
    with pytest.raises(build_addon.BuildError, match="blender_manifest.toml: extension manifest"):
        build_addon.build_extension(tmp_path / "out", root=source_tree)
