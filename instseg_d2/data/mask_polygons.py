"""One polygon per instance, for formats that hold nothing else (YOLO-seg lines, VIA regions).

An instance of several polygons is joined into one by zero-width bridges: each part is linked to
the growing polygon at their closest pair of vertices, walked round, and the bridge walked back
(a "keyhole"), as Ultralytics' COCO converter joins a multi-part segment. Under pycocotools'
even-odd rasterisation a bridge adds no area, so the joined polygon covers what the parts did.

A mask (RLE) becomes a polygon that pycocotools rasterises back to the same pixels: the OpenCV
contours (outer ones and holes) of the mask upsampled 2x, i.e. the outline a quarter pixel inside
the pixel edges, joined into one polygon (a hole is a bridged part, which even-odd leaves empty).
Every pixel centre is then a quarter pixel or more from the outline, so rounding (YOLO's 6
decimals) does not flip a pixel either. (The usual contour through the boundary pixels' centres,
Detectron2's ``GenericMask``, loses half a pixel all round and every hole, and its pixels on the
outline flip with any rounding.) :func:`annotation_polygon` measures the IoU anyway.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pycocotools.mask as mask_util

__all__ = ["annotation_mask", "annotation_polygon", "join_polygons", "mask_polygon"]


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
    """One polygon that rasterises to exactly ``mask`` (module docstring); None when empty."""
    doubled = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(doubled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    # Sub-pixel k of the doubled mask has its centre at (k + 0.5) / 2 in image coordinates.
    polygons = [((c.reshape(-1, 2) + 0.5) / 2).flatten().tolist() for c in contours]
    return join_polygons(polygons) if polygons else None


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def annotation_polygon(
    ann: dict,
    height: int,
    width: int,
    quantise: Callable[[list[float]], list[float]] | None = None,
) -> tuple[list[float] | None, float]:
    """``(flat polygon, IoU with the original mask)`` of an annotation: its polygon as is, its
    polygons joined, or its RLE mask's polygon; ``(None, 0.0)`` for an empty mask.

    ``quantise`` is what the format does to coordinates (e.g. YOLO's rounding); the IoU is that
    of the quantised polygon. It is 1.0 for a single polygon, which is not measured.
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
    written = polygon if quantise is None else quantise(polygon)
    return polygon, _iou(annotation_mask({"segmentation": [written]}, height, width), original)
