"""The contract package: one catalogue of backends and vocabularies, the add-on importing it
and never ``neural`` (so never torch), and the latest-wins rule."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from neural_face_rig.contract import catalogue
from neural_face_rig.contract.errors import ContractError
from neural_face_rig.contract.latest import LatestWins, obsolete
from neural_face_rig.neural.backends import BACKEND_LOADERS
from neural_face_rig.neural.stylerig.rignet import CONTROL_GROUPS
from neural_face_rig.rig.params import GROUP_NAMES

REPO = Path(__file__).resolve().parents[1]
ADDON_FOLDERS = ("blender_addon", "operators", "panels")
DEV_ONLY = {"bench_stage", "demo_stage"}  # benchmark/demo drivers, not part of the user zip


def _addon_modules() -> list[str]:
    names = []
    for folder, package in (("blender_addon", "neural_face_rig"),
                            ("operators", "neural_face_rig.operators"),
                            ("panels", "neural_face_rig.panels")):
        for path in sorted((REPO / folder).glob("*.py")):
            if path.stem in DEV_ONLY:
                continue
            names.append(package if path.stem == "__init__" else f"{package}.{path.stem}")
    return names


def test_the_add_on_imports_with_neural_and_torch_blocked() -> None:
    """Every add-on module imports in a process where ``neural`` and ``torch`` cannot be
    imported at all: the add-on's side needs only the contract, rig and bpy."""
    script = textwrap.dedent(f"""
        import importlib, importlib.abc, sys

        class Blocked(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch.") or \\
                        name.startswith("neural_face_rig.neural"):
                    raise ImportError(f"blocked in Blender's process: {{name}}")
                return None

        sys.meta_path.insert(0, Blocked())
        import bpy  # noqa: F401
        for name in {_addon_modules()!r}:
            importlib.import_module(name)
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.",
                        "neural_face_rig.neural")))
        assert not loaded, loaded
        print("ok", len({_addon_modules()!r}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[0] == "ok"


def test_no_add_on_source_names_the_neural_package() -> None:
    """Not even a lazy import inside a function: the static import graph is contract <-
    add-on, never neural <- add-on."""
    offenders = []
    for folder in ADDON_FOLDERS:
        for path in sorted((REPO / folder).glob("*.py")):
            if path.stem in DEV_ONLY:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom):
                    module = node.module or ""
                    if module == "neural" or module.startswith("neural.") or module in (
                            "torch",) or module.startswith("torch."):
                        offenders.append(f"{path.name}:{node.lineno} from {'.' * node.level}"
                                         f"{module}")
                elif isinstance(node, ast.Import):
                    offenders += [f"{path.name}:{node.lineno} import {a.name}"
                                  for a in node.names if a.name.split(".")[0] == "torch"]
    assert not offenders


def test_contract_imports_only_stdlib_and_numpy() -> None:
    allowed = set(sys.stdlib_module_names) | {"numpy"}
    for path in sorted((REPO / "contract").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {(node.module or "").split(".")[0]}
            elif isinstance(node, ast.ImportFrom):
                roots = set() if node.level == 1 else {"<outside the contract>"}
            else:
                continue
            assert roots <= allowed, f"{path.name}: imports {roots - allowed}"


def test_the_catalogue_matches_the_rig_the_registry_and_the_rignet() -> None:
    assert set(BACKEND_LOADERS) == set(catalogue.BACKENDS)
    assert catalogue.RIG_GROUPS == GROUP_NAMES
    assert catalogue.CONTROLS == CONTROL_GROUPS
    for spec in catalogue.BACKENDS.values():
        assert spec.files[0] == catalogue.ROLE_GENERATOR
        assert set(spec.roles) <= set(catalogue.FILE_ROLES)
        assert set(spec.groups) <= set(GROUP_NAMES)
        assert set(spec.controls) <= set(catalogue.CONTROLS)
    stylerig = catalogue.backend("stylerig")
    assert catalogue.ROLE_RIGNET in stylerig.files and stylerig.estimate
    assert not catalogue.backend("stylegan2").estimate
    assert catalogue.backend("discofacegan").default_resolution == 256
    with pytest.raises(ContractError, match="expected one of stylegan2, discofacegan, stylerig"):
        catalogue.backend("stylegan3")


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1"])
def test_devices_of_the_vocabulary_pass(device: str) -> None:
    assert catalogue.check_device(device) == device


@pytest.mark.parametrize("device", ["tpu", "cpu:0", "cuda:x", "cuda:" + "9" * 5000, 3, None])
def test_other_devices_are_refused_by_name(device) -> None:
    with pytest.raises(ContractError, match="expected 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        catalogue.check_device(device)


def test_device_menu_items_map_onto_the_vocabulary() -> None:
    assert [catalogue.device_from_item(i[0]) for i in catalogue.DEVICE_ITEMS] == list(
        catalogue.DEVICES)


def test_latest_wins_keeps_the_newest_per_key_and_refuses_stale_items() -> None:
    box: LatestWins[str] = LatestWins()
    assert box.put("face", 1, "a") == (True, None)
    assert box.put("other", 2, "b") == (True, None)
    assert box.put("face", 3, "c") == (True, "a")  # displaced: its sender cancels it
    assert box.put("face", 2, "late") == (False, None)  # older than what is held
    assert box.keys() == ["other", "face"]  # a replaced key moves to the end
    assert box.pop_oldest() == ("other", "b")
    assert box.take_all() == ["c"] and len(box) == 0
    assert obsolete({1: "face", 2: "other", 4: "face", 6: "face"}, "face", 4) == [1, 4]
