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
