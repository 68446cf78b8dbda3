"""Synthetic COCO ground truth and predictions for the statistics tests (no model, no images).

Images of 64x64 px with 0-3 objects of two classes (boxes, rectangle masks, one crowd region
now and then); predictions find most objects with jittered boxes and add false positives, with
``quality`` shifting scores toward the true positives (a better model).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

SIZE = 64


def _rle(box: list[float]) -> dict:
    x, y, w, h = (round(v) for v in box)
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8, order="F")
    mask[max(y, 0) : max(y + h, 1), max(x, 0) : max(x + w, 1)] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _random_box(rng: np.random.Generator) -> list[float]:
    w, h = rng.integers(8, 30, size=2)
    x, y = rng.integers(0, SIZE - w), rng.integers(0, SIZE - h)
    return [float(x), float(y), float(w), float(h)]


def make_coco(num_images: int, seed: int = 0, quality: float = 0.0) -> tuple[dict, list[dict]]:
    """``(ground truth dict, predictions)`` of ``num_images`` images."""
    rng = np.random.default_rng(seed)
    images, annotations, predictions = [], [], []
    for image_id in range(1, num_images + 1):
        images.append(
            {"id": image_id, "width": SIZE, "height": SIZE, "file_name": f"{image_id}.png"}
        )
        for _ in range(rng.integers(0, 4)):
            box, category = _random_box(rng), int(rng.integers(1, 3))
            crowd = int(rng.random() < 0.05)
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                 "bbox": box, "area": box[2] * box[3], "iscrowd": crowd,
                 "segmentation": _rle(box) if crowd else
                 [[box[0], box[1], box[0] + box[2], box[1], box[0] + box[2], box[1] + box[3],
                   box[0], box[1] + box[3]]]}
            )  # fmt: skip
            if rng.random() < 0.8:
                jitter = rng.normal(0, 2.5, size=4)
                found = [max(box[0] + jitter[0], 0), max(box[1] + jitter[1], 0),
                         max(box[2] + jitter[2], 4), max(box[3] + jitter[3], 4)]  # fmt: skip
                score = float(np.clip(rng.random() * (1 - quality) + quality, 0, 1))
                predictions.append(
                    {"image_id": image_id, "category_id": category, "bbox": found,
                     "score": score, "segmentation": _rle(found)}
                )  # fmt: skip
        for _ in range(rng.integers(0, 3)):
            box = _random_box(rng)
            predictions.append(
                {"image_id": image_id, "category_id": int(rng.integers(1, 3)), "bbox": box,
                 "score": float(rng.random() * (1 - quality)), "segmentation": _rle(box)}
            )  # fmt: skip
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    return {"images": images, "annotations": annotations, "categories": categories}, predictions


def write_coco(
    folder: Path, num_images: int, seed: int = 0, quality: float = 0.0
) -> tuple[Path, Path]:
    """``(ground truth json, results json)`` written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    gt, predictions = make_coco(num_images, seed, quality)
    gt_path, results_path = folder / "gt.json", folder / "coco_instances_results.json"
    gt_path.write_text(json.dumps(gt))
    results_path.write_text(json.dumps(predictions))
    return gt_path, results_path
