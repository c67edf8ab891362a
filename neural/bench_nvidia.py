"""``nfr bench --suite stylegan2 --nvidia-repo DIR``: NVIDIA's reference StyleGAN2 synthesis
timed against the project's on the same weights, in the same run.

DIR is the user's own checkout of NVIDIA's code (nothing of it lives in this project, nothing
is fetched): https://github.com/NVlabs/stylegan2-ada-pytorch (``training/networks.py``,
Generator kwargs nested as ``mapping_kwargs`` / ``synthesis_kwargs``) or
https://github.com/NVlabs/stylegan3 (``training/networks_stylegan2.py``, synthesis kwargs
flat). NVIDIA's ``Generator`` is built with the kwargs equivalent to our config, given our
random state dict with a strict load (every parameter and buffer), and
``G.synthesis(ws, noise_mode='const', force_fp32=True)`` is timed against our engine's
``synthesize(ws)`` in interleaved rounds, batch 1, fp32, on the CPU. There NVIDIA's custom
ops (bias_act, upfirdn2d) take their reference (plain torch) paths by their own choice; their
``conv2d_gradfix`` is off by default and only matters for CUDA training. NVIDIA's files are
used unmodified.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from .bench_baseline import Synthesis, inference
from .bench_timing import interleaved_best_ms
from .engine import StyleGAN2Engine
from .errors import NeuralError
from .stylegan2.config import StyleGAN2Config, shape_mismatch
from .stylegan2.generator import random_state_dict

NVIDIA_URL = "https://github.com/NVlabs/stylegan2-ada-pytorch"
ENV_VAR = "NFR_NVIDIA_REPO"
# Where each repository keeps StyleGAN2 -> how its Generator takes the synthesis kwargs.
NETWORK_FILES = {
    "training/networks.py": "nested",  # stylegan2-ada-pytorch
    "training/networks_stylegan2.py": "flat",  # stylegan3
}
# NVIDIA's top-level packages; networks.py imports torch_utils, which imports dnnlib.
_PACKAGES = ("training", "torch_utils", "dnnlib")
NOT_RUN = (
    f"not run: pass --nvidia-repo DIR (or set {ENV_VAR}) with a checkout of {NVIDIA_URL} "
    "(or NVlabs/stylegan3) to time NVIDIA's reference synthesis on the same weights"
)


class NvidiaRepoError(NeuralError):
    """The NVIDIA checkout given to ``nfr bench`` is missing, incomplete or does not run."""


@dataclass(frozen=True)
class NvidiaRepo:
    """A checkout of NVIDIA's code: its folder, the StyleGAN2 file used (relative path), how
    that file's Generator takes kwargs ("nested" or "flat"), the module it defines and every
    module of NVIDIA's packages the import loaded (by name)."""

    root: Path
    file: str
    layout: str
    networks: ModuleType
    modules: Mapping[str, ModuleType]

    @contextmanager
    def active(self) -> Iterator[None]:
        """NVIDIA's modules in ``sys.modules`` (their persistence checks pickle every module
        they construct, which looks the classes up there by name)."""
        with _own_packages(self.modules):
            yield


def open_repo(root: Path | str) -> NvidiaRepo:
    """Check ``root`` and import its StyleGAN2 networks module (``NvidiaRepoError`` naming
    the folder or file, what was expected and what was found)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        found = "a file" if root.exists() else "nothing"
        raise NvidiaRepoError(
            f"{root}: expected a checkout of NVIDIA's StyleGAN2 code ({NVIDIA_URL}), found {found}"
        )
    found_files = [name for name in NETWORK_FILES if (root / name).is_file()]
    if not found_files:
        raise NvidiaRepoError(
            f"{root}: expected {' or '.join(NETWORK_FILES)} (a checkout of {NVIDIA_URL} or "
            "NVlabs/stylegan3), found neither"
        )
    file = found_files[0]
    missing = [p for p in _PACKAGES[1:] if not (root / p / "__init__.py").is_file()]
    if missing:
        raise NvidiaRepoError(
            f"{root}: {file} needs the packages {' and '.join(_PACKAGES[1:])} of the same "
            f"checkout, found no {' or '.join(p + '/__init__.py' for p in missing)}"
        )
    module, modules = _import(root, file)
    if not isinstance(getattr(module, "Generator", None), type):
        raise NvidiaRepoError(f"{root / file}: expected a class Generator, found none")
    return NvidiaRepo(root, file, NETWORK_FILES[file], module, modules)


def _is_nvidia_name(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in _PACKAGES)


@contextmanager
def _own_packages(
    modules: Mapping[str, ModuleType], path: Path | None = None
) -> Iterator[dict[str, ModuleType]]:
    """``sys.modules`` holding exactly ``modules`` under NVIDIA's package names
    (``training``, ``torch_utils``, ``dnnlib``; the process's own modules of those names set
    aside), and ``path`` first on sys.path when given. Yields a dict that, on exit, holds
    every module of those names then present (what an import inside loaded); the process's
    own modules come back."""
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if _is_nvidia_name(name)}
    sys.modules.update(modules)
    if path is not None:
        sys.path.insert(0, str(path))
    loaded: dict[str, ModuleType] = {}
    try:
        yield loaded
    finally:
        if path is not None:
            sys.path.remove(str(path))
        for name in [n for n in sys.modules if _is_nvidia_name(n)]:
            loaded[name] = sys.modules.pop(name)
        sys.modules.update(saved)


def _import(root: Path, file: str) -> tuple[ModuleType, dict[str, ModuleType]]:
    name = file.removesuffix(".py").replace("/", ".")
    with _own_packages({}, root) as loaded:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # their code, any failure: name the file and the reason
            raise NvidiaRepoError(
                f"{root / file}: importing it failed ({type(exc).__name__}: {exc})"
            ) from exc
    where = Path(module.__file__ or "").resolve()
    if where != (root / file).resolve():
        raise NvidiaRepoError(f"{root / file}: importing {name} loaded {where} instead")
    return module, loaded


def repo_commit(root: Path) -> str:
    """The commit ``root`` has checked out (with "+modified" if tracked files differ from it),
    or "unknown" when ``root`` is not the top of a git work tree (or git is missing)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=30, check=True)
        return done.stdout.strip()

    try:
        # A plain folder inside some other work tree must not report that tree's commit.
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return "unknown"
        commit = git("rev-parse", "HEAD")
        return commit + ("+modified" if git("status", "--porcelain", "-uno") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def generator_kwargs(config: StyleGAN2Config, layout: str) -> dict[str, Any]:
    """NVIDIA ``Generator(**kwargs)`` building ``config``'s architecture; every option is
    passed explicitly, since the two repositories' defaults differ (stylegan3's conv_clamp
    256, num_fp16_res 4, w_avg_beta 0.998)."""
    c = config
    mapping = {"num_layers": c.mapping_layers, "activation": c.mapping_activation,
               "lr_multiplier": c.mapping_lr_multiplier, "w_avg_beta": c.w_avg_beta}
    synthesis = {"channel_base": c.channel_base, "channel_max": c.channel_max,
                 "num_fp16_res": c.num_fp16_res, "architecture": c.architecture,
                 "resample_filter": list(c.resample_kernel), "conv_clamp": c.conv_clamp,
                 "activation": c.synthesis_activation}
    kwargs: dict[str, Any] = {"z_dim": c.z_dim, "c_dim": c.c_dim, "w_dim": c.w_dim,
                              "img_resolution": c.img_resolution,
                              "img_channels": c.img_channels, "mapping_kwargs": mapping}
    if layout == "nested":
        kwargs["synthesis_kwargs"] = synthesis
    else:
        kwargs.update(synthesis)
    return kwargs


def nvidia_generator(
    repo: NvidiaRepo, config: StyleGAN2Config, state: Mapping[str, torch.Tensor]
) -> torch.nn.Module:
    """NVIDIA's Generator of ``config`` holding ``state`` (every key and shape must match its
    own state dict, buffers included), in eval mode without gradients."""
    where = repo.root / repo.file
    try:
        gen = repo.networks.Generator(**generator_kwargs(config, repo.layout))
    except Exception as exc:
        raise NvidiaRepoError(
            f"{where}: Generator of {config.img_resolution} px failed to build "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    theirs = {k: tuple(v.shape) for k, v in gen.state_dict().items()}
    problems = shape_mismatch(theirs, state)
    if problems:
        raise NvidiaRepoError(f"{where}: its Generator's state dict differs from ours: {problems}")
    gen.load_state_dict(dict(state), strict=True)
    return gen.eval().requires_grad_(False)


def reference_synthesis(repo: NvidiaRepo, gen: torch.nn.Module) -> Synthesis:
    """NVIDIA's own inference call on ``gen`` (noise_const buffers, every block float32),
    without autograd; a failure of their code on this torch is an ``NvidiaRepoError``."""

    synthesis: Any = gen.synthesis  # NVIDIA's SynthesisNetwork (untyped code)

    def run(ws: torch.Tensor) -> torch.Tensor:
        try:
            return synthesis(ws, noise_mode="const", force_fp32=True)
        except Exception as exc:
            raise NvidiaRepoError(
                f"{repo.root / repo.file}: NVIDIA's synthesis failed on torch "
                f"{torch.__version__} ({type(exc).__name__}: {exc})"
            ) from exc

    return inference(run)


def compare_with_nvidia(
    report: Any, prefix: str, ours: Synthesis, theirs: Synthesis, ws: torch.Tensor,
    rounds: int = 4,
) -> None:
    """Fidelity, then ``rounds`` interleaved timings of ``ours`` and ``theirs`` on ``ws``
    (each keeps its best: the machine may be shared): ``{prefix}_nvidia_ms``,
    ``{prefix}_vs_nvidia_ours_ms``, ``{prefix}_vs_nvidia_speedup`` (NVIDIA ms / ours) and
    ``{prefix}_vs_nvidia_max_abs_diff``."""
    mine, ref = ours(ws), theirs(ws)  # also the warm-up of both
    report.add(f"{prefix}_vs_nvidia_max_abs_diff", float((mine - ref).abs().max()), "abs")
    report.notes[f"{prefix}_vs_nvidia_image_range"] = [float(ref.min()), float(ref.max())]
    best = interleaved_best_ms({"ours": partial(ours, ws), "nvidia": partial(theirs, ws)},
                               rounds)
    report.add(f"{prefix}_nvidia_ms", best["nvidia"], "ms")
    report.add(f"{prefix}_vs_nvidia_ours_ms", best["ours"], "ms")
    report.add(f"{prefix}_vs_nvidia_speedup", best["nvidia"] / best["ours"], "x faster")


def run(
    report: Any,
    repo: NvidiaRepo,
    models: Mapping[str, StyleGAN2Config],
    engine: Callable[[StyleGAN2Config], StyleGAN2Engine],
) -> None:
    """For each ``prefix -> config`` of ``models``: our uncached fp32 ``engine(config)`` and
    NVIDIA's Generator from ``repo`` on the same random weights (``random_state_dict(config,
    0)``), W+ of seed 1 at psi 0.7, compared with ``compare_with_nvidia``."""
    note: dict[str, Any] = {
        "repo": str(repo.root), "file": repo.file, "commit": repo_commit(repo.root),
        "call": "G.synthesis(ws, noise_mode='const', force_fp32=True)",
        "threads": torch.get_num_threads(), "load_average_before": _load_average(),
    }
    report.notes["stylegan2_nvidia"] = note
    for prefix, config in models.items():
        ours = engine(config)
        ws = ours.w_from_seed(1, psi=0.7)
        with repo.active():
            theirs = nvidia_generator(repo, config, random_state_dict(config, seed=0))
            nvidia = reference_synthesis(repo, theirs)
            compare_with_nvidia(report, prefix, ours.synthesize, nvidia, ws)
    note["load_average_after"] = _load_average()


def _load_average() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
