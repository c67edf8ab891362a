"""`nfr generate` (seed / z / W+ -> image) and `nfr info` (what a generator checkpoint holds)."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np
import torch

from ..rig.atomic import atomic_open
from ..rig.file_limits import open_regular_file
from .checkpoints import load_generator
from .engine import StyleGAN2Engine, configure_inference_process
from .errors import NeuralError
from .images import write_png
from .stylegan2.generator import NOISE_MODES, PRECISIONS


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``generate`` and ``info`` on the `nfr` sub-parser."""
    gen = sub.add_parser(
        "generate",
        help="render a face from a seed, a z or a W+ with a StyleGAN2 checkpoint",
        description="Render with any supported StyleGAN2 checkpoint. The latent comes from "
        "--seed (NVIDIA's convention), --z FILE.npy ([z_dim] or [N, z_dim]) or --w FILE.npy "
        "([w_dim], [num_ws, w_dim], [N, 1, w_dim] or [N, num_ws, w_dim]).",
    )
    gen.add_argument("--weights", type=Path, required=True, help="generator checkpoint")
    src = gen.add_mutually_exclusive_group(required=True)
    src.add_argument("--seed", type=int, help="seed: z = RandomState(seed).randn(1, z_dim)")
    src.add_argument("--z", type=Path, help="z latents (.npy)")
    src.add_argument("--w", type=Path, help="w / W+ latents (.npy)")
    gen.add_argument("--class", dest="class_index", type=int, default=None, metavar="N",
                     help="class label of a conditional model (c_dim > 0): one-hot c with "
                     "c[N] = 1, for --seed / --z")
    gen.add_argument("--psi", type=float, default=1.0, help="truncation psi (default 1)")
    gen.add_argument("--cutoff", type=int, default=None,
                     help="truncate only W+ rows below this index (default: all)")
    gen.add_argument("--res", type=int, default=None,
                     help="stop at this block resolution (progressive preview; default full)")
    gen.add_argument("--noise", choices=NOISE_MODES, default="const",
                     help="noise inputs (default const: the checkpoint's fixed noise)")
    gen.add_argument("--noise-seed", type=int, default=0, help="seed of --noise random")
    gen.add_argument("--precision", choices=PRECISIONS, default=None,
                     help="fp32 (CPU default), fp16 (CUDA), bf16 (CPUs with native bf16)")
    gen.add_argument("--device", default="cpu", help="torch device (default cpu)")
    gen.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    gen.add_argument("--out", type=Path, help="PNG to write (N > 1: NAME_0000.png, ...)")
    gen.add_argument("--out-npy", type=Path, help="float32 NCHW images in [-1, 1] (.npy)")
    gen.set_defaults(handler=run_generate)

    info = sub.add_parser("info", help="describe a StyleGAN2 checkpoint")
    info.add_argument("--weights", type=Path, required=True, help="generator checkpoint")
    info.set_defaults(handler=run_info)


def run_generate(args: argparse.Namespace) -> int:
    if args.out is None and args.out_npy is None:
        raise NeuralError("nothing to write: give --out IMAGE.png and/or --out-npy FILE.npy")
    configure_inference_process(args.threads)
    loaded = load_generator(args.weights)
    engine = StyleGAN2Engine.from_state_dict(
        loaded.config,
        loaded.state_dict,
        args.device,
        precision=args.precision,
        noise_mode=args.noise,
        noise_seed=args.noise_seed,
        cache=False,
    )
    ws = _latents(engine, args, _label(loaded.config.c_dim, args))
    images = engine.synthesize(ws, stop_res=args.res)
    if args.out_npy is not None:
        with atomic_open(args.out_npy, "wb") as f:
            np.save(f, images.cpu().numpy().astype(np.float32))
        print(f"wrote {args.out_npy} {list(images.shape)}")
    if args.out is not None:
        for path, image in zip(_image_paths(args.out, len(images)), images, strict=True):
            write_png(image, path)
            print(f"wrote {path}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    loaded = load_generator(args.weights)
    c = loaded.config
    params = sum(
        v.numel() for k, v in loaded.state_dict.items()
        if not k.endswith(("noise_const", "resample_filter", "w_avg"))
    )
    print(f"{args.weights}")
    print(f"  format         {loaded.source_format}")
    print(f"  sha256         {loaded.sha256}")
    print(f"  resolution     {c.img_resolution} px, {c.img_channels} channels, "
          f"{c.num_ws} W+ rows")
    print(f"  latents        z {c.z_dim}, w {c.w_dim}, c {c.c_dim}; "
          f"{c.mapping_layers} mapping layers (lr x{c.mapping_lr_multiplier:g})")
    print("  channels       " + ", ".join(f"{r}:{c.channels(r)}" for r in c.block_resolutions))
    print(f"  fp16 blocks    {[r for r in c.block_resolutions if c.uses_fp16(r)] or 'none'}, "
          f"conv_clamp {c.conv_clamp}")
    print(f"  activations    mapping {c.mapping_activation}, synthesis "
          f"{c.synthesis_activation}; FIR {list(c.resample_kernel)}")
    print(f"  parameters     {params:,}")
    for key, value in sorted(loaded.extras.items()):
        print(f"  {key:<15}{value}")
    return 0


def _label(c_dim: int, args: argparse.Namespace) -> int | None:
    """The checked ``--class`` index (None for an unconditional model)."""
    index = args.class_index
    weights = args.weights
    if c_dim == 0:
        if index is not None:
            raise NeuralError(f"{weights}: --class {index}: this generator is unconditional "
                              "(c_dim 0) and takes no class label")
        return None
    if args.w is not None:
        if index is not None:
            raise NeuralError("--class applies to --seed / --z: a W+ file already carries "
                              "its label")
        return None
    if index is None:
        raise NeuralError(f"{weights}: this generator is conditional (c_dim {c_dim}): "
                          f"give --class N with 0 <= N < {c_dim}")
    if not 0 <= index < c_dim:
        raise NeuralError(f"{weights}: --class {index} is out of range: this generator has "
                          f"{c_dim} classes (0 <= N < {c_dim})")
    return index


def _one_hot(index: int | None, count: int, c_dim: int) -> torch.Tensor | None:
    """[count, c_dim] one-hot rows for class ``index`` (None: no label)."""
    if index is None:
        return None
    c = torch.zeros(count, c_dim)
    c[:, index] = 1.0
    return c


def _latents(
    engine: StyleGAN2Engine, args: argparse.Namespace, label: int | None = None
) -> torch.Tensor:
    cfg = engine.config
    if args.seed is not None:
        z = engine.z_from_seed(args.seed)
        return engine.map(z, _one_hot(label, 1, cfg.c_dim), psi=args.psi, cutoff=args.cutoff)
    path: Path = args.z if args.z is not None else args.w
    array = _read_npy(path)
    if args.z is not None:
        if array.ndim == 1:
            array = array[None]
        if array.ndim != 2 or array.shape[1] != cfg.z_dim:
            raise NeuralError(
                f"{path}: expected z of shape [{cfg.z_dim}] or [N, {cfg.z_dim}], "
                f"found {list(array.shape)}"
            )
        c = _one_hot(label, array.shape[0], cfg.c_dim)
        return engine.map(torch.from_numpy(array), c, psi=args.psi, cutoff=args.cutoff)
    shape = array.shape
    if array.ndim == 1 and shape == (cfg.w_dim,):
        array = array[None, None]
    elif array.ndim == 2 and shape == (cfg.num_ws, cfg.w_dim):
        array = array[None]
    if array.ndim != 3 or array.shape[1] not in (1, cfg.num_ws) or array.shape[2] != cfg.w_dim:
        raise NeuralError(
            f"{path}: expected w of shape [{cfg.w_dim}], [{cfg.num_ws}, {cfg.w_dim}], "
            f"[N, 1, {cfg.w_dim}] or [N, {cfg.num_ws}, {cfg.w_dim}], found {list(shape)}"
        )
    ws = torch.from_numpy(array).repeat(1, cfg.num_ws // array.shape[1], 1)
    return engine.truncate(ws, args.psi, args.cutoff) if args.psi != 1.0 else ws


LATENT_FILE_MAX_BYTES = 64 << 20
"""A latent file holds z or W+ vectors: 64 MiB is ~1800 W+ codes of FFHQ-1024, far beyond
a batch anyone renders from the command line."""


_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0,
}


def _read_npy(path: Path) -> np.ndarray:
    """A float ``.npy`` array, its header checked against the bytes the file holds before
    anything is allocated."""
    with open_regular_file(path, "latent .npy file", LATENT_FILE_MAX_BYTES, NeuralError) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version not in _NPY_HEADER_READERS:
                raise ValueError(f".npy format version {version}, expected 1.0 or 2.0")
            shape, fortran, dtype = _NPY_HEADER_READERS[version](f)
        except (OSError, ValueError) as exc:
            raise NeuralError(f"{path}: not a readable .npy array ({exc})") from None
        if dtype.hasobject:
            raise NeuralError(f"{path}: expected a float array, found dtype {dtype}")
        expected = math.prod(int(n) for n in shape) * dtype.itemsize  # Python ints: no overflow
        present = os.fstat(f.fileno()).st_size - f.tell()
        if expected != present:
            raise NeuralError(
                f"{path}: the .npy header declares shape {list(shape)} of {dtype} "
                f"({expected} bytes), found {present} bytes of data"
            )
        data = f.read(present)
    flat = np.frombuffer(data, dtype=dtype)
    array = flat.reshape(shape, order="F") if fortran else flat.reshape(shape)
    if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
        raise NeuralError(f"{path}: expected finite floats, found dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _image_paths(out: Path, count: int) -> list[Path]:
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i:04d}{out.suffix}") for i in range(count)]

