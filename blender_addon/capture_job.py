"""Capture from Video, Blender's side: the capture job for the worker, its progress and
cancel, the curves applied to the rig, and the source clip as a reference plane that follows
the timeline.

The tracking and fitting run in the worker (``capture`` job, contract/protocol.py); nothing
here imports torch or OpenCV. The worker answers with the curves document (curves.json's
dict), checked by ``rig.curves_file.curves_from_dict`` and written by
``capture_import.apply_curves``: the same path as Import Capture Curves, so the action is
``"<rig> capture"`` (replaceable) and a failed or cancelled job leaves the rig untouched.

The job asks for the scene's rate and puts the clip's first frame on ``scene.frame_start +
frame_offset``; the keys arrive on scene frames. The reference plane's image is the clip
itself (a MOVIE, or a SEQUENCE of numbered images) with an image user that starts on that
frame, lasts the clip's frames and refreshes on frame change, so scrubbing the timeline
shows the source frame beside the neural face. A movie plays one of its frames per scene
frame: with the scene at another rate than the clip's the plane runs at the scene's rate
(the keys are resampled in time, the plane is not) and the report says so.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import bpy
from bpy.types import Context, Image, Object, Scene

from . import capture_import
from .contract import protocol as wp
from .rig.curves_file import CaptureCurves, CaptureError, curves_from_dict
from .worker_job import WorkerJobRun

CAPTURE_TIMEOUT = 3600.0
"""Seconds a background-mode capture may take (a long clip on a slow CPU)."""
REFERENCE_GAP = 0.05  # card sides between the neural card and the clip's plane
REFERENCE_PROP = "nfr_capture_reference"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".exr")
"""Image files a sequence is made of (the worker's frame reader reads these)."""


class CaptureJobError(Exception):
    """The capture cannot run or failed (no face model, no clip, worker error): one line."""


# ------------------------------------------------------------------ the job


def capture_job(prefs: Any, scene: Scene, video: str, *, target: str, detector: str = "dlib",
                smoothing: float = 1.0, every_frame: bool = False,
                gains: Mapping[str, float] | None = None,
                frame_offset: int = 0) -> wp.CaptureJob:
    """The worker job capturing ``video`` for ``scene``: keys at the scene's rate, the clip's
    first frame on ``scene.frame_start + frame_offset``, the preferences' face model."""
    from .preferences import resolved_face_model_path

    face_model = resolved_face_model_path(prefs)
    if not face_model or not os.path.isfile(face_model):
        raise CaptureJobError(
            "Capture from Video needs the face model (BFM_model_front.mat): set it in "
            "Preferences > Add-ons > Neural Face Rig")
    return wp.CaptureJob(
        video=video, face_model=face_model, target=target, detector=detector,
        smoothing=float(smoothing), every_frame=bool(every_frame),
        gains={k: float(v) for k, v in (gains or {}).items()},
        frame_start=int(scene.frame_start + frame_offset),
        scene_fps=capture_import.scene_fps(scene),
    )


class CaptureRun(WorkerJobRun):
    """One capture job in the worker (``WorkerJobRun``): it ends in ``curves``; the worker
    checks for a cancel between frame batches and fit iterations."""

    noun = "capture"
    result_kind = wp.CAPTURE_RESULT
    result_errors = (wp.ProtocolError, CaptureError)
    error_type = CaptureJobError
    timeout = CAPTURE_TIMEOUT
    stage_span = {"landmarks": (0.0, 0.6), "fit": (0.6, 1.0)}

    def __init__(self, job: wp.CaptureJob) -> None:
        super().__init__(job, wp.capture_message)

    def read_result(self, data: dict[str, Any]) -> CaptureCurves:
        return curves_from_dict(wp.capture_curves_of(data), "worker capture result")

    @property
    def curves(self) -> CaptureCurves | None:
        return self.outcome


# ------------------------------------------------------------------ the reference plane


def sequence_first_file(path: str) -> str:
    """The image file Blender loads for a sequence given as a folder (its first numbered
    image) or as one of its images (itself)."""
    if not os.path.isdir(path):
        return path
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES)
                   and re.search(r"\d+$", os.path.splitext(n)[0]))
    if not names:
        raise CaptureJobError(f"{path}: the folder holds no numbered image")
    return os.path.join(path, names[0])


def reference_name(ob: Object) -> str:
    return f"{ob.name} Video"


def clip_image(curves: CaptureCurves, video: str) -> Image:
    """The clip as one image datablock: source SEQUENCE (numbered images) or MOVIE."""
    sequence = curves.source.get("kind") == "images"
    path = sequence_first_file(video) if sequence else video
    try:
        image = bpy.data.images.load(path, check_existing=True)
    except RuntimeError as exc:
        raise CaptureJobError(f"{path}: Blender cannot load the clip ({exc})") from None
    image.source = "SEQUENCE" if sequence else "MOVIE"
    return image


def reference_plane(ob: Object, curves: CaptureCurves, image: Image) -> Object:
    """``image`` (the clip, ``clip_image``) on a plane parented to ``ob``, left of its card,
    playing in step with the keys (module docstring); replaces an earlier capture's plane."""
    from . import portrait

    info = curves.source
    sequence = image.source == "SEQUENCE"
    name = reference_name(ob)
    old = bpy.data.objects.get(name)
    if old is not None and old.get(REFERENCE_PROP):
        mesh = old.data
        bpy.data.objects.remove(old)
        if mesh is not None and mesh.users == 0:
            bpy.data.meshes.remove(mesh)
    layout = portrait.portrait_layout()
    collection = ob.users_collection[0] if ob.users_collection else bpy.context.scene.collection
    plane = portrait.build_card(name, collection, layout, image)
    width, height = (max(1, int(n)) for n in image.size)
    plane.scale = (width / max(width, height), 1.0, height / max(width, height))
    plane.parent = ob
    plane.location = (-(1.0 + REFERENCE_GAP) * layout.card_size, 0.0, 0.0)
    plane[REFERENCE_PROP] = True
    node = portrait.face_node(plane)
    assert node is not None  # just built
    user = node.image_user
    user.frame_start = int(curves.frame_start)
    user.frame_duration = max(1, int(info.get("frames", 1)))
    # Sequences count from their first file's number; a movie from its first frame.
    user.frame_offset = int(info.get("first_frame_number", 1)) - 1 if sequence else 0
    user.use_auto_refresh = True
    user.use_cyclic = False
    return plane


# ------------------------------------------------------------------ the operator's work


class CaptureFromVideo:
    """One Capture from Video on ``ob``: the job running in the worker, then the curves
    applied and the reference plane added. The modal operator calls ``step`` on its timer
    and ``cancel`` on Esc; background mode calls ``finish``. Nothing in the .blend changes
    before the curves are there."""

    def __init__(self, context: Context, ob: Object, filepath: str, *, detector: str = "dlib",
                 smoothing: float = 1.0, every_frame: bool = False,
                 gains: Mapping[str, float] | None = None, frame_offset: int = 0,
                 replace: bool = True, reference: bool = True, target: str = "capture") -> None:
        from .preferences import addon_preferences

        video = os.path.normpath(bpy.path.abspath(filepath)) if filepath else ""
        if not video or not os.path.exists(video):
            raise CaptureJobError(f"Video not found: {video or '(no file chosen)'}")
        self.ob_name = ob.name
        self.video = video
        self.replace = replace
        self.reference = reference
        self.result: capture_import.CaptureImport | None = None
        job = capture_job(addon_preferences(context), context.scene, video, target=target,
                          detector=detector, smoothing=smoothing, every_frame=every_frame,
                          gains=gains, frame_offset=frame_offset)
        self.run = CaptureRun(job)

    @property
    def error(self) -> str:
        return self.run.error

    def step(self, context: Context) -> str:
        """Poll the job: "running", "done" (curves applied: ``result``) or "failed" (``error``
        says why; a cancel is "failed" with an empty error)."""
        if not self.run.poll():
            return "running"
        if self.run.curves is None:
            return "failed"
        self._apply(context, self.run.curves)
        return "done"

    def finish(self, context: Context, progress: Any = None) -> capture_import.CaptureImport:
        """Wait for the curves (background mode) and apply them."""
        return self._apply(context, self.run.wait(progress=progress))

    def cancel(self) -> None:
        self.run.cancel()

    def _apply(self, context: Context, curves: CaptureCurves) -> capture_import.CaptureImport:
        ob = bpy.data.objects.get(self.ob_name)
        if ob is None:
            raise CaptureJobError(f"the rig {self.ob_name!r} is gone (deleted while capturing)")
        notes = []
        clip_fps = curves.source.get("fps")
        scene_rate = capture_import.scene_fps(context.scene)
        if (self.reference and isinstance(clip_fps, int | float)
                and abs(clip_fps - scene_rate) > 1e-3):
            notes.append(f"the clip runs at {clip_fps:g} fps, the scene at {scene_rate:g}: the "
                         "keys are retimed, the reference plane shows one clip frame per "
                         "scene frame")
        # The clip is loaded first: a clip Blender cannot read fails before any key is written.
        images = set(bpy.data.images.keys())
        image = clip_image(curves, self.video) if self.reference else None
        try:
            self.result = capture_import.apply_curves(ob, curves, replace=self.replace,
                                                      notes=notes)
        except BaseException:
            if image is not None and image.name not in images and image.users == 0:
                bpy.data.images.remove(image)
            raise
        if image is not None:
            reference_plane(ob, curves, image)
        return self.result
