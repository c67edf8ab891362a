"""Head rotation <-> rig angles: the renderer's own R = Rz·Ry·Rx, exactly, any angle."""

import numpy as np
import torch
from neural_face_rig.rig.blender_mesh import to_blender_frame
from neural_face_rig.rig.geometry import rotation_matrix
from neural_face_rig.rig.head_pose import (
    angles_from_head,
    head_matrix,
    rig_angles,
    rig_rotation_matrix,
)


def test_rotation_is_the_renderers():
    rng = np.random.default_rng(0)
    angles = rng.uniform(-3.0, 3.0, size=(50, 3))
    torch_r = rotation_matrix(torch.as_tensor(angles)).numpy()
    for a, r in zip(angles, torch_r, strict=True):
        np.testing.assert_allclose(rig_rotation_matrix(a), r, atol=1e-12)


def test_angles_round_trip_and_gimbal_lock():
    rng = np.random.default_rng(1)
    for a in rng.uniform([-3, -1.5, -3], [3, 1.5, 3], size=(200, 3)):
        np.testing.assert_allclose(rig_angles(rig_rotation_matrix(a)), a, atol=1e-9)
        np.testing.assert_allclose(angles_from_head(head_matrix(a)), a, atol=1e-9)
    locked = rig_rotation_matrix([0.4, np.pi / 2, 0.0])
    np.testing.assert_allclose(rig_rotation_matrix(rig_angles(locked)), locked, atol=1e-9)


def test_head_matrix_turns_points_like_the_rig_in_blenders_frame():
    a = np.array([0.2, -0.5, 0.3])
    points = np.random.default_rng(2).normal(size=(10, 3))
    rig_turned = points @ rig_rotation_matrix(a).T
    head_turned = to_blender_frame(points).astype(np.float64) @ head_matrix(a).T
    np.testing.assert_allclose(head_turned, to_blender_frame(rig_turned), atol=1e-6)
