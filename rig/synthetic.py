"""Synthetic face models: stand-ins for the licensed BFM in tests, demos and benchmarks.

The surface is the front of an ellipsoid (~1.6 dm wide, ~1.9 dm tall, +Z to the camera) with
a nose, eye sockets, lips and chin, triangulated as a grid whose central quads are split at
their centre. Kind "full" has exactly the vertex and triangle counts of Deep3DFaceRecon's
``BFM_model_front.mat`` (35,709 / 70,789), "tiny" a few hundred vertices; both carry bases of
the official sizes (80 / 64 / 80), 68 iBUG keypoints and the three masks. Deterministic in
``seed``; the mesh itself does not depend on the seed, only the bases do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .face_model import (
    FACES_PER_VERTEX,
    N_EXPRESSION,
    N_IDENTITY,
    N_LANDMARKS,
    N_REFLECTANCE,
    FaceModel,
)
from .synthetic_actions import action_expression_base


@dataclass(frozen=True)
class _GridSpec:
    """A (columns x rows) vertex grid, `split_quads` of its quads split at their centre."""

    columns: int
    rows: int
    split_quads: int


# 157 x 158 grid: 24,806 vertices, 48,984 triangles; +10,902 centre splits (+1 vertex,
# +2 triangles each) and one boundary-edge split (+1, +1) give 35,709 / 70,789.
_GRIDS = {
    "full": _GridSpec(columns=157, rows=158, split_quads=10_902),
    "tiny": _GridSpec(columns=17, rows=18, split_quads=60),
}

# Ellipsoid semi-axes (decimetres) and the angular extent of the front cap (radians).
_SEMI_AXES = np.array([0.8, 1.0, 0.8])
_MAX_LONGITUDE = np.radians(80.0)
_MAX_LATITUDE = np.radians(70.0)

# Face layout in the xy-plane, decimetres from the ellipsoid's centre (x right, y up).
_EYE_CENTRE = (0.31, 0.25)
_EYE_HALF = (0.12, 0.045)
_BROW_CENTRE = (0.32, 0.45)
_BROW_HALF = (0.22, 0.06)
_MOUTH_CENTRE = (0.0, -0.42)
_MOUTH_HALF = (0.22, 0.085)
_FRONT_CENTRE = (0.0, -0.05)
_FRONT_HALF = (0.70, 0.85)

_SKIN_RGB = np.array([205.0, 160.0, 135.0])
_LIP_RGB = np.array([175.0, 95.0, 90.0])
_BROW_RGB = np.array([95.0, 70.0, 55.0])
_SCLERA_RGB = np.array([225.0, 215.0, 210.0])


def make_synthetic_face_model(
    kind: str = "tiny", seed: int = 0, expressions: str = "blobs"
) -> FaceModel:
    """A deterministic head-like FaceModel; ``kind`` is "tiny" or "full" (BFM-front counts).
    ``expressions``: "blobs" (broad random motions) or "actions" (local facial actions, see
    rig.synthetic_actions)."""
    if kind not in _GRIDS:
        raise ValueError(f"synthetic face model kind must be one of {sorted(_GRIDS)}, got {kind!r}")
    if expressions not in ("blobs", "actions"):
        raise ValueError(f"synthetic expressions must be 'blobs' or 'actions', got {expressions!r}")
    longitude_latitude, triangles = _build_mesh(_GRIDS[kind])
    vertices = _surface(longitude_latitude)
    xy = vertices[:, :2].copy()  # face-layout coordinates, before centring
    keypoints = _pick_keypoints(xy, _landmark_template())
    vertices -= vertices.mean(axis=0)  # centre near the origin, like the recentred BFM

    front = _ellipse_radius(xy, _FRONT_CENTRE, _FRONT_HALF) <= 1.0
    features = (
        (_mirrored_ellipse_radius(xy, _EYE_CENTRE, _EYE_HALF) <= 1.5)
        | (_mirrored_ellipse_radius(xy, _BROW_CENTRE, _BROW_HALF) <= 1.0)
        | (_ellipse_radius(xy, _MOUTH_CENTRE, _MOUTH_HALF) <= 1.4)
    )
    front_mask = np.flatnonzero(front)
    tri_mask = triangles[front[triangles].all(axis=1)]

    shape_rng, expression_rng, texture_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    feature_vertices = keypoints[17:]  # brows, nose, eyes, mouth: where expressions act
    return FaceModel(
        mean_shape=vertices.reshape(-1).astype(np.float32),
        id_base=_identity_base(vertices, front_mask, shape_rng),
        exp_base=_expression_base(vertices, feature_vertices, expression_rng)
        if expressions == "blobs"
        else action_expression_base(vertices, keypoints, expression_rng),
        mean_tex=_mean_albedo(xy).reshape(-1).astype(np.float32),
        tex_base=_reflectance_base(vertices, front_mask, texture_rng),
        triangles=triangles,
        point_buf=_point_buffer(triangles, len(vertices)),
        keypoints=keypoints,
        skin_mask=front & ~features,
        front_mask=front_mask,
        tri_mask=tri_mask,
    )


def _build_mesh(spec: _GridSpec) -> tuple[np.ndarray, np.ndarray]:
    """Vertex (longitude, latitude) [N, 2] radians and triangles [F, 3] int64, counter-clockwise
    seen from +Z. Vertices: grid (row-major, row 0 at the bottom), quad centres, edge midpoint."""
    cols, rows = spec.columns, spec.rows
    lon = np.linspace(-_MAX_LONGITUDE, _MAX_LONGITUDE, cols)
    lat = np.linspace(-_MAX_LATITUDE, _MAX_LATITUDE, rows)
    grid = np.stack(np.meshgrid(lon, lat), axis=-1).reshape(-1, 2)

    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols - 1), indexing="ij")
    a = (r * cols + c).reshape(-1)  # quad corners, counter-clockwise: a b (right) d (up-right) e
    b, d, e = a + 1, a + cols + 1, a + cols
    centres = (grid[a] + grid[d]) / 2

    # Split the quads nearest the face centre: the detailed region gets the denser mesh.
    scaled = centres / [_MAX_LONGITUDE, _MAX_LATITUDE]
    split = np.zeros(len(a), dtype=bool)
    split[np.argsort(np.hypot(*scaled.T), kind="stable")[: spec.split_quads]] = True
    centre_ids = len(grid) + np.arange(spec.split_quads)
    m = np.zeros(len(a), dtype=np.int64)
    m[split] = centre_ids

    per_quad = np.where(
        split[:, None, None],
        np.stack([np.stack(t, -1) for t in ((a, b, m), (b, d, m), (d, e, m), (e, a, m))], 1),
        np.stack([np.stack(t, -1) for t in ((a, b, d), (a, d, e), (a, a, a), (a, a, a))], 1),
    )
    keep = np.ones((len(a), 4), dtype=bool)
    keep[~split, 2:] = False
    triangles = per_quad[keep]

    # Split the bottom edge of the first (bottom-left, never centre-split) triangle at its
    # midpoint: a boundary edge, so no neighbour gets a T-junction.
    midpoint_id = len(grid) + spec.split_quads
    t0 = triangles[0].copy()
    triangles[0] = (t0[0], midpoint_id, t0[2])
    triangles = np.concatenate([triangles, [[midpoint_id, t0[1], t0[2]]]])
    midpoint = (grid[t0[0]] + grid[t0[1]]) / 2

    longitude_latitude = np.concatenate([grid, centres[split], midpoint[None]])
    return longitude_latitude, triangles.astype(np.int64)


def _surface(longitude_latitude: np.ndarray) -> np.ndarray:
    """Positions [N, 3] (decimetres) on the ellipsoid front plus facial relief along +Z."""
    lon, lat = longitude_latitude.T
    x = _SEMI_AXES[0] * np.cos(lat) * np.sin(lon)
    y = _SEMI_AXES[1] * np.sin(lat)
    z = _SEMI_AXES[2] * np.cos(lat) * np.cos(lon)
    xy = np.stack([x, y], axis=-1)

    def bump(radius: np.ndarray) -> np.ndarray:
        return np.exp(-0.5 * radius**2)

    relief = (
        0.22 * bump(_ellipse_radius(xy, (0.0, -0.08), (0.085, 0.17)))  # nose
        + 0.07 * bump(_ellipse_radius(xy, (0.0, 0.15), (0.06, 0.14)))  # nose bridge
        - 0.06 * bump(_mirrored_ellipse_radius(xy, _EYE_CENTRE, (0.12, 0.09)))  # eye sockets
        + 0.03 * bump(_mirrored_ellipse_radius(xy, _BROW_CENTRE, (0.25, 0.08)))  # brow ridges
        + 0.03 * bump(_ellipse_radius(xy, _MOUTH_CENTRE, (0.2, 0.07)))  # lips
        + 0.04 * bump(_ellipse_radius(xy, (0.0, -0.74), (0.16, 0.09)))  # chin
    )
    return np.stack([x, y, z + relief], axis=-1)


def _landmark_template() -> np.ndarray:
    """The 68 iBUG landmarks [68, 2] in the face layout (x right, y up, decimetres).

    Order: jaw 0-16 (image left to right through the chin), brows 17-26, nose bridge 27-30,
    nose base 31-35, eyes 36-47 (each from its left corner over the upper lid), outer lips
    48-59 and inner lips 60-67 (from the left corner over the upper lip)."""

    def ellipse(centre: tuple[float, float], half: tuple[float, float], degrees: list[float]):
        t = np.radians(degrees)
        return np.stack([centre[0] + half[0] * np.cos(t), centre[1] + half[1] * np.sin(t)], -1)

    jaw = ellipse((0.0, 0.2), (0.70, 1.02), list(np.linspace(180.0, 360.0, 17)))
    s = np.linspace(0.0, 1.0, 5)
    right_brow = np.stack([-0.54 + 0.42 * s, 0.40 + 0.07 * np.sin(np.pi * (0.15 + 0.7 * s))], -1)
    left_brow = (right_brow * [-1.0, 1.0])[::-1]
    bridge = np.stack([np.zeros(4), np.linspace(0.26, -0.08, 4)], -1)
    nose_x = np.linspace(-0.13, 0.13, 5)
    nose_base = np.stack([nose_x, -0.17 - 0.03 * (1 - (nose_x / 0.13) ** 2)], -1)
    eye_angles = [180.0, 120.0, 60.0, 0.0, -60.0, -120.0]
    eyes = [ellipse((sx * _EYE_CENTRE[0], _EYE_CENTRE[1]), _EYE_HALF, eye_angles) for sx in (-1, 1)]
    upper_lip = ellipse(_MOUTH_CENTRE, (0.22, 0.08), [180.0, 150.0, 120.0, 90.0, 60.0, 30.0, 0.0])
    lower_lip = ellipse(_MOUTH_CENTRE, (0.22, 0.09), [-30.0, -60.0, -90.0, -120.0, -150.0])
    inner_lips = ellipse(
        _MOUTH_CENTRE, (0.16, 0.02), [180.0, 120.0, 90.0, 60.0, 0.0, -60.0, -90.0, -120.0]
    )
    template = np.concatenate(
        [jaw, right_brow, left_brow, bridge, nose_base, *eyes, upper_lip, lower_lip, inner_lips]
    )
    assert template.shape == (N_LANDMARKS, 2)
    return template


def _pick_keypoints(xy: np.ndarray, template: np.ndarray) -> np.ndarray:
    """For each landmark the nearest vertex [68] int64 not taken by an earlier landmark (the
    tiny mesh is coarser than the eye and lip spacing; every keypoint stays distinct)."""
    taken = np.zeros(len(xy), dtype=bool)
    ids = np.empty(len(template), dtype=np.int64)
    for i, point in enumerate(template):
        distance = np.hypot(*(xy - point).T)
        distance[taken] = np.inf
        ids[i] = int(np.argmin(distance))
        taken[ids[i]] = True
    return ids


def _ellipse_radius(xy: np.ndarray, centre, half) -> np.ndarray:
    """Normalised elliptic radius [N] of points [N, 2]: 1 on the ellipse."""
    return np.hypot((xy[:, 0] - centre[0]) / half[0], (xy[:, 1] - centre[1]) / half[1])


def _mirrored_ellipse_radius(xy: np.ndarray, centre, half) -> np.ndarray:
    """Elliptic radius [N] to the nearer of a left/right pair of ellipses at (+-cx, cy)."""
    mirrored = np.stack([np.abs(xy[:, 0]), xy[:, 1]], axis=-1)
    return _ellipse_radius(mirrored, centre, half)


def _soft_inside(radius: np.ndarray, softness: float = 0.15) -> np.ndarray:
    """Smooth 0..1 weight [N]: 1 well inside an ellipse (radius < 1), 0 well outside."""
    return 1.0 / (1.0 + np.exp((radius - 1.0) / softness))


def _mean_albedo(xy: np.ndarray) -> np.ndarray:
    """Skin-like mean albedo [N, 3] in 0..255 with lips, brows and eye whites."""
    albedo = np.broadcast_to(_SKIN_RGB, (len(xy), 3)).copy()
    albedo *= 1.0 - 0.08 * np.clip(np.abs(xy[:, :1]) / 0.8, 0.0, 1.0)  # slightly darker sides
    for colour, weight in (
        (_LIP_RGB, _soft_inside(_ellipse_radius(xy, _MOUTH_CENTRE, _MOUTH_HALF))),
        (_BROW_RGB, _soft_inside(_mirrored_ellipse_radius(xy, _BROW_CENTRE, _BROW_HALF), 0.1)),
        (_SCLERA_RGB, _soft_inside(_mirrored_ellipse_radius(xy, _EYE_CENTRE, _EYE_HALF), 0.1)),
    ):
        albedo += weight[:, None] * (colour - albedo)
    return albedo


def _smooth_field(
    vertices: np.ndarray, centres: np.ndarray, widths: np.ndarray, vectors: np.ndarray
) -> np.ndarray:
    """Sum of Gaussian blobs [N, D]: blob k (centre [3], width dm) carries vectors[k] [D]."""
    field = np.zeros((len(vertices), vectors.shape[1]))
    for centre, width, vector in zip(centres, widths, vectors, strict=True):
        weight = np.exp(-0.5 * np.sum((vertices - centre) ** 2, axis=1) / width**2)
        field += weight[:, None] * vector
    return field


def _peak_normalised(field: np.ndarray, peak: float) -> np.ndarray:
    """Field [N, D] scaled so its largest per-vertex vector norm equals ``peak``."""
    return field * (peak / max(float(np.linalg.norm(field, axis=1).max()), 1e-12))


def _as_basis(columns: list[np.ndarray]) -> np.ndarray:
    """Per-component fields [N, D] -> basis [D*N, K] float32 (row D*v + d = channel d of v)."""
    return np.stack([c.reshape(-1) for c in columns], axis=1).astype(np.float32)


def _local_displacements(
    vertices: np.ndarray, centres: np.ndarray, rng: np.random.Generator, peak: float
) -> np.ndarray:
    """A smooth displacement field [N, 3] from three blobs at ``centres`` [3, 3]."""
    directions = rng.normal(size=(3, 3)) * [0.6, 0.6, 1.0]  # faces vary most in depth
    widths = rng.uniform(0.08, 0.3, size=3)
    return _peak_normalised(_smooth_field(vertices, centres, widths, directions), peak)


def _identity_base(
    vertices: np.ndarray, front_mask: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Identity basis [3N, 80]: three global proportions (width, height, depth), then local
    smooth shape changes; peak displacement per unit coefficient 7 mm falling to ~1.3 mm."""
    peaks = 0.07 / np.sqrt(1.0 + np.arange(N_IDENTITY) / 3.0)
    columns = []
    for k, peak in enumerate(peaks):
        if k < 3:
            field = np.zeros_like(vertices)
            field[:, k] = vertices[:, k]
            columns.append(_peak_normalised(field, peak))
        else:
            centres = vertices[rng.choice(front_mask, size=3)]
            columns.append(_local_displacements(vertices, centres, rng, peak))
    return _as_basis(columns)


def _expression_base(
    vertices: np.ndarray, feature_vertices: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Expression basis [3N, 64]: a jaw opening (1 cm), then smooth motions around the
    brows, eyes, nose and mouth; peak 6 mm per unit coefficient falling to ~1.3 mm."""
    below_mouth = 1.0 / (1.0 + np.exp((vertices[:, 1] - vertices[feature_vertices[-1], 1]) / 0.05))
    jaw = np.zeros_like(vertices)
    jaw[:, 1] = -below_mouth
    jaw[:, 2] = -0.3 * below_mouth
    columns = [_peak_normalised(jaw, 0.1)]
    for peak in 0.06 / np.sqrt(1.0 + np.arange(1, N_EXPRESSION) / 3.0):
        anchors = vertices[rng.choice(feature_vertices, size=3)]
        centres = anchors + rng.normal(scale=0.03, size=anchors.shape)
        columns.append(_local_displacements(vertices, centres, rng, peak))
    return _as_basis(columns)


def _reflectance_base(
    vertices: np.ndarray, front_mask: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Reflectance basis [3N, 80] in 0..255 units: overall skin tone first, then smooth local
    colour changes mostly in brightness; peak 30 units per coefficient falling to ~5.8."""
    peaks = 30.0 / np.sqrt(1.0 + np.arange(N_REFLECTANCE) / 3.0)
    columns = [_peak_normalised(np.broadcast_to([1.0, 0.8, 0.7], vertices.shape), peaks[0])]
    for peak in peaks[1:]:
        centres = vertices[rng.choice(front_mask, size=3)]
        colours = rng.normal(size=(3, 1)) + 0.35 * rng.normal(size=(3, 3))
        widths = rng.uniform(0.1, 0.4, size=3)
        columns.append(_peak_normalised(_smooth_field(vertices, centres, widths, colours), peak))
    return _as_basis(columns)


def _point_buffer(triangles: np.ndarray, n_vertices: int) -> np.ndarray:
    """Faces around each vertex [N, 8] int64, padded with the dummy face id F."""
    vertex = triangles.reshape(-1)
    face = np.repeat(np.arange(len(triangles)), 3)
    order = np.argsort(vertex, kind="stable")
    vertex, face = vertex[order], face[order]
    counts = np.bincount(vertex, minlength=n_vertices)
    if counts.max() > FACES_PER_VERTEX or counts.min() == 0:
        raise AssertionError(f"mesh has vertices with {counts.min()}..{counts.max()} faces")
    slot = np.arange(len(vertex)) - np.repeat(np.cumsum(counts) - counts, counts)
    buffer = np.full((n_vertices, FACES_PER_VERTEX), len(triangles), dtype=np.int64)
    buffer[vertex, slot] = face
    return buffer
