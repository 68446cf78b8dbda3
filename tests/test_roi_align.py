"""The CPU RoIAlign replacements against torchvision's kernels, on small random maps."""

from __future__ import annotations

import pytest
import torch
from detectron2.layers import ROIAlign

from instseg_d2.modeling.precision import autocast_context
from instseg_d2.modeling.roi_align import CPUROIAlign, roi_align_embedding_bag


def _random_rois(n: int, batch: int = 1, extent: float = 40.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * extent
    wh = torch.rand(n, 2, generator=g) * extent * 0.75 + 1
    image = torch.randint(0, batch, (n, 1), generator=g).float()
    return torch.cat([image, xy, xy + wh], dim=1)


def _edge_rois() -> torch.Tensor:
    """RoIs that exercise every branch of torchvision's bilinear_interpolate."""
    return torch.tensor(
        [
            [0, 0.0, 0.0, 47.9, 39.9],  # the whole map, samples at the last row/column
            [0, -3.0, -2.0, 5.0, 6.0],  # starts left of / above the map
            [0, 40.0, 30.0, 60.0, 55.0],  # runs past the right/bottom edge
            [0, 70.0, 70.0, 90.0, 95.0],  # entirely outside: pools to zero
            [0, 10.0, 10.0, 10.0, 10.0],  # empty
            [0, 20.0, 20.0, 12.0, 14.0],  # inverted
            [0, 5.5, 7.25, 6.0, 7.5],  # smaller than a pixel
            [1, 1.0, 2.0, 30.0, 9.0],  # second image, wide
        ]
    )


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("output_size", [(7, 7), (14, 14), (5, 3)])
@pytest.mark.parametrize("channels_last", [True, False])
def test_embedding_bag_matches_torchvision(aligned, sampling_ratio, output_size, channels_last):
    torch.manual_seed(0)
    features = torch.randn(2, 8, 20, 24)
    rois = torch.cat([_random_rois(60, batch=2), _edge_rois()])
    expected = torch.ops.torchvision.roi_align(
        features, rois, 0.5, *output_size, sampling_ratio, aligned
    )
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    actual = roi_align_embedding_bag(features, rois, output_size, 0.5, sampling_ratio, aligned)
    assert actual.shape == expected.shape
    # Same taps and weights, summed in another order.
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert expected.abs().amax(dim=(1, 2, 3))[len(rois) - 5] == 0  # the outside RoI is zero
    assert actual.abs().amax(dim=(1, 2, 3))[len(rois) - 5] == 0


def test_embedding_bag_splits_large_groups(monkeypatch):
    monkeypatch.setattr("instseg_d2.modeling.roi_align._MAX_TAPS_PER_CALL", 1000)
    features = torch.randn(1, 4, 30, 30)
    rois = _random_rois(50)
    expected = torch.ops.torchvision.roi_align(features, rois, 0.5, 7, 7, 2, True)
    actual = roi_align_embedding_bag(features, rois, 7, 0.5, 2, True)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_cpu_roi_align_inference_equals_detectron2():
    torch.manual_seed(0)
    features = torch.randn(1, 16, 24, 24).contiguous(memory_format=torch.channels_last)
    rois = _random_rois(100)
    pooler = ROIAlign((7, 7), spatial_scale=0.5, sampling_ratio=0, aligned=True)
    with torch.inference_mode():
        expected = pooler(features, rois)
        actual = CPUROIAlign(pooler)(features, rois)
        empty = CPUROIAlign(pooler)(features, rois[:0])
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert empty.shape == (0, 16, 7, 7)


def test_cpu_roi_align_under_bf16_keeps_fp32_boxes():
    # Detectron2's ROIAlign casts the boxes to the feature dtype: in bf16 a box at x=250 would
    # move by up to 1 px. The wrapper pools in fp32 and returns the pooler's bf16.
    torch.manual_seed(0)
    features = torch.randn(1, 8, 300, 300)
    rois = _random_rois(40, extent=280)
    pooler = ROIAlign((7, 7), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    with torch.inference_mode():
        expected = pooler(features.bfloat16().float(), rois)
        with autocast_context("cpu"):
            actual = CPUROIAlign(pooler)(features.bfloat16(), rois)
    assert actual.dtype == torch.bfloat16
    torch.testing.assert_close(actual.float(), expected, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_embedding_bag_gradient_matches_torchvision(sampling_ratio):
    torch.manual_seed(0)
    features = torch.randn(2, 8, 20, 24)
    rois = torch.cat([_random_rois(60, batch=2), _edge_rois()])
    weights = torch.randn(len(rois), 8, 7, 7)
    grads = []
    for channels_last, pool in ((False, torch.ops.torchvision.roi_align), (True, None)):
        x = features.clone()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        if pool is None:
            out = roi_align_embedding_bag(x, rois, 7, 0.5, sampling_ratio, True)
        else:
            out = pool(x, rois, 0.5, 7, 7, sampling_ratio, True)
        (out * weights).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-5)
    assert grads[0].abs().sum() > 0


def test_embedding_bag_gradient_with_no_rois_is_zero():
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    roi_align_embedding_bag(x, torch.zeros(0, 5), 7, 1.0, 0, True).sum().backward()
    assert x.grad is not None and not x.grad.any()


def test_cpu_roi_align_trains_bf16_features_with_fp32_boxes():
    # Detectron2's ROIAlign casts the boxes to the feature dtype: in bf16 a box at x=250 would
    # move by up to 1 px. The wrapper pools in fp32 and hands back a bf16 gradient.
    torch.manual_seed(0)
    features = torch.randn(1, 8, 300, 300).bfloat16()
    features = features.contiguous(memory_format=torch.channels_last).requires_grad_()
    rois = _random_rois(40, extent=280)
    pooler = ROIAlign((7, 7), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    x = features.detach().float().requires_grad_()
    expected = pooler(x, rois)
    expected.sum().backward()
    with autocast_context("cpu"):
        actual = CPUROIAlign(pooler)(features, rois)
    actual.float().sum().backward()
    assert actual.dtype == torch.bfloat16
    torch.testing.assert_close(actual.float(), expected.detach(), rtol=1e-2, atol=1e-2)
    assert features.grad.dtype == torch.bfloat16
    torch.testing.assert_close(features.grad.float(), x.grad, rtol=1e-2, atol=1e-2)
