"""Performance capture: a video or an iPhone (ARKit) capture becomes editable rig curves.

One module per job:

- ``video``      frames of a video file or an image sequence, with frame rate and timecode
- ``tracking``   68 landmarks per frame with a confidence; the face detector re-runs only when
                 tracking by the previous frame's landmark box is lost
- ``clip_fit``   landmarks -> per-frame pose and expression, identity solved once per clip
- ``smoothing``  the zero-lag quadratic (Whittaker) smoother applied to the fitted tracks
- ``retarget``   64-d expression -> named controls (bounded least squares) + raw offsets,
                 retarget gain per control group
- ``keyframes``  keyframe reduction to editable keys within a stated error
- ``pipeline``   video -> curves, end to end, with progress and cancel

The documents themselves live in ``rig`` (numpy only, so the add-on imports them too):
``rig.curves_file`` (curves.json: channels of keys on the rig's named controls and head pose,
schema in docs/CAPTURE.md, with ``CaptureError``), ``rig.timecode`` (HH:MM:SS:FF[.fff] to
seconds and scene frames) and ``rig.arkit_csv`` (Live Link Face CSV -> curves, no video).
Nothing here imports bpy.
"""

from __future__ import annotations

from ...rig.curves_file import CaptureError

__all__ = ["CaptureCancelled", "CaptureError"]


class CaptureCancelled(CaptureError):
    """The caller's cancel check asked to stop; nothing was written."""
