"""Test helpers for the format round trips: an annotation's mask and the IoU of two masks.

The writers themselves are the product's (:mod:`instseg_d2.data.writers`).
"""

from __future__ import annotations

import numpy as np

from instseg_d2.data.mask_polygons import annotation_mask

__all__ = ["iou", "rasterise"]


def rasterise(ann: dict, height: int, width: int) -> np.ndarray:
    """The boolean mask of an annotation (RLE or polygons), as pycocotools draws it."""
    return annotation_mask(ann, height, width)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))
