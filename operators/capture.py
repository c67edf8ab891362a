"""Operators: import a performance capture (Live Link Face CSV or curves.json) as keys on the
active face rig (blender_addon/capture_import.py does the work)."""

from __future__ import annotations

from collections.abc import Callable

from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy.types import Context
from bpy_extras.io_utils import ImportHelper

from ..capture_import import CaptureImport, import_curves_file, import_live_link_csv
from ..rig.arkit_csv import DEFAULT_CAPTURE_FPS
from ..rig.curves_file import CaptureError
from .rig_groups import FaceRigOperator

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


CLASSES = (NFR_OT_import_arkit_csv, NFR_OT_import_capture_curves)
