"""Operators: a performance capture as keys on the active face rig - import a Live Link Face
CSV or a curves.json (blender_addon/capture_import.py), or capture a video in the worker
(blender_addon/capture_job.py).

Capture from Video: a file browser for the clip, then the job runs in the worker while a
modal timer shows its progress (the window's progress bar and the status bar); Esc cancels it
and the rig is untouched. Background mode (``blender -b``) waits for the curves in
``execute``. The keys land in one undo step.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy.types import Context, Event
from bpy_extras.io_utils import ImportHelper

from .. import capture_job
from ..capture_import import CaptureImport, import_curves_file, import_live_link_csv
from ..rig.arkit_csv import DEFAULT_CAPTURE_FPS
from ..rig.controls import GROUPS
from ..rig.curves_file import CaptureError
from .rig_groups import FaceRigOperator
from .worker_job import WorkerJobOperator

GAIN_GROUPS = (*GROUPS, "head", "raw")
"""Retarget gain groups: the named controls' groups, head rotation, raw expression."""
_targets = itertools.count(1)

ACTION_ITEMS = (
    ("REPLACE", "Replace Capture", "Replace the keys of the rig's capture action "
     "(\"<rig> capture\") from an earlier import"),
    ("NEW", "New Action", "Keep earlier captures: the keys go into a new action"),
)
RATE_ITEMS = (
    ("SCENE", "Scene Rate", "Keys on the scene's frames, timed at the scene's frame rate"),
    ("NATIVE", "Native Rate", "One key per captured sample (CSV: per row, at its own "
     "fractional frame; curves.json: frames as written)"),
)


class _CaptureImportOperator(FaceRigOperator, ImportHelper):
    """Shared options and error handling of the capture imports."""

    bl_options = {"REGISTER", "UNDO"}

    frame_offset: IntProperty(
        name="Frame Offset", description="Frames added to every key (CSV: after the scene's "
        "start frame, where the first row lands)", default=0)
    action_mode: EnumProperty(name="Action", items=ACTION_ITEMS, default="REPLACE")
    rate: EnumProperty(name="Timing", items=RATE_ITEMS, default="SCENE")

    def _run(self, work: Callable[[], CaptureImport]) -> set[str]:
        try:
            result = work()
        except (CaptureError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, result.summary())
        return {"FINISHED"}


class NFR_OT_import_arkit_csv(_CaptureImportOperator):
    """Import an iPhone ARKit capture (Live Link Face CSV) as keys on the named controls and
    head rotation of the active face rig (unknown columns are reported, not guessed)"""

    bl_idname = "nfr.import_arkit_csv"
    bl_label = "Import ARKit CSV"

    filename_ext = ".csv"
    filter_glob: StringProperty(default="*.csv", options={"HIDDEN"})
    capture_fps: FloatProperty(
        name="Capture FPS", description="Frame rate the CSV's timecode frames count at (Live "
        "Link Face: 60)", default=DEFAULT_CAPTURE_FPS, min=1.0, max=1000.0)
    head_degrees: BoolProperty(
        name="Head in Degrees", description="HeadYaw/Pitch/Roll are in degrees (the app "
        "writes radians)", default=False)

    def execute(self, context: Context) -> set[str]:
        return self._run(lambda: import_live_link_csv(
            context.object, context.scene, self.filepath, frame_offset=self.frame_offset,
            native_rate=self.rate == "NATIVE", replace=self.action_mode == "REPLACE",
            capture_fps=self.capture_fps, head_degrees=self.head_degrees))


class NFR_OT_import_capture_curves(_CaptureImportOperator):
    """Import capture curves (curves.json from nfr capture or nfr capture-arkit) as keys on
    the active face rig"""

    bl_idname = "nfr.import_capture_curves"
    bl_label = "Import Capture Curves"

    filename_ext = ".json"
    filter_glob: StringProperty(default="*.json", options={"HIDDEN"})

    def execute(self, context: Context) -> set[str]:
        return self._run(lambda: import_curves_file(
            context.object, context.scene, self.filepath, frame_offset=self.frame_offset,
            native_rate=self.rate == "NATIVE", replace=self.action_mode == "REPLACE"))


def _gain(group: str) -> FloatProperty:
    label = group.replace("_", " / ").title()
    what = {"head": "head rotation", "raw": "raw expression offsets"}.get(
        group, f"the {label.lower()} controls")
    return FloatProperty(name=label, default=1.0, min=0.0, soft_max=3.0, max=10.0,
                         description=f"Retarget gain on {what} (1: as captured; >1 "
                         "exaggerates, <1 damps)")


class NFR_OT_capture_from_video(WorkerJobOperator, FaceRigOperator):
    """Capture a performance from a video or image sequence: track the face, fit the rig
    and key the named controls and head rotation of the active face rig (in the worker, with
    progress; Esc cancels); the clip is shown beside the card, in step with the timeline"""

    bl_idname = "nfr.capture_from_video"
    bl_label = "Capture from Video"
    bl_options = {"REGISTER", "UNDO"}
    title = "Capture from Video"
    job_errors = (capture_job.CaptureJobError, CaptureError, OSError)

    filepath: StringProperty(name="Video", subtype="FILE_PATH", default="")
    filter_movie: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_image: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_folder: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    detector: EnumProperty(
        name="Detector", default="dlib",
        items=(("dlib", "dlib", "dlib's 68-point shape predictor (offline default)"),
               ("fan", "FAN", "The FAN landmark network (needs its weight files)")))
    smoothing: FloatProperty(
        name="Smoothing", default=1.0, min=0.0, soft_max=20.0, max=1e6,
        description="Strength λ of the zero-lag smoother on the fitted curves (0: off)")
    every_frame: BoolProperty(
        name="Every Frame", default=False,
        description="One key per frame (raw) instead of keyframe reduction")
    frame_offset: IntProperty(
        name="Frame Offset", default=0,
        description="Frames after the scene's start frame where the clip's first frame lands")
    action_mode: EnumProperty(name="Action", items=ACTION_ITEMS, default="REPLACE")
    reference: BoolProperty(
        name="Reference Plane", default=True,
        description="Show the clip on a plane beside the card, following the timeline")
    gain_mouth: _gain("mouth")
    gain_eyes: _gain("eyes")
    gain_brows: _gain("brows")
    gain_cheeks_nose: _gain("cheeks_nose")
    gain_jaw: _gain("jaw")
    gain_head: _gain("head")
    gain_raw: _gain("raw")

    def invoke(self, context: Context, event: Event) -> set[str]:
        if self.filepath:
            return self.execute(context)
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def gains(self) -> dict[str, float]:
        return {group: float(getattr(self, f"gain_{group}")) for group in GAIN_GROUPS}

    def make_job(self, context: Context) -> capture_job.CaptureFromVideo:
        return capture_job.CaptureFromVideo(
            context, context.object, self.filepath, detector=self.detector,
            smoothing=self.smoothing, every_frame=self.every_frame, gains=self.gains(),
            frame_offset=self.frame_offset, replace=self.action_mode == "REPLACE",
            reference=self.reference, target=f"capture:{next(_targets)}")

    def finished(self) -> set[str]:
        result = self._job.result
        assert result is not None
        self.report({"INFO"}, f"Captured {self.filepath}: {result.summary()}")
        return {"FINISHED"}


CLASSES = (NFR_OT_import_arkit_csv, NFR_OT_import_capture_curves, NFR_OT_capture_from_video)
