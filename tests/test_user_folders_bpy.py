"""Nothing is written outside Blender's user folders: a whole session of the installed
extension (enable, preferences, Add Face Rig with its head, live faces from the worker, SeFa
directions, a render of an unsaved file, disable) in a fresh Blender with HOME, the user
resources, the temporary folder and the working directory all pointed into one empty folder;
afterwards every file there must be inside Blender's user resources folder.

Saving a .blend and baking next to it write where the artist asked; that is checked too: the
frames land beside the .blend and nowhere else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fixtures import worker_python
from fixtures.bpy_exit import SCRIPT_END

REPO = Path(__file__).resolve().parents[1]

SESSION = """
import json, os, sys, time
import bpy
import addon_utils

zip_path, models, project, worker = sys.argv[-4:]
module = "bl_ext.user_default.neural_face_rig"
assert bpy.ops.extensions.package_install_files(
    filepath=zip_path, repo="user_default", enable_on_install=True) == {"FINISHED"}
prefs = bpy.context.preferences.addons[module].preferences
prefs.stylegan2_generator_path = os.path.join(models, "tiny_stylegan2.safetensors")
prefs.face_model_path = os.path.join(models, "BFM_model_front.mat")
prefs.device = "CPU"
if worker != sys.executable:
    prefs.worker_python = "EXTERNAL"
    prefs.external_python = worker
live = sys.modules[module + ".live"]

def settle():
    deadline = time.monotonic() + 120
    while live._requests:
        assert time.monotonic() < deadline, live._status
        live.poll_once()
        time.sleep(0.01)

bpy.ops.wm.read_homefile(use_empty=True)
assert bpy.ops.nfr.add_rig(backend="stylegan2") == {"FINISHED"}
card = bpy.context.object
settle()
card.face_rig.seed = 3
settle()
card.face_rig.sefa_sliders.add()
assert live.compute_sefa_directions(card) is not None
settle()
bpy.context.scene.render.engine = "BLENDER_WORKBENCH"
assert bpy.ops.nfr.render_portrait() == {"FINISHED"}  # unsaved: the user folder
bpy.ops.wm.save_as_mainfile(filepath=os.path.join(project, "shot.blend"))
bpy.context.scene.frame_end = 2
assert bpy.ops.nfr.bake_face() == {"FINISHED"}
addon_utils.disable(module, default_set=True)
print(json.dumps({"status": live._status}))
"""


def _files(root: Path) -> set[str]:
    return {str(Path(dirpath, name).relative_to(root))
            for dirpath, _dirs, names in os.walk(root) for name in names}


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory):
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, str(REPO / "build_addon.py"), "--out", str(dist)],
                           capture_output=True, text=True, check=True, timeout=60)
    models = tmp_path_factory.mktemp("models")
    worker_python.write_tiny_models(models)
    worker_python.write_face_model(models / "BFM_model_front.mat")
    root = tmp_path_factory.mktemp("machine")
    folders = {name: root / name for name in ("home", "blender", "tmp", "cwd", "project")}
    for folder in folders.values():
        folder.mkdir()
    before_models = {name: (models / name).stat().st_mtime_ns for name in _files(models)}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XDG_", "TORCH", "PYTHONPYCACHE")) and k not in (
               "MPLCONFIGDIR", "NUMBA_CACHE_DIR")}
    env.update(HOME=str(folders["home"]), BLENDER_USER_RESOURCES=str(folders["blender"]),
               TMPDIR=str(folders["tmp"]), NFR_WORKER_PYTHON=worker_python.WORKER_PYTHON)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SESSION) + SCRIPT_END, built.stdout.strip(),
         str(models), str(folders["project"]), worker_python.WORKER_PYTHON],
        capture_output=True, text=True, env=env, cwd=folders["cwd"], timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    status = json.loads(result.stdout.strip().splitlines()[-1])["status"]
    after_models = {name: (models / name).stat().st_mtime_ns for name in _files(models)}
    return folders, status, before_models, after_models


def test_a_session_writes_only_into_blenders_user_folders(session) -> None:
    folders, status, before_models, after_models = session
    assert not [s for s in status.values() if "error" in s.lower()], status
    # Blender itself (not the extension) writes the freedesktop thumbnail of a saved .blend
    # (seen with bpy 5.3, not 5.0); nothing else may appear in HOME.
    assert {f for f in _files(folders["home"]) if not f.startswith(".cache/thumbnails/")} == set()
    assert _files(folders["cwd"]) == set()
    assert _files(folders["tmp"]) == set()
    assert after_models == before_models  # the models folder is read, never written
    user = _files(folders["blender"])
    renders = "extensions/.user/user_default/neural_face_rig/renders/render/portrait.png"
    assert renders in user


def test_saving_and_baking_write_only_beside_the_blend(session) -> None:
    folders, *_ = session
    assert _files(folders["project"]) == {
        "shot.blend", "face_bake/FaceRig/face_0001.png", "face_bake/FaceRig/face_0002.png"}
