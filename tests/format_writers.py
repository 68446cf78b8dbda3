"""Test helper for the format round trips. The writers are the product's
(:mod:`instseg_d2.data.writers`); what is left here is the name the tests compare masks by."""

from __future__ import annotations

import numpy as np

from instseg_d2.data.mask_polygons import annotation_mask

__all__ = ["rasterise"]


def rasterise(ann: dict, height: int, width: int) -> np.ndarray:
    """The boolean mask of an annotation (RLE or polygons), as pycocotools draws it."""
    return annotation_mask(ann, height, width)
