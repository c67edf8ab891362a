"""The rasteriser against a brute-force reference (every pixel centre against every triangle,
numpy float64), plus perspective correctness, gradients, chunking and input errors."""

import numpy as np
import pytest
import torch
from neural_face_rig.rig.errors import RigError
from neural_face_rig.rig.raster import RasterInputError, interpolate, rasterize

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NEAR = 1e-2


def _cross(ax, ay, bx, by):
    return ax * by - ay * bx


def _owns_edge(du, dv):
    """Top-left rule for a counter-clockwise triangle in (u, v) with v up."""
    return dv < 0 or (dv == 0 and du < 0)


def reference_raster(screen, triangles, height, width, near=NEAR):
    """Brute force: loop over pixels and triangles; nearest depth wins, lowest id on ties.

    screen [N, 3] float64 (u, v up, depth); returns triangle id [H, W] (-1 empty),
    perspective-correct barycentrics [H, W, 3] in the triangle's own vertex order, depth.
    """
    tri_id = np.full((height, width), -1)
    bary = np.zeros((height, width, 3))
    depth = np.full((height, width), np.inf)
    for r in range(height):
        for c in range(width):
            pu, pv = c + 0.5, height - (r + 0.5)
            for f, corners in enumerate(triangles):
                (u0, v0, z0), (u1, v1, z1), (u2, v2, z2) = screen[corners]
                if min(z0, z1, z2) <= near:
                    continue
                area = _cross(u1 - u0, v1 - v0, u2 - u0, v2 - v0)
                if area == 0:
                    continue
                order = [0, 1, 2] if area > 0 else [0, 2, 1]
                pts = screen[corners][order, :2]
                inside = True
                for k in range(3):
                    a, b = pts[k], pts[(k + 1) % 3]
                    e = _cross(b[0] - a[0], b[1] - a[1], pu - a[0], pv - a[1])
                    if e < 0 or (e == 0 and not _owns_edge(b[0] - a[0], b[1] - a[1])):
                        inside = False
                if not inside:
                    continue
                # Screen-space barycentric of vertex i: area of (p, other two) / area.
                lam = np.empty(3)
                uv = screen[corners][:, :2]
                for i in range(3):
                    j, k = (i + 1) % 3, (i + 2) % 3
                    lam[i] = _cross(uv[j, 0] - pu, uv[j, 1] - pv, uv[k, 0] - pu, uv[k, 1] - pv)
                lam /= area
                over_z = lam / screen[corners][:, 2]
                z = 1.0 / over_z.sum()
                if z < depth[r, c]:
                    depth[r, c], tri_id[r, c] = z, f
                    bary[r, c] = over_z * z
    return tri_id, bary, depth


def random_triangles(rng, n, height, width):
    """Overlapping triangles at different depths, tiny to image-sized, some partly or fully
    outside, both windings, vertex depths varying across each triangle. The last two are
    larger than the image and lie behind the others; the very last covers all of it."""
    centre = rng.uniform([-4, -4], [width + 4, height + 4], size=(n, 1, 2))
    scale = np.exp(rng.uniform(np.log(0.4), np.log(0.3 * max(height, width)), size=(n, 1, 1)))
    scale[-2:] = 4 * max(height, width)
    uv = centre + scale * rng.normal(size=(n, 3, 2))
    uv[-1] = [[-3 * width, -height], [4 * width, -height], [width / 2, 4 * height]]
    z = rng.uniform(2.0, 8.0, size=(n, 1, 1)) + rng.uniform(-0.5, 0.5, size=(n, 3, 1))
    z[-2:] += 3.0
    screen = np.concatenate([uv, z], 2).reshape(-1, 3)
    return screen, np.arange(3 * n).reshape(n, 3)


def run_raster(screen, triangles, height, width, device, dtype=torch.float64, **kw):
    s = torch.tensor(screen, dtype=dtype, device=device)[None]
    t = torch.tensor(triangles, device=device)
    return rasterize(s, t, (height, width), near=NEAR, **kw)


def assert_matches_reference(frag, ref, index=0):
    ref_id, ref_bary, ref_depth = ref
    tri = frag.triangle[index].cpu().numpy()
    np.testing.assert_array_equal(tri, ref_id)
    np.testing.assert_array_equal(frag.mask[index].cpu().numpy(), ref_id >= 0)
    np.testing.assert_allclose(frag.bary[index].detach().cpu().numpy(), ref_bary, atol=1e-5)
    covered = ref_id >= 0
    depth = frag.depth[index].detach().cpu().numpy()
    np.testing.assert_allclose(depth[covered], ref_depth[covered], atol=1e-5, rtol=0)
    assert np.isinf(depth[~covered]).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_overlapping_triangles_match_brute_force(device, seed):
    rng = np.random.default_rng(seed)
    height, width = 17, 23
    screen, triangles = random_triangles(rng, 30, height, width)
    frag = run_raster(screen, triangles, height, width, device)
    ref = reference_raster(screen, triangles, height, width)
    assert (ref[0] >= 0).all() and len(np.unique(ref[0])) > 8  # a non-trivial scene
    assert_matches_reference(frag, ref)


def test_float32_agrees_with_reference():
    rng = np.random.default_rng(7)
    height, width = 16, 16
    screen, triangles = random_triangles(rng, 25, height, width)
    frag = run_raster(screen, triangles, height, width, "cpu", dtype=torch.float32)
    ref_id, ref_bary, _ = reference_raster(screen, triangles, height, width)
    same = frag.triangle[0].numpy() == ref_id
    assert same.mean() > 0.99
    np.testing.assert_allclose(frag.bary[0].numpy()[same], ref_bary[same], atol=1e-4)


def grid_mesh(n_cols, n_rows, origin, step):
    """A tessellated rectangle whose vertices sit on pixel centres: many samples fall exactly
    on shared edges and vertices. Diagonals alternate so both edge directions occur."""
    ids = np.arange((n_cols + 1) * (n_rows + 1)).reshape(n_rows + 1, n_cols + 1)
    tris = []
    for i in range(n_rows):
        for j in range(n_cols):
            a, b, c, d = ids[i, j], ids[i, j + 1], ids[i + 1, j + 1], ids[i + 1, j]
            tris += [[a, b, c], [a, c, d]] if (i + j) % 2 else [[a, b, d], [b, c, d]]
    ju, iv = np.meshgrid(np.arange(n_cols + 1), np.arange(n_rows + 1))
    uv = np.stack([origin[0] + step * ju, origin[1] + step * iv], -1).reshape(-1, 2)
    z = 4.0 + 0.1 * uv[:, 0] - 0.05 * uv[:, 1]
    return np.concatenate([uv, z[:, None]], 1), np.array(tris)


@pytest.mark.parametrize("device", DEVICES)
def test_shared_edges_and_vertices_are_drawn_exactly_once(device):
    height, width = 14, 14
    screen, triangles = grid_mesh(4, 3, origin=(2.5, 3.5), step=2.0)
    # Flip the winding of every third triangle: the rule must not depend on it.
    triangles[::3] = triangles[::3, ::-1]
    ref = reference_raster(screen, triangles, height, width)
    frag = run_raster(screen, triangles, height, width, device)
    assert_matches_reference(frag, ref)
    # The reference rule itself: each centre inside the rectangle is claimed once, and the
    # rectangle [2.5, 10.5] x [3.5, 9.5] holds exactly its half-open set of centres.
    rows_covered = np.nonzero(frag.mask[0].any(1).cpu().numpy())[0]
    cols_covered = np.nonzero(frag.mask[0].any(0).cpu().numpy())[0]
    assert frag.mask[0].sum().item() == len(rows_covered) * len(cols_covered)
    assert len(cols_covered) == 8 and len(rows_covered) == 6
    for f in range(len(triangles)):
        alone = reference_raster(screen, triangles[f : f + 1], height, width)[0] >= 0
        others = reference_raster(screen, np.delete(triangles, f, 0), height, width)[0] >= 0
        assert not (alone & others).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_samples_on_shared_edges_with_inexact_coordinates_are_never_lost(dtype):
    """Watertightness under rounding: pairs of triangles share an edge through (up to
    rounding) a pixel centre, with arbitrary float vertices; the centre must be covered."""
    rng = np.random.default_rng(10)
    size, spacing = 64, 8
    centres = np.stack(np.meshgrid(np.arange(4, size, spacing), np.arange(4, size, spacing)), -1)
    centres = centres.reshape(-1, 2) + 0.5
    angle = rng.uniform(0, 2 * np.pi, len(centres))
    along = np.stack([np.cos(angle), np.sin(angle)], 1)
    across = np.stack([-along[:, 1], along[:, 0]], 1)
    t = rng.uniform(0.3, 3.0, size=(len(centres), 4, 1))
    a = centres - t[:, 0] * along
    b = centres + t[:, 1] * along
    c1 = centres + t[:, 2] * across + rng.uniform(-1, 1, (len(centres), 1)) * along
    c2 = centres - t[:, 3] * across + rng.uniform(-1, 1, (len(centres), 1)) * along
    uv = np.stack([a, b, c1, c2], 1).reshape(-1, 2)
    screen = np.concatenate([uv, np.full((len(uv), 1), 5.0)], 1)
    quads = 4 * np.arange(len(centres))[:, None]
    triangles = np.concatenate([quads + [0, 1, 2], quads + [1, 0, 3]])
    frag = run_raster(screen, triangles, size, size, "cpu", dtype=dtype)
    rows = (size - centres[:, 1]).astype(int)  # v = H - (r + 0.5)
    cols = centres[:, 0].astype(int)
    assert frag.mask[0, rows, cols].all()


def test_exact_depth_ties_go_to_the_lowest_triangle_id():
    height, width = 8, 8
    screen = np.array([[0, 0, 3], [8, 0, 3], [0, 8, 3], [8, 8, 5]], dtype=np.float64)
    # Triangle 2 duplicates triangle 1 (identical depths everywhere); triangle 0 meets them
    # on the diagonal at equal depth and lies behind them elsewhere.
    triangles = np.array([[1, 3, 2], [0, 1, 2], [0, 1, 2]])
    frag = run_raster(screen, triangles, height, width, "cpu")
    ref = reference_raster(screen, triangles, height, width)
    assert_matches_reference(frag, ref)
    assert set(np.unique(ref[0])) == {0, 1}


def test_batch_elements_are_rasterised_independently():
    rng = np.random.default_rng(3)
    height, width = 12, 10
    screens = [random_triangles(rng, 12, height, width)[0] for _ in range(3)]
    triangles = np.arange(36).reshape(12, 3)
    frag = rasterize(torch.tensor(np.stack(screens)), torch.tensor(triangles), (height, width))
    for b in range(3):
        ref = reference_raster(screens[b], triangles, height, width)
        assert_matches_reference(frag, ref, b)


def test_small_candidate_budget_gives_the_same_image():
    rng = np.random.default_rng(4)
    screen, triangles = random_triangles(rng, 20, 16, 16)
    whole = run_raster(screen, triangles, 16, 16, "cpu")
    chunked = run_raster(screen, triangles, 16, 16, "cpu", candidate_budget=37)
    assert torch.equal(whole.triangle, chunked.triangle)
    assert torch.equal(whole.bary, chunked.bary)
    assert torch.equal(whole.depth, chunked.depth)


def test_near_plane_degenerate_and_non_finite_triangles_are_skipped():
    screen = np.array(
        [[1, 1, 5], [15, 1, 5], [1, 15, 5], [8, 8, 0.001], [3, 3, 5], [12, 12, 5], [np.nan, 2, 5]]
    )
    triangles = np.array([[0, 1, 3], [0, 4, 5], [0, 1, 6], [0, 1, 2]])
    frag = run_raster(screen, triangles, 16, 16, "cpu")
    ids = set(np.unique(frag.triangle.numpy()))
    assert ids == {-1, 3}


def test_empty_scene():
    screen = torch.tensor([[[-50.0, -50.0, 5.0], [-40.0, -50.0, 5.0], [-50.0, -40.0, 5.0]]])
    frag = rasterize(screen, torch.tensor([[0, 1, 2]]), 8)
    assert not frag.mask.any() and (frag.triangle == -1).all() and frag.depth.isinf().all()
    colours = interpolate(torch.ones(1, 3, 2), torch.tensor([[0, 1, 2]]), frag)
    assert colours.shape == (1, 8, 8, 2) and not colours.any()


def test_interpolated_camera_points_project_onto_their_pixels():
    """Perspective correctness without the reference: interpolating the camera-space
    positions must give the 3D point seen through each pixel centre, at the rasterised
    depth."""
    rng = np.random.default_rng(5)
    focal, centre, size, distance = 60.0, 16.0, 32, 10.0
    points = rng.uniform([-2, -2, -3], [2, 2, 3], size=(9, 3))  # three slanted triangles
    depth = distance - points[:, 2]
    screen = np.stack(
        [focal * points[:, 0] / depth + centre, focal * points[:, 1] / depth + centre, depth], 1
    )
    triangles = np.arange(9).reshape(3, 3)
    frag = run_raster(screen, triangles, size, size, "cpu")
    xyz = interpolate(torch.tensor(points)[None], torch.tensor(triangles), frag)[0].numpy()
    rows, cols = np.nonzero(frag.mask[0].numpy())
    assert len(rows) > 20
    seen = xyz[rows, cols]
    seen_depth = distance - seen[:, 2]
    np.testing.assert_allclose(focal * seen[:, 0] / seen_depth + centre, cols + 0.5, atol=1e-8)
    np.testing.assert_allclose(focal * seen[:, 1] / seen_depth + centre, size - rows - 0.5,
                               atol=1e-8)
    np.testing.assert_allclose(seen_depth, frag.depth[0].numpy()[rows, cols], atol=1e-9)


def test_interpolate_broadcasts_shared_attributes_and_zeroes_empty_pixels():
    rng = np.random.default_rng(6)
    screens = np.stack([random_triangles(rng, 6, 10, 10)[0] for _ in range(2)])
    triangles = torch.arange(18).reshape(6, 3)
    frag = rasterize(torch.tensor(screens), triangles, 10)
    values = torch.tensor(rng.normal(size=(1, 18, 4)))
    shared = interpolate(values, triangles, frag)
    repeated = interpolate(values.expand(2, -1, -1), triangles, frag)
    assert torch.equal(shared, repeated)
    assert not shared[~frag.mask].any()
    # A constant attribute interpolates to itself (barycentrics sum to one).
    ones = interpolate(torch.ones(2, 18, 1, dtype=torch.float64), triangles, frag)
    torch.testing.assert_close(ones[frag.mask], torch.ones_like(ones[frag.mask]))


def _gradcheck_scene():
    rng = np.random.default_rng(8)
    screen, triangles = random_triangles(rng, 4, 9, 9)
    screen[:, :2] = np.clip(screen[:, :2], -3, 12)  # keep them on screen
    return torch.tensor(screen)[None], torch.tensor(triangles)


def test_gradcheck_interpolation_wrt_positions_and_attributes():
    screen, triangles = _gradcheck_scene()
    attributes = torch.tensor(np.random.default_rng(9).normal(size=(1, 12, 2)))
    screen.requires_grad_(True)
    attributes.requires_grad_(True)
    assert rasterize(screen, triangles, 9).mask.sum() > 15

    def shade(s, a):
        frag = rasterize(s, triangles, 9)
        return interpolate(a, triangles, frag), torch.where(frag.mask, frag.depth, 0.0)

    assert torch.autograd.gradcheck(shade, (screen, attributes), eps=1e-6, atol=1e-6)


def test_gradients_reach_only_visible_vertices():
    # Triangle 1 hides behind triangle 0 entirely: its vertices get no gradient.
    screen = torch.tensor(
        [[[1.0, 1, 3], [15, 1, 3], [1, 15, 3], [3, 3, 6], [8, 3, 6], [3, 8, 6]]],
        requires_grad=True,
    )
    colours = torch.rand(1, 6, 3, requires_grad=True)
    triangles = torch.tensor([[0, 1, 2], [3, 4, 5]])
    frag = rasterize(screen, triangles, 16)
    assert set(frag.triangle.unique().tolist()) == {-1, 0}
    (interpolate(colours, triangles, frag) * torch.rand(1, 16, 16, 3)).sum().backward()
    assert screen.grad[0, :3].abs().sum() > 0 and colours.grad[0, :3].abs().sum() > 0
    assert not screen.grad[0, 3:].any() and not colours.grad[0, 3:].any()
    assert torch.isfinite(screen.grad).all()


@pytest.mark.parametrize(
    ("screen_shape", "triangles", "message"),
    [
        ((1, 4, 2), torch.tensor([[0, 1, 2]]), "screen must be"),
        ((4, 3), torch.tensor([[0, 1, 2]]), "screen must be"),
        ((1, 4, 3), torch.tensor([[0.0, 1.0, 2.0]]), "integer tensor"),
        ((1, 4, 3), torch.tensor([0, 1, 2]), r"\[F, 3\]"),
        ((1, 4, 3), torch.tensor([[0, 1, 4]]), r"\[0, 4\)"),
    ],
)
def test_bad_inputs_name_the_problem(screen_shape, triangles, message):
    with pytest.raises(RasterInputError, match=message):
        rasterize(torch.zeros(screen_shape), triangles, 8)


def test_bad_size_and_attributes_raise_rig_errors():
    with pytest.raises(RigError, match="size"):
        rasterize(torch.zeros(1, 3, 3), torch.tensor([[0, 1, 2]]), (0, 8))
    frag = rasterize(torch.zeros(2, 3, 3), torch.tensor([[0, 1, 2]]), 4)
    with pytest.raises(RasterInputError, match="attributes"):
        interpolate(torch.zeros(3, 3, 1), torch.tensor([[0, 1, 2]]), frag)
