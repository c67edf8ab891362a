"""``make demo``: the face rig end to end, in Blender and in the project's own renderer.

1. Build the extension zip (build_addon.py) and pick a face model: ``$NFR_FACE_MODEL`` if set,
   else a generated full-size synthetic model (clearly reported as synthetic).
2. Draw a seeded random RigParams sample and render it with rig.render (PyTorch rasteriser,
   Deep3DFaceRecon's 224 px camera) to ``out/rig_face.png``.
3. In a fresh Python process (Blender as the ``bpy`` module, its user folder isolated under
   ``out/blender_user``): install and enable the extension from the zip, add the head with the
   extension's operator, give its shape keys and transform the sample's identity, expression
   and pose, match the camera, render with Cycles to ``out/rig_head_blender.png`` and save
   ``out/demo.blend``.
4. Compare the two silhouettes (intersection over union): the cameras and geometry agree.

The Blender part is blender_addon/demo_stage.py, run in a child process: Blender's process
never loads torch and this driver never loads bpy.
"""

from __future__ import annotations

import argparse
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
BLENDER_IMAGE_NAME = "rig_head_blender.png"
BLEND_NAME = "demo.blend"


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

    stage = _run_blender_stage(
        {
            "zip": str(zip_path),
            "face_model": str(model_path),
            "identity": params.identity.tolist(),
            "expression": params.expression.tolist(),
            "matrix_world": _blender_world_matrix(params).tolist(),
            "camera": {"focal": CAMERA_224.focal, "size": CAMERA_224.size,
                       "distance": CAMERA_224.distance},
            "image": str(out / BLENDER_IMAGE_NAME),
            "blend": str(out / BLEND_NAME),
        },
        user_folder=out / "blender_user",
    )
    print(f"Blender:          {stage['report']}")
    print(f"Blender render:   {out / BLENDER_IMAGE_NAME} (Cycles, CPU, "
          f"{demo_stage.CYCLES_SAMPLES} samples; mean albedo under a sun and ambient light)")
    print(f"Blend file:       {out / BLEND_NAME}")
    iou = _silhouette_iou(out / BLENDER_IMAGE_NAME, rig_mask)
    print(f"Silhouettes:      IoU {iou:.4f} between the Blender and rig renders "
          "(same shape, pose and camera)")
    print(f"Done in {time.perf_counter() - start:.1f} s.")


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
    model = make_synthetic_face_model("full")
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
