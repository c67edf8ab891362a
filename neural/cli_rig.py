"""``nfr rig ...``: face-model tools.

``nfr rig convert-bfm`` builds ``BFM_model_front.mat`` from the user's BFM 2009 download;
``nfr rig check`` loads a face model and prints what it holds; ``nfr rig render`` renders rig
parameters with the project's differentiable rasteriser. Each sub-command is one
``_add_*`` function registering its parser and handler; handlers return an exit code and raise
RigError subclasses for bad input (neural/cli.py prints them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..rig.atomic import atomic_open
from ..rig.bfm_convert import FILES, convert_bfm
from ..rig.camera import CAMERA_224, CAMERA_256
from ..rig.errors import FaceModelError
from ..rig.face_model import FaceModel, load_face_model
from ..rig.params import RigParams

# Image size -> the camera that produces it: Deep3DFaceRecon's crop or DiscoFaceGAN's.
CAMERAS = {camera.size: camera for camera in (CAMERA_224, CAMERA_256)}


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``nfr rig`` and its sub-commands on the `nfr` sub-parser."""
    rig = sub.add_parser("rig", help="face-model tools (convert the BFM, check, render)")
    rig_sub = rig.add_subparsers(dest="rig_command", required=True, metavar="RIG_COMMAND")
    for add in (_add_convert_bfm, _add_check, _add_render):
        add(rig_sub)


def _option(key: str) -> str:
    """CLI option of a convert_bfm input: its parameter name with dashes."""
    return "--" + key.replace("_", "-")


def _add_convert_bfm(rig_sub: argparse._SubParsersAction) -> None:
    inputs = "\n".join(
        f"  {_option(key):<22} {raw.name} ({raw.what})\n  {'':<22} from {raw.source}"
        for key, raw in FILES.items()
    )
    p = rig_sub.add_parser(
        "convert-bfm",
        help="build BFM_model_front.mat from BFM 2009 + Exp_Pca.bin + Deep3DFaceRecon index files",
        description=(
            "Build the face model (Deep3DFaceRecon's BFM_model_front.mat layout) from files you "
            "download yourself. Give a folder holding all six under their official names "
            "(--bfm-dir), per-file options, or both (per-file options win)."
        ),
        epilog="input files and where to get them:\n" + inputs,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bfm-dir", type=Path, metavar="DIR", help="folder holding the six input files")
    for key, raw in FILES.items():
        p.add_argument(_option(key), type=Path, dest=key, metavar="PATH", help=raw.name)
    p.add_argument("--out", type=Path, required=True, help="output .mat file")
    p.set_defaults(handler=_run_convert_bfm)


def _run_convert_bfm(args: argparse.Namespace) -> int:
    paths: dict[str, Path] = {}
    absent = []
    for key, raw in FILES.items():
        path = getattr(args, key) or (args.bfm_dir / raw.name if args.bfm_dir else None)
        if path is None:
            absent.append(f"{_option(key)} ({raw.name})")
        else:
            paths[key] = path
    if absent:
        raise FaceModelError(
            "convert-bfm needs --bfm-dir or every per-file option; missing: " + ", ".join(absent)
        )
    model = convert_bfm(**paths, out_path=args.out)
    print(f"wrote {args.out}")
    _print_summary(model)
    return 0


def _add_check(rig_sub: argparse._SubParsersAction) -> None:
    p = rig_sub.add_parser("check", help="load a face model and print its sizes")
    p.add_argument("model", type=Path, metavar="MODEL", help="a BFM_model_front.mat file")
    p.set_defaults(handler=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    model = load_face_model(args.model)
    print(f"{args.model}: valid face model")
    _print_summary(model)
    return 0


def _add_render(rig_sub: argparse._SubParsersAction) -> None:
    p = rig_sub.add_parser(
        "render", help="render rig parameters (JSON) with the face model, as a PNG"
    )
    p.add_argument("--model", type=Path, required=True, help="a BFM_model_front.mat file")
    p.add_argument(
        "--params", type=Path, help="rig parameters JSON (rig/params.py schema); default neutral"
    )
    p.add_argument(
        "--size", type=int, choices=sorted(CAMERAS), default=224,
        help="224: Deep3DFaceRecon's camera; 256: DiscoFaceGAN's crop (default 224)",
    )
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    p.set_defaults(handler=_run_render)


def _run_render(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from ..rig.geometry import TorchFaceModel
    from ..rig.render import render_face

    model = load_face_model(args.model)
    params = RigParams.read_json(args.params) if args.params else RigParams.neutral()
    with torch.no_grad():
        rendered = render_face(
            TorchFaceModel.from_face_model(model),
            torch.from_numpy(params.to_vector())[None],
            CAMERAS[args.size],
        )
    pixels = (rendered.image[0].permute(1, 2, 0) * 255.0).round().to(torch.uint8).numpy()
    with atomic_open(args.out, "wb") as handle:
        Image.fromarray(pixels).save(handle, format="PNG")
    coverage = float(rendered.mask.mean())
    print(f"wrote {args.out} ({args.size}x{args.size}, face covers {coverage:.1%} of the image)")
    return 0


def _print_summary(model: FaceModel) -> None:
    vertices = model.mean_shape.reshape(-1, 3)
    extent = vertices.max(axis=0) - vertices.min(axis=0)
    rows = [
        ("vertices", f"{model.n_vertices}"),
        ("triangles", f"{model.n_triangles}"),
        ("identity basis", f"{model.id_base.shape[1]}"),
        ("expression basis", f"{model.exp_base.shape[1]}"),
        ("reflectance basis", f"{model.tex_base.shape[1]}"),
        ("keypoints", f"{model.keypoints.size}"),
        ("front-mask vertices", f"{model.front_mask.size}"),
        ("front-mask triangles", f"{model.tri_mask.shape[0]}"),
        ("skin-mask vertices", f"{int(model.skin_mask.sum())}"),
        ("size (x y z)", " x ".join(f"{e:.3f}" for e in extent) + " dm"),
    ]
    for name, value in rows:
        print(f"  {name:<21} {value}")
