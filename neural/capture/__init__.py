"""Performance capture: a video or an iPhone (ARKit) capture becomes editable rig curves.

One module per job:

- ``timecode``   SMPTE-style timecodes (HH:MM:SS:FF[.fff]) to seconds and scene frames
- ``curves``     the curves.json document: channels of keys on the rig's named controls and
                 head rotation (schema in docs/CAPTURE.md), its writer and its guarded reader
- ``arkit_csv``  Live Link Face CSV -> curves (no video needed)
- ``video``      frames of a video file or an image sequence, with frame rate and timecode
- ``tracking``   68 landmarks per frame with a confidence; the face detector re-runs only when
                 tracking by the previous frame's landmark box is lost
- ``clip_fit``   landmarks -> per-frame pose and expression, identity solved once per clip
- ``smoothing``  the zero-lag quadratic (Whittaker) smoother applied to the fitted tracks
- ``retarget``   64-d expression -> named controls (bounded least squares) + raw offsets,
                 retarget gain per control group
- ``keyframes``  keyframe reduction to editable keys within a stated error
- ``pipeline``   video -> curves, end to end, with progress and cancel

Nothing here imports bpy: the add-on reads the curves.json these modules write.
"""

from __future__ import annotations

from ..errors import NeuralError


class CaptureError(NeuralError):
    """A capture input (CSV, video, image sequence, curves.json) is malformed or unusable."""


class CaptureCancelled(CaptureError):
    """The caller's cancel check asked to stop; nothing was written."""
