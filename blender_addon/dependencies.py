"""The worker's Python: which packages it needs, which Python runs it, and installing them.

Inference runs in a worker process, never in Blender's own (torch is not imported here). The
worker is Blender's bundled Python (``sys.executable`` inside Blender) with the extension's
dependency folder on PYTHONPATH, or an external Python the user chose (a venv or conda
environment with CUDA torch, for instance). Whether that Python has the packages is asked by
running it: a tiny probe script prints JSON (versions, CUDA, CPU bf16). Installing runs pip in
a child process into the extension's user folder, only when Blender allows online access.

Long jobs (probe, pip) are :class:`Task` objects: started here, stepped by a modal operator's
timer on the main thread (or run to the end in background mode), cancellable.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import bpy

from . import file_status
from .rig.atomic import atomic_open

PROBE_TIMEOUT_S = 120.0
INSTALL_TIMEOUT_S = 3 * 3600.0
TESTED_PYTHON = "3.11"
# Only chosen when the user picks the CPU device: the CPU-only torch build (no CUDA libraries).
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
_PROBE_MARKER = "NFR-PROBE "
_KILL_GRACE_S = 3.0


class DependencyError(Exception):
    """The worker's Python cannot be used or set up as asked (message says why and what to do)."""


class NothingToInstall(DependencyError):
    """Every package is already present: the install has nothing to do."""


@dataclass(frozen=True)
class Requirement:
    """A package the worker imports, at the version the project pins (requirements.lock)."""

    name: str  # distribution name (pip)
    module: str  # import name
    version: str
    used_for: str

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("torch", "torch", "2.13.0", "neural network inference"),
    Requirement("numpy", "numpy", "1.26.4", "arrays"),
    Requirement("scipy", "scipy", "1.17.1", "face-model .mat files"),
    Requirement("safetensors", "safetensors", "0.8.0", "converted model files"),
    Requirement("pillow", "PIL", "13.0.0", "image files"),
)


# ------------------------------------------------------------------ folders and the command


def extension_user_folder(name: str, *, create: bool = False) -> str:
    """``name`` inside this extension's user folder, where it may write (never its own folder).

    Installed as an extension: ``bpy.utils.extension_path_user``. Enabled as a plain module (a
    development checkout, the tests): a folder of the same name under Blender's config folder."""
    package = _root_package()
    try:
        return bpy.utils.extension_path_user(package, path=name, create=create)
    except ValueError:  # not loaded as bl_ext.<repo>.<id>
        return bpy.utils.user_resource("CONFIG", path=os.path.join(package, name), create=create)


def dependency_folder(*, create: bool = False) -> str:
    """Where missing packages are installed for Blender's own Python (the worker's only)."""
    return extension_user_folder("site-packages", create=create)


def _root_package() -> str:
    """The extension's package, e.g. ``bl_ext.user_default.neural_face_rig``."""
    return __package__ or __name__.rpartition(".")[0]


def package_location() -> tuple[str, str]:
    """(folder to put on the worker's PYTHONPATH, top-level package name to import there).

    An installed extension lives in ``<repository>/<id>/``; a plain Python imports it as
    ``<id>`` once the repository folder is on its path."""
    root = os.path.dirname(os.path.abspath(__file__))
    return os.path.dirname(root), _root_package().rpartition(".")[2]


def python_executable(path: str) -> str:
    """The interpreter the user chose: a file, or an environment folder holding one (checked
    at most every few seconds per path: the preferences call this while drawing)."""
    resolved = bpy.path.abspath(path) if path else ""
    return file_status.remembered(("python_executable", resolved),
                                  lambda: _check_executable(resolved), DependencyError)


def _check_executable(resolved: str) -> str:
    if not resolved:
        raise DependencyError(
            "Worker Python is set to 'External Python' but no path is set: choose the python "
            "executable (or the environment folder) in Preferences > Add-ons > Neural Face Rig"
        )
    if os.path.isdir(resolved):
        for relative in ("bin/python3", "bin/python", "Scripts/python.exe", "python.exe"):
            candidate = os.path.join(resolved, relative)
            if os.path.isfile(candidate):
                return candidate
        raise DependencyError(
            f"External Python: {resolved} is a folder without bin/python3 or Scripts/python.exe; "
            "choose the python executable itself"
        )
    if not os.path.exists(resolved):
        raise DependencyError(f"External Python not found: {resolved}")
    if not os.access(resolved, os.X_OK):
        raise DependencyError(f"External Python is not executable: {resolved}")
    return resolved


def uses_blender_python(prefs: Any) -> bool:
    return prefs.worker_python == "BLENDER"


def worker_python(prefs: Any) -> tuple[str, list[str]]:
    """(interpreter, PYTHONPATH entries) of the worker. Blender's Python also sees the
    dependency folder; an external Python brings its own packages."""
    folder, _ = package_location()
    if uses_blender_python(prefs):
        return sys.executable, [dependency_folder(), folder]
    return python_executable(prefs.external_python), [folder]


def worker_environment(pythonpath: list[str]) -> dict[str, str]:
    """Blender's environment for a child Python: our PYTHONPATH only (an inherited one or a
    PYTHONHOME would mix in another installation), no user site-packages, and bytecode caches
    in the user folder because nothing may be written into the extension's folder. Caches
    (SeFa directions, torch's) go to the user folder "cache" (``XDG_CACHE_HOME``) instead of
    ~/.cache, so they stay inside Blender's folders and go when the extension is removed."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONPYCACHEPREFIX"] = extension_user_folder("pycache")
    env["XDG_CACHE_HOME"] = extension_user_folder("cache")
    return env


def worker_command(prefs: Any) -> tuple[list[str], dict[str, str]]:
    """The command and environment that start the inference worker (``-m <id>.neural.worker``).

    Raises DependencyError when an external Python is chosen but unusable."""
    python, pythonpath = worker_python(prefs)
    _, package = package_location()
    return [python, "-m", f"{package}.neural.worker"], worker_environment(pythonpath)


# ------------------------------------------------------------------ the probe and its report


@dataclass(frozen=True)
class PackageStatus:
    """One requirement as found in the worker's Python."""

    requirement: Requirement
    found: str | None  # version string, None when it cannot be imported
    error: str | None  # why an installed package fails to import (None when simply absent)

    @property
    def state(self) -> str:
        """'ok', 'other-version' (works, but not the tested version), 'missing' or 'broken'."""
        if self.found is None:
            return "missing" if self.error is None else "broken"
        return "ok" if self.found.partition("+")[0] == self.requirement.version else "other-version"

    @property
    def usable(self) -> bool:
        return self.state in ("ok", "other-version")

    def describe(self) -> str:
        req = self.requirement
        return {
            "ok": f"{req.name} {self.found}",
            "other-version": f"{req.name} {self.found} (tested with {req.version})",
            "missing": f"{req.name}: missing (needs {req.version}, for {req.used_for})",
            "broken": f"{req.name}: cannot be imported ({self.error})",
        }[self.state]


@dataclass(frozen=True)
class DependencyReport:
    """What the worker's Python has. ``error`` is set when the probe itself failed (the
    interpreter did not start, timed out, or printed no result); nothing else is known then."""

    python: str
    python_version: str = ""
    packages: tuple[PackageStatus, ...] = ()
    pip: bool = False
    package_found: bool = False  # the extension's own package imports from this Python
    cuda_available: bool = False
    cuda_device: str | None = None
    torch_cuda: str | None = None  # the CUDA version torch was built with (None: CPU build)
    cpu_bf16: bool | None = None  # native bf16 on this CPU (None: unknown, torch missing)
    engine_error: str | None = None  # the extension's inference engine failed to import
    error: str | None = None

    @property
    def missing(self) -> tuple[PackageStatus, ...]:
        return tuple(p for p in self.packages if not p.usable)

    @property
    def ready(self) -> bool:
        return (self.error is None and not self.missing and self.package_found
                and self.engine_error is None)

    def problems(self) -> list[str]:
        """One line per thing that stops the worker from running, most basic first."""
        if self.error is not None:
            return [self.error]
        lines = [p.describe() for p in self.missing]
        if not self.package_found:
            folder, package = package_location()
            lines.append(f"{package} cannot be imported from {self.python} (looked in {folder})")
        elif self.engine_error is not None and not self.missing:
            lines.append(f"The inference engine fails to import: {self.engine_error}")
        return lines

    @property
    def has_torch(self) -> bool:
        return any(p.requirement.name == "torch" and p.usable for p in self.packages)

    def device_summary(self) -> str:
        if not self.has_torch:
            return "CUDA: unknown until torch is installed"
        if self.cuda_available:
            return f"CUDA: {self.cuda_device} (CUDA {self.torch_cuda})"
        build = "torch has no CUDA support" if self.torch_cuda is None else "no CUDA device found"
        return f"CUDA: not available ({build})"

    def cpu_summary(self) -> str:
        if self.cpu_bf16 is None:
            if self.has_torch:
                return "CPU bf16: unknown (the inference engine did not load)"
            return "CPU bf16: unknown until torch is installed"
        return "CPU bf16: native (fast CPU previews)" if self.cpu_bf16 else "CPU bf16: not native"


# Runs in the worker's Python (any version >= 3.8, nothing but the standard library needed):
# argv = [package, module, module, ...]. Prints one marker line of JSON.
PROBE_SCRIPT = """\
import importlib, importlib.util, json, sys
out = {"python": sys.version.split()[0], "packages": {}}
for name in sys.argv[2:]:
    try:
        module = importlib.import_module(name)
        out["packages"][name] = {"version": str(getattr(module, "__version__", "?")),
                                 "error": None}
    except Exception as exc:
        absent = isinstance(exc, ModuleNotFoundError) and exc.name == name
        error = None if absent else type(exc).__name__ + ": " + str(exc)
        out["packages"][name] = {"version": None, "error": error}
out["pip"] = importlib.util.find_spec("pip") is not None
try:
    out["package_found"] = importlib.util.find_spec(sys.argv[1] + ".neural") is not None
except Exception:
    out["package_found"] = False
torch = sys.modules.get("torch")
if torch is not None:
    cuda = bool(torch.cuda.is_available())
    out["cuda"] = {"available": cuda, "version": torch.version.cuda,
                   "device": torch.cuda.get_device_name(0) if cuda else None}
    try:
        engine = importlib.import_module(sys.argv[1] + ".neural.engine")
        out["cpu_bf16"] = bool(engine.bf16_supported("cpu"))
    except Exception as exc:
        out["engine_error"] = type(exc).__name__ + ": " + str(exc)
print("@MARKER@" + json.dumps(out), flush=True)
""".replace("@MARKER@", _PROBE_MARKER)


def probe_command(python: str) -> list[str]:
    _, package = package_location()
    return [python, "-c", PROBE_SCRIPT, package, *(r.module for r in REQUIREMENTS)]


def parse_probe_output(python: str, output: str) -> DependencyReport:
    """The report from the probe's output (the last marker line); an error report without one."""
    lines = [line for line in output.splitlines() if line.startswith(_PROBE_MARKER)]
    if not lines:
        return DependencyReport(python, error=f"{python} printed no probe result: {_tail(output)}")
    try:
        found = json.loads(lines[-1][len(_PROBE_MARKER):])
        packages = tuple(
            PackageStatus(r, found["packages"][r.module]["version"],
                          found["packages"][r.module]["error"])
            for r in REQUIREMENTS
        )
    except (ValueError, KeyError, TypeError) as exc:
        return DependencyReport(python, error=f"{python}: unreadable probe result ({exc})")
    cuda = found.get("cuda") or {}
    return DependencyReport(
        python=python,
        python_version=found.get("python", ""),
        packages=packages,
        pip=bool(found.get("pip")),
        package_found=bool(found.get("package_found")),
        cuda_available=bool(cuda.get("available")),
        cuda_device=cuda.get("device"),
        torch_cuda=cuda.get("version"),
        cpu_bf16=found.get("cpu_bf16"),
        engine_error=found.get("engine_error"),
    )


def _tail(text: str, lines: int = 6) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(no output)"


# ------------------------------------------------------------------ child processes


class ChildProcess:
    """A child process whose stdout and stderr go to ``log_path``; polled, killed on timeout or
    cancel together with its children (its own process group/session)."""

    def __init__(
        self, command: list[str], env: dict[str, str], log_path: str, timeout: float
    ) -> None:
        self.command = command
        self.log_path = log_path
        self.timeout = timeout
        self.timed_out = False
        self.cancelled = False
        self._deadline = time.monotonic() + timeout
        if os.name == "posix":
            group: dict[str, Any] = {"start_new_session": True}
        else:
            group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
        with open(log_path, "wb") as log:  # the child keeps its own handle
            self.process = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, **group,
            )

    def poll(self) -> int | None:
        """The exit code, or None while running (kills it once the timeout has passed)."""
        code = self.process.poll()
        if code is None and time.monotonic() > self._deadline:
            self.timed_out = True
            self.kill()
            code = self.process.returncode
        return code

    def wait(self) -> int:
        try:
            return self.process.wait(timeout=max(0.0, self._deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.timed_out = True
            self.kill()
            return self.process.returncode

    def cancel(self) -> None:
        self.cancelled = True
        self.kill()

    def kill(self) -> None:
        """Terminate the process group, then kill it if it has not exited after a grace time."""
        if self.process.poll() is not None:
            return
        if os.name == "posix":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=_KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            if os.name == "posix":
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
            else:
                self.process.kill()
            self.process.wait()

    def output(self) -> str:
        try:
            with open(self.log_path, "rb") as log:
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def failure(self, what: str) -> str | None:
        """Why the finished process failed (None if it exited with 0)."""
        code = self.process.returncode
        if self.cancelled:
            return f"{what} cancelled"
        if self.timed_out:
            return f"{what} did not finish within {self.timeout:g} s and was stopped"
        if code != 0:
            return f"{what} failed (exit code {code}): {_tail(self.output())}"
        return None


# ------------------------------------------------------------------ tasks


class Task:
    """A running job for the UI: ``step()`` until it returns True, then read ``result``."""

    title = "Task"

    def __init__(self) -> None:
        self.progress = 0.0  # 0..1
        self.stage = "Starting"
        self.result: tuple[bool, str] | None = None  # (succeeded, message) once finished
        self._started = time.monotonic()

    def status_text(self) -> str:
        """The stage with the elapsed time (long downloads print nothing for minutes)."""
        elapsed = int(time.monotonic() - self._started)
        return f"{self.stage} ({elapsed // 60}:{elapsed % 60:02d})"

    def step(self) -> bool:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError

    def _finish(self, ok: bool, message: str) -> bool:
        self.progress, self.stage, self.result = 1.0, message, (ok, message)
        return True


TaskT = TypeVar("TaskT", bound=Task)
_reports: dict[tuple[str, str], DependencyReport] = {}
_active: Task | None = None


def _report_key(python: str, env: dict[str, str]) -> tuple[str, str]:
    return python, env.get("PYTHONPATH", "")


class CheckTask(Task):
    """Run the probe in the worker's Python; the report is cached when it finishes."""

    title = "Checking Python packages"

    def __init__(self, python: str, env: dict[str, str]) -> None:
        super().__init__()
        self.python, self.key = python, _report_key(python, env)
        self.report: DependencyReport | None = None
        self.stage = f"Checking {python}"
        handle, self._log = tempfile.mkstemp(prefix="nfr-probe-", suffix=".log")
        os.close(handle)
        try:
            self._child: ChildProcess | None = ChildProcess(
                probe_command(python), env, self._log, PROBE_TIMEOUT_S
            )
        except OSError as exc:  # not found, not executable, not a program
            self._child = None
            os.remove(self._log)
            self._store(DependencyReport(python, error=f"cannot run {python}: {exc}"))

    def step(self) -> bool:
        if self.result is not None:
            return True
        assert self._child is not None
        if self._child.poll() is None:
            return False
        return self._collect()

    def wait(self) -> bool:
        if self._child is not None and self.result is None:
            self._child.wait()
            return self._collect()
        return True

    def cancel(self) -> None:
        if self._child is not None:
            self._child.cancel()

    def _collect(self) -> bool:
        assert self._child is not None
        output = self._child.output()
        with contextlib.suppress(OSError):
            os.remove(self._log)
        report = parse_probe_output(self.python, output)
        failure = self._child.failure(f"The package check of {self.python}")
        if report.error is not None and failure is not None:  # say why it printed nothing
            report = DependencyReport(self.python, error=failure)
        return self._store(report)

    def _store(self, report: DependencyReport) -> bool:
        self.report = report
        _reports[self.key] = report
        if report.error is not None:
            return self._finish(False, report.error)
        if report.ready:
            return self._finish(True, f"All Python packages present in {self.python}")
        return self._finish(False, "; ".join(report.problems()))


def cached_report(prefs: Any) -> DependencyReport | None:
    """The last probe result for the worker Python the preferences choose (None: not checked,
    or the external Python is not usable)."""
    try:
        python, pythonpath = worker_python(prefs)
    except DependencyError:
        return None
    return _reports.get(_report_key(python, worker_environment(pythonpath)))


def active_task() -> Task | None:
    """The running check or install, if any (one at a time)."""
    return _active if _active is not None and _active.result is None else None


def _ensure_idle() -> None:
    if active_task() is not None:
        raise DependencyError("A dependency check or install is already running")


def _track(task: TaskT) -> TaskT:
    global _active
    _active = task
    return task


def start_check(prefs: Any) -> CheckTask:
    """Start probing the worker's Python (raises DependencyError if it cannot be chosen)."""
    _ensure_idle()
    python, pythonpath = worker_python(prefs)
    return _track(CheckTask(python, worker_environment(pythonpath)))


def check(prefs: Any) -> DependencyReport:
    """Probe the worker's Python now, blocking (background mode, scripts, tests); cached."""
    task = start_check(prefs)
    task.wait()
    assert task.report is not None
    return task.report


def run_to_end(task: Task, echo: Callable[[str], None] | None = None) -> tuple[bool, str]:
    """Step ``task`` until it ends, sleeping between polls; ``echo`` gets each new stage."""
    last = ""
    while not task.step():
        if echo is not None and task.stage != last:
            echo(task.stage)
            last = task.stage
        time.sleep(0.1)
    assert task.result is not None
    return task.result


def shutdown() -> None:
    """Stop a running job (the extension is being disabled): no child process outlives it."""
    global _active
    task = active_task()
    if task is not None:
        task.cancel()
        task.step()
    _active = None


# ------------------------------------------------------------------ installing


def online_access_problem() -> str | None:
    """Why packages may not be downloaded now (None when Blender allows online access)."""
    if bpy.app.online_access:
        return None
    if getattr(bpy.app, "online_access_override", False):
        how = "Blender was started with --offline-mode: restart it without that option"
    else:
        how = "allow it in Preferences > System > Network > Allow Online Access"
    return (
        f"Online access is disabled, so Python packages cannot be downloaded: {how}. Or set "
        "Worker Python to an external Python that already has "
        f"{', '.join(r.pin for r in REQUIREMENTS)} (Preferences > Add-ons > Neural Face Rig)"
    )


def install_refusal(prefs: Any) -> str | None:
    """Why the install button must not download anything now (None: it may)."""
    if not uses_blender_python(prefs):
        pins = " ".join(r.pin for r in REQUIREMENTS)
        return (
            "The worker uses an external Python: install packages into that environment with "
            f"its own tools, e.g. '{prefs.external_python} -m pip install {pins}'"
        )
    return online_access_problem()


def pip_install_command(
    python: str, target: str, missing: list[Requirement], device: str, constraints: str,
    platform: str = sys.platform,
) -> list[str]:
    """pip installing ``missing`` (pinned) into ``target``; every pin also constrains the
    dependencies pip pulls in, so the folder matches the tested set. With device 'CPU' torch
    comes from PyTorch's CPU-only index (Linux/Windows; macOS wheels on PyPI are CPU builds)."""
    command = [
        python, "-m", "pip", "install", "--isolated", "--disable-pip-version-check",
        "--no-input", "--progress-bar", "off", "--no-warn-script-location", "--only-binary=:all:",
        "--upgrade", "--target", target, "--constraint", constraints,
    ]
    specs = [r.pin for r in missing]
    cpu_build = device == "CPU" and platform != "darwin"
    if cpu_build and any(r.name == "torch" for r in missing):
        command += ["--extra-index-url", TORCH_CPU_INDEX]
        specs = [f"{s}+cpu" if s.startswith("torch==") else s for s in specs]
    return command + specs


def pip_environment() -> dict[str, str]:
    """Blender's environment without PIP_* settings and the user's site-packages."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.pop("PYTHONPATH", None)
    env["PYTHONNOUSERSITE"] = "1"
    return env


def install_notes(prefs: Any) -> tuple[str, ...]:
    """What the install button will download, so users choose knowingly."""
    if prefs.device == "CPU":
        torch_line = "torch: the CPU-only build from download.pytorch.org (about 200 MB)"
    else:
        torch_line = (
            "torch from PyPI: on Linux with NVIDIA CUDA libraries (several GB); CPU-only on "
            "Windows and macOS. For CUDA on Windows use an external Python with CUDA torch."
        )
    offline = () if bpy.app.online_access else (
        "Online access is off: allow it in Preferences > System > Network, or choose an "
        "external Python that has the packages.",
    )
    return (
        *offline,
        f"Installs the missing packages into {dependency_folder()}",
        "(used only by the worker process, never imported into Blender).",
        torch_line,
    )


class InstallTask(Task):
    """pip into the dependency folder, then a fresh check. Progress follows pip's stages (it
    prints no byte counts without a terminal): collecting, installing, checking."""

    title = "Installing Python packages"

    def __init__(self, command: list[str], log_path: str, check_env: tuple[str, list[str]],
                 requested: int) -> None:
        super().__init__()
        self.log_path = log_path
        self._python, self._pythonpath = check_env
        self._requested = requested
        self._seen = 0
        self._collected = 0
        self._check: CheckTask | None = None
        self.stage = "Starting pip"
        self._child = ChildProcess(command, pip_environment(), log_path, INSTALL_TIMEOUT_S)

    def step(self) -> bool:
        if self.result is not None:
            return True
        if self._check is not None:
            return self._step_check()
        code = self._child.poll()
        self._follow_log()
        if code is None:
            return False
        failure = self._child.failure("pip")
        if failure is not None:
            return self._finish(False, f"{failure} (full log: {self.log_path})")
        self.progress, self.stage = 0.9, "Checking the installed packages"
        self._check = CheckTask(self._python, worker_environment(self._pythonpath))
        return self._step_check()

    def cancel(self) -> None:
        self._child.cancel()
        if self._check is not None:
            self._check.cancel()

    def _step_check(self) -> bool:
        assert self._check is not None
        if not self._check.step():
            return False
        assert self._check.result is not None
        ok, message = self._check.result
        if ok:
            return self._finish(True, f"Installed; {message}")
        return self._finish(False, f"pip finished, but: {message} (log: {self.log_path})")

    def _follow_log(self) -> None:
        """Advance progress from pip's new log lines."""
        lines = self._child.output().splitlines()
        for line in lines[self._seen:]:
            text = line.strip()
            if text.startswith("Collecting "):
                self._collected += 1
                # Dependencies are unknown up front: approach 0.7 as packages are collected.
                done = self._collected / (self._collected + max(2, self._requested))
                self.progress = max(self.progress, 0.05 + 0.65 * done)
                self.stage = text
            elif text.startswith(("Downloading ", "Using cached ")):
                self.stage = text
            elif text.startswith("Installing collected packages"):
                self.progress, self.stage = 0.8, "Installing (unpacking into the folder)"
        self._seen = len(lines)


def start_install(prefs: Any) -> InstallTask:
    """Start pip for the missing packages (raises DependencyError with the reason it may not).
    Refusals come first, so a refused install starts no process at all."""
    _ensure_idle()
    problem = install_refusal(prefs)
    if problem is not None:
        raise DependencyError(problem)
    report = cached_report(prefs) or check(prefs)
    if report.error is not None:
        raise DependencyError(f"The package check failed, so nothing was installed: "
                              f"{report.error}")
    if not report.pip:
        raise DependencyError(
            f"pip is not available in {report.python}; set Worker Python to an external Python "
            "that has the packages instead"
        )
    missing = [p.requirement for p in report.missing]
    if not missing:
        raise NothingToInstall(f"Nothing to install: every package is present in {report.python}")
    logs = extension_user_folder("logs", create=True)
    constraints = os.path.join(logs, "constraints.txt")
    with atomic_open(constraints, "w", encoding="utf-8") as out:
        out.write("".join(f"{r.pin}\n" for r in REQUIREMENTS))
    python, pythonpath = worker_python(prefs)
    command = pip_install_command(
        python, dependency_folder(create=True), missing, prefs.device, constraints
    )
    log = os.path.join(logs, "pip-install.log")
    return _track(InstallTask(command, log, (python, pythonpath), len(missing)))


# ------------------------------------------------------------------ device


def resolve_device(prefs: Any, report: DependencyReport | None) -> tuple[str, str | None]:
    """(torch device for the worker, problem to show or None). Auto picks CUDA when the probe
    found a CUDA device, else the CPU."""
    cuda = report is not None and report.cuda_available
    if prefs.device == "CPU":
        return "cpu", None
    if prefs.device == "CUDA":
        if report is not None and report.error is None and not cuda:
            return "cuda", (
                f"CUDA is chosen but {report.python} has no CUDA device ({report.device_summary()}"
                "): choose an external Python with CUDA torch, or the device Auto or CPU"
            )
        return "cuda", None
    return ("cuda" if cuda else "cpu"), None
