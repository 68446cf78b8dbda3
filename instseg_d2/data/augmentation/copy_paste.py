"""Simple Copy-Paste (Ghiasi et al., CVPR 2021): objects of another training image pasted in.

Detectron2's mappers see one dataset dict at a time, so :class:`CopyPaste` holds the training
set's dicts (the *pool*, which the Trainer hands to the mapper) and draws its source images from
it. It works on the image as read, before the mapper's other augmentations, which then move the
pasted objects with everything else (LSJ, flips, photometric jitter):

1. with probability ``prob``, draw a source image that has instance masks;
2. scale it to fit the target image times a random factor in ``[min_scale, max_scale]``, flip it
   horizontally half of the time (``flip``) and put it at a random place;
3. paste a random 1..``max_instances`` of its objects that land in the image: their pixels
   replace the target's (a hard cut-out: the paper found no gain from blending);
4. the target's objects lose the pixels the pasted ones cover; one with less than
   ``min_visible`` of its pixels left is dropped; every box is the extent of its mask.

Masks may be polygons or COCO RLE, of any number of classes (``category_id`` is kept). After a
paste every annotation's ``segmentation`` is an RLE of its mask in the target image. Random draws
use NumPy's global RNG, which Detectron2 seeds from ``SEED`` in each data-loader worker, as its
own augmentations do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pycocotools.mask as mask_util
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from detectron2.data.common import DatasetFromList
from detectron2.structures import BoxMode, polygons_to_bitmask

from ...utils.errors import ConfigError
from ..errors import DatasetError

__all__ = ["CopyPaste", "Placement", "annotation_mask", "paste_objects"]

logger = logging.getLogger(__name__)


def annotation_mask(annotation: dict, height: int, width: int) -> np.ndarray:
    """The (H, W) bool mask of a Detectron2 annotation: polygons, or COCO RLE (compressed or not)."""
    segm = annotation["segmentation"]
    if isinstance(segm, list):
        return polygons_to_bitmask(segm, height, width)
    if isinstance(segm, dict):
        if isinstance(segm.get("counts"), list):  # uncompressed RLE
            segm = mask_util.frPyObjects(segm, height, width)
        return mask_util.decode(segm).astype(bool)
    raise TypeError(f"segmentation of type {type(segm).__name__} is neither polygons nor RLE")


def _mask_annotation(mask: np.ndarray, like: dict) -> dict:
    """``like`` (category, other fields) with ``mask`` as RLE and its extent as box."""
    rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
    annotation = dict(like)
    annotation.update(
        segmentation=rle,
        bbox=[float(v) for v in mask_util.toBbox(rle)],
        bbox_mode=BoxMode.XYWH_ABS,
    )
    return annotation


def paste_objects(
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    source_image: np.ndarray,
    source_masks: Sequence[np.ndarray],
    min_visible: float,
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Paste the pixels of ``source_masks`` from ``source_image`` (both already in the target's
    frame, same size as ``image``) over ``image``.

    Returns the new image and, for each of ``masks``, its visible part, or None when less than
    ``min_visible`` of it (or nothing) is left.
    """
    if source_image.shape != image.shape:
        raise ValueError(f"source {source_image.shape} and target {image.shape} differ in shape")
    covered = np.logical_or.reduce(np.asarray(source_masks, dtype=bool), axis=0)
    pasted = image.copy()
    pasted[covered] = source_image[covered]
    visible_masks: list[np.ndarray | None] = []
    for mask in masks:
        visible = mask & ~covered
        area, left = int(mask.sum()), int(visible.sum())
        visible_masks.append(visible if left > 0 and left >= min_visible * area else None)
    return pasted, visible_masks


@dataclass(frozen=True)
class Placement:
    """Where the source image lands in the target: resized to ``height`` x ``width``, flipped
    when ``flip``, with its top-left corner at (``top``, ``left``) (negative: cut off)."""

    height: int
    width: int
    flip: bool
    top: int
    left: int

    def box(self, box_xyxy: np.ndarray, source_hw: tuple[int, int]) -> np.ndarray:
        """A source box (x0, y0, x1, y1) in target coordinates."""
        sy, sx = self.height / source_hw[0], self.width / source_hw[1]
        x0, y0, x1, y1 = box_xyxy
        x0, x1 = x0 * sx, x1 * sx
        if self.flip:
            x0, x1 = self.width - x1, self.width - x0
        return np.array([x0 + self.left, y0 * sy + self.top, x1 + self.left, y1 * sy + self.top])

    def apply(self, array: np.ndarray, target_hw: tuple[int, int], *, is_mask: bool) -> np.ndarray:
        """``array`` (the source image, or one of its masks) on a target-sized canvas (0 around)."""
        resize = T.ResizeTransform(array.shape[0], array.shape[1], self.height, self.width)
        if is_mask:
            moved = resize.apply_segmentation(array.astype(np.uint8)).astype(bool)
        else:
            moved = resize.apply_image(array)
        if self.flip:
            moved = moved[:, ::-1]
        canvas = np.zeros((*target_hw, *array.shape[2:]), dtype=moved.dtype)
        y0, x0 = max(self.top, 0), max(self.left, 0)
        y1 = min(self.top + self.height, target_hw[0])
        x1 = min(self.left + self.width, target_hw[1])
        if y1 > y0 and x1 > x0:
            canvas[y0:y1, x0:x1] = moved[
                y0 - self.top : y1 - self.top, x0 - self.left : x1 - self.left
            ]
        return canvas


def _has_masks(annotation: dict) -> bool:
    return not annotation.get("iscrowd", 0) and bool(annotation.get("segmentation"))


class CopyPaste:
    """Pastes objects of images drawn from ``pool`` onto the images it is called with.

    ``pool`` is the training set's dataset dicts (any sequence; it is stored serialized, as
    Detectron2's ``DatasetFromList`` does, so that data-loader workers share it cheaply). Images
    are read with the ``load_image`` the caller passes, the mapper's own reader.
    """

    def __init__(
        self,
        pool: Sequence[dict],
        *,
        prob: float,
        max_instances: int,
        min_scale: float,
        max_scale: float,
        flip: bool = True,
        min_visible: float = 0.1,
    ):
        if not 0 <= prob <= 1:
            raise ConfigError(f"INSTSEG.COPY_PASTE.PROB must be in [0, 1], got {prob}")
        if max_instances < 1:
            raise ConfigError(f"INSTSEG.COPY_PASTE.MAX_INSTANCES must be >= 1, got {max_instances}")
        if not 0 < min_scale <= max_scale:
            raise ConfigError(
                "INSTSEG.COPY_PASTE.MIN_SCALE/MAX_SCALE must satisfy 0 < MIN_SCALE <= MAX_SCALE, "
                f"got {min_scale}, {max_scale}"
            )
        if not 0 <= min_visible <= 1:
            raise ConfigError(
                f"INSTSEG.COPY_PASTE.MIN_VISIBLE must be in [0, 1], got {min_visible}"
            )
        sources = [d for d in pool if any(_has_masks(a) for a in d.get("annotations", ()))]
        if not sources:
            raise DatasetError(
                f"INSTSEG.COPY_PASTE: none of the {len(pool)} training images has an instance "
                "with a mask (segmentation) to paste"
            )
        self.sources = DatasetFromList(sources, copy=True, serialize=True)
        self.prob = prob
        self.max_instances = max_instances
        self.min_scale, self.max_scale = min_scale, max_scale
        self.flip = flip
        self.min_visible = min_visible
        logger.info(f"Copy-paste: {len(sources)} source images, probability {prob}")

    @classmethod
    def from_config(cls, cfg: CfgNode, pool: Sequence[dict]) -> CopyPaste:
        """From ``INSTSEG.COPY_PASTE``; needs ``MODEL.MASK_ON`` (objects are cut along masks)."""
        if not cfg.MODEL.MASK_ON:
            raise ConfigError(
                "INSTSEG.COPY_PASTE.ENABLED needs MODEL.MASK_ON: objects are cut out along masks"
            )
        c = cfg.INSTSEG.COPY_PASTE
        return cls(pool, prob=c.PROB, max_instances=c.MAX_INSTANCES, min_scale=c.MIN_SCALE,
                   max_scale=c.MAX_SCALE, flip=c.FLIP, min_visible=c.MIN_VISIBLE)  # fmt: skip

    def draw_placement(self, source_hw: tuple[int, int], target_hw: tuple[int, int]) -> Placement:
        """Random scale (relative to fitting the target), flip and position of a source image."""
        fit = min(target_hw[0] / source_hw[0], target_hw[1] / source_hw[1])
        scale = fit * np.random.uniform(self.min_scale, self.max_scale)
        height = max(1, round(source_hw[0] * scale))
        width = max(1, round(source_hw[1] * scale))
        flip = bool(self.flip and np.random.rand() < 0.5)
        # Any place where the source and the target overlap in full along each side.
        top = np.random.randint(min(0, target_hw[0] - height), max(0, target_hw[0] - height) + 1)
        left = np.random.randint(min(0, target_hw[1] - width), max(0, target_hw[1] - width) + 1)
        return Placement(height, width, flip, int(top), int(left))

    def __call__(
        self,
        image: np.ndarray,
        annotations: list[dict],
        load_image: Callable[[dict], np.ndarray],
        file_name: str = "",
    ) -> tuple[np.ndarray, list[dict], bool]:
        """``(image, annotations, pasted)``: unchanged with probability ``1 - prob``, else with
        pasted objects (their annotations appended after the target's)."""
        if np.random.rand() >= self.prob:
            return image, annotations, False
        source = self.sources[np.random.randint(len(self.sources))]
        source_image = load_image(source)
        target_hw, source_hw = image.shape[:2], source_image.shape[:2]
        placement = self.draw_placement(source_hw, target_hw)
        candidates = []
        for annotation in source["annotations"]:
            if not _has_masks(annotation):
                continue
            box = BoxMode.convert(annotation["bbox"], annotation["bbox_mode"], BoxMode.XYXY_ABS)
            x0, y0, x1, y1 = placement.box(np.asarray(box, dtype=float), source_hw)
            if x1 > 0 and y1 > 0 and x0 < target_hw[1] and y0 < target_hw[0]:
                candidates.append(annotation)
        if not candidates:
            return image, annotations, False
        count = np.random.randint(1, min(self.max_instances, len(candidates)) + 1)
        chosen = [candidates[i] for i in np.random.permutation(len(candidates))[:count]]
        pasted_masks, pasted_annotations = [], []
        for annotation in chosen:
            mask = annotation_mask(annotation, *source_hw)
            mask = placement.apply(mask, target_hw, is_mask=True)
            if mask.any():
                pasted_masks.append(mask)
                pasted_annotations.append({"category_id": annotation["category_id"], "iscrowd": 0})
        if not pasted_masks:
            return image, annotations, False

        # Crowd regions are left out: the mapper drops them from training anyway.
        target = [a for a in annotations if not a.get("iscrowd", 0)]
        for i, annotation in enumerate(target):
            if not annotation.get("segmentation"):
                raise DatasetError(
                    f"{file_name}: annotation {i} has no segmentation; INSTSEG.COPY_PASTE needs "
                    "the mask of every object to know what a pasted object covers"
                )
        masks = [annotation_mask(a, *target_hw) for a in target]
        source_canvas = placement.apply(source_image, target_hw, is_mask=False)
        image, visible = paste_objects(image, masks, source_canvas, pasted_masks, self.min_visible)
        result = [
            _mask_annotation(m, a) for m, a in zip(visible, target, strict=True) if m is not None
        ]
        result += [
            _mask_annotation(m, a) for m, a in zip(pasted_masks, pasted_annotations, strict=True)
        ]
        return image, result, True
