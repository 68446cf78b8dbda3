"""Color splash (matterport's balloon demo): gray image, original colors inside the masks."""

from __future__ import annotations

import cv2
import numpy as np
from detectron2.structures import Instances


def color_splash(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Keep ``image`` where ``mask`` is true and make it gray (3 equal channels) elsewhere.

    Args:
        image: HxWx3 uint8 image. The gray level uses the RGB luma weights; for a BGR image
            only the shade of gray changes, pixels inside the mask are kept either way.
        mask: HxW boolean (or 0/1) mask, e.g. the union of the predicted instance masks.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"color_splash needs an HxWx3 image, got shape {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
    gray = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return np.where(mask.astype(bool)[:, :, None], image, gray)


def instances_mask_union(instances: Instances, height: int, width: int) -> np.ndarray:
    """Union of the ``pred_masks`` of ``instances`` as an HxW bool array (all false if none)."""
    if len(instances) == 0 or not instances.has("pred_masks"):
        return np.zeros((height, width), dtype=bool)
    return instances.pred_masks.to("cpu").numpy().astype(bool).any(axis=0)
