"""A differentiable triangle rasteriser in pure PyTorch (CPU and CUDA).

Visibility is discrete and carries no gradient (no antialiasing, like nvdiffrast without its
antialias pass); the perspective-correct barycentrics of the winning triangle at each pixel
are then recomputed with autograd, so gradients reach screen positions (and, through
``interpolate``, vertex attributes) wherever a pixel is covered.

Screen space follows ``rig.camera.project``: u px to the right, v px up, depth z' > 0 away
from the camera. Pixel (row r, col c) samples u = c + 0.5, v = H - (r + 0.5).

Coverage rule: a sample is inside a triangle when every edge function is positive, or zero
on an "owned" edge. With the triangle taken counter-clockwise in (u, v), an edge with
direction (du, dv) is owned when dv < 0, or dv == 0 and du < 0 (the top-left rule), and each
edge function is evaluated from the same endpoint by both triangles sharing it: a sample on
a shared edge or vertex belongs to exactly one triangle, even under rounding (watertight).
Both windings are drawn (no culling). Among the triangles covering a sample the nearest
perspective-correct depth wins; exact ties go to the lowest triangle id.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from .errors import RigError

# Candidate (pixel, triangle) pairs tested at once. Each costs ~250 bytes of temporaries at
# fp32, so this bounds their working memory to ~130-200 MB however large and numerous the
# triangles are (the full face mesh makes ~60 k candidates at 224 px, ~1.3 M at 1024 px).
DEFAULT_CANDIDATE_BUDGET = 1 << 19


class RasterInputError(RigError, ValueError):
    """Screen positions, triangles or attributes handed to the rasteriser are malformed."""


@dataclass
class Fragments:
    """What the rasteriser saw at each pixel of a [B, H, W] image.

    triangle [B, H, W] int64 id of the visible triangle, -1 where empty
    bary     [B, H, W, 3] perspective-correct barycentrics of that triangle's vertices,
             differentiable w.r.t. the screen positions; 0 where empty
    depth    [B, H, W] perspective-correct depth z' (units of the input), differentiable;
             +inf where empty
    mask     [B, H, W] bool, True where a triangle is visible
    """

    triangle: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor


def rasterize(
    screen: torch.Tensor,
    triangles: torch.Tensor,
    size: int | tuple[int, int],
    near: float = 1e-2,
    candidate_budget: int = DEFAULT_CANDIDATE_BUDGET,
) -> Fragments:
    """Rasterise triangles given in screen space.

    screen    [B, N, 3] (u px right, v px up, depth z'), float32 or float64
    triangles [F, 3] integer vertex ids, shared by the batch
    size      H (square image) or (H, W) in pixels
    near      triangles with a vertex at depth <= near are skipped (no clipping)
    candidate_budget  (pixel, triangle) pairs tested per pass; bounds peak memory

    Degenerate (zero-area) and non-finite triangles are skipped.
    """
    height, width = _image_size(size)
    _check_screen(screen)
    triangles = _check_triangles(triangles, screen.shape[1], screen.device)
    batch, n_faces = screen.shape[0], triangles.shape[0]
    n_pixels = batch * height * width

    winner = _visible_triangles(
        screen.detach(), triangles, height, width, near, max(int(candidate_budget), 1)
    )
    covered = winner >= 0
    pixel = torch.nonzero(covered).squeeze(1)
    bary, depth = _perspective_barycentrics(
        screen, triangles, pixel, winner.index_select(0, pixel), height, width
    )
    bary_image = screen.new_zeros(n_pixels, 3).index_put((pixel,), bary.t())
    depth_image = screen.new_full((n_pixels,), float("inf")).index_put((pixel,), depth)
    return Fragments(
        triangle=torch.where(covered, winner % max(n_faces, 1), -1).view(batch, height, width),
        bary=bary_image.view(batch, height, width, 3),
        depth=depth_image.view(batch, height, width),
        mask=covered.view(batch, height, width),
    )


def interpolate(
    attributes: torch.Tensor, triangles: torch.Tensor, fragments: Fragments
) -> torch.Tensor:
    """Interpolate per-vertex attributes at every pixel with the fragments' barycentrics.

    attributes [B, N, C] (or [1, N, C], shared by the batch); returns [B, H, W, C] in the
    attributes' dtype, zeros where no triangle is visible. Differentiable w.r.t. the
    attributes and fragments.bary.
    """
    batch, height, width = fragments.triangle.shape
    if attributes.dim() != 3 or attributes.shape[0] not in (1, batch):
        raise RasterInputError(
            f"interpolate: attributes must have shape [B, N, C] with B = {batch} or 1, "
            f"found {tuple(attributes.shape)}"
        )
    triangles = _check_triangles(triangles, attributes.shape[1], attributes.device)
    flat_triangle = fragments.triangle.reshape(-1)
    pixel = torch.nonzero(flat_triangle >= 0).squeeze(1)
    face = flat_triangle.index_select(0, pixel)
    if attributes.shape[0] > 1:
        image = torch.div(pixel, height * width, rounding_mode="floor")
        face = face + image * triangles.shape[0]
    corner_values = _corners(attributes, triangles, face)  # [C, 3, P]
    weights = fragments.bary.reshape(-1, 3).index_select(0, pixel).to(attributes.dtype)
    values = (corner_values * weights.t()).sum(1)  # [C, P]
    channels = attributes.shape[2]
    out = attributes.new_zeros(batch * height * width, channels).index_put((pixel,), values.t())
    return out.view(batch, height, width, channels)


# The maths below is laid out component-major ([3 coordinates, 3 corners, T] rather than
# [T, 3, 3]): every per-triangle or per-sample quantity is then a contiguous row, which runs
# several times faster on CPU than reductions and arithmetic over size-3 inner dimensions.


def _corners(
    values: torch.Tensor, triangles: torch.Tensor, face: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-vertex values [B, N, C] at the corners of triangles -> [C, 3 corners, P].

    face [P] numbers the triangles b * F + f (or f alone when B = 1); None takes every
    triangle of every batch element, P = B * F in that order.
    """
    batch, n_vertices, channels = values.shape
    if face is None:
        offsets = torch.arange(batch, device=values.device) * n_vertices
        rows = triangles.t()[:, None, :] + offsets[:, None]  # [3, B, F]
    else:
        n_faces = triangles.shape[0]
        image = torch.div(face, n_faces, rounding_mode="floor")
        rows = triangles.index_select(0, face - image * n_faces).t() + image * n_vertices
    flat = values.reshape(batch * n_vertices, channels).t().contiguous()
    return flat.index_select(1, rows.reshape(-1)).view(channels, 3, -1)


def _visible_triangles(
    screen: torch.Tensor,
    triangles: torch.Tensor,
    height: int,
    width: int,
    near: float,
    budget: int,
) -> torch.Tensor:
    """Discrete visibility, no gradient: [B*H*W] triangle id b * F + f per pixel, -1 empty."""
    batch, n_faces = screen.shape[0], triangles.shape[0]
    n_pixels = batch * height * width
    device = screen.device
    corners = _corners(screen, triangles)  # [3, 3, T = B * F]
    u, v, z = corners
    area2 = (u[1] - u[0]) * (v[2] - v[0]) - (v[1] - v[0]) * (u[2] - u[0])
    usable = (area2 != 0) & area2.isfinite() & (z > near).all(0) & z.isfinite().all(0)

    # Pixel-centre bounding box; pixel (r, c) samples u = c + 0.5, v = H - r - 0.5.
    col0 = torch.ceil(u.amin(0) - 0.5).clamp(0, width)
    col1 = torch.floor(u.amax(0) - 0.5).clamp(-1, width - 1)
    row0 = torch.ceil((height - 0.5) - v.amax(0)).clamp(0, height)
    row1 = torch.floor((height - 0.5) - v.amin(0)).clamp(-1, height - 1)
    n_cols = (col1 - col0 + 1).clamp(min=0).nan_to_num(0).long()
    n_rows = (row1 - row0 + 1).clamp(min=0).nan_to_num(0).long()
    counts = n_cols * n_rows * usable
    active = torch.nonzero(counts).squeeze(1)
    if active.numel() == 0:
        return torch.full((n_pixels,), -1, dtype=torch.long, device=device)
    counts = counts.index_select(0, active)
    ends = torch.cumsum(counts, 0)
    total = int(ends[-1])

    # index_select on a 2-D view: on CPU ~10x faster than on the last dim of the 3-D tensor.
    active_corners = corners.view(9, -1).index_select(1, active).view(3, 3, -1)
    edges = _edge_table(active_corners, area2.index_select(0, active))
    placement = torch.stack(
        [
            col0.index_select(0, active).long(),
            row0.index_select(0, active).long(),
            n_cols.index_select(0, active),
            ends - counts,
            active,
        ]
    )  # [5, A]: first column, first row, columns, first candidate number, b * F + f

    def inside_chunks() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for first in range(0, total, budget):
            candidate = torch.arange(first, min(first + budget, total), device=device)
            if total <= budget:
                owner = torch.repeat_interleave(
                    torch.arange(active.numel(), device=device), counts, output_size=total
                )
            else:
                owner = torch.searchsorted(ends, candidate, right=True)
            yield _inside_candidates(
                candidate,
                edges.index_select(1, owner),
                placement.index_select(1, owner),
                n_faces,
                height,
                width,
            )

    # Pass 1 finds the nearest depth per pixel, pass 2 the lowest triangle id at that depth.
    # One chunk is kept between the passes; several are recomputed so memory stays bounded.
    first_pass: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = inside_chunks()
    if total <= budget:
        first_pass = list(first_pass)
    nearest_depth = screen.new_full((n_pixels,), float("inf"))
    for depth, pixel, _ in first_pass:
        nearest_depth.scatter_reduce_(0, pixel, depth, "amin")
    winner = torch.full((n_pixels,), -1, dtype=torch.long, device=device)
    for depth, pixel, face in first_pass if total <= budget else inside_chunks():
        nearest = torch.nonzero(depth == nearest_depth.index_select(0, pixel)).squeeze(1)
        pixel, face = pixel.index_select(0, nearest), face.index_select(0, nearest)
        winner.scatter_reduce_(0, pixel, face, "amin", include_self=False)
    return winner


def _edge_table(corners: torch.Tensor, area2: torch.Tensor) -> torch.Tensor:
    """Per triangle [18, A]: rows of edge origin u, v and direction du, dv (3 edges each,
    oriented so that inside is positive), each edge's inside threshold, 1/z' per vertex.

    corners [3, 3, A] screen (u, v, z') of each corner; area2 [A] twice the signed area.
    Edge i runs from vertex i+1 to vertex i+2: its edge function vanishes on the side opposite
    vertex i, so edge_i / (twice the area) is the screen-space barycentric of vertex i.
    """
    following = torch.tensor([1, 2, 0], device=corners.device)
    start = corners[:2].index_select(1, following)  # [2, 3 edges, A]
    end = corners[:2].index_select(1, following[following])
    # Evaluate every edge from its lexicographically smaller endpoint: the two triangles that
    # share an edge then compute exactly opposite edge functions (rounding is symmetric), so
    # no sample on a shared edge is lost or drawn twice.
    from_end = (end[0] < start[0]) | ((end[0] == start[0]) & (end[1] < start[1]))
    origin = torch.stack([torch.where(from_end, end[k], start[k]) for k in range(2)])
    # Orient every triangle counter-clockwise so that inside means all edge functions >= 0.
    direction = (end - start) * torch.where(area2 < 0, -1.0, 1.0).to(corners.dtype)
    du, dv = direction
    owned = (dv < 0) | ((dv == 0) & (du < 0))
    # Samples pass an edge when edge > threshold: 0 for edges that do not own their samples,
    # minus the smallest normal float (i.e. edge >= 0) for the owned, top-left ones.
    threshold = owned.to(corners.dtype) * -torch.finfo(corners.dtype).tiny
    return torch.cat([origin.reshape(6, -1), direction.reshape(6, -1), threshold, 1 / corners[2]])


def _inside_candidates(
    candidate: torch.Tensor,
    edges: torch.Tensor,
    placement: torch.Tensor,
    n_faces: int,
    height: int,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Test candidate samples against their triangles.

    candidate [n] global candidate numbers; edges [18, n] and placement [5, n] columns of the
    triangle tables. Returns (depth, flat pixel index, triangle id b * F + f) of the
    candidates that are inside, each [m].
    """
    col0, row0, n_cols, first, face = placement
    local = candidate - first
    row_offset = torch.div(local, n_cols, rounding_mode="floor")
    col = col0 + (local - row_offset * n_cols)
    row = row0 + row_offset
    sample_u = col.to(edges.dtype) + 0.5
    sample_v = (height - 0.5) - row.to(edges.dtype)
    origin_u, origin_v, du, dv, threshold, inv_z = edges.view(6, 3, -1)
    edge = du * (sample_v - origin_v) - dv * (sample_u - origin_u)  # [3, n]
    keep = torch.nonzero((edge > threshold).all(0)).squeeze(1)
    edge, inv_z = edge.index_select(1, keep), inv_z.index_select(1, keep)
    # 1/z' is affine in screen space: depth = 1 / sum(screen barycentric_i / z'_i).
    depth = edge.sum(0) / (edge * inv_z).sum(0)
    face = face.index_select(0, keep)
    image = torch.div(face, n_faces, rounding_mode="floor")
    pixel = (image * height + row.index_select(0, keep)) * width + col.index_select(0, keep)
    return depth, pixel, face


def _perspective_barycentrics(
    screen: torch.Tensor,
    triangles: torch.Tensor,
    pixel: torch.Tensor,
    face: torch.Tensor,
    height: int,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable perspective-correct barycentrics [3, P] and depth [P] of the winners.

    pixel [P] flat indices into [B, H, W]; face [P] triangle ids b * F + f.
    """
    u, v, z = _corners(screen, triangles, face)  # [3 corners, P] each
    in_image = pixel % (height * width)
    row = torch.div(in_image, width, rounding_mode="floor")
    sample_u = (in_image - row * width).to(screen.dtype) + 0.5
    sample_v = (height - 0.5) - row.to(screen.dtype)
    following = torch.tensor([1, 2, 0], device=screen.device)
    start_u, start_v = u.index_select(0, following), v.index_select(0, following)
    end_u, end_v = u.index_select(0, following[following]), v.index_select(0, following[following])
    # Screen-space barycentrics are edge / area; dividing by z' and renormalising makes
    # them perspective-correct. The area and the winding cancel in the ratio.
    edge = (end_u - start_u) * (sample_v - start_v) - (end_v - start_v) * (sample_u - start_u)
    weight = edge / z
    total = weight.sum(0)
    return weight / total, edge.sum(0) / total


def _image_size(size: int | tuple[int, int]) -> tuple[int, int]:
    dims = (size, size) if isinstance(size, int) else tuple(size)
    if len(dims) != 2 or min(dims) <= 0:
        raise RasterInputError(
            f"rasterize: size must be a positive int or (height, width), found {size!r}"
        )
    return int(dims[0]), int(dims[1])


def _check_screen(screen: torch.Tensor) -> None:
    if screen.dim() != 3 or screen.shape[2] != 3 or not screen.is_floating_point():
        raise RasterInputError(
            "rasterize: screen must be a float tensor [B, N, 3] (u, v, depth), found "
            f"{screen.dtype} {tuple(screen.shape)}"
        )


def _check_triangles(
    triangles: torch.Tensor, n_vertices: int, device: torch.device
) -> torch.Tensor:
    if triangles.dim() != 2 or triangles.shape[1] != 3 or triangles.is_floating_point():
        raise RasterInputError(
            "triangles must be an integer tensor [F, 3], found "
            f"{triangles.dtype} {tuple(triangles.shape)}"
        )
    triangles = triangles.to(device=device, dtype=torch.long)
    if triangles.numel() and (int(triangles.min()) < 0 or int(triangles.max()) >= n_vertices):
        raise RasterInputError(
            f"triangles: vertex ids must lie in [0, {n_vertices}), found "
            f"[{int(triangles.min())}, {int(triangles.max())}]"
        )
    return triangles
