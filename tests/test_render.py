"""render_face on the synthetic face models: framing, shading, depth, batching, gradients."""

import numpy as np
import pytest
import torch
from neural_face_rig.rig.camera import CAMERA_224, CAMERA_256
from neural_face_rig.rig.geometry import TorchFaceModel, evaluate_rig
from neural_face_rig.rig.params import GROUP_NAMES, RigParams, split_rig_vector
from neural_face_rig.rig.raster import rasterize
from neural_face_rig.rig.render import render_face
from neural_face_rig.rig.synthetic import make_synthetic_face_model

CAMERAS = {"224": CAMERA_224, "256": CAMERA_256}


@pytest.fixture(scope="module")
def tiny():
    return TorchFaceModel.from_face_model(make_synthetic_face_model("tiny"))


def neutral(batch=1):
    return torch.tensor(RigParams.neutral().to_vector()).expand(batch, -1).clone()


def posed(seed, batch=1):
    rng = np.random.default_rng(seed)
    rigs = [RigParams.sample(rng).to_vector() for _ in range(batch)]
    return torch.tensor(np.stack(rigs))


def mask_extent(mask):
    rows, cols = np.nonzero(mask)
    return rows.min(), rows.max(), cols.min(), cols.max()


def assert_no_holes(mask):
    """Every row and column of the silhouette is one unbroken run of covered pixels."""
    for lines in (mask, mask.T):
        for line in lines:
            covered = np.flatnonzero(line)
            if len(covered):
                assert covered[-1] - covered[0] + 1 == len(covered)


@pytest.mark.parametrize("name", sorted(CAMERAS))
def test_neutral_face_is_centred_and_face_shaped(tiny, name):
    camera = CAMERAS[name]
    render = render_face(tiny, neutral(), camera)
    size = camera.size
    assert render.image.shape == (1, 3, size, size)
    assert render.mask.shape == render.depth.shape == (1, 1, size, size)
    mask = render.mask[0, 0].numpy() > 0
    rows, cols = np.nonzero(mask)
    assert abs(rows.mean() - size / 2) < 0.05 * size and abs(cols.mean() - size / 2) < 0.05 * size
    top, bottom, left, right = mask_extent(mask)
    assert bottom - top > right - left > 0.5 * size  # taller than wide, fills the crop
    assert top > 0 and left > 0 and bottom < size - 1 and right < size - 1  # nothing cut off
    assert_no_holes(mask)
    # The silhouette spans the projected vertices: pixel centres inside their extent.
    screen = evaluate_rig(tiny, neutral(), camera).screen[0].numpy()
    u, v = screen[:, 0], screen[:, 1]
    assert left == np.ceil(u.min() - 0.5) and right == np.floor(u.max() - 0.5)
    assert top == np.ceil(size - 0.5 - v.max()) and bottom == np.floor(size - 0.5 - v.min())


def test_focal_lengths_scale_the_face_between_the_crops(tiny):
    widths = {}
    for name, camera in CAMERAS.items():
        mask = render_face(tiny, neutral(), camera).mask[0, 0].numpy() > 0
        top, bottom, left, right = mask_extent(mask)
        widths[name] = (right - left + 1, bottom - top + 1)
    ratio = CAMERA_256.focal / CAMERA_224.focal
    for axis in range(2):
        assert widths["256"][axis] / widths["224"][axis] == pytest.approx(ratio, abs=0.02)


def test_pixels_are_shaded_vertex_colours_over_the_background(tiny):
    rig = posed(1)
    background = torch.tensor([0.1, 0.2, 0.9]).view(3, 1, 1)
    render = render_face(tiny, rig, CAMERA_224, background=background)
    mask = render.mask[0, 0] > 0
    assert torch.equal(render.image[0][:, ~mask], background.expand(3, 224, 224)[:, ~mask])
    # Inside, each pixel is a convex combination of its triangle's three vertex colours.
    evaluation = evaluate_rig(tiny, rig, CAMERA_224)
    triangle = rasterize(evaluation.screen, tiny.triangles, 224).triangle[0][mask]
    corner_colours = evaluation.colours[0][tiny.triangles[triangle]].clamp(0, 1)  # [P, 3, 3]
    pixels = render.image[0][:, mask].t()
    assert (pixels >= corner_colours.amin(1) - 1e-5).all()
    assert (pixels <= corner_colours.amax(1) + 1e-5).all()
    assert pixels.std(0).min() > 0.01  # shading varies across the face


def test_depth_lies_on_the_face_and_is_zero_elsewhere(tiny):
    render = render_face(tiny, posed(2), CAMERA_256)
    evaluation = evaluate_rig(tiny, posed(2), CAMERA_256)
    depth, mask = render.depth[0, 0], render.mask[0, 0] > 0
    z = evaluation.screen[0, :, 2]
    assert (depth[mask] >= z.min() - 1e-5).all() and (depth[mask] <= z.max() + 1e-5).all()
    assert not depth[~mask].any()
    torch.testing.assert_close(render.landmarks, evaluation.landmarks)


def test_batch_matches_single_renders(tiny):
    rigs = posed(3, batch=2)
    batch = render_face(tiny, rigs, CAMERA_224, background=0.5)
    assert not torch.equal(batch.mask[0], batch.mask[1])
    for b in range(2):
        single = render_face(tiny, rigs[b : b + 1], CAMERA_224, background=0.5)
        torch.testing.assert_close(batch.image[b], single.image[0])
        assert torch.equal(batch.mask[b], single.mask[0])


def test_image_loss_reaches_every_rig_group(tiny):
    rig = posed(4).requires_grad_(True)
    render = render_face(tiny, rig, CAMERA_224)
    weights = torch.rand(render.image.shape, generator=torch.Generator().manual_seed(0))
    (render.image * weights).sum().backward()
    gradients = split_rig_vector(rig.grad[0])
    for name in GROUP_NAMES:
        assert torch.isfinite(gradients[name]).all(), name
        assert gradients[name].abs().max() > 0, name


def test_full_mesh_silhouette_is_watertight_with_landmarks_on_the_face():
    full = TorchFaceModel.from_face_model(make_synthetic_face_model("full"))
    render = render_face(full, neutral(), CAMERA_224)
    mask = render.mask[0, 0].numpy() > 0
    assert_no_holes(mask)
    x, y = render.landmarks[0].round().long().unbind(1)
    assert mask[y.numpy(), x.numpy()].all()
