"""The rig's head rotation as a rotation of the 3DMM head object in Blender, and back.

The rig rotates the face by R = Rz(roll)·Ry(yaw)·Rx(pitch) in the model frame (x right,
y up, z towards the camera; rig.geometry). Blender's frame maps model (x, y, z) to
(x, -z, y) (rig.blender_mesh), so the head object, whose rest pose is the model frame, turns
by M R Mᵀ with M that axis map. These functions convert between the angles and that 3×3
matrix exactly (float64), for any rotation including past ±90° yaw (gimbal lock picks
roll = 0).
"""

from __future__ import annotations

import math

import numpy as np

MODEL_TO_BLENDER_AXES = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""Rows map model (x, y, z) to Blender axes (a rotation; no scale)."""


def rig_rotation_matrix(angles: np.ndarray) -> np.ndarray:
    """Angles [3] (pitch x, yaw y, roll z; radians) -> R = Rz·Ry·Rx [3, 3] float64."""
    a, b, c = (float(v) for v in np.asarray(angles, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rig_angles(rotation: np.ndarray) -> np.ndarray:
    """R [3, 3] (a rotation, model frame) -> angles [3] (pitch, yaw, roll) with R = Rz·Ry·Rx;
    yaw in [-pi/2, pi/2]."""
    r = np.asarray(rotation, dtype=np.float64)
    yaw = math.atan2(-r[2, 0], math.hypot(r[2, 1], r[2, 2]))
    if math.hypot(r[0, 0], r[1, 0]) < 1e-12:  # gimbal lock: only pitch - roll is defined
        return np.array([math.atan2(-r[1, 2], r[1, 1]), yaw, 0.0])
    return np.array([math.atan2(r[2, 1], r[2, 2]), yaw, math.atan2(r[1, 0], r[0, 0])])


def head_matrix(angles: np.ndarray) -> np.ndarray:
    """Rig angles [3] -> the head object's rotation [3, 3] in Blender axes (M R Mᵀ)."""
    m = MODEL_TO_BLENDER_AXES
    return m @ rig_rotation_matrix(angles) @ m.T


def angles_from_head(rotation: np.ndarray) -> np.ndarray:
    """The head object's rotation [3, 3] in Blender axes (relative to its rest pose) -> rig
    angles [3] (Mᵀ R M, decomposed)."""
    m = MODEL_TO_BLENDER_AXES
    return rig_angles(m.T @ np.asarray(rotation, dtype=np.float64) @ m)
