"""``nfr photo ...``: a face rig from a photo.

``nfr photo align IMG --out aligned.png`` writes the FFHQ crop (or ``--kind d3d``: the
224 px Deep3DFaceRecon crop) and, with ``--transform T.json``, the photo -> crop matrix;
``nfr photo invert IMG --weights W [--encoder e4e.pt] [--rnet epoch_20.pth] --out face.json``
writes the face file (docs/PHOTO.md); ``nfr photo edit face.json --set jawOpen=0.6 --out
edited.png`` renders it with changed sliders.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..rig.atomic import atomic_open


def add_commands(sub: argparse._SubParsersAction) -> None:
    photo = sub.add_parser("photo", help="face rig from a photo (align, invert, edit)")
    photo_sub = photo.add_subparsers(dest="photo_command", required=True, metavar="PHOTO_COMMAND")
    for add in (_add_align, _add_invert, _add_edit):
        add(photo_sub)


def _face_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--face", type=int, default=0, metavar="N",
                   help="which face of a group photo (0 = the largest, default)")
    p.add_argument("--detector", choices=("dlib", "fan"),
                   help="landmark detector (default: FAN when its weights are present, else dlib)")
    p.add_argument("--face-model", help="BFM_model_front.mat (landmark fit, named controls)")
    p.add_argument("--lm3d", help="Deep3DFaceRecon's similarity_Lm3D_all.mat (5-point crop)")


def _add_align(photo_sub: argparse._SubParsersAction) -> None:
    p = photo_sub.add_parser("align", help="write the aligned face crop of a photo")
    p.add_argument("image")
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    p.add_argument("--kind", choices=("ffhq", "d3d"), default="ffhq",
                   help="ffhq: the StyleGAN crop (default); d3d: Deep3DFaceRecon's 224 px crop")
    p.add_argument("--size", type=int, default=1024, help="FFHQ crop size (the generator's)")
    p.add_argument("--transform", type=Path, help="also write the photo -> crop matrix (JSON)")
    _face_options(p)
    p.set_defaults(handler=_run_align)


def _run_align(args: argparse.Namespace) -> int:
    from ..rig.face_model import load_face_model
    from .images import encode_png
    from .photo.align import align_d3d, align_ffhq, load_lm3d_mat, standard_points
    from .photo.pipeline import describe_faces, locate_face

    located = locate_face(args.image, args.face, args.detector)
    if located.faces_found > 1:
        print(describe_faces(located.boxes, args.face), file=sys.stderr)
    landmarks = located.detection.landmarks.astype("float64")
    if args.kind == "ffhq":
        aligned = align_ffhq(located.image, landmarks, args.size)
        pixels, matrix = aligned.image, aligned.matrix
    else:
        if args.lm3d:
            lm3d = load_lm3d_mat(args.lm3d)
        elif args.face_model:
            lm3d = standard_points(load_face_model(args.face_model))
        else:
            from ..rig.synthetic import make_synthetic_face_model

            lm3d = standard_points(make_synthetic_face_model("tiny"))
        crop = align_d3d(located.image, landmarks, lm3d)
        pixels, matrix = crop.image, crop.matrix
    with atomic_open(args.out, "wb") as out:
        out.write(encode_png(pixels))
    document = {"kind": args.kind, "photo_to_crop": matrix.tolist(),
                "faces_found": located.faces_found, "face": args.face,
                "landmarks": landmarks.tolist()}
    if args.transform:
        with atomic_open(args.transform, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2)
    print(f"wrote {args.out} ({pixels.shape[1]}x{pixels.shape[0]}, face {args.face} of "
          f"{located.faces_found})")
    return 0


def _add_invert(photo_sub: argparse._SubParsersAction) -> None:
    p = photo_sub.add_parser("invert", help="invert a photo into a generator -> face file")
    p.add_argument("image")
    p.add_argument("--weights", required=True, help="the generator (StyleGAN2 / DiscoFaceGAN)")
    p.add_argument("--out", type=Path, required=True, help="face file (.json + .safetensors)")
    p.add_argument("--encoder", help="e4e checkpoint (e.g. e4e_ffhq_encode.pt)")
    p.add_argument("--rnet", help="Deep3DFaceRecon's epoch_20.pth (rig values of the photo)")
    p.add_argument("--backend", choices=("auto", "stylegan2", "stylerig", "discofacegan"),
                   default="auto", help="default: from the weights (StyleRig when a RigNet "
                   "for the generator is found)")
    p.add_argument("--steps", type=int, default=0, help="refinement / DiscoFaceGAN steps "
                   "(default 0 for StyleGAN2: e4e only; 100 for DiscoFaceGAN)")
    p.add_argument("--lr", type=float, help="optimisation learning rate")
    p.add_argument("--feature-weight", type=float, default=0.0,
                   help="weight of the e4e feature loss in the refinement (needs --encoder)")
    p.add_argument("--lpips-weight", type=float, default=0.0,
                   help="weight of the LPIPS loss in the refinement (needs the two files below)")
    p.add_argument("--lpips-lin", help="the lpips package's weights/v0.1/vgg.pth")
    p.add_argument("--lpips-vgg", help="torchvision's vgg16-397923af.pth")
    p.add_argument("--average-w-id", help="DiscoFaceGAN's average_w_id.txt")
    p.add_argument("--stylerig", help="the StyleRig file of the generator")
    p.add_argument("--device", default="cpu")
    _face_options(p)
    p.set_defaults(handler=_run_invert)


def _run_invert(args: argparse.Namespace) -> int:
    from .photo.face_file import write_face
    from .photo.invert_dfg import DFGInvertOptions
    from .photo.invert_stylegan import RefineOptions
    from .photo.pipeline import InvertRequest, describe_faces, invert_photo

    refine = RefineOptions(steps=args.steps, lr=args.lr or 0.01,
                           feature_weight=args.feature_weight, lpips_weight=args.lpips_weight)
    dfg = DFGInvertOptions(steps=args.steps or 100, lr=args.lr or 0.02)
    request = InvertRequest(
        photo=args.image, weights=args.weights, backend=args.backend, encoder=args.encoder,
        rnet=args.rnet, face_model=args.face_model, lm3d=args.lm3d, face_index=args.face,
        detector=args.detector, refine=refine, dfg=dfg, average_w_id=args.average_w_id,
        stylerig=args.stylerig, lpips_lin=args.lpips_lin, lpips_vgg=args.lpips_vgg,
        device=args.device,
    )
    last = [""]

    def progress(stage: str, done: int, total: int) -> None:
        if stage != last[0] or done == total:
            print(f"  {stage} {done}/{total}", file=sys.stderr, flush=True)
            last[0] = stage

    face = invert_photo(request, progress)
    if face.meta["photo"]["faces_found"] > 1:
        print(describe_faces(face.meta["photo"]["face_boxes"], args.face), file=sys.stderr)
    write_face(args.out, face)
    print(f"wrote {args.out} and {args.out.with_suffix('.safetensors').name} "
          f"(backend {face.backend}, rig values from {face.meta.get('rig_source')})")
    return 0


def _add_edit(photo_sub: argparse._SubParsersAction) -> None:
    p = photo_sub.add_parser("edit", help="render a face file with changed sliders")
    p.add_argument("face_file", type=Path)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a named control (jawOpen=0.6), exp_N/id_N/tex_N/light_N, pitch/yaw/roll")
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    p.add_argument("--weights", help="the generator, if it moved since the inversion")
    p.add_argument("--face-model", help="BFM_model_front.mat (default: the inversion's)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(handler=_run_edit)


def _run_edit(args: argparse.Namespace) -> int:
    from ..rig.face_model import load_face_model
    from .images import write_png
    from .photo.edit import edited_rig, parse_sets, render_edit
    from .photo.face_file import read_face

    face = read_face(args.face_file)
    sets = parse_sets(args.set)
    model_path = args.face_model or (face.meta.get("face_model") or {}).get("path")
    model = load_face_model(model_path) if model_path else None
    rig = edited_rig(face, sets, model)
    write_png(render_edit(face, rig, args.weights, args.device), args.out)
    print(f"wrote {args.out}")
    return 0
