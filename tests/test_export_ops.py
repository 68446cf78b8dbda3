"""The traceable resize and mask pasting of instseg_d2.export against Detectron2's own (fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.layers.mask_ops import paste_masks_in_image

from instseg_d2.export.parity import Detections, Tolerances, compare_detections
from instseg_d2.export.paste import paste_masks
from instseg_d2.export.resize import image_size, resize_bilinear_like_pillow, shortest_edge_size

# (height, width): enlarged, shrunk, square, vertical pass first (Pillow 13), unchanged short side.
SIZES = [(100, 150), (375, 500), (481, 333), (90, 90), (1000, 90), (160, 700), (3, 7)]


def _detectron2_resize(image: np.ndarray, short: int, longest: int) -> np.ndarray:
    return T.ResizeShortestEdge([short, short], longest).get_transform(image).apply_image(image)


@pytest.mark.parametrize("height,width", SIZES)
@pytest.mark.parametrize("short,longest", [(160, 256), (128, 1333), (0, 0)])
def test_resize_equals_detectron2_pixel_for_pixel(height, width, short, longest):
    image = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), np.uint8)
    expected = _detectron2_resize(image, short, longest)
    tensor = torch.from_numpy(image)
    new_size = shortest_edge_size(image_size(tensor), short, longest)
    assert tuple(new_size.tolist()) == expected.shape[:2]
    resized = resize_bilinear_like_pillow(tensor, new_size)
    assert resized.dtype == torch.float32
    np.testing.assert_array_equal(resized.numpy().astype(np.uint8), expected)


def test_traced_resize_follows_the_input_size():
    def resize(image):
        return resize_bilinear_like_pillow(image, shortest_edge_size(image_size(image), 160, 256))

    traced = torch.jit.trace(resize, torch.zeros(120, 90, 3, dtype=torch.uint8))
    for height, width in [(375, 500), (1000, 90), (64, 64)]:
        image = np.random.default_rng(width).integers(0, 256, (height, width, 3), np.uint8)
        out = traced(torch.from_numpy(image)).numpy().astype(np.uint8)
        np.testing.assert_array_equal(out, _detectron2_resize(image, 160, 256))


@pytest.mark.parametrize("count,height,width", [(6, 300, 400), (20, 97, 211), (0, 50, 60)])
def test_paste_masks_equals_detectron2(count, height, width):
    gen = torch.Generator().manual_seed(count)
    # Sharp-ish probabilities (as a trained head gives) inside boxes that may leave the image.
    probs = torch.sigmoid(torch.randn(count, 28, 28, generator=gen) * 4)
    corner = torch.rand(count, 2, generator=gen) * torch.tensor([width, height]) - 20
    extent = torch.rand(count, 2, generator=gen) * torch.tensor([width, height]) * 0.7 + 0.5
    boxes = torch.cat([corner, corner + extent], dim=1)
    expected = paste_masks_in_image(probs, boxes, (height, width))
    pasted = paste_masks(probs, boxes, torch.tensor([height, width]))
    assert pasted.shape == (count, height, width) and pasted.dtype == torch.bool
    # The same sums in another order: a pixel at exactly 0.5 may flip, nothing more.
    assert (pasted != expected).sum().item() <= max(1, expected.sum().item() // 10_000)


def _detections(boxes, scores, masks=None, classes=None) -> Detections:
    boxes = np.asarray(boxes, np.float32)
    n = len(boxes)
    if masks is None:
        masks = np.zeros((n, 20, 20), bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
            masks[i, y0:y1, x0:x1] = True
    classes = np.zeros(n, np.int64) if classes is None else np.asarray(classes)
    return Detections(boxes, np.asarray(scores, np.float32), classes, masks)


def test_parity_report_tolerances_and_matching():
    ref = _detections([[1, 1, 10, 10], [5, 5, 15, 18]], [0.9, 0.6])
    # Same detections, listed in another order, within every tolerance.
    same = _detections([[5.2, 5, 15, 18], [1, 1, 10, 10.4]], [0.6005, 0.9])
    report = compare_detections([ref], [same], score_threshold=0.05)
    assert report.passed, report.failures
    assert report.num_matched == 2 and report.max_box_px == pytest.approx(0.4, abs=1e-5)

    moved = _detections([[1, 1, 10.6, 10], [5, 5, 15, 18]], [0.9, 0.6])
    assert any("box" in f for f in compare_detections([ref], [moved], 0.05).failures)
    rescored = _detections([[1, 1, 10, 10], [5, 5, 15, 18]], [0.9, 0.602])
    assert any("score" in f for f in compare_detections([ref], [rescored], 0.05).failures)
    other_mask = _detections([[1, 1, 10, 10], [5, 5, 15, 18]], [0.9, 0.6], masks=same.masks * 0)
    assert any("mask" in f for f in compare_detections([ref], [other_mask], 0.05).failures)
    other_class = _detections([[1, 1, 10, 10], [5, 5, 15, 18]], [0.9, 0.6], classes=[0, 1])
    assert not compare_detections([ref], [other_class], 0.05).passed


def test_parity_allows_only_borderline_detections_without_partner():
    ref = _detections([[1, 1, 10, 10], [5, 5, 15, 18]], [0.9, 0.0505])
    one = _detections([[1, 1, 10, 10]], [0.9])
    # The missing detection scores within 1e-3 of the threshold 0.05: the other model may have
    # put it just below the cut.
    assert compare_detections([ref], [one], score_threshold=0.05).passed
    report = compare_detections([ref], [one], score_threshold=0.01)
    assert not report.passed and report.unmatched == [(0, "eager", pytest.approx(0.0505))]
    assert compare_detections([ref], [one], 0.05, Tolerances(score=1e-5)).passed is False


def test_parity_allows_a_swap_at_the_detections_per_image_cut():
    ref = _detections([[1, 1, 10, 10], [5, 5, 15, 18]], [0.9, 0.3004])
    other = _detections([[1, 1, 10, 10], [11, 2, 19, 9]], [0.9, 0.3])
    # Both lists are full at 2 detections: the last ones differ by less than the tolerance.
    assert compare_detections([ref], [other], 0.05, max_detections=2).passed
    assert not compare_detections([ref], [other], 0.05).passed
