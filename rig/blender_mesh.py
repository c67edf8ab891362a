"""The face model as a Blender mesh: vertices, triangles, shape keys and vertex colours.

Pure numpy (no torch, no bpy): the add-on feeds these arrays to bpy. Blender's frame is Z up
in metres; the face model's is Y up in decimetres with +Z towards the camera, so

    blender (x, y, z) = 0.1 · (x, -z, y)

a proper rotation (triangle winding and normals are kept) that makes the face look down -Y,
towards Blender's front view. Positions are recentred on the centroid of the mean shape, like
rig.geometry, so `shaped_vertices` equals the torch shape in this frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .face_model import FaceModel

DECIMETRES_TO_METRES = 0.1

# Rows map model (x, y, z) to Blender (x, y, z), scale included.
_MODEL_TO_BLENDER = DECIMETRES_TO_METRES * np.array(
    [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], np.float32
)


def to_blender_frame(points: np.ndarray) -> np.ndarray:
    """Model-frame points or offsets [..., 3] (dm, Y up) -> Blender frame [..., 3] (m, Z up)."""
    return np.asarray(points, np.float32) @ _MODEL_TO_BLENDER.T


@dataclass(frozen=True)
class BlenderFaceMesh:
    """Arrays for one Blender mesh object. N = vertices, F = triangles.

    vertices    [N, 3] float32 metres, Blender frame, recentred mean shape (the basis mesh)
    triangles   [F, 3] int32, 0-based, counter-clockwise seen from outside
    shape_keys  {"identity": [80, N, 3], "expression": [64, N, 3]} float32 metres, the offset
                of each key at coefficient value 1.0 (one standard deviation)
    """

    vertices: np.ndarray
    triangles: np.ndarray
    shape_keys: dict[str, np.ndarray]

    def shaped_vertices(self, identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
        """Vertices [N, 3] (m, Blender frame) for identity [80] and expression [64] (σ units),
        what Blender shows with those shape-key values."""
        offsets = np.tensordot(np.asarray(identity, np.float32), self.shape_keys["identity"], 1)
        offsets += np.tensordot(
            np.asarray(expression, np.float32), self.shape_keys["expression"], 1
        )
        return self.vertices + offsets


def blender_face_mesh(face_model: FaceModel) -> BlenderFaceMesh:
    """Convert a face model's shape into Blender-frame mesh arrays (see module docstring)."""
    n = face_model.n_vertices
    mean_shape = face_model.mean_shape.reshape(n, 3).astype(np.float64)

    def keys(basis: np.ndarray) -> np.ndarray:
        # [3N, K] -> [K, N, 3]: one offset field per coefficient.
        return to_blender_frame(basis.T.reshape(basis.shape[1], n, 3))

    return BlenderFaceMesh(
        vertices=to_blender_frame(mean_shape - mean_shape.mean(axis=0)),
        triangles=np.asarray(face_model.triangles, np.int32),
        shape_keys={
            "identity": keys(face_model.id_base),
            "expression": keys(face_model.exp_base),
        },
    )


def vertex_albedo(face_model: FaceModel, reflectance: np.ndarray) -> np.ndarray:
    """Per-vertex albedo [N, 3] for reflectance [80] (σ units): rig.geometry.albedo clipped to
    0..1, for a colour attribute."""
    texture = face_model.mean_tex + face_model.tex_base @ np.asarray(reflectance, np.float32)
    return np.clip(texture.reshape(-1, 3) / 255.0, 0.0, 1.0).astype(np.float32)
