"""Detectron2's mask pasting as two small matrix products that trace and export to ONNX.

Mask R-CNN predicts each mask as an ``M x M`` (28 x 28) grid of probabilities inside its box.
Detectron2's ``paste_masks_in_image`` samples that grid at every image pixel with
``F.grid_sample`` (bilinear, zero padding, ``align_corners=False``); on the CPU it loops over the
instances and samples only the box's neighbourhood, which does not trace with a dynamic number of
instances (Detectron2 scripts it, a per-instance loop in the exported graph).

The sampling grid is separable: column ``x`` reads the mask at ``u(x)`` and row ``y`` at ``v(y)``,
so the pasted mask is ``Wy @ mask @ Wx^T`` with the bilinear weights ``max(0, 1 - |u - j|)`` (zero
padding: no weight outside the grid). For all instances at once that is two batched matmuls of
``N x H x M`` and ``N x M x W`` matrices: the same sums as ``grid_sample`` in another order
(tests/test_export_ops.py compares the two). Pixels outside the neighbourhood that Detectron2
samples get weights that sum to at most one half of a sigmoid, below the 0.5 threshold, as there.
"""

from __future__ import annotations

import torch

__all__ = ["paste_masks"]


def _axis_weights(start: torch.Tensor, end: torch.Tensor, length: torch.Tensor, grid: int):
    """Bilinear weights ``(N, length, grid)`` that sample a ``grid``-cell axis spanning
    ``[start, end)`` at the centres of pixels ``0 .. length - 1`` (grid_sample's arithmetic)."""
    centers = torch.arange(length, dtype=torch.float32) + 0.5
    normalized = (centers[None, :] - start[:, None]) / (end - start)[:, None] * 2 - 1
    position = ((normalized + 1) * grid - 1) / 2  # grid_sample, align_corners=False
    cells = torch.arange(grid, dtype=torch.float32)
    return torch.clamp(1 - (position[:, :, None] - cells[None, None, :]).abs(), min=0)


def paste_masks(
    mask_probs: torch.Tensor, boxes: torch.Tensor, size: torch.Tensor, threshold: float = 0.5
) -> torch.Tensor:
    """Paste ``N x M x M`` mask probabilities into their ``N x 4`` XYXY boxes in an image of
    ``size`` = ``(height, width)`` (int64 tensor); returns ``N x height x width`` bool masks
    (probability >= ``threshold``), as ``detector_postprocess`` does."""
    grid = mask_probs.shape[-1]
    boxes = boxes.to(torch.float32)
    x0, y0, x1, y1 = boxes.unbind(dim=1)
    rows = _axis_weights(y0, y1, size[0], grid)  # N x H x M
    cols = _axis_weights(x0, x1, size[1], grid)  # N x W x M
    pasted = torch.matmul(torch.matmul(rows, mask_probs.to(torch.float32)), cols.transpose(1, 2))
    return pasted >= threshold
