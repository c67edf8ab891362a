"""Photo -> editable rig: the steps in order, for the CLI and the worker.

1. read the photo, find its faces (largest first), the chosen face's 68 landmarks;
2. Deep3DFaceRecon crop (224) -> rig values: R-Net with its file, else the landmark fit with
   the face model, else none (StyleRig reads its own values from W+);
3. per backend: StyleGAN2 / StyleRig: FFHQ crop at 256 -> e4e W+ -> optional refinement
   against the FFHQ crop at the generator's resolution -> StyleRig: the DFR estimate of W+ is
   the rig; DiscoFaceGAN: the photo's values + optimised identity and noise;
4. the face file (face_file.py), with named controls and the key light read off the rig.

``progress(stage, done, total)`` reports every stage and every optimisation step;
``cancel()`` is checked between stages and steps (InversionCancelled: nothing is written).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...contract.catalogue import ROLE_AVERAGE_W, ROLE_RIGNET
from ...rig.face_model import FaceModel, load_face_model
from ...rig.params import RIG_SIZE, RigParams
from ..checkpoints import file_sha256
from ..errors import CheckpointError
from ..landmarks import Detection
from . import PhotoError
from .align import (
    D3D_RESCALE,
    align_d3d,
    align_ffhq,
    load_lm3d_mat,
    standard_points,
)
from .detect import choose_face, default_detector, read_photo
from .face_file import FaceFile
from .invert_dfg import DFGInvertOptions, invert_dfg
from .invert_stylegan import (
    LPIPS_FILES_MESSAGE,
    RefineOptions,
    encoder_features,
    refine_wplus,
)
from .optimise import Cancel, InversionCancelled
from .rig_values import SOURCE_LANDMARKS, photo_rig

StageProgress = Callable[[str, int, int], None]
"""(stage name, done, total) — stages: detect, align, rig, encode, refine, invert, done."""

DFG_CROP_SCALE = 1.22  # DiscoFaceGAN's camera: focal 1015 * 1.22 at 256 px


@dataclass(frozen=True)
class InvertRequest:
    """What ``invert_photo`` needs; paths are user files (weights never downloaded)."""

    photo: str
    weights: str
    backend: str = "auto"
    encoder: str | None = None
    rnet: str | None = None
    face_model: str | None = None
    lm3d: str | None = None
    face_index: int = 0
    detector: str | None = None
    refine: RefineOptions = field(default_factory=RefineOptions)
    dfg: DFGInvertOptions = field(default_factory=DFGInvertOptions)
    average_w_id: str | None = None
    stylerig: str | None = None
    lpips_lin: str | None = None
    lpips_vgg: str | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class LocatedFace:
    image: np.ndarray
    detection: Detection
    faces_found: int
    detector: str
    boxes: np.ndarray  # [faces_found, 4] x0, y0, x1, y1, largest first


def locate_face(path: str, index: int = 0, detector: str | None = None) -> LocatedFace:
    image = read_photo(path)
    found = default_detector(detector)
    detection, boxes = choose_face(image, found, index, label=path)
    return LocatedFace(image, detection, len(boxes), found.name, boxes)


def describe_faces(boxes: Any, index: int) -> str:
    """One line naming the faces found ([N, 4] boxes) and the one used (group photos, and
    face-like false positives such as a badge, which can be larger than the face)."""
    listed = ", ".join(f"{i}: {[round(float(v)) for v in box]}" for i, box in enumerate(boxes))
    return (f"found {len(boxes)} faces (largest first; x0, y0, x1, y1) {listed}; "
            f"using {index} (--face N chooses another)")


def _check(cancel: Cancel | None, stage: str) -> None:
    if cancel is not None and cancel():
        raise InversionCancelled(f"photo inversion cancelled before {stage}")


def _image_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 [R, R, 3] -> [1, 3, R, R] float32 in [-1, 1] (the generator's range)."""
    return torch.from_numpy(np.array(pixels, np.uint8)).permute(2, 0, 1)[None].float() / 127.5 - 1


def _generator_kind(request: InvertRequest) -> str:
    if request.backend in ("stylegan2", "stylerig", "discofacegan"):
        return "discofacegan" if request.backend == "discofacegan" else "stylegan2"
    if request.backend != "auto":
        raise PhotoError(f"backend {request.backend!r}: expected auto, stylegan2, stylerig or "
                         "discofacegan")
    from ..checkpoints import detect_container
    from ..discofacegan.tf_reader import FORMAT as DFG_FORMAT
    from ..discofacegan.tf_reader import is_stylegan1_tf_pickle

    container = detect_container(request.weights)
    if container == "pickle" and is_stylegan1_tf_pickle(request.weights):
        return "discofacegan"
    if container == "safetensors":
        import json

        sidecar = Path(request.weights).with_suffix(".json")
        try:
            fmt = json.loads(sidecar.read_text(encoding="utf-8")).get("format", "")
        except (OSError, ValueError, AttributeError):
            fmt = ""
        if fmt == DFG_FORMAT:
            return "discofacegan"
    return "stylegan2"


def invert_photo(
    request: InvertRequest,
    progress: StageProgress | None = None,
    cancel: Cancel | None = None,
) -> FaceFile:
    """The face file of ``request.photo`` (module docstring); nothing is written here."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def stage(name: str) -> None:
        nonlocal clock
        _check(cancel, name)
        if progress is not None:
            progress(name, 0, 1)

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 4)
        clock = now

    stage("detect")
    located = locate_face(request.photo, request.face_index, request.detector)
    landmarks = located.detection.landmarks.astype(np.float64)
    lap("detect")

    stage("align")
    model: FaceModel | None = load_face_model(request.face_model) if request.face_model else None
    if request.lm3d:
        lm3d, lm3d_source = load_lm3d_mat(request.lm3d), request.lm3d
    elif model is not None:
        lm3d, lm3d_source = standard_points(model), "face model"
    else:
        from ...rig.synthetic import make_synthetic_face_model

        lm3d, lm3d_source = standard_points(make_synthetic_face_model("tiny")), "synthetic"
    crop = align_d3d(located.image, landmarks, lm3d)
    lap("align")

    stage("rig")
    rnet = None
    if request.rnet:
        from .rnet import load_rnet

        rnet = load_rnet(request.rnet, request.device)
    photo_values: RigParams | None = None
    source = "none"
    if rnet is not None or model is not None:
        found = photo_rig(crop, rnet=rnet, model=model)
        photo_values, source = found.rig, found.source
    lap("rig")

    kind = _generator_kind(request)
    meta: dict[str, Any] = {
        "photo": {
            "path": str(Path(request.photo).resolve()),
            "sha256": file_sha256(request.photo),
            "width": int(located.image.shape[1]),
            "height": int(located.image.shape[0]),
            "face_index": request.face_index,
            "faces_found": located.faces_found,
            "detector": located.detector,
            "face_box": [float(v) for v in located.detection.box],
            "face_boxes": located.boxes.tolist(),
        },
        "alignment": {
            "d3d": {"matrix": crop.matrix.tolist(), "trans_params": crop.trans_params.tolist(),
                    "standard_points": lm3d_source},
        },
        "rig_source": source,
        "face_model": ({"path": str(Path(request.face_model).resolve()),
                        "sha256": file_sha256(request.face_model)}
                       if request.face_model else None),
        "rnet": ({"path": str(Path(request.rnet).resolve()), "sha256": file_sha256(request.rnet)}
                 if request.rnet else None),
    }
    if kind == "discofacegan":
        face = _invert_dfg(request, located, landmarks, lm3d, photo_values, meta, progress,
                           cancel)
    else:
        face = _invert_stylegan(request, located, landmarks, photo_values, meta, progress,
                                cancel)
    lap("invert")
    face.meta["timings_seconds"] = timings
    if model is not None:
        face.meta["controls"] = _named_controls(model, face.rig)
    from ...rig.key_light import sh_to_key_light

    face.meta["key_light"] = asdict(sh_to_key_light(RigParams.from_vector(face.rig).illumination))
    if progress is not None:
        progress("done", 1, 1)
    return face


def _named_controls(model: FaceModel, rig: np.ndarray) -> dict[str, float]:
    from ...rig.control_basis import controls_from_expression, derive_controls

    basis = derive_controls(model)
    values, _ = controls_from_expression(basis, RigParams.from_vector(rig).expression)
    return {name: round(float(v), 6) for name, v in zip(basis.names, values, strict=True)}


def _step_progress(progress: StageProgress | None, name: str
                   ) -> Callable[[int, int, float], None] | None:
    if progress is None:
        return None
    return lambda done, total, loss: progress(name, done, total)


def _invert_stylegan(
    request: InvertRequest,
    located: LocatedFace,
    landmarks: np.ndarray,
    photo_values: RigParams | None,
    meta: dict[str, Any],
    progress: StageProgress | None,
    cancel: Cancel | None,
) -> FaceFile:
    from ..checkpoints import load_generator
    from ..stylegan2.generator import Generator, SynthesisOptions

    _check(cancel, "encode")
    if progress is not None:
        progress("encode", 0, 1)
    loaded = load_generator(request.weights)
    config = loaded.config
    encoder = None
    if request.encoder:
        from .e4e_encoder import encode, load_e4e_encoder

        encoder = load_e4e_encoder(request.encoder, request.device)
        if encoder.style_count != config.num_ws or config.w_dim != 512:
            raise PhotoError(
                f"{request.encoder}: the e4e encoder makes W+ [{encoder.style_count}, 512], the "
                f"generator {request.weights} takes [{config.num_ws}, {config.w_dim}]: use the "
                "encoder trained for this generator"
            )
        aligned = align_ffhq(located.image, landmarks, 256)
        ws = encode(encoder, aligned.image)
    elif request.refine.steps > 0:
        ws = loaded.state_dict["mapping.w_avg"].float().reshape(1, 1, -1).repeat(
            1, config.num_ws, 1)
    else:
        raise PhotoError("photo inversion into a StyleGAN2 needs the e4e encoder (--encoder "
                         "e4e_ffhq_encode.pt) or refinement steps (--steps N) from the average")
    losses: list[float] = []
    if encoder is not None:
        meta["alignment"]["ffhq"] = {"size": 256, "matrix": aligned.matrix.tolist(),
                                     "quad": aligned.quad.tolist()}
    if request.refine.steps > 0:
        # The refinement compares at the generator's resolution (a 1024 crop costs ~0.5 s).
        full = align_ffhq(located.image, landmarks, config.img_resolution)
        meta["alignment"]["ffhq"] = {"size": config.img_resolution,
                                     "matrix": full.matrix.tolist(), "quad": full.quad.tolist()}
        generator = Generator.from_state_dict(config, loaded.state_dict).to(request.device)
        options = SynthesisOptions(noise_mode="const")

        def synthesis(w: torch.Tensor) -> torch.Tensor:
            return generator.synthesis(w, options)

        features = (encoder_features(encoder) if encoder is not None
                    and request.refine.feature_weight > 0 else None)
        lpips = None
        if request.refine.lpips_weight > 0:
            if not (request.lpips_lin and request.lpips_vgg):
                raise PhotoError(LPIPS_FILES_MESSAGE)
            from .lpips import load_lpips

            lpips = load_lpips(request.lpips_lin, request.lpips_vgg, request.device)
        result = refine_wplus(synthesis, _image_tensor(full.image).to(request.device), ws,
                              request.refine, features, _step_progress(progress, "refine"),
                              cancel, lpips)
        ws, losses = result.ws, result.losses
    backend, rig, files = "stylegan2", (photo_values.to_vector() if photo_values is not None
                                        else np.zeros(RIG_SIZE, np.float32)), {}
    stylerig_path = _find_stylerig(request, loaded.sha256)
    if request.backend == "stylerig" and stylerig_path is None:
        from ..stylerig.backend import missing_rignet_message, search_folders

        folders = search_folders((), request.weights)
        raise PhotoError(missing_rignet_message(loaded.sha256, folders, request.weights))
    if stylerig_path is not None and request.backend != "stylegan2":
        from ..stylerig.backend import load_stylerig

        model = load_stylerig(stylerig_path, request.device)
        with torch.no_grad():
            rig = model.dfr(ws.to(request.device))[0].cpu().numpy().astype(np.float32)
        backend, files = "stylerig", {ROLE_RIGNET: str(Path(stylerig_path).resolve())}
    meta["model"] = {"path": str(Path(request.weights).resolve()), "files": files,
                     "img_resolution": config.img_resolution}
    meta["inversion"] = {
        "encoder": ({"path": str(Path(request.encoder).resolve()),
                     "sha256": file_sha256(request.encoder)} if request.encoder else None),
        "refine": {**asdict(request.refine), "losses": [losses[0], losses[-1]] if losses else []},
    }
    photo_vector = (photo_values.to_vector() if photo_values is not None
                    else np.zeros(RIG_SIZE, np.float32))
    return FaceFile(backend=backend, model_sha256=loaded.sha256, rig=rig,
                    photo_rig=photo_vector, landmarks=landmarks.astype(np.float32),
                    w_plus=ws[0].detach().cpu().numpy().astype(np.float32), meta=meta)


def _find_stylerig(request: InvertRequest, sha256: str) -> str | None:
    if request.stylerig:
        return request.stylerig
    from ..stylerig.backend import find_stylerig, search_folders

    found = find_stylerig(sha256, search_folders((), request.weights))
    return None if found is None else str(found)


def _invert_dfg(
    request: InvertRequest,
    located: LocatedFace,
    landmarks: np.ndarray,
    lm3d: np.ndarray,
    photo_values: RigParams | None,
    meta: dict[str, Any],
    progress: StageProgress | None,
    cancel: Cancel | None,
) -> FaceFile:
    from ..backends.discofacegan import _average_w_beside
    from ..discofacegan.adapter import load_average_w_id
    from ..discofacegan.generator import DFGGenerator
    from ..discofacegan.tf_reader import load_dfg_generator

    if photo_values is None:
        raise PhotoError("DiscoFaceGAN inversion needs the photo's coefficients: give the "
                         "R-Net file (--rnet epoch_20.pth) or the face model (--face-model "
                         "BFM_model_front.mat) for the landmark fit")
    _check(cancel, "invert")
    try:
        loaded = load_dfg_generator(request.weights)
    except CheckpointError as exc:
        raise PhotoError(f"{exc} (use --backend stylegan2 for StyleGAN2 checkpoints)") from None
    config = loaded.config
    generator = DFGGenerator.from_state_dict(config, loaded.state_dict).to(request.device)
    average = request.average_w_id or _average_w_beside(request.weights)
    w_avg_id = (torch.from_numpy(load_average_w_id(average, config)).to(request.device)
                if average else None)
    options = request.dfg
    if w_avg_id is None and options.psi != 1.0:
        options = DFGInvertOptions(options.steps, options.lr, options.prior_weight, 1.0,
                                   options.cutoff)
    size = config.img_resolution
    # DiscoFaceGAN's crop: Deep3DFaceRecon's alignment at its own camera's scale, centred.
    crop = align_d3d(located.image, landmarks, lm3d, target_size=size,
                     rescale=D3D_RESCALE * DFG_CROP_SCALE * size / 256)
    meta["alignment"]["discofacegan"] = {"size": size, "matrix": crop.matrix.tolist()}
    result = invert_dfg(generator, _image_tensor(crop.image).to(request.device), photo_values,
                        options, w_avg_id, progress=_step_progress(progress, "invert"),
                        cancel=cancel)
    meta["model"] = {"path": str(Path(request.weights).resolve()), "psi": options.psi,
                     "cutoff": options.cutoff,
                     "files": {ROLE_AVERAGE_W: str(Path(average).resolve())} if average else {}}
    meta["inversion"] = {"dfg": asdict(options),
                         "losses": [result.losses[0], result.losses[-1]] if result.losses else []}
    if meta.get("rig_source") == SOURCE_LANDMARKS:
        meta["inversion"]["note"] = "coefficients from the landmark fit (no R-Net file)"
    return FaceFile(backend="discofacegan", model_sha256=loaded.sha256,
                    rig=result.rig.to_vector(), photo_rig=photo_values.to_vector(),
                    landmarks=landmarks.astype(np.float32), noise=result.noise, z=result.z,
                    meta=meta)
