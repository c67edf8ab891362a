"""``make demo``: the face rig end to end, in Blender and in the project's own renderer.

1. Build the extension zip (build_addon.py) and pick a face model: ``$NFR_FACE_MODEL`` if set,
   else a generated full-size synthetic model (clearly reported as synthetic).
2. Draw a seeded random RigParams sample and render it with rig.render (PyTorch rasteriser,
   Deep3DFaceRecon's 224 px camera) to ``out/rig_face.png``.
3. Neural models: the files in ``$NFR_MODELS`` (the add-on's models-folder names, e.g.
   discofacegan.safetensors + discofacegan-average_w_id.txt, or stylegan2.safetensors) if set;
   else generated UNTRAINED weights of the real architecture (DiscoFaceGAN's 256 px generator,
   or a 256 px StyleGAN2 when the DiscoFaceGAN backend is not available), flagged untrained
   so every image they make is stamped "UNTRAINED WEIGHTS".
4. In a fresh Python process (Blender as the ``bpy`` module, its user folder isolated under
   ``out/blender_user``): install and enable the extension from the zip, add the head with the
   extension's operator, give its shape keys and transform the sample's identity, expression
   and pose, match the camera, render with Cycles to ``out/rig_head_blender.png`` and save
   ``out/rig_head.blend``. Then Add Face Rig in a new file, keyframe an expression animation
   over 24 frames (with DiscoFaceGAN: named controls - a smile, then jaw open and a blink -
   while the key light orbits and the head turns; SeFa sliders with StyleGAN2), render
   ``out/face_portrait.png`` and ``out/face_frames/`` with Cycles (the faces come from the
   extension's inference worker) and save ``out/demo.blend``.
5. Compare the two silhouettes (intersection over union): the cameras and geometry agree.
6. The named controls' contact sheet ``out/controls.png``: every control of rig.controls at
   0, 0.5 and 1 on the 3DMM render (rig.render, 224 px camera), labelled; with real
   DiscoFaceGAN weights also ``out/controls_neural.png`` on the neural face.

The Blender part is blender_addon/demo_stage.py, run in a child process: Blender's process
never loads torch (its worker process does) and this driver never loads bpy.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from neural_face_rig import demo_stage
from neural_face_rig.neural.errors import NeuralError
from neural_face_rig.rig.atomic import atomic_open
from neural_face_rig.rig.blender_mesh import DECIMETRES_TO_METRES, to_blender_frame
from neural_face_rig.rig.camera import CAMERA_224, Camera
from neural_face_rig.rig.errors import RigError
from neural_face_rig.rig.face_model import FaceModel, load_face_model, write_face_model_mat
from neural_face_rig.rig.params import RigParams
from neural_face_rig.rig.synthetic import make_synthetic_face_model

import build_addon

FACE_MODEL_ENV = "NFR_FACE_MODEL"
SYNTHETIC_MODEL_NAME = "synthetic_BFM_model_front.mat"
RIG_IMAGE_NAME = "rig_face.png"
CONTROLS_SHEET_NAME = "controls.png"
NEURAL_SHEET_NAME = "controls_neural.png"
BLENDER_IMAGE_NAME = "rig_head_blender.png"
HEAD_BLEND_NAME = "rig_head.blend"
BLEND_NAME = "demo.blend"
MODELS_ENV = "NFR_MODELS"
PORTRAIT_NAME = "face_portrait.png"
FRAMES_PREFIX = "face_frames/face_"
UNTRAINED_SEED = 0
# The real architecture of a 256 px StyleGAN2 (channel_base 16384: 512 channels up to 32 px).
UNTRAINED_STYLEGAN2 = {"img_resolution": 256, "channel_base": 16384}


class DemoError(NeuralError):
    """The demo cannot run: a failed build or a failed Blender stage."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        _run_demo(args.out.resolve(), args.seed)
    except (RigError, NeuralError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python demo.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (out/)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rig sample (0)")
    return parser.parse_args(argv)


def _run_demo(out: Path, seed: int) -> None:
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    zip_path = _build_extension()
    print(f"Extension zip:    {zip_path}")
    model_path = _face_model_file(out)
    face_model = load_face_model(model_path)

    params = RigParams.sample(np.random.default_rng(seed))
    print(f"Rig sample:       RigParams.sample(seed={seed}); rotation (rad) "
          f"{[round(float(angle), 3) for angle in params.rotation]}")
    rig_mask = _render_with_rig(face_model, params, CAMERA_224, out / RIG_IMAGE_NAME)
    print(f"Rig render:       {out / RIG_IMAGE_NAME} (rig.render, PyTorch rasteriser)")

    models, untrained = _neural_models(out)
    stage = _run_blender_stage(
        {
            "zip": str(zip_path),
            "face_model": str(model_path),
            "face_rig": {
                "models_dir": str(models),
                "still": str(out / PORTRAIT_NAME),
                "frames": str(out / FRAMES_PREFIX),
                "blend": str(out / BLEND_NAME),
            },
            "identity": params.identity.tolist(),
            "expression": params.expression.tolist(),
            "matrix_world": _blender_world_matrix(params).tolist(),
            "camera": {"focal": CAMERA_224.focal, "size": CAMERA_224.size,
                       "distance": CAMERA_224.distance},
            "image": str(out / BLENDER_IMAGE_NAME),
            "blend": str(out / HEAD_BLEND_NAME),
        },
        user_folder=out / "blender_user",
    )
    print(f"Blender:          {stage['report']}")
    print(f"Blender render:   {out / BLENDER_IMAGE_NAME} (Cycles, CPU, "
          f"{demo_stage.CYCLES_SAMPLES} samples; mean albedo under a sun and ambient light)")
    print(f"Head blend file:  {out / HEAD_BLEND_NAME}")
    iou = _silhouette_iou(out / BLENDER_IMAGE_NAME, rig_mask)
    print(f"Silhouettes:      IoU {iou:.4f} between the Blender and rig renders "
          "(same shape, pose and camera)")
    _report_face_rig(out, stage["face_rig"], untrained)
    sheet = out / CONTROLS_SHEET_NAME
    _controls_contact_sheet(face_model, sheet)
    print(f"Controls:         {sheet} (each named control at 0, 0.5, 1 on the 3DMM render)")
    weights = models / "discofacegan.safetensors"
    if not untrained and weights.is_file():  # untrained faces would show nothing
        neural = out / NEURAL_SHEET_NAME
        _controls_contact_sheet(face_model, neural, _neural_tiles(weights))
        print(f"                  {neural} (the same on the DiscoFaceGAN face)")
    print(f"Done in {time.perf_counter() - start:.1f} s.")


def _neural_models(out: Path) -> tuple[Path, bool]:
    """(models folder, whether its weights are generated untrained ones)."""
    folder = os.environ.get(MODELS_ENV)
    if folder:
        path = Path(folder).expanduser().resolve()
        print(f"Neural models:    {path} (from ${MODELS_ENV})")
        return path, False
    path = out / "models"
    path.mkdir(exist_ok=True)
    if _discofacegan_available():
        weights = _write_untrained_discofacegan(path)
    else:
        weights = _write_untrained_stylegan2(path)
    print(f"Neural models:    {weights}")
    print("                  UNTRAINED: random weights of the real architecture, no real model "
          "files found. Every image is stamped 'UNTRAINED WEIGHTS'. Set "
          f"${MODELS_ENV} to a folder with your model files to see real faces.")
    return path, True


def _discofacegan_available() -> bool:
    """Whether this build has the DiscoFaceGAN backend (the rig-driven one)."""
    try:
        importlib.import_module("neural_face_rig.neural.discofacegan.backend")
    except ImportError:
        return False
    from neural_face_rig.neural.backends import BACKEND_LOADERS

    return "discofacegan" in BACKEND_LOADERS


def _untrained_id(kind: str, config: dict[str, Any]) -> str:
    """The model identity of generated weights: a digest of what generates them."""
    text = json.dumps({"kind": kind, "config": config, "seed": UNTRAINED_SEED}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _flag_untrained(sidecar: Path) -> None:
    """Add ``"untrained": true`` to a project sidecar (the worker stamps such models)."""
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    data["untrained"] = True
    with atomic_open(sidecar, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")


def _write_untrained_discofacegan(folder: Path) -> Path:
    """DiscoFaceGAN's released architecture with random weights, and its identity-average W
    made the way the real one is but from N(0, 1) identities (there is no trained VAE)."""
    import torch
    from neural_face_rig.neural.discofacegan.adapter import IDENTITY_DIM, save_average_w_id
    from neural_face_rig.neural.discofacegan.config import COEFF_DIM, DFGConfig
    from neural_face_rig.neural.discofacegan.generator import DFGGenerator, random_state_dict
    from neural_face_rig.neural.discofacegan.tf_reader import LoadedDFG, save_dfg_project

    config = DFGConfig()
    state = random_state_dict(config, UNTRAINED_SEED)
    weights = folder / "discofacegan.safetensors"
    loaded = LoadedDFG(config, state, "untrained", _untrained_id("discofacegan",
                                                                 config.to_dict()))
    _flag_untrained(save_dfg_project(loaded, weights))
    generator = DFGGenerator.from_state_dict(config, state)
    rng = np.random.default_rng(UNTRAINED_SEED)
    z = np.zeros((256, config.z_dim), np.float32)
    z[:, :IDENTITY_DIM] = rng.normal(size=(256, IDENTITY_DIM))
    z[:, COEFF_DIM:] = rng.normal(size=(256, config.noise_dim))
    with torch.inference_mode():
        w = generator.mapping(torch.from_numpy(z), batched=True).mean(dim=0)
    average = np.repeat(w.numpy()[None], config.num_ws, axis=0)
    save_average_w_id(folder / "discofacegan-average_w_id.txt", average)
    return weights


def _write_untrained_stylegan2(folder: Path) -> Path:
    from neural_face_rig.neural.checkpoints import LoadedGenerator, save_project
    from neural_face_rig.neural.stylegan2.config import StyleGAN2Config
    from neural_face_rig.neural.stylegan2.generator import random_state_dict

    config = StyleGAN2Config(**UNTRAINED_STYLEGAN2)
    weights = folder / "stylegan2.safetensors"
    loaded = LoadedGenerator(config, random_state_dict(config, UNTRAINED_SEED), "untrained",
                             _untrained_id("stylegan2", config.to_dict()))
    _flag_untrained(save_project(loaded, weights))
    return weights


def _report_face_rig(out: Path, face: dict[str, Any], untrained: bool) -> None:
    frames = [out / f"{FRAMES_PREFIX}{n:04d}.png" for n in range(face["frames"][0],
                                                                  face["frames"][1] + 1)]
    missing = [str(f) for f in [out / PORTRAIT_NAME, *frames] if not f.is_file()]
    if missing:
        raise DemoError(f"the Face Rig renders are missing: {', '.join(missing)}")
    drive = ("named controls, an orbiting key light and a head turn"
             if face["backend"] == "discofacegan"
             else "SeFa sliders")
    print(f"Face rig:         backend {face['backend']}, model {face['model']}"
          + (" (UNTRAINED WEIGHTS)" if untrained else ""))
    print(f"                  {len(frames)} keyframed frames ({drive}); 3DMM head "
          f"{'co-registered' if face['head'] else 'not added'}; worker: {face['status']}")
    print(f"Portrait:         {out / PORTRAIT_NAME} (Cycles, Standard view transform)")
    print(f"Sequence:         {frames[0]} .. {frames[-1].name}")
    print(f"Blend file:       {out / BLEND_NAME} (the face rig, its animation, the face packed; "
          f"{face['seconds']:.1f} s in Blender)")


def _build_extension() -> Path:
    try:
        return build_addon.build_extension()
    except build_addon.BuildError as exc:
        raise DemoError(f"building the extension failed: {exc}") from exc


def _face_model_file(out: Path) -> Path:
    """$NFR_FACE_MODEL if set, else a freshly written full-size synthetic model."""
    user_model = os.environ.get(FACE_MODEL_ENV)
    if user_model:
        path = Path(user_model).expanduser().resolve()
        print(f"Face model:       {path} (from ${FACE_MODEL_ENV})")
        return path
    path = out / SYNTHETIC_MODEL_NAME
    model = make_synthetic_face_model("full", expressions="actions")
    write_face_model_mat(model, path)
    print(f"Face model:       {path}")
    print(f"                  SYNTHETIC: a generated head-like stand-in with the BFM's sizes "
          f"({model.n_vertices:,} vertices), not a real face model. Set ${FACE_MODEL_ENV} to "
          "your BFM_model_front.mat (nfr rig convert-bfm) to see the real one.")
    return path


def _render_with_rig(
    face_model: FaceModel, params: RigParams, camera: Camera, path: Path
) -> np.ndarray:
    """Render ``params`` with rig.render, write the image as PNG; return the mask [H, W]."""
    import torch
    from neural_face_rig.rig.geometry import TorchFaceModel
    from neural_face_rig.rig.render import render_face

    torch_model = TorchFaceModel.from_face_model(face_model)
    rig = torch.from_numpy(params.to_vector())[None]
    with torch.no_grad():
        rendered = render_face(torch_model, rig, camera)
    rgb = rendered.image[0].permute(1, 2, 0).numpy()
    _write_png(path, np.round(rgb * 255.0).astype(np.uint8))
    return rendered.mask[0, 0].numpy() > 0.5


def _controls_contact_sheet(
    face_model: FaceModel, path: Path, render: Any = None, columns: int = 4
) -> None:
    """Every named control at 0, 0.5 and 1, frontal, lit by a key light; one labelled cell
    per control, ``columns`` per row. ``render``: rig vectors [B, 257] -> uint8 images
    [B, S, S, 3] (default: the 3DMM render, rig.render at the 224 px camera, half size)."""
    from neural_face_rig.rig.control_basis import derive_controls, expression_from_controls
    from neural_face_rig.rig.key_light import KeyLight, key_light_to_sh
    from PIL import Image, ImageDraw

    basis = derive_controls(face_model)
    render = render or _rig_tiles(face_model)
    light = key_light_to_sh(KeyLight(30.0, 20.0, 0.6, ambient=(0.45, 0.45, 0.45)))
    steps = (0.0, 0.5, 1.0)
    rigs = []
    for name in basis.names:
        for value in steps:
            params = RigParams.neutral()
            params.expression = expression_from_controls(basis, {name: value})
            params.illumination = light
            rigs.append(params.to_vector())
    images = [image for start in range(0, len(rigs), 8)
              for image in render(np.stack(rigs[start : start + 8]))]
    tile, label = images[0].shape[0], 16
    cell_w, cell_h = tile * len(steps), tile + label
    rows = -(-len(basis.names) // columns)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for index, name in enumerate(basis.names):
        x, y = (index % columns) * cell_w, (index // columns) * cell_h
        draw.text((x + 4, y + 2), f"{name}   0 / 0.5 / 1", fill=(235, 235, 235))
        for step in range(len(steps)):
            sheet.paste(Image.fromarray(images[index * len(steps) + step]),
                        (x + step * tile, y + label))
    with atomic_open(path, "wb") as handle:
        sheet.save(handle, format="PNG")


def _rig_tiles(face_model: FaceModel) -> Any:
    """Rig vectors [B, 257] -> 3DMM renders [B, 112, 112, 3] uint8 (224 px camera, halved)."""
    import torch
    from neural_face_rig.rig.geometry import TorchFaceModel
    from neural_face_rig.rig.render import render_face

    torch_model = TorchFaceModel.from_face_model(face_model)

    def render(rigs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            image = render_face(torch_model, torch.from_numpy(rigs), CAMERA_224).image
            halves = torch.nn.functional.avg_pool2d(image.clamp(0.0, 1.0), 2)
        return (halves.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)

    return render


def _neural_tiles(weights: Path, size: int = 128) -> Any:
    """Rig vectors [B, 257] -> DiscoFaceGAN faces [B, size, size, 3] uint8 (seed 0, psi 0.7)."""
    import torch
    from neural_face_rig.contract.state import RigState
    from neural_face_rig.neural.backends import load_backend

    backend = load_backend("discofacegan", str(weights), "cpu", {})

    def render(rigs: np.ndarray) -> np.ndarray:
        faces = []
        with torch.no_grad():
            for rig in rigs:
                state = RigState(backend="discofacegan", rig=rig, seed=0, psi=0.7)
                image = backend.render(state)[:, :3]
                image = torch.nn.functional.interpolate(image, size=(size, size), mode="area")
                faces.append(((image[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round())
        return torch.stack(faces).numpy().astype(np.uint8)

    return render


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """uint8 [H, W, 3|4] (row 0 at the top) -> PNG, written atomically."""
    from PIL import Image

    with atomic_open(path, "wb") as handle:
        Image.fromarray(pixels).save(handle, format="PNG")


def _blender_world_matrix(params: RigParams) -> np.ndarray:
    """The head object's 4x4 world matrix for the sample's rotation and translation.

    The rig poses vertices as v' = R v + t in the model frame (rig.geometry); in Blender's
    frame v_b = A v (A = rig.blender_mesh's axis change, scale included) this is
    v_b' = (A R A⁻¹) v_b + A t, a pure rotation because A is a scaled rotation.
    """
    import torch
    from neural_face_rig.rig.geometry import rotation_matrix

    rotation = rotation_matrix(torch.from_numpy(params.rotation)[None].double())[0].numpy()
    axes = to_blender_frame(np.eye(3)).T / DECIMETRES_TO_METRES  # A without its scale
    matrix = np.eye(4)
    matrix[:3, :3] = axes @ rotation @ axes.T
    matrix[:3, 3] = to_blender_frame(params.translation)
    return matrix


def _run_blender_stage(config: dict[str, Any], user_folder: Path) -> dict[str, Any]:
    """Run ``_blender_stage(config)`` in a fresh interpreter whose Blender user folder is
    ``user_folder`` (recreated, so every run installs the extension from scratch)."""
    shutil.rmtree(user_folder, ignore_errors=True)
    user_folder.mkdir(parents=True)
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(user_folder))
    command = [sys.executable, "-m", demo_stage.__name__, json.dumps(config)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        # Blender writes its own noise to stderr; the stage's one-line reason comes last.
        lines = result.stderr.strip().splitlines()
        reasons = [line for line in lines if line.startswith(demo_stage.STAGE_ERROR_PREFIX)]
        raise DemoError(
            f"the Blender stage failed (exit {result.returncode}): "
            + ("\n".join(reasons) if reasons else "\n".join(lines[-20:]))
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _silhouette_iou(blender_png: Path, rig_mask: np.ndarray) -> float:
    from PIL import Image

    alpha = np.asarray(Image.open(blender_png).convert("RGBA"))[..., 3] > 127
    return float((alpha & rig_mask).sum() / max((alpha | rig_mask).sum(), 1))


if __name__ == "__main__":
    sys.exit(main())
