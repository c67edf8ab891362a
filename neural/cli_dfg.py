"""`nfr dfg ...`: DiscoFaceGAN tools.

- ``average-w``: compute the identity-average W (the model's ``average_w_id.txt``) from the
  generator and the released id VAE, exactly as the official script draws it.
- ``convert``: the released TF ``.pkl`` -> the project's ``.safetensors`` + ``.json``.
- ``generate``: render a rig (JSON) with a DiscoFaceGAN generator.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ..contract.catalogue import NOISE_MODES, PRECISIONS
from ..rig.dfg_vae import DFGVae
from ..rig.params import RigParams
from .checkpoints.project_format import WEIGHTS_SUFFIX
from .discofacegan.adapter import (
    AVERAGE_SAMPLES,
    AVERAGE_SEED,
    DEFAULT_CUTOFF,
    DEFAULT_PSI,
    compute_average_w_id,
    load_average_w_id,
    save_average_w_id,
)
from .discofacegan.backend import DFGEngine
from .discofacegan.generator import DFGGenerator
from .discofacegan.tf_reader import load_dfg_generator, save_dfg_project
from .engine import configure_inference_process
from .errors import NeuralError
from .images import write_png

_BAR_WIDTH = 30


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``dfg`` (with its sub-commands) on the `nfr` sub-parser."""
    dfg = sub.add_parser("dfg", help="DiscoFaceGAN tools (average W, convert, generate)")
    commands = dfg.add_subparsers(dest="dfg_command", required=True, metavar="DFG_COMMAND")

    avg = commands.add_parser(
        "average-w",
        help="compute the identity-average W for the attribute-preserving truncation",
        description="Mean of map([VAE identity, zero expression/light/pose, random noise]) "
        "over --samples draws of numpy's legacy generator seeded with --seed (the official "
        "script: 50000 draws, seed 1), written as the [14, 512] text file.",
    )
    avg.add_argument("--weights", type=Path, required=True, help="DiscoFaceGAN .pkl/.safetensors")
    avg.add_argument("--vae", type=Path, required=True,
                     help="DiscoFaceGAN's vae/weights folder (id, exp, gamma, rot)")
    avg.add_argument("--out", type=Path, required=True, help="text file to write")
    avg.add_argument("--samples", type=int, default=AVERAGE_SAMPLES,
                     help=f"number of draws (default {AVERAGE_SAMPLES})")
    avg.add_argument("--seed", type=int, default=AVERAGE_SEED,
                     help=f"numpy seed (default {AVERAGE_SEED})")
    avg.add_argument("--device", default="cpu", help="torch device (default cpu)")
    avg.set_defaults(handler=run_average_w)

    convert = commands.add_parser(
        "convert", help="convert DiscoFaceGAN's TF .pkl to the project's .safetensors + .json"
    )
    convert.add_argument("src", type=Path, help="the released generator .pkl")
    convert.add_argument("dst", type=Path, help=f"output weights (*{WEIGHTS_SUFFIX})")
    convert.set_defaults(handler=run_convert)

    gen = commands.add_parser("generate", help="render a rig with a DiscoFaceGAN generator")
    gen.add_argument("--weights", type=Path, required=True, help="DiscoFaceGAN .pkl/.safetensors")
    gen.add_argument("--average-w", type=Path, required=True,
                     help="the model's average_w_id text file (or `nfr dfg average-w` output)")
    gen.add_argument("--rig", type=Path, help="rig parameters JSON (default: neutral)")
    gen.add_argument("--seed", type=int, default=0, help="seed of the 32-d noise (hair, ...)")
    gen.add_argument("--psi", type=float, default=DEFAULT_PSI,
                     help=f"identity truncation psi (default {DEFAULT_PSI})")
    gen.add_argument("--cutoff", type=int, default=DEFAULT_CUTOFF,
                     help=f"truncate W+ rows below this index (default {DEFAULT_CUTOFF})")
    gen.add_argument("--res", type=int, default=None, help="stop at this block resolution")
    gen.add_argument("--noise", choices=NOISE_MODES, default="const",
                     help="per-layer noise (default const: the checkpoint's)")
    gen.add_argument("--precision", choices=PRECISIONS, default="fp32")
    gen.add_argument("--device", default="cpu", help="torch device (default cpu)")
    gen.add_argument("--out", type=Path, required=True, help="PNG to write")
    gen.set_defaults(handler=run_generate)


def _progress(label: str) -> Callable[[int, int], None]:
    """A text progress bar on stderr: ``label [####......] done/total``."""

    def show(done: int, total: int) -> None:
        filled = _BAR_WIDTH * done // total
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        end = "\n" if done == total else ""
        print(f"\r{label} [{bar}] {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


def run_average_w(args: argparse.Namespace) -> int:
    if args.samples < 1:
        raise NeuralError(f"--samples: expected >= 1, found {args.samples}")
    configure_inference_process()
    loaded = load_dfg_generator(args.weights)
    generator = DFGGenerator.from_state_dict(loaded.config, loaded.state_dict).to(args.device)
    id_vae = DFGVae.load(args.vae).factors["id"]
    avg = compute_average_w_id(generator, id_vae, args.samples, args.seed,
                               progress=_progress("average-w"))
    save_average_w_id(args.out, avg)
    print(f"wrote {args.out} ({avg.shape[0]} x {avg.shape[1]}, {args.samples} samples)")
    return 0


def convert(src: Path, dst: Path) -> int:
    """DiscoFaceGAN .pkl -> dst (*.safetensors) + sidecar; prints what was written."""
    if dst.suffix == "":
        dst = dst.with_suffix(WEIGHTS_SUFFIX)
    elif dst.suffix != WEIGHTS_SUFFIX:
        raise NeuralError(f"{dst}: the output must be a *{WEIGHTS_SUFFIX} file")
    loaded = load_dfg_generator(src)
    sidecar = save_dfg_project(loaded, dst)
    c = loaded.config
    print(f"{src}: DiscoFaceGAN ({loaded.source_format}), {c.img_resolution} px, {c.num_ws} "
          f"W+ rows, input {c.z_dim}, sha256 {loaded.sha256[:16]}")
    print(f"wrote {dst} and {sidecar}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    return convert(args.src, args.dst)


def run_generate(args: argparse.Namespace) -> int:
    configure_inference_process()
    loaded = load_dfg_generator(args.weights)
    avg = load_average_w_id(args.average_w, loaded.config)
    engine = DFGEngine(DFGGenerator.from_state_dict(loaded.config, loaded.state_dict), avg,
                       args.device, precision=args.precision, noise_mode=args.noise, cache=False)
    rig = RigParams.read_json(args.rig) if args.rig else RigParams.neutral()
    ws = engine.map(engine.input_from_rig(rig, args.seed), args.psi, args.cutoff)
    image = engine.synthesize(ws, stop_res=args.res)[0]
    write_png(image, args.out)
    print(f"wrote {args.out} ({image.shape[-1]} px)")
    return 0

