"""SeFa: closed-form factorisation of a StyleGAN2's style affines (Shen & Zhou, CVPR 2021).

For a set of W+ indices, the style-affine weights A_l [Cin_l, w_dim] of the layers those
indices drive (index 0 -> b4.conv1, 2k-1 -> conv0 and 2k -> conv1 of the block at 2^(k+2),
the last index -> the final ToRGB; the intermediate ToRGBs are not factorised, like genforce)
are transposed, concatenated into M [w_dim, sum Cin], column-normalised, and the
eigenvectors of M M^T sorted by descending eigenvalue are the edit directions. An edit adds
alpha * direction to the same W+ rows. Results are cached per (model sha256, layers) in a
folder the caller names, in the project's artefact format (safetensors + JSON sidecar with
the weights' digest and the model's source digest); a cache hit returns exactly the arrays
of the first computation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoints.project_format import read_artifact, write_artifact
from .engine import offset_rows
from .errors import CheckpointError, NeuralError
from .stylegan2.config import StyleGAN2Config

CACHE_FORMAT = "nfr-sefa"
CACHE_VERSION = 1
# StyleGAN-paper groups by resolution pairs of W+ rows: coarse 4-8 px, middle 16-32 px,
# fine 64 px and up (0-3 / 4-7 / 8-17 at 1024; fine is empty for models of 32 px or less).
LAYER_GROUPS = ("coarse", "middle", "fine", "all")


class SefaError(NeuralError):
    """A SeFa layer selection is invalid, or a cache file is damaged."""


@dataclass(frozen=True)
class SefaFactors:
    """``directions`` [w_dim, w_dim] float32 (row j = unit direction j, by descending
    ``eigenvalues`` [w_dim] float32) for the W+ rows ``layers``."""

    directions: np.ndarray
    eigenvalues: np.ndarray
    layers: tuple[int, ...]


def affine_key(config: StyleGAN2Config, index: int) -> str:
    """NVIDIA state key of the style-affine weight that SeFa uses for W+ index ``index``."""
    if not 0 <= index < config.num_ws:
        raise SefaError(f"layer {index}: expected a W+ index in 0..{config.num_ws - 1}")
    if index == config.num_ws - 1:
        return f"synthesis.b{config.img_resolution}.torgb.affine.weight"
    if index == 0:
        return "synthesis.b4.conv1.affine.weight"
    k = (index + 1) // 2
    conv = "conv0" if index % 2 == 1 else "conv1"
    return f"synthesis.b{2 ** (k + 2)}.{conv}.affine.weight"


def parse_layers(spec: str, num_ws: int) -> tuple[int, ...]:
    """'coarse' | 'middle' | 'fine' | 'all' | ranges like '0-3,8' -> sorted unique W+ rows."""
    text = spec.strip().lower()
    groups = {
        "coarse": range(0, min(4, num_ws)),
        "middle": range(4, min(8, num_ws)),
        "fine": range(8, num_ws),
        "all": range(num_ws),
    }
    if text in groups:
        layers = tuple(groups[text])
        if not layers:
            raise SefaError(
                f"layers {spec!r}: the group is empty for a model with {num_ws} W+ rows "
                "(coarse 0-3, middle 4-7, fine 8+)"
            )
        return layers
    chosen: set[int] = set()
    for part in text.split(","):
        bounds = part.strip().split("-")
        try:
            lo, hi = (int(bounds[0]), int(bounds[-1])) if len(bounds) <= 2 else (None, None)
        except ValueError:
            lo = hi = None
        if lo is None or hi is None or lo > hi:
            raise SefaError(
                f"layers {spec!r}: expected one of {', '.join(LAYER_GROUPS)} or ranges like "
                f"'0-3,8', found the part {part.strip()!r}"
            )
        if lo < 0 or hi >= num_ws:
            raise SefaError(
                f"layers {spec!r}: {part.strip()} is outside 0..{num_ws - 1} (this model has "
                f"{num_ws} W+ rows)"
            )
        chosen.update(range(lo, hi + 1))
    return tuple(sorted(chosen))


def layers_tag(layers: tuple[int, ...]) -> str:
    """Canonical short form of a layer set: (0, 1, 2, 3, 8) -> '0-3_8'."""
    runs: list[str] = []
    start = prev = layers[0]
    for i in (*layers[1:], None):
        if i is not None and i == prev + 1:
            prev = i
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return "_".join(runs)


def style_matrix(
    config: StyleGAN2Config, state: dict[str, torch.Tensor], layers: tuple[int, ...]
) -> np.ndarray:
    """M [w_dim, sum Cin]: the selected affines transposed, concatenated, columns normalised."""
    blocks = [state[affine_key(config, i)].detach().cpu().double().numpy().T for i in layers]
    m = np.concatenate(blocks, axis=1)
    return m / np.linalg.norm(m, axis=0, keepdims=True)


def factorize(
    config: StyleGAN2Config, state: dict[str, torch.Tensor], layers: tuple[int, ...]
) -> SefaFactors:
    """Eigen-decomposition of M M^T, sorted by descending eigenvalue (float64 maths)."""
    if not layers:
        raise SefaError("no layers selected")
    m = style_matrix(config, state, layers)
    values, vectors = np.linalg.eigh(m @ m.T)
    order = np.argsort(values)[::-1]
    return SefaFactors(
        directions=np.ascontiguousarray(vectors[:, order].T, dtype=np.float32),
        eigenvalues=values[order].astype(np.float32),
        layers=tuple(layers),
    )


DEFAULT_CACHE_DIR_HELP = "no cache (factorise every time)"
"""What ``factorize_cached(cache_dir=None)`` does: nothing is written. The caller names the
folder: the add-on a folder under Blender's user extension folder, ``nfr sefa`` its
``--cache-dir`` (nothing is written to a user's home or ``~/.cache`` behind their back)."""


def cache_path(cache_dir: str | os.PathLike[str], sha256: str, layers: tuple[int, ...]) -> Path:
    """``<cache_dir>/sefa-<sha256 16>-<layers>.safetensors`` (+ its ``.json`` sidecar)."""
    return Path(cache_dir) / f"sefa-{sha256[:16]}-{layers_tag(layers)}.safetensors"


def _read_cache(path: Path, sha256: str, layers: tuple[int, ...]) -> SefaFactors | None:
    try:
        arrays, meta = read_artifact(path, CACHE_FORMAT, CACHE_VERSION, SefaError)
    except (SefaError, CheckpointError) as exc:
        raise SefaError(f"damaged SeFa cache: {exc}; delete it to recompute") from None
    if meta.get("source_sha256") != sha256 or meta.get("layers") != layers_tag(layers):
        return None  # another model or layer set under a colliding short name: recompute
    directions, eigenvalues = arrays.get("directions"), arrays.get("eigenvalues")
    if directions is None or eigenvalues is None:
        raise SefaError(f"{path}: damaged SeFa cache (expected directions and eigenvalues, "
                        f"found {sorted(arrays)}); delete it to recompute")
    return SefaFactors(directions.numpy(), eigenvalues.numpy(), layers)


def factorize_cached(
    config: StyleGAN2Config,
    state: dict[str, torch.Tensor],
    layers: tuple[int, ...],
    sha256: str,
    cache_dir: str | os.PathLike[str] | None = None,
) -> SefaFactors:
    """:func:`factorize`, memoised per (model sha256, layers) in ``cache_dir`` (created if
    missing) in the project's artefact format; ``cache_dir`` None computes without caching."""
    if cache_dir is None:
        return factorize(config, state, layers)
    path = cache_path(cache_dir, sha256, layers)
    if path.is_file():
        cached = _read_cache(path, sha256, layers)
        if cached is not None:
            return cached
    factors = factorize(config, state, layers)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_artifact(
        path, {"directions": factors.directions, "eigenvalues": factors.eigenvalues},
        {"source_sha256": sha256, "layers": layers_tag(layers)}, CACHE_FORMAT, CACHE_VERSION,
    )
    return factors


def apply_direction(
    ws: torch.Tensor, direction: np.ndarray | torch.Tensor, layers: tuple[int, ...], alpha: float
) -> torch.Tensor:
    """A copy of W+ [N, num_ws, w_dim] with ``alpha * direction`` added to rows ``layers``."""
    offset = torch.as_tensor(np.asarray(direction, dtype=np.float32)) * float(alpha)
    return offset_rows(ws, offset, layers)
