"""Test isolation: Blender, torch and friends write caches under HOME by default. Point every
one of them into a per-session temporary directory before anything imports bpy or torch."""

import os
import tempfile

_ROOT = tempfile.mkdtemp(prefix="nfr-tests-")
for _var, _sub in {
    "HOME": "home",
    "BLENDER_USER_RESOURCES": "blender",
    "TORCH_HOME": "torch",
    "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "XDG_CACHE_HOME": "cache",
    "XDG_CONFIG_HOME": "config",
    "MPLCONFIGDIR": "mpl",
    "NUMBA_CACHE_DIR": "numba",
}.items():
    _path = os.path.join(_ROOT, _sub)
    os.makedirs(_path, exist_ok=True)
    os.environ[_var] = _path

import re  # noqa: E402  (the environment above must be set before any other import)
import sys  # noqa: E402

import pytest  # noqa: E402

# Blender-side tests: real bpy. `make test` runs them on every Blender version of its matrix
# (the main venv's bpy and each .venv-blender-<version>).
_BPY_FILES = re.compile(r"^test_.*_bpy\.py$|^test_extension_install\.py$")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "bpy: a Blender-side test (real bpy), run on every Blender version of "
        "'make test' (files test_*_bpy.py and test_extension_install.py are marked "
        "automatically)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _BPY_FILES.match(item.path.name):
            item.add_marker(pytest.mark.bpy)


_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """bpy 4.2 and 4.5 as a Python module crash (4.2: SIGSEGV) or hang (4.5) while Python
    shuts down if a property with a Python update callback was ever registered (any add-on's;
    5.0+ do not). Blender itself never gets there: it disables add-ons before it exits. So on
    those versions the test process ends here, once pytest has reported everything, with
    pytest's own exit status."""
    bpy = sys.modules.get("bpy")
    if bpy is not None and bpy.app.version < (5, 0, 0):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status)
