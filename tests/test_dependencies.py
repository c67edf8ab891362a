"""The worker's Python: probing its packages in a child process, the worker command, refusing
to download without online access, pip's command, progress and cancel, and the preferences.

Real bpy module (its online access is off). No network: pip itself is never run; the install
machinery is exercised with stand-in commands that print pip's progress lines.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import bpy
import pytest
from neural_face_rig import dependencies
from neural_face_rig.dependencies import (
    REQUIREMENTS,
    TORCH_CPU_INDEX,
    DependencyError,
    InstallTask,
)

addon_utils = importlib.import_module("addon_utils")

MODULE = "neural_face_rig"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def enabled():
    addon_utils.enable(MODULE, default_set=True)
    yield
    addon_utils.disable(MODULE, default_set=True)


@pytest.fixture()
def prefs(enabled):
    prefs = bpy.context.preferences.addons[MODULE].preferences
    yield prefs
    dependencies.shutdown()
    prefs.worker_python, prefs.external_python, prefs.device = "BLENDER", "", "AUTO"


@pytest.fixture(scope="module")
def here(enabled) -> dependencies.DependencyReport:
    """The probe of this environment's Python (the default worker), run once: it imports torch."""
    return dependencies.check(bpy.context.preferences.addons[MODULE].preferences)


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv without pip or any package (made offline, in a fraction of a second)."""
    root = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                   timeout=120)
    return root / "bin" / "python"


@pytest.fixture()
def processes(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Commands of every child process started during the test; sockets cannot connect."""
    started: list[list[str]] = []
    original = subprocess.Popen

    class Recording(original):  # type: ignore[misc, valid-type]
        def __init__(self, args, *rest, **kwargs):
            started.append([str(a) for a in args])
            super().__init__(args, *rest, **kwargs)

    def no_network(*_args, **_kwargs):
        raise AssertionError("a socket tried to connect")

    monkeypatch.setattr(subprocess, "Popen", Recording)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return started


def _fake_program(tmp_path: Path, name: str, body: str) -> str:
    """An executable Python script (stands in for an interpreter or pip)."""
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


# ------------------------------------------------------------------ pins and the probe


def test_pins_are_the_versions_of_requirements_lock() -> None:
    locked = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            locked[name.strip().lower()] = version.strip()
    for requirement in REQUIREMENTS:
        assert locked[requirement.name] == requirement.version, requirement.name


def test_probe_finds_everything_in_this_environment(prefs, here) -> None:
    import torch
    from neural_face_rig.neural.engine import bf16_supported

    report = here
    assert report.error is None and report.python == sys.executable
    assert report.ready and report.problems() == []
    for package in report.packages:
        installed = importlib.metadata.version(package.requirement.name)
        assert (package.state, package.found) == ("ok", installed), package
    assert report.pip and report.package_found and report.engine_error is None
    assert report.python_version == ".".join(map(str, sys.version_info[:3]))
    assert report.cuda_available == torch.cuda.is_available()
    assert report.cpu_bf16 == bf16_supported("cpu")
    assert dependencies.cached_report(prefs) is report


def test_probe_names_what_a_bare_python_lacks(prefs, bare_python: Path) -> None:
    prefs.worker_python = "EXTERNAL"
    prefs.external_python = str(bare_python.parents[1])  # the environment folder also works
    assert dependencies.cached_report(prefs) is None  # nothing known about this Python yet
    report = dependencies.check(prefs)
    assert report.error is None and not report.ready and not report.pip
    assert os.path.samefile(report.python, bare_python)
    assert [p.state for p in report.packages] == ["missing"] * len(REQUIREMENTS)
    problems = report.problems()
    for requirement in REQUIREMENTS:
        assert (f"{requirement.name}: missing (needs {requirement.version}, "
                f"for {requirement.used_for})") in problems
    assert report.cpu_bf16 is None and "unknown until torch is installed" in report.cpu_summary()
    # The report is remembered per Python: switching back finds nothing cached for Blender's.
    prefs.worker_python = "BLENDER"
    assert dependencies.cached_report(prefs) is not report


def test_a_broken_package_is_not_called_missing(prefs, bare_python, tmp_path) -> None:
    site = tmp_path / "site"
    (site / "scipy").mkdir(parents=True)
    (site / "scipy" / "__init__.py").write_text("raise ImportError('DLL load failed')\n")
    env = dependencies.worker_environment([str(site)])
    task = dependencies.CheckTask(str(bare_python), env)
    task.wait()
    scipy = next(p for p in task.report.packages if p.requirement.name == "scipy")
    assert scipy.state == "broken"
    assert scipy.describe() == "scipy: cannot be imported (ImportError: DLL load failed)"


def test_probe_timeout_and_garbage_are_reported(prefs, tmp_path, monkeypatch) -> None:
    prefs.worker_python = "EXTERNAL"
    prefs.external_python = _fake_program(tmp_path, "hangs", "import time\ntime.sleep(60)\n")
    monkeypatch.setattr(dependencies, "PROBE_TIMEOUT_S", 0.5)
    report = dependencies.check(prefs)
    assert report.error == (f"The package check of {prefs.external_python} did not finish "
                            "within 0.5 s and was stopped")
    assert not report.ready

    prefs.external_python = _fake_program(tmp_path, "talks", "print('hello from python 2')\n")
    report = dependencies.check(prefs)
    assert report.error == (f"{prefs.external_python} printed no probe result: "
                            "hello from python 2")

    not_a_program = tmp_path / "notes.txt"
    not_a_program.write_text("just text")
    not_a_program.chmod(0o755)
    prefs.external_python = str(not_a_program)
    report = dependencies.check(prefs)
    assert report.error.startswith(f"cannot run {not_a_program}: [Errno 8] Exec format error")


def test_unusable_external_python_is_explained(prefs, tmp_path) -> None:
    prefs.worker_python = "EXTERNAL"
    with pytest.raises(DependencyError, match="'External Python' but no path is set"):
        dependencies.worker_command(prefs)
    prefs.external_python = str(tmp_path / "no" / "python")
    with pytest.raises(DependencyError, match=f"External Python not found: {tmp_path}/no/python"):
        dependencies.worker_command(prefs)
    (tmp_path / "empty_env").mkdir()
    prefs.external_python = str(tmp_path / "empty_env")
    with pytest.raises(DependencyError, match="is a folder without bin/python3"):
        dependencies.worker_command(prefs)
    assert dependencies.cached_report(prefs) is None


# ------------------------------------------------------------------ the worker command


def test_worker_command_with_blenders_python(prefs, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONHOME", "/opt/other-python")
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    command, env = dependencies.worker_command(prefs)
    assert command == [sys.executable, "-m", "neural_face_rig.neural.worker"]
    deps = dependencies.dependency_folder()
    assert deps.startswith(os.environ["BLENDER_USER_RESOURCES"])
    assert env["PYTHONPATH"].split(os.pathsep) == [deps, str(REPO)]
    assert "PYTHONHOME" not in env and env["PYTHONNOUSERSITE"] == "1"
    assert env["PYTHONPYCACHEPREFIX"].startswith(os.environ["BLENDER_USER_RESOURCES"])
    # The environment really runs the package: same interpreter, no user site, bytecode
    # caches outside the extension's folder.
    probe = "import sys, neural_face_rig.neural.errors; "
    result = subprocess.run(
        [command[0], "-c", probe + "print(sys.flags.no_user_site, sys.pycache_prefix)"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    assert result.stdout.split() == ["1", env["PYTHONPYCACHEPREFIX"]]


def test_worker_command_with_an_external_python(prefs, bare_python) -> None:
    prefs.worker_python = "EXTERNAL"
    prefs.external_python = str(bare_python)
    command, env = dependencies.worker_command(prefs)
    assert command == [str(bare_python), "-m", "neural_face_rig.neural.worker"]
    # Only the package: the external environment brings its own packages.
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO)]
    assert env["PYTHONNOUSERSITE"] == "1"


def test_device_choice(prefs) -> None:
    no_cuda = dependencies.DependencyReport("py", cpu_bf16=True)
    with_cuda = dependencies.DependencyReport("py", cuda_available=True, cuda_device="RTX",
                                              torch_cuda="12.8")
    assert dependencies.resolve_device(prefs, no_cuda) == ("cpu", None)
    assert dependencies.resolve_device(prefs, with_cuda) == ("cuda", None)
    prefs.device = "CPU"
    assert dependencies.resolve_device(prefs, with_cuda) == ("cpu", None)
    prefs.device = "CUDA"
    device, problem = dependencies.resolve_device(prefs, no_cuda)
    assert device == "cuda" and "CUDA is chosen but py has no CUDA device" in problem
    assert "external Python with CUDA torch" in problem


# ------------------------------------------------------------------ installing


def test_install_refuses_without_online_access(prefs, processes) -> None:
    assert bpy.app.online_access is False  # the bpy module's default
    with pytest.raises(RuntimeError) as raised:
        bpy.ops.nfr.install_dependencies()
    message = str(raised.value)
    assert "Online access is disabled, so Python packages cannot be downloaded" in message
    assert "Preferences > System > Network > Allow Online Access" in message
    assert "external Python" in message and "torch==2.13.0" in message
    assert processes == []  # no pip, not even a probe
    assert not os.path.exists(dependencies.dependency_folder())


def test_install_refuses_for_an_external_python(prefs, bare_python, processes) -> None:
    prefs.worker_python = "EXTERNAL"
    prefs.external_python = str(bare_python)
    with pytest.raises(RuntimeError, match="The worker uses an external Python: install "
                       f"packages into that environment .*'{bare_python} -m pip install "
                       "torch==2.13.0 numpy==1.26.4"):
        bpy.ops.nfr.install_dependencies()
    assert processes == []


def test_install_with_nothing_missing_runs_no_pip(prefs, here, processes, monkeypatch) -> None:
    monkeypatch.setattr(dependencies, "online_access_problem", lambda: None)
    assert dependencies.cached_report(prefs) is here
    assert bpy.ops.nfr.install_dependencies() == {"FINISHED"}
    assert all("pip" not in command for command in processes)


def test_pip_command_pins_targets_and_isolates() -> None:
    torch_req, scipy_req = REQUIREMENTS[0], REQUIREMENTS[2]
    command = dependencies.pip_install_command(
        "/blender/python", "/user/deps", [torch_req, scipy_req], "AUTO", "/user/c.txt",
        platform="linux",
    )
    assert command[:4] == ["/blender/python", "-m", "pip", "install"]
    for flag in ("--isolated", "--only-binary=:all:", "--no-input", "--upgrade"):
        assert flag in command
    assert command[command.index("--target") + 1] == "/user/deps"
    assert command[command.index("--constraint") + 1] == "/user/c.txt"
    assert command[-2:] == ["torch==2.13.0", "scipy==1.17.1"]
    assert "--extra-index-url" not in command and "--index-url" not in command

    cpu = dependencies.pip_install_command("py", "t", [torch_req, scipy_req], "CPU", "c",
                                           platform="win32")
    assert cpu[cpu.index("--extra-index-url") + 1] == TORCH_CPU_INDEX
    assert cpu[-2:] == ["torch==2.13.0+cpu", "scipy==1.17.1"]
    mac = dependencies.pip_install_command("py", "t", [torch_req], "CPU", "c", platform="darwin")
    assert mac[-1] == "torch==2.13.0" and "--extra-index-url" not in mac
    no_torch = dependencies.pip_install_command("py", "t", [scipy_req], "CPU", "c",
                                                platform="linux")
    assert "--extra-index-url" not in no_torch


def test_pip_environment_is_scrubbed(monkeypatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "https://evil.example/simple")
    monkeypatch.setenv("PIP_TARGET", "/tmp/elsewhere")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    env = dependencies.pip_environment()
    assert not [k for k in env if k.startswith("PIP_")]
    assert "PYTHONPATH" not in env and env["PYTHONNOUSERSITE"] == "1"
    assert env["HTTPS_PROXY"] == "http://proxy:3128"  # network settings stay


FAKE_PIP = """\
import sys, time
for line in ["Collecting torch==2.13.0", "  Downloading torch-2.13.0-cp311.whl (200.1 MB)",
             "Collecting filelock (from torch==2.13.0)", "Collecting sympy (from torch==2.13.0)",
             "Installing collected packages: sympy, filelock, torch",
             "Successfully installed filelock sympy torch"]:
    print(line, flush=True)
    time.sleep(0.15)
sys.exit(int(sys.argv[1]))
"""


def test_install_task_follows_pip_then_checks_again(tmp_path, bare_python) -> None:
    pip = _fake_program(tmp_path, "pip", FAKE_PIP)
    task = InstallTask([pip, "0"], str(tmp_path / "pip.log"), (str(bare_python), []), 1)
    seen: list[tuple[float, str]] = []
    while not task.step():
        seen.append((task.progress, task.stage))
        time.sleep(0.05)
    progress = [p for p, _ in seen]
    assert progress == sorted(progress) and 0.05 < progress[-1] <= 0.9
    assert "Collecting torch==2.13.0" in [stage for _, stage in seen]
    assert any(stage.startswith("Installing (unpacking") for _, stage in seen)
    # pip succeeded, the fresh check of the (bare) Python then tells what is still missing.
    ok, message = task.result
    assert not ok and message.startswith("pip finished, but: torch: missing")
    assert task.progress == 1.0


def test_failed_pip_reports_its_last_lines_and_log(tmp_path, bare_python) -> None:
    log = tmp_path / "pip.log"
    task = InstallTask([_fake_program(tmp_path, "pip", FAKE_PIP), "1"], str(log),
                       (str(bare_python), []), 1)
    ok, message = dependencies.run_to_end(task)
    assert not ok and message.startswith("pip failed (exit code 1): ")
    assert "Successfully installed filelock sympy torch" in message
    assert message.endswith(f"(full log: {log})")


def test_cancel_kills_pip_and_its_children(tmp_path, bare_python) -> None:
    pip = _fake_program(tmp_path, "pip", """\
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print("Collecting torch==2.13.0 child", child.pid, flush=True)
        time.sleep(120)
        """)
    task = InstallTask([pip], str(tmp_path / "pip.log"), (str(bare_python), []), 1)
    deadline = time.monotonic() + 30
    while "child" not in task.stage and time.monotonic() < deadline:
        task.step()
        time.sleep(0.05)
    grandchild = int(task.stage.split("child ")[1])
    task.cancel()
    assert task.step() and task.result == (False, "pip cancelled (full log: "
                                           f"{tmp_path / 'pip.log'})")
    assert task._child.process.returncode == -signal.SIGTERM
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


class _ModalJob:
    """The operators' modal logic on a plain object (bpy operators cannot be instantiated
    outside Blender's operator call, and in the bpy module invoke() runs synchronously)."""

    def __init__(self, task) -> None:
        from neural_face_rig.operators.dependencies import _DependencyJob

        self.job = type("Job", (_DependencyJob,), {"report": self._report})()
        self.job._task = task
        self.reports: list[tuple[set[str], str]] = []

    def _report(self, kind: set[str], message: str) -> None:
        self.reports.append((kind, message))

    def send(self, event_type: str) -> set[str]:
        event = types.SimpleNamespace(type=event_type, value="PRESS")
        return self.job.modal(bpy.context, event)


def test_modal_steps_on_timer_events_and_reports(tmp_path, bare_python) -> None:
    task = InstallTask([_fake_program(tmp_path, "pip", FAKE_PIP), "0"],
                       str(tmp_path / "pip.log"), (str(bare_python), []), 1)
    modal = _ModalJob(task)
    assert modal.send("MOUSEMOVE") == {"PASS_THROUGH"}  # Blender stays usable meanwhile
    deadline = time.monotonic() + 60
    while (result := modal.send("TIMER")) == {"RUNNING_MODAL"}:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert result == {"CANCELLED"}  # the bare Python still lacks everything after "pip"
    ((kind, message),) = modal.reports
    assert kind == {"ERROR"} and message.startswith("pip finished, but: torch: missing")


def test_modal_escape_cancels_and_kills_pip(tmp_path, bare_python) -> None:
    pip = _fake_program(tmp_path, "pip", "import time\nprint('Collecting torch', flush=True)\n"
                        "time.sleep(120)\n")
    task = InstallTask([pip], str(tmp_path / "pip.log"), (str(bare_python), []), 1)
    modal = _ModalJob(task)
    assert modal.send("TIMER") == {"RUNNING_MODAL"}
    assert modal.send("ESC") == {"CANCELLED"}
    assert modal.reports == [({"WARNING"}, "Installing Python packages: cancelled")]
    assert task._child.process.returncode is not None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed process not yet reaped by its new parent is a zombie: dead for our purpose.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"


def test_disabling_stops_a_running_check(prefs, tmp_path) -> None:
    prefs.worker_python = "EXTERNAL"
    prefs.external_python = _fake_program(tmp_path, "slow", "import time\ntime.sleep(60)\n")
    task = dependencies.start_check(prefs)
    assert dependencies.active_task() is task
    with pytest.raises(DependencyError, match="already running"):
        dependencies.start_check(prefs)
    assert not bpy.ops.nfr.check_dependencies.poll()
    dependencies.shutdown()
    assert dependencies.active_task() is None
    assert task._child.process.returncode is not None


# ------------------------------------------------------------------ preferences


class _RecordingLayout:
    """Stands in for bpy's UILayout (only exists while Blender draws): records what is drawn."""

    def __init__(self, log: list[tuple[str, str]]) -> None:
        self.log = log
        self.enabled = True

    def column(self, **_kwargs) -> _RecordingLayout:
        return _RecordingLayout(self.log)

    box = row = column

    def separator(self, **_kwargs) -> None:
        pass

    def label(self, *, text: str = "", **_kwargs) -> None:
        self.log.append(("label", text))

    def prop(self, data, name: str, **_kwargs) -> None:
        assert name in data.bl_rna.properties, name
        self.log.append(("prop", name))

    def operator(self, idname: str, **_kwargs):
        self.log.append(("operator", idname))
        return types.SimpleNamespace()

    def progress(self, *, factor: float, text: str = "", **_kwargs) -> None:
        assert 0.0 <= factor <= 1.0
        self.log.append(("progress", text))


def _draw_preferences(prefs) -> list[tuple[str, str]]:
    from neural_face_rig.preferences import NFR_AddonPreferences

    log: list[tuple[str, str]] = []
    layout = _RecordingLayout(log)

    class Drawing:  # the real preferences, drawn into the recording layout
        def __getattr__(self, name):
            return getattr(prefs, name)

    drawing = Drawing()
    drawing.layout = layout
    NFR_AddonPreferences.draw(drawing, bpy.context)
    return log


def test_preferences_draw_models_worker_and_packages(prefs, here, monkeypatch) -> None:
    monkeypatch.setattr(dependencies, "_reports", {})
    log = _draw_preferences(prefs)
    props = [name for kind, name in log if kind == "prop"]
    for name in ("face_model_path", "models_dir", "stylegan2_generator_path",
                 "dfg_generator_path", "dfg_average_w_path", "dfg_vae_dir", "rignet_path",
                 "worker_python", "device"):
        assert name in props, name
    labels = [text for kind, text in log if kind == "label"]
    assert "No StyleGAN2 generator set." in labels
    assert "Uses the StyleGAN2 generator above." in labels
    assert "Python packages not checked yet." in labels
    assert ("operator", "nfr.check_dependencies") in log
    assert ("operator", "nfr.install_dependencies") not in log

    monkeypatch.setattr(dependencies, "cached_report", lambda _prefs: here)
    log = _draw_preferences(prefs)
    labels = [text for kind, text in log if kind == "label"]
    for package in here.packages:
        assert package.describe() in labels
    assert here.device_summary() in labels and here.cpu_summary() in labels
    assert ("operator", "nfr.install_dependencies") not in log  # nothing is missing


def test_preferences_offer_install_and_show_progress(prefs, bare_python, tmp_path,
                                                     monkeypatch) -> None:
    monkeypatch.setattr(dependencies, "_reports", {})
    missing = dependencies.CheckTask(str(bare_python), {})
    missing.wait()
    monkeypatch.setattr(dependencies, "cached_report", lambda _prefs: missing.report)
    log = _draw_preferences(prefs)
    assert ("operator", "nfr.install_dependencies") in log
    labels = [text for kind, text in log if kind == "label"]
    assert "torch: missing (needs 2.13.0, for neural network inference)" in labels
    assert any(line.startswith("Installs the missing packages into ") for line in labels)
    assert any(line.startswith("Online access is off: allow it in Preferences > System > "
                               "Network") for line in labels)

    task = dependencies._track(InstallTask(
        [_fake_program(tmp_path, "pip", FAKE_PIP), "0"], str(tmp_path / "pip.log"),
        (str(bare_python), []), 1))
    try:
        task.step()
        log = _draw_preferences(prefs)
        (progress,) = [text for kind, text in log if kind == "progress"]
        assert progress.startswith(f"{task.stage} (0:0")
        assert ("label", "Installing Python packages; press Esc to cancel.") in log
    finally:
        dependencies.shutdown()


def test_preferences_show_an_unusable_external_python(prefs, tmp_path) -> None:
    prefs.worker_python = "EXTERNAL"
    prefs.external_python = str(tmp_path / "gone")
    log = _draw_preferences(prefs)
    assert ("prop", "external_python") in log
    assert ("label", f"External Python not found: {tmp_path / 'gone'}") in log


def test_installed_extension_runs_its_own_copy_in_the_worker(tmp_path) -> None:
    """Installed from the zip (bl_ext.user_default.neural_face_rig), the worker's PYTHONPATH
    must import the installed copy and the dependency folder must be the extension's user
    folder; run in a fresh interpreter with its own Blender user folder."""
    zip_path = subprocess.run(
        [sys.executable, str(REPO / "build_addon.py"), "--out", str(tmp_path / "dist")],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()
    code = textwrap.dedent(f"""
        import importlib, json, subprocess
        import bpy
        bpy.ops.extensions.package_install_files(
            filepath={zip_path!r}, repo="user_default", enable_on_install=True)
        module = "bl_ext.user_default.neural_face_rig"
        deps = importlib.import_module(module + ".dependencies")
        prefs = bpy.context.preferences.addons[module].preferences
        command, env = deps.worker_command(prefs)
        found = subprocess.run(
            [command[0], "-c", "import neural_face_rig.neural as n; print(n.__file__)"],
            env=env, capture_output=True, text=True, check=True).stdout.strip()
        package = importlib.import_module(module).__file__
        print(json.dumps({{"command": command, "pythonpath": env["PYTHONPATH"],
                          "imported": found, "package": package}}))
        """)
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    extensions = tmp_path / "user" / "extensions"
    assert found["command"][1:] == ["-m", "neural_face_rig.neural.worker"]
    assert found["package"] == str(extensions / "user_default" / "neural_face_rig" /
                                   "__init__.py")
    assert found["imported"] == str(extensions / "user_default" / "neural_face_rig" / "neural" /
                                    "__init__.py")
    assert found["pythonpath"].split(os.pathsep) == [
        str(extensions / ".user" / "user_default" / "neural_face_rig" / "site-packages"),
        str(extensions / "user_default"),
    ]
