"""Drawings of predictions and ground truth, and the image | predictions | ground truth panel."""

from __future__ import annotations

import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.data.catalog import Metadata
from detectron2.structures import Instances
from detectron2.utils.visualizer import ColorMode, Visualizer

from .matching import MatchResult, encode_masks, match_by_mask_iou
from .splash import color_splash, instances_mask_union

_HEADER_LINE_HEIGHT = 22
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _color_mode(metadata: Metadata | None) -> ColorMode:
    # SEGMENTATION jitters each instance's color around its class color; without class colors
    # IMAGE mode gives each instance a random color. Either way instances stay distinguishable.
    if metadata is not None and getattr(metadata, "thing_colors", None):
        return ColorMode.SEGMENTATION
    return ColorMode.IMAGE


def draw_predictions(image_rgb: np.ndarray, instances: Instances, metadata: Metadata | None):
    """Detectron2 ``Visualizer`` drawing of ``instances``; RGB, same size as ``image_rgb``."""
    vis = Visualizer(image_rgb, metadata, scale=1.0, instance_mode=_color_mode(metadata))
    return vis.draw_instance_predictions(instances.to("cpu")).get_image()


def prediction_picture(
    image_rgb: np.ndarray, instances: Instances, metadata: Metadata | None, splash: bool = False
) -> np.ndarray:
    """What ``tools/infer.py`` writes for one image (RGB): the Visualizer drawing, or the color
    splash (gray outside the predicted masks)."""
    if splash:
        height, width = image_rgb.shape[:2]
        return color_splash(image_rgb, instances_mask_union(instances, height, width))
    return draw_predictions(image_rgb, instances, metadata)


def draw_ground_truth(image_rgb: np.ndarray, dataset_dict: dict, metadata: Metadata | None):
    """Detectron2 ``Visualizer`` drawing of a dataset dict's annotations; RGB, same size."""
    vis = Visualizer(image_rgb, metadata, scale=1.0, instance_mode=_color_mode(metadata))
    return vis.draw_dataset_dict(dataset_dict).get_image()


def annotation_rles(annotations: list[dict], height: int, width: int) -> list[dict]:
    """RLEs of the non-crowd annotations' segmentations (polygons, RLE or uncompressed RLE)."""
    rles = []
    for anno in annotations:
        if anno.get("iscrowd", 0):
            continue
        segm = anno.get("segmentation")
        if segm is None:
            raise ValueError(f"annotation without 'segmentation': {sorted(anno)}")
        if isinstance(segm, list):  # polygons of one instance
            rles.append(mask_util.merge(mask_util.frPyObjects(segm, height, width)))
        elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):
            rles.append(mask_util.frPyObjects(segm, height, width))  # uncompressed RLE
        elif isinstance(segm, dict):
            rles.append(segm)
        else:
            raise ValueError(f"unsupported segmentation of type {type(segm).__name__}")
    return rles


def match_instances(
    instances: Instances, dataset_dict: dict, iou_threshold: float = 0.5
) -> MatchResult:
    """TP/FP/FN of one image's predictions against its ground truth, by mask IoU."""
    height, width = instances.image_size
    if len(instances):
        pred_rles = encode_masks(instances.pred_masks.to("cpu").numpy())
        scores = instances.scores.to("cpu").numpy()
    else:
        pred_rles, scores = [], np.zeros(0)
    gt_rles = annotation_rles(dataset_dict.get("annotations", []), height, width)
    return match_by_mask_iou(pred_rles, scores, gt_rles, iou_threshold)


def _put_text(canvas: np.ndarray, text: str, x: int, y: int) -> None:
    cv2.putText(canvas, text, (x, y), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)


def labelled_row(images: list[np.ndarray], titles: list[str], caption: str = "") -> np.ndarray:
    """Images of the same height side by side: a caption line, then a title over each image.

    The result is exactly as wide as the images together; the header adds height only.
    """
    heights = {img.shape[0] for img in images}
    if len(heights) != 1:
        raise ValueError(f"images must share their height, got heights {sorted(heights)}")
    row = np.concatenate([np.ascontiguousarray(img[:, :, :3]) for img in images], axis=1)
    lines = 2 if caption else 1
    header = np.full((_HEADER_LINE_HEIGHT * lines, row.shape[1], 3), 255, dtype=np.uint8)
    if caption:
        _put_text(header, caption, 4, _HEADER_LINE_HEIGHT - 7)
    x, y = 0, lines * _HEADER_LINE_HEIGHT - 7  # titles on the line right above their image
    for img, title in zip(images, titles, strict=True):
        _put_text(header, title, x + 4, y)
        x += img.shape[1]
    return np.concatenate([header, row], axis=0)


def comparison_panel(
    image_rgb: np.ndarray,
    instances: Instances,
    dataset_dict: dict,
    metadata: Metadata | None,
    iou_threshold: float = 0.5,
    name: str = "",
) -> tuple[np.ndarray, MatchResult]:
    """image | predictions | ground truth (RGB), labelled, with the TP/FP/FN of the image."""
    match = match_instances(instances, dataset_dict, iou_threshold)
    num_gt = match.true_positives + match.false_negatives
    caption = (
        f"{name}  TP {match.true_positives}  FP {match.false_positives}  "
        f"FN {match.false_negatives}  (mask IoU >= {iou_threshold:g})"
    ).strip()
    panel = labelled_row(
        [
            image_rgb,
            draw_predictions(image_rgb, instances, metadata),
            draw_ground_truth(image_rgb, dataset_dict, metadata),
        ],
        ["image", f"predictions ({len(instances)})", f"ground truth ({num_gt})"],
        caption,
    )
    return panel, match
