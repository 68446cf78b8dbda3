"""Tiny synthetic datasets for the error-analysis tests: rectangles on 128-px images.

``make_dicts`` gives dataset dicts with RLE masks; ``register`` puts dicts (and their images)
into Detectron2's catalogs under a fresh name; predictions are usually the ground truth of one
set of dicts analysed against another (an annotation removed, shifted, duplicated...).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

SIZE = 128
CLASSES = ["cat", "dog"]
# Per image: (x, y, w, h, class index); images differ so that every one has its own errors.
LAYOUT = [
    [(8, 8, 30, 40, 0), (60, 16, 40, 30, 1), (16, 80, 30, 30, 0)],
    [(70, 70, 40, 40, 1), (10, 20, 36, 36, 0)],
    [(20, 30, 50, 60, 0), (80, 10, 30, 30, 1), (85, 80, 30, 30, 1)],
]
_names = itertools.count()


def rectangle_annotation(x, y, w, h, category, mask_offset=(0, 0)) -> dict:
    """A rectangle annotation; ``mask_offset`` moves the mask but not the box."""
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    dx, dy = mask_offset
    mask[y + dy : y + dy + h, x + dx : x + dx + w] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    return {
        "bbox": [float(x), float(y), float(w), float(h)],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": category,
        "segmentation": rle,
        "iscrowd": 0,
    }


def make_dicts(folder: Path, layout=LAYOUT) -> list[dict]:
    """Dataset dicts of ``layout`` with their images (noise, rectangles brighter) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    dicts = []
    for i, boxes in enumerate(layout):
        image = rng.integers(0, 80, (SIZE, SIZE, 3), dtype=np.uint8)
        for x, y, w, h, _ in boxes:
            image[y : y + h, x : x + w] += 120
        path = folder / f"img{i}.png"
        cv2.imwrite(str(path), image)
        dicts.append(
            {
                "file_name": str(path),
                "height": SIZE,
                "width": SIZE,
                "image_id": 10 + i,
                # "id": the annotation's id in its (imaginary) source file, to be mapped back.
                "annotations": [
                    dict(rectangle_annotation(*box), id=100 * i + j) for j, box in enumerate(boxes)
                ],
            }
        )
    return dicts


def register(dicts: list[dict], classes=CLASSES) -> str:
    """Register ``dicts`` under a new name (COCO category ids 1, 2, ... like Penn-Fudan's)."""
    name = f"analysis_test_{next(_names)}"
    DatasetCatalog.register(
        name, lambda: [dict(d, annotations=list(d["annotations"])) for d in dicts]
    )
    MetadataCatalog.get(name).set(
        thing_classes=list(classes),
        thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(classes))},
    )
    return name


def unregister(name: str) -> None:
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
