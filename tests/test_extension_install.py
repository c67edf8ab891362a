"""The built zip installs as a Blender 4.2+ extension, registers, and disables without leaks.

Runs against the real ``bpy`` module; tests/conftest.py points BLENDER_USER_RESOURCES into a
temporary folder before bpy is imported, so nothing touches the user's Blender setup.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import bpy
import pytest
from fixtures.bpy_exit import SCRIPT_END

addon_utils = importlib.import_module("addon_utils")  # on sys.path once bpy is imported

REPO = Path(__file__).resolve().parents[1]
REPO_NAME = "user_default"
MODULE = f"bl_ext.{REPO_NAME}.neural_face_rig"
PANEL = "NFR_PT_face_rig"
OPERATOR = "nfr.add_head"
OBJECT_PROPERTY = "face_rig_source"


def _build_zip(out_dir: Path) -> Path:
    result = subprocess.run(
        [sys.executable, str(REPO / "build_addon.py"), "--out", str(out_dir)],
        capture_output=True, text=True, check=True, timeout=60,
    )
    return Path(result.stdout.strip())


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_zip(tmp_path_factory.mktemp("dist"))


def _operator_idnames() -> frozenset[str]:
    return frozenset(
        f"{group}.{name}" for group in dir(bpy.ops) for name in dir(getattr(bpy.ops, group))
    )


def _blender_state() -> dict[str, object]:
    """Everything an add-on can add to Blender's global state, in comparable form."""
    properties = {}
    for name in dir(bpy.types):
        rna = getattr(getattr(bpy.types, name), "bl_rna", None)
        if rna is not None:
            properties[name] = tuple(rna.properties.keys())
    handlers = {
        name: tuple(getattr(bpy.app.handlers, name))
        for name in dir(bpy.app.handlers)
        if isinstance(getattr(bpy.app.handlers, name), list)
    }
    keyconfig = bpy.context.window_manager.keyconfigs.addon
    keymaps = (
        tuple((km.name, tuple(item.idname for item in km.keymap_items)) for km in keyconfig.keymaps)
        if keyconfig is not None
        else ()
    )
    return {
        "types": frozenset(dir(bpy.types)),
        "operators": _operator_idnames(),
        "properties": properties,
        "handlers": handlers,
        "keymaps": keymaps,
        "addons": tuple(bpy.context.preferences.addons.keys()),
    }


def _diff(before: dict[str, object], after: dict[str, object]) -> dict[str, object]:
    """Readable leak report: what ``after`` has that ``before`` had not (and vice versa)."""
    report: dict[str, object] = {}
    for key in before:
        if before[key] == after[key]:
            continue
        old, new = before[key], after[key]
        if isinstance(old, frozenset):
            report[key] = {"added": sorted(new - old), "removed": sorted(old - new)}
        elif isinstance(old, dict):
            report[key] = {k: (old.get(k), new.get(k)) for k in set(old) | set(new)
                           if old.get(k) != new.get(k)}
        else:
            report[key] = (old, new)
    return report


def _record_timers(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record every function registered with bpy.app.timers until the test ends."""
    registered = []
    original = bpy.app.timers.register

    def register(function, *args, **kwargs):
        registered.append(function)
        return original(function, *args, **kwargs)

    monkeypatch.setattr(bpy.app.timers, "register", register)
    return registered


def _assert_registered() -> None:
    assert addon_utils.check(MODULE) == (True, True)  # (enabled by default, loaded)
    assert MODULE in bpy.context.preferences.addons
    prefs = bpy.context.preferences.addons[MODULE].preferences
    assert prefs.bl_rna.properties["face_model_path"].subtype == "FILE_PATH"
    assert hasattr(bpy.types, PANEL)
    assert OPERATOR in _operator_idnames()
    assert bpy.ops.nfr.add_head.poll()
    assert OBJECT_PROPERTY in bpy.types.Object.bl_rna.properties


def test_install_enable_disable_cycles_leave_no_trace(
    extension_zip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _blender_state()
    assert MODULE not in before["addons"] and not hasattr(bpy.types, PANEL)
    timers = _record_timers(monkeypatch)
    result = bpy.ops.extensions.package_install_files(
        filepath=str(extension_zip), repo=REPO_NAME, enable_on_install=True
    )
    assert result == {"FINISHED"}
    try:
        _assert_registered()
        # The installed copy runs, not the editable checkout.
        assert sys.modules[MODULE].__file__.startswith(os.environ["BLENDER_USER_RESOURCES"])

        addon_utils.disable(MODULE, default_set=True)
        assert _diff(before, _blender_state()) == {}

        addon_utils.enable(MODULE, default_set=True)
        _assert_registered()
        addon_utils.disable(MODULE, default_set=True)
        assert _diff(before, _blender_state()) == {}
        assert not [timer for timer in timers if bpy.app.timers.is_registered(timer)]
    finally:
        if addon_utils.check(MODULE)[1]:
            addon_utils.disable(MODULE, default_set=True)
        repos = [repo.module for repo in bpy.context.preferences.extensions.repos]
        bpy.ops.extensions.package_uninstall(
            repo_index=repos.index(REPO_NAME), pkg_id="neural_face_rig"
        )
    assert _diff(before, _blender_state()) == {}


def _run_isolated(code: str, tmp_path: Path) -> dict:
    """Run ``code`` in a fresh interpreter with its own Blender user folder; it prints JSON."""
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender_user"))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + SCRIPT_END],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_enabling_does_no_heavy_work(extension_zip: Path, tmp_path: Path) -> None:
    """register() must not import torch or scipy (no model load, no inference)."""
    found = _run_isolated(
        f"""
        import json, sys
        import bpy
        heavy = ("torch", "scipy")
        before = {{name: name in sys.modules for name in heavy}}
        result = bpy.ops.extensions.package_install_files(
            filepath={str(extension_zip)!r}, repo="user_default", enable_on_install=True)
        after = {{name: name in sys.modules for name in heavy}}
        loaded = "{MODULE}" in bpy.context.preferences.addons
        print(json.dumps({{"result": sorted(result), "loaded": loaded,
                          "before": before, "after": after}}))
        """,
        tmp_path,
    )
    assert found["result"] == ["FINISHED"] and found["loaded"]
    assert found["before"] == {"torch": False, "scipy": False}
    assert found["after"] == {"torch": False, "scipy": False}


def test_rig_imports_without_bpy_or_torch(tmp_path: Path) -> None:
    """Worker processes, farm nodes and Blender's own process read the face model: the rig's
    numpy modules must not pull in bpy or torch."""
    found = _run_isolated(
        """
        import json, sys
        import neural_face_rig.rig.blender_mesh
        import neural_face_rig.rig.face_model
        print(json.dumps({name: name in sys.modules for name in ("bpy", "torch")}))
        """,
        tmp_path,
    )
    assert found == {"bpy": False, "torch": False}
