"""Instance-id masks to Detectron2 annotations, losslessly, with COCO RLE from pycocotools."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
from detectron2.structures import BoxMode


def encode_binary_mask(mask: np.ndarray) -> dict:
    """COCO RLE of a 2-D boolean/0-1 mask; ``counts`` is a str so the dict is JSON-serializable."""
    if mask.ndim != 2:
        raise ValueError(f"encode_binary_mask: expected a 2-D mask, got shape {mask.shape}")
    rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_rle(rle: dict) -> np.ndarray:
    """The (H, W) uint8 0/1 mask of a COCO RLE dict (``counts`` as str or bytes)."""
    return mask_util.decode(rle)


def instance_ids(id_mask: np.ndarray) -> list[int]:
    """Non-zero values of an instance-id mask, ascending (0 is background)."""
    return [int(v) for v in np.unique(id_mask) if v != 0]


def id_mask_to_annotations(id_mask: np.ndarray, category_id: int = 0) -> list[dict]:
    """One Detectron2 annotation per non-zero value of ``id_mask``, in ascending id order.

    ``segmentation`` is the instance's COCO RLE (configs must use ``INPUT.MASK_FORMAT: bitmask``),
    ``bbox`` the tight pixel box of the mask in ``XYWH_ABS`` (a one-pixel mask at column x has
    x..x+1), ``instance_id`` the pixel value, kept so that tests and checks can trace it back.
    Ids need not be contiguous: a mask with ids {1, 3} gives two annotations.
    """
    if id_mask.ndim != 2:
        raise ValueError(f"id_mask_to_annotations: expected a 2-D mask, got shape {id_mask.shape}")
    annotations = []
    for instance_id in instance_ids(id_mask):
        rle = encode_binary_mask(id_mask == instance_id)
        annotations.append(
            {
                "bbox": [float(v) for v in mask_util.toBbox(rle)],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": category_id,
                "segmentation": rle,
                "iscrowd": 0,
                "instance_id": instance_id,
            }
        )
    return annotations
