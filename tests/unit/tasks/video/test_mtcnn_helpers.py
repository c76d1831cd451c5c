"""The cascade's helpers, written in avemo to avoid importing facenet-pytorch and torchvision, compute
exactly what the originals compute."""

import numpy as np
import pytest
import torch
from facenet_pytorch.models.utils import detect_face
from torchvision.ops import boxes as tv_boxes

from tasks.video import mtcnn


def random_boxes(n: int, groups: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Overlapping boxes (many near-duplicates, as PNet proposes), scores with ties, group ids."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(20, 400, size=(n // 8 + 1, 2))[rng.integers(0, n // 8 + 1, n)] + rng.normal(0, 4, (n, 2))
    sides = rng.uniform(10, 80, n)[:, None]
    boxes = np.concatenate([centres - sides / 2, centres + sides / 2], axis=1)
    scores = np.round(rng.uniform(0.6, 1.0, n), 2)  # rounded: equal scores occur, as saturated ones do
    ids = rng.integers(0, groups, n)
    return torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32), torch.tensor(ids)


@pytest.mark.parametrize(("n", "groups", "threshold"), [(0, 1, 0.5), (37, 1, 0.5), (400, 3, 0.7), (1500, 4, 0.5)])
def test_batched_nms_is_torchvisions(n, groups, threshold):
    boxes, scores, ids = random_boxes(n, groups, seed=n)
    assert boxes.numel() <= 4000 or n == 1500  # 1500 boxes take torchvision's per-group path
    assert torch.equal(
        mtcnn.batched_nms(boxes, scores, ids, threshold), tv_boxes.batched_nms(boxes, scores, ids, threshold)
    )


@pytest.mark.parametrize("n", [0, 1, 50, 600])
def test_min_nms_is_facenets(n):
    boxes, scores, ids = random_boxes(n, 3, seed=n + 1)
    theirs = detect_face.batched_nms_numpy(boxes, scores, ids, 0.7, "Min")
    assert torch.equal(mtcnn.batched_nms_min(boxes, scores, ids, 0.7), theirs.long())


def test_pad_rerec_bbreg_and_resampling_are_facenets():
    boxes, scores, _ = random_boxes(200, 1, seed=9)
    boxes = torch.cat([boxes - 30, scores[:, None]], dim=1)  # some outside the frame: pad clips them
    reg = torch.rand((200, 4), generator=torch.Generator().manual_seed(2)) - 0.5
    for ours, theirs in zip(mtcnn.pad(boxes, 320, 240), detect_face.pad(boxes, 320, 240), strict=True):
        assert np.array_equal(ours, theirs)
    assert torch.equal(mtcnn.rerec(boxes.clone()), detect_face.rerec(boxes.clone()))
    assert torch.equal(mtcnn.bbreg(boxes.clone(), reg), detect_face.bbreg(boxes.clone(), reg))
    image = torch.rand((1, 3, 97, 131), generator=torch.Generator().manual_seed(4)) * 255
    assert torch.equal(mtcnn.imresample(image, (24, 24)), detect_face.imresample(image, (24, 24)))


@pytest.mark.parametrize("side", [24, 48])
def test_candidates_resampled_from_the_integral_image_are_detect_faces_own(side):
    """RNet's and ONet's inputs: boxes inside the PNet stage's integral image are read from it, the others
    (partly outside it, or outside the frame) resampled from the frame; both exactly as detect_face does."""
    rng = np.random.default_rng(side)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    integral = mtcnn.RegionIntegral.of(frame, 40, 200, 60, 300)
    corners = rng.uniform([-20, -20], [280, 200], (60, 2))
    sides = rng.uniform(5, 120, (60, 1))
    boxes = torch.tensor(np.hstack([corners, corners + sides, np.ones((60, 1))]), dtype=torch.float32)
    y, ey, x, ex = mtcnn.pad(boxes, 320, 240)
    inside = [integral.covers(y[k] - 1, ey[k], x[k] - 1, ex[k]) for k in range(60)]
    assert 10 < sum(inside) < 50  # both paths are taken
    ours = mtcnn._resampled_boxes([frame], boxes, torch.zeros(60, dtype=torch.long), side, [integral])
    image = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    theirs = torch.cat(
        [detect_face.imresample(image[:, :, y[k] - 1 : ey[k], x[k] - 1 : ex[k]], (side, side)) for k in range(60)]
    )
    assert torch.equal(ours, (theirs - 127.5) * 0.0078125)
