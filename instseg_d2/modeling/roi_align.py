"""RoIAlign on the CPU, several times faster than torchvision's kernels, with the same results.

torchvision's CPU ``roi_align`` is a scalar loop over RoIs on one core, and its backward is slower
still; on 2 cores they took ~15% of a bf16 inference pass and ~35% of a bf16 training step
(profiles in BENCHMARKS.md).

RoIAlign is a weighted sum of feature-map pixels: 4 bilinear taps per sampling point, averaged
over the points of each output bin. On a channels-last map a pixel is one row of an
``(N*H*W, C)`` table, and ``F.embedding_bag(mode="sum", per_sample_weights=...)`` is PyTorch's
vectorized, multi-threaded kernel for exactly "weighted sums of table rows". The backward is the
transposed sum, the same kernel over the output gradient with the taps grouped by pixel. We only
compute the taps and weights, with torchvision's rules, so the results equal torchvision's up to
float rounding (tests/test_roi_align.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.utils import _pair

__all__ = ["CPUROIAlign", "roi_align_embedding_bag"]

# Bound the (RoI, bin, tap) index/weight tensors: ~16 bytes per tap.
_MAX_TAPS_PER_CALL = 4_000_000


def _axis_taps(
    start: torch.Tensor, bin_size: torch.Tensor, grid: int, pooled: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear taps along one axis for ``grid`` sampling points in each of ``pooled`` bins.

    Returns ``(index, weight)`` of shape ``(K, pooled, grid, 2)`` (low and high neighbour), with
    the rules of torchvision's ``bilinear_interpolate``: a point below -1 or beyond ``size``
    contributes nothing, one in ``[-1, 0]`` reads pixel 0, one past the last pixel reads it.
    """
    bins = torch.arange(pooled, dtype=start.dtype, device=start.device)
    points = torch.arange(grid, dtype=start.dtype, device=start.device) + 0.5
    # Same order of operations as the C++ kernel: start + p * bin + ((i + .5) * bin) / grid.
    pos = (start[:, None, None] + bins[None, :, None] * bin_size[:, None, None]) + (
        points[None, None, :] * bin_size[:, None, None]
    ) / grid
    inside = (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0)
    low = pos.long()  # pos >= 0: truncation is floor
    at_end = low >= size - 1
    low = low.clamp(max=size - 1)
    high = torch.where(at_end, low, low + 1)
    frac = torch.where(at_end, torch.zeros_like(pos), pos - low)
    index = torch.stack([low, high], dim=-1)
    weight = torch.stack([1.0 - frac, frac], dim=-1) * inside[..., None]
    return index, weight


def _sampling_taps(
    rois: torch.Tensor,
    pooled: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
    height: int,
    width: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """RoIAlign as bags of weighted taps into an ``(N*H*W, C)`` table of pixels.

    Yields ``(roi_ids, index, weight)``: for the RoIs ``roi_ids``, one bag per output bin (RoI,
    bin y, bin x), each a row of ``index``/``weight`` (4 bilinear taps per sampling point, divided
    by the number of points). RoIs are grouped by their sampling grid so that every bag of a group
    has the same size; large groups come in parts. RoIs without sampling points (empty or
    inverted, with adaptive sampling) are not yielded: they pool to zero.
    """
    if len(rois) == 0:
        return
    pooled_h, pooled_w = pooled
    offset = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * spatial_scale - offset
    y1 = rois[:, 2] * spatial_scale - offset
    roi_w = (rois[:, 3] * spatial_scale - offset) - x1
    roi_h = (rois[:, 4] * spatial_scale - offset) - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_w, bin_h = roi_w / pooled_w, roi_h / pooled_h
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full((len(rois),), sampling_ratio, dtype=torch.long)
    else:  # adaptive
        grid_h = torch.ceil(roi_h / pooled_h).long().clamp(min=0)
        grid_w = torch.ceil(roi_w / pooled_w).long().clamp(min=0)
    image_offset = rois[:, 0].long() * (height * width)

    grid_key = grid_h * (grid_w.max() + 1) + grid_w
    for key in grid_key.unique().tolist():
        selected = (grid_key == key).nonzero().squeeze(1)
        gh, gw = int(grid_h[selected[0]]), int(grid_w[selected[0]])
        if gh == 0 or gw == 0:
            continue
        taps = 4 * gh * gw
        per_call = max(1, _MAX_TAPS_PER_CALL // (taps * pooled_h * pooled_w))
        for part in selected.split(per_call):
            y_index, y_weight = _axis_taps(y1[part], bin_h[part], gh, pooled_h, height)
            x_index, x_weight = _axis_taps(x1[part], bin_w[part], gw, pooled_w, width)
            # Dims: (RoI, bin y, bin x, point y, tap y, point x, tap x); one bag per bin.
            index = (
                image_offset[part, None, None, None, None, None, None]
                + (y_index * width)[:, :, None, :, :, None, None]
                + x_index[:, None, :, None, None, :, :]
            )
            weight = (
                y_weight[:, :, None, :, :, None, None] * x_weight[:, None, :, None, None, :, :]
            ) / (gh * gw)
            bags = len(part) * pooled_h * pooled_w
            yield part, index.reshape(bags, taps), weight.reshape(bags, taps)


def _pixel_table(input: torch.Tensor) -> torch.Tensor:
    # (N*H*W, C): one row per pixel; a view when the map is channels-last.
    batch, channels, height, width = input.shape
    return input.permute(0, 2, 3, 1).reshape(batch * height * width, channels)


class _EmbeddingBagROIAlign(torch.autograd.Function):
    """Forward: one ``embedding_bag`` per group of RoIs. Backward: the transposed sum, also an
    ``embedding_bag``: each pixel's gradient is the weighted sum of the output-bin gradients that
    read it, with the taps sorted by pixel to form one bag per pixel."""

    @staticmethod
    def forward(ctx, input, rois, output_size, spatial_scale, sampling_ratio, aligned):
        batch, channels, height, width = input.shape
        table = _pixel_table(input)
        pooled_h, pooled_w = output_size
        out = table.new_zeros((len(rois), pooled_h, pooled_w, channels))
        bins = pooled_h * pooled_w
        saved = []
        for roi_ids, index, weight in _sampling_taps(
            rois, output_size, spatial_scale, sampling_ratio, aligned, height, width
        ):
            pooled = F.embedding_bag(index, table, per_sample_weights=weight, mode="sum")
            out[roi_ids] = pooled.reshape(len(roi_ids), pooled_h, pooled_w, channels)
            if ctx.needs_input_grad[0]:
                out_bin = roi_ids[:, None] * bins + torch.arange(bins)
                saved.append((index, weight, out_bin.reshape(-1, 1).expand_as(index)))
        ctx.input_shape = input.shape
        ctx.saved = saved
        return out.permute(0, 3, 1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        batch, channels, height, width = ctx.input_shape
        pixels = batch * height * width
        if not ctx.saved:
            return grad_output.new_zeros(ctx.input_shape), None, None, None, None, None
        index, weight, out_bin = (
            torch.cat([t[i].reshape(-1) for t in ctx.saved]) for i in range(3)
        )
        ctx.saved = None
        grad_bins = grad_output.permute(0, 2, 3, 1).reshape(-1, channels)
        order = torch.argsort(index)
        counts = torch.bincount(index, minlength=pixels)
        grad_table = F.embedding_bag(
            out_bin[order],
            grad_bins,
            torch.cumsum(counts, 0) - counts,
            per_sample_weights=weight[order],
            mode="sum",
        )
        grad_input = grad_table.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        return grad_input, None, None, None, None, None


def roi_align_embedding_bag(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """``torchvision.ops.roi_align``, computed with ``F.embedding_bag`` on a channels-last map.

    ``input`` (N, C, H, W) should be channels-last (then it is read in place; otherwise it is
    copied once); ``rois`` (K, 5) as ``(batch index, x1, y1, x2, y2)``. Returns (K, C, ph, pw) in
    ``input``'s dtype, as a channels-last tensor; differentiable w.r.t. ``input``, with its
    gradient channels-last too. Equal to torchvision's kernels up to float rounding: the same
    taps and weights, summed in another order.
    """
    return _EmbeddingBagROIAlign.apply(
        input, rois.detach().float(), _pair(output_size), spatial_scale, sampling_ratio, aligned
    )


class CPUROIAlign(nn.Module):
    """A Detectron2 ``ROIAlign`` that runs :func:`roi_align_embedding_bag` on the CPU.

    It pools in fp32 (what autocast does for this fp32-only op), which also keeps the box
    coordinates in fp32: Detectron2's ROIAlign casts the boxes to the feature dtype, and bf16
    boxes would be off by up to a few pixels. The result has the input's dtype, as the pooler's
    output buffer does. Off the CPU it calls the wrapped module.
    """

    def __init__(self, roi_align: nn.Module):
        super().__init__()
        self.roi_align = roi_align

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        if input.device.type != "cpu" or input.is_quantized:
            return self.roi_align(input, rois)
        with torch.autocast("cpu", enabled=False):
            pooled = roi_align_embedding_bag(
                input.float(),
                rois,
                self.roi_align.output_size,
                self.roi_align.spatial_scale,
                self.roi_align.sampling_ratio,
                self.roi_align.aligned,
            )
        return pooled.to(input.dtype)
