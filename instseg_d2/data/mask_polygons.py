"""One polygon per instance, for formats that hold nothing else (YOLO-seg lines, VIA regions).

An instance of several polygons is joined into one by zero-width bridges: each part is linked to
the growing polygon at their closest pair of vertices, walked round, and the bridge walked back
(a "keyhole"), as Ultralytics' COCO converter joins a multi-part segment. Under pycocotools'
even-odd rasterisation the bridge adds no area, so the joined polygon covers what the parts did.

A mask (RLE) becomes the polygon of its outer contours (OpenCV's, with the points of straight runs
left out as Ultralytics does: the same outline), joined the same way. Points are
the boundary pixels' centres (``+ 0.5``, as Detectron2's ``GenericMask`` does), so the polygon runs
half a pixel inside the mask's outline, and holes are filled: lossy, which is why
:func:`annotation_polygon` returns the IoU of what it made with the original mask. A contour of
no area (a piece 1 pixel wide, whose centre line encloses nothing) becomes the box of its pixels,
which covers a straight piece exactly.
"""

from __future__ import annotations

import cv2
import numpy as np
import pycocotools.mask as mask_util

__all__ = ["annotation_mask", "annotation_polygon", "join_polygons", "mask_polygon"]

# Detectron2's pixel i covers [i, i + 1): a boundary pixel's centre is its index + 0.5.
PIXEL_CENTER = 0.5


def annotation_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """The boolean mask of an annotation's ``segmentation`` (polygons, compressed or uncompressed
    RLE) as pycocotools rasterises it."""
    segm = ann["segmentation"]
    if isinstance(segm, dict):
        rle = (
            mask_util.frPyObjects(segm, height, width) if isinstance(segm["counts"], list) else segm
        )
        return mask_util.decode(rle).astype(bool)
    rles = mask_util.frPyObjects([list(map(float, p)) for p in segm], height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def join_polygons(polygons: list[list[float]]) -> list[float]:
    """One flat polygon that walks every part of ``polygons`` (largest first) through
    zero-width bridges between closest vertices (module docstring)."""
    parts = sorted(
        (np.asarray(p, dtype=float).reshape(-1, 2) for p in polygons),
        key=lambda p: -abs(cv2.contourArea(p.astype(np.float32))),
    )
    joined = parts[0]
    for part in parts[1:]:
        distances = ((joined[:, None, :] - part[None, :, :]) ** 2).sum(axis=2)
        i, j = np.unravel_index(int(np.argmin(distances)), distances.shape)
        # ..., joined[i], part[j], ..., part[-1], part[0], ..., part[j], joined[i], ...
        joined = np.concatenate([joined[: i + 1], part[j:], part[: j + 1], joined[i:]])
    return joined.flatten().tolist()


def mask_polygon(mask: np.ndarray) -> list[float] | None:
    """The polygon of a boolean mask's outer contours, joined; None for an empty mask."""
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    polygons = []
    for contour in contours:
        points = contour.reshape(-1, 2)
        if len(points) < 3 or cv2.contourArea(contour) == 0:  # a piece 1 pixel wide: its box
            (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0) + 1
            polygons.append([x0, y0, x1, y0, x1, y1, x0, y1])
        else:
            polygons.append((points + PIXEL_CENTER).flatten().tolist())
    return join_polygons([[float(v) for v in p] for p in polygons]) if polygons else None


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def annotation_polygon(ann: dict, height: int, width: int) -> tuple[list[float] | None, float]:
    """``(flat polygon, IoU with the original mask)`` of an annotation: its polygon as is, its
    polygons joined, or its RLE mask's contour polygon; ``(None, 0.0)`` for an empty mask.

    The IoU is 1.0 for a single polygon (nothing changed) and measured otherwise.
    """
    segm = ann["segmentation"]
    if isinstance(segm, list) and len(segm) == 1:
        return [float(v) for v in segm[0]], 1.0
    original = annotation_mask(ann, height, width)
    if isinstance(segm, list):
        polygon = join_polygons([[float(v) for v in p] for p in segm])
    else:
        polygon = mask_polygon(original)
        if polygon is None:
            return None, 0.0
    written = annotation_mask({"segmentation": [polygon]}, height, width)
    return polygon, _iou(written, original)
