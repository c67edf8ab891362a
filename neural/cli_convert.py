"""`nfr convert` (any supported StyleGAN2 checkpoint -> the project's safetensors + JSON) and
`nfr sefa` (SeFa directions of a generator, shown as a labelled contact sheet)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..rig.atomic import atomic_open
from .checkpoints import load_generator, save_project
from .checkpoints.project_format import WEIGHTS_SUFFIX
from .engine import StyleGAN2Engine
from .errors import NeuralError
from .images import to_srgb_uint
from .sefa import LAYER_GROUPS, SefaFactors, apply_direction, factorize_cached, parse_layers

if TYPE_CHECKING:
    from PIL import Image

SHEET_STEPS = 7
SHEET_MAX_ALPHA = 3.0
SHEET_TILE_RES = 128
LABEL_WIDTH = 120
HEADER_HEIGHT = 18


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``convert`` and ``sefa`` on the `nfr` sub-parser."""
    convert = sub.add_parser(
        "convert",
        help="convert a StyleGAN2 checkpoint to the project's .safetensors + .json",
        description="Read an NVIDIA (.pkl, PyTorch or TensorFlow), rosinality or e4e "
        "checkpoint safely (no embedded code runs) and write DST.safetensors + DST.json.",
    )
    convert.add_argument("src", type=Path, help="checkpoint to convert (format from content)")
    convert.add_argument("dst", type=Path, help=f"output weights (*{WEIGHTS_SUFFIX})")
    convert.set_defaults(handler=run_convert)

    sefa = sub.add_parser(
        "sefa",
        help="closed-form SeFa directions of a generator, as a contact sheet",
        description="Factorise the style affines of the chosen W+ rows (SeFa) and render the "
        f"top K directions at {SHEET_STEPS} steps from -{SHEET_MAX_ALPHA:g} to "
        f"+{SHEET_MAX_ALPHA:g}.",
    )
    sefa.add_argument("--weights", type=Path, required=True, help="generator checkpoint")
    sefa.add_argument("--layers", default="all",
                      help=f"W+ rows: {', '.join(LAYER_GROUPS)} or ranges like 0-3,8")
    sefa.add_argument("--k", type=int, default=8, help="number of directions (default 8)")
    sefa.add_argument("--sheet", type=Path, required=True, help="contact sheet PNG to write")
    sefa.add_argument("--seed", type=int, default=0, help="seed of the base face (default 0)")
    sefa.add_argument("--psi", type=float, default=0.7, help="truncation psi (default 0.7)")
    sefa.add_argument("--res", type=int, default=SHEET_TILE_RES,
                      help=f"tile resolution, a block of the model (default {SHEET_TILE_RES})")
    sefa.add_argument("--device", default="cpu", help="torch device (default cpu)")
    sefa.add_argument("--cache-dir", type=Path, default=None,
                      help="folder to cache the factorisation in (default: no cache, "
                           "nothing written)")
    sefa.set_defaults(handler=run_sefa)


def run_convert(args: argparse.Namespace) -> int:
    dst: Path = args.dst
    if dst.suffix == "":
        dst = dst.with_suffix(WEIGHTS_SUFFIX)
    elif dst.suffix != WEIGHTS_SUFFIX:
        raise NeuralError(f"{dst}: the output must be a *{WEIGHTS_SUFFIX} file")
    # DiscoFaceGAN's StyleGAN1 pickle has its own generator; imported here because cli_dfg
    # imports this module.
    from .discofacegan.tf_reader import is_stylegan1_tf_pickle

    if is_stylegan1_tf_pickle(args.src):
        from .cli_dfg import convert

        return convert(args.src, dst)
    loaded = load_generator(args.src)
    sidecar = save_project(loaded, dst)
    c = loaded.config
    print(f"{args.src}: {loaded.source_format}, {c.img_resolution} px, {c.num_ws} W+ rows, "
          f"{c.mapping_layers} mapping layers, sha256 {loaded.sha256[:16]}")
    if "w_avg_source" in loaded.extras:
        print(f"  w_avg: {loaded.extras['w_avg_source']}")
    print(f"wrote {dst} and {sidecar}")
    return 0


def contact_sheet(
    tiles: np.ndarray, row_labels: list[str], column_labels: list[str]
) -> Image.Image:
    """tiles uint8 [rows, cols, H, W, 3] -> a PIL image with a label column and header row."""
    from PIL import Image, ImageDraw

    rows, cols, h, w, _ = tiles.shape
    sheet = Image.new("RGB", (LABEL_WIDTH + cols * w, HEADER_HEIGHT + rows * h), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 3), "alpha:", fill="black")
    for c, label in enumerate(column_labels):
        draw.text((LABEL_WIDTH + c * w + 4, 3), label, fill="black")
    for r, label in enumerate(row_labels):
        draw.text((4, HEADER_HEIGHT + r * h + h // 2 - 12), label, fill="black")
        for c in range(cols):
            corner = (LABEL_WIDTH + c * w, HEADER_HEIGHT + r * h)
            sheet.paste(Image.fromarray(tiles[r, c]), corner)
    return sheet


def render_sheet_tiles(
    engine: StyleGAN2Engine,
    base_ws: torch.Tensor,
    factors: SefaFactors,
    k: int,
    alphas: np.ndarray,
    res: int,
) -> np.ndarray:
    """uint8 [k, len(alphas), res, res, 3]: base_ws [1, num_ws, w_dim] edited along each of the
    top ``k`` directions; the skip image of block ``res`` (a low-resolution preview)."""
    tiles = np.zeros((k, len(alphas), res, res, 3), dtype=np.uint8)
    for j in range(k):
        for i, alpha in enumerate(alphas):
            ws = apply_direction(base_ws, factors.directions[j], factors.layers, float(alpha))
            tiles[j, i] = to_srgb_uint(engine.synthesize(ws, stop_res=res))
    return tiles


def run_sefa(args: argparse.Namespace) -> int:
    loaded = load_generator(args.weights)
    config = loaded.config
    layers = parse_layers(args.layers, config.num_ws)
    if not 1 <= args.k <= config.w_dim:
        raise NeuralError(f"--k: expected 1..{config.w_dim}, found {args.k}")
    if args.res not in config.block_resolutions:
        raise NeuralError(
            f"--res: expected a block resolution of this model "
            f"({', '.join(map(str, config.block_resolutions))}), found {args.res}"
        )
    factors = factorize_cached(config, loaded.state_dict, layers, loaded.sha256, args.cache_dir)
    engine = StyleGAN2Engine.from_state_dict(config, loaded.state_dict, device=args.device)
    base = engine.w_from_seed(args.seed, psi=args.psi)
    alphas = np.linspace(-SHEET_MAX_ALPHA, SHEET_MAX_ALPHA, SHEET_STEPS)
    tiles = render_sheet_tiles(engine, base, factors, args.k, alphas, args.res)
    rows = [f"#{j}  ev {factors.eigenvalues[j]:.3g}" for j in range(args.k)]
    sheet = contact_sheet(tiles, rows, [f"{a:+g}" for a in alphas])
    with atomic_open(args.sheet, "wb") as out:
        sheet.save(out, format="PNG")
    total = float(factors.eigenvalues.sum())
    print(f"SeFa on W+ rows {','.join(map(str, layers))} of {args.weights} "
          f"({config.img_resolution} px):")
    for j in range(args.k):
        share = factors.eigenvalues[j] / total if total else 0.0
        print(f"  direction {j}: eigenvalue {factors.eigenvalues[j]:.4g} ({share:.1%})")
    print(f"wrote {args.sheet} ({args.k} directions x {SHEET_STEPS} steps, {args.res} px tiles)")
    return 0
