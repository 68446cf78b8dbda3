"""Detectron2's test-time resize as torch ops that trace and export, equal to it pixel for pixel.

``BatchPredictor`` (like Detectron2's ``DefaultPredictor``) resizes with
``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``, whose ``ResizeTransform`` calls Pillow's
bilinear ``Image.resize`` on the uint8 image. Neither traces: the output size is Python arithmetic
on ints, and Pillow is not a torch op. ``F.interpolate(..., antialias=True)`` comes close but is
off by one grey level on ~0.1% of pixels, and the legacy ONNX exporter drops its ``antialias``.

So both are re-expressed here: :func:`shortest_edge_size` is ``get_output_shape`` in float64
tensor ops (the size follows the input in a trace), and :func:`resize_bilinear_like_pillow` is
Pillow's ``ImagingResampleInner`` for 8-bit images: the triangle filter widened by the downscale
factor, coefficients rounded to 22 fractional bits, two passes in int32, each rounded to 8 bits,
run in Pillow's order (Pillow 13: vertical first when the height shrinks by more than twice as
many pixels as the width; older Pillow always runs horizontal first, which changes a few pixels
by one grey level in those cases). The result equals Pillow's bit for bit
(tests/test_export_ops.py). It is scripted inside a trace: the number of taps per output pixel
(3 when enlarging, ``2 * ceil(factor) + 1`` when shrinking) and the pass order stay dynamic, and
memory stays at a few copies of the image whatever its size.
"""

from __future__ import annotations

import math

import torch
from detectron2.layers.wrappers import shapes_to_tensor

__all__ = ["image_size", "resize_bilinear_like_pillow", "shortest_edge_size"]


def image_size(image: torch.Tensor) -> torch.Tensor:
    """``(height, width)`` of an ``H x W x C`` image as an int64 tensor that a trace follows."""
    return shapes_to_tensor([image.shape[0], image.shape[1]])


def shortest_edge_size(size: torch.Tensor, short_edge: int, max_size: int) -> torch.Tensor:
    """``ResizeShortestEdge.get_output_shape`` for ``size`` = ``(h, w)``: int64 ``(new_h, new_w)``.

    The short side becomes ``short_edge`` unless the long side would then exceed ``max_size``;
    rounded with ``int(x + 0.5)`` as Detectron2 does. ``short_edge == 0`` means no resize.
    """
    if short_edge == 0:
        return size
    hw = size.to(torch.float64)
    scaled = hw * (float(short_edge) / hw.min())
    # Detectron2 sets the short side to exactly short_edge (no rounding through the scale).
    scaled = torch.where(hw == hw.min(), torch.full_like(hw, float(short_edge)), scaled)
    longest = scaled.max()
    scaled = torch.where(longest > max_size, scaled * (float(max_size) / longest), scaled)
    return torch.floor(scaled + 0.5).to(torch.int64)


def _pillow_bilinear_taps(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for the bilinear filter.

    Returns ``(taps, weights)``, both ``(out_size, K)``: input indices (int64, clamped into the
    image) and int32 coefficients with 22 fractional bits (0 where Pillow's window has no tap).
    """
    scale = float(in_size) / float(out_size)
    filterscale = max(scale, 1.0)
    support = filterscale  # the bilinear (triangle) filter has support 1
    # Pillow allocates 2 * ceil(support) + 1 taps, but at most ceil(2 * support) have a weight:
    # the window [center - support, center + support) is 2 * support pixels wide.
    ksize = int(math.ceil(2.0 * support))
    center = (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale
    # (int)(x) in C truncates; the only negative values are clamped to 0 anyway.
    first = torch.clamp(torch.floor(center - support + 0.5), min=0.0)
    end = torch.clamp(torch.floor(center + support + 0.5), max=float(in_size))
    taps = first[:, None] + torch.arange(ksize, dtype=torch.float64)[None, :]
    weights = torch.clamp(
        1.0 - ((taps - center[:, None] + 0.5) * (1.0 / filterscale)).abs(), min=0.0
    )
    weights = torch.where(taps < end[:, None], weights, torch.zeros_like(weights))
    weights = weights / weights.sum(dim=1, keepdim=True)
    # Pillow's fixed point for 8-bit images: 32 - 8 - 2 = 22 fractional bits (2^22 = 4194304).
    fixed = torch.floor(weights * 4194304.0 + 0.5).to(torch.int32)
    taps = torch.clamp(taps, max=float(in_size - 1)).to(torch.int64)
    return taps, fixed


def _resample_first_dim(values: torch.Tensor, out_size: int) -> torch.Tensor:
    """One Pillow pass along dim 0 of an int32 ``(n, m, c)`` tensor, rounded to 8 bits.

    Along dim 0 each tap copies whole contiguous rows, several times faster than gathering
    along the last dim."""
    taps, weights = _pillow_bilinear_taps(values.shape[0], out_size)
    weights = weights[:, :, None, None]  # broadcast over the (m, c) of each row
    # One tap at a time: memory stays at the output's size whatever the number of taps.
    total = values.index_select(0, taps[:, 0]) * weights[:, 0]
    for k in range(1, taps.shape[1]):
        total += values.index_select(0, taps[:, k]) * weights[:, k]
    # Pillow: (sum + 2^21) >> 22, then clipped to 0..255; the terms are >= 0 and the rounded
    # coefficients sum to 2^22 + (at most K / 2), so the result is in 0..255 without a clip.
    return torch.bitwise_right_shift(total.add_(2097152), 22)


@torch.jit.script_if_tracing
def _resize_hwc_int32(values: torch.Tensor, new_size: torch.Tensor) -> torch.Tensor:
    # new_size is a tensor, not two ints: ints would be baked into a trace as constants.
    new_h, new_w = int(new_size[0]), int(new_size[1])
    height, width = values.shape[0], values.shape[1]
    vertical_first = height - new_h > 0 and height - new_h > (width - new_w) * 2
    if vertical_first:
        values = _resample_first_dim(values, new_h)
    # The horizontal pass runs on W x H x C, so that it too copies whole rows.
    values = _resample_first_dim(values.transpose(0, 1).contiguous(), new_w)
    if not vertical_first:
        values = _resample_first_dim(values.transpose(0, 1).contiguous(), new_h)
        return values
    return values.transpose(0, 1)


def resize_bilinear_like_pillow(image: torch.Tensor, new_size: torch.Tensor) -> torch.Tensor:
    """Resize an ``H x W x C`` uint8 image to ``new_size`` = ``(new_h, new_w)`` as Pillow's
    ``Image.resize(..., Image.BILINEAR)`` does; returns float32 ``new_h x new_w x C`` with
    integer values (what Detectron2 feeds the model after its resize)."""
    return _resize_hwc_int32(image.to(torch.int32), new_size).to(torch.float32)
