"""One dataset's ground truth and predictions in pycocotools, evaluated once for every analysis.

The ground truth is Detectron2's ``convert_to_coco_dict`` of the registered dataset, the same
conversion ``COCOEvaluator`` writes to ``<dataset>_coco_format.json``, so image and annotation ids
are those of the evaluator's files. Predictions are COCO results (``coco_instances_results.json``
of ``COCOEvaluator``, ``predictions.json`` of ``tools/infer.py``/``tools/analyze_errors.py``).
Matching is pycocotools' ``COCOeval`` with ``iouType="segm"`` over the "all" area range and at most
100 detections per image and class, i.e. the numbers behind COCO's segm AP.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_dict
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.catalog import get_dataset_dicts
from ..utils.errors import UserError

__all__ = [
    "AnalysisInputError",
    "GroundTruth",
    "ap_from_precision",
    "evaluate_segm",
    "ground_truth_as_predictions",
    "iou_index",
    "load_ground_truth",
    "load_predictions",
    "quiet",
]

# COCO's maxDets for AP; more detections of one class in one image are not evaluated.
MAX_DETECTIONS = 100


class AnalysisInputError(UserError, ValueError):
    """Predictions that cannot be analysed against a dataset; the message names the file."""


def quiet():
    """pycocotools prints progress on stdout; the analyses log their own."""
    return contextlib.redirect_stdout(io.StringIO())


@dataclass
class GroundTruth:
    """A registered dataset as a pycocotools ``COCO`` object, with the way back to its dicts."""

    dataset_name: str
    coco: COCO
    dataset_dicts: list[dict]
    # COCO annotation id -> (index of the image in dataset_dicts, index in its "annotations").
    annotation_source: dict[int, tuple[int, int]]
    # image id -> index in dataset_dicts
    image_index: dict[int | str, int]

    @property
    def category_ids(self) -> list[int]:
        return sorted(self.coco.getCatIds())

    def category_name(self, category_id: int) -> str:
        return self.coco.cats[category_id]["name"]

    def dataset_annotation(self, annotation_id: int) -> dict:
        """The dataset dict's annotation that became COCO annotation ``annotation_id``."""
        image, index = self.annotation_source[annotation_id]
        return self.dataset_dicts[image]["annotations"][index]


def load_ground_truth(dataset_name: str) -> GroundTruth:
    """The registered ``dataset_name`` converted to COCO, as ``COCOEvaluator`` converts it."""
    dicts = get_dataset_dicts(dataset_name)
    if not hasattr(MetadataCatalog.get(dataset_name), "thing_classes"):
        raise AnalysisInputError(f"dataset {dataset_name}: its metadata has no thing_classes")
    with quiet():
        coco_dict = convert_to_coco_dict(dataset_name)
        coco = COCO()
        coco.dataset = coco_dict
        coco.createIndex()
    # convert_to_coco_dict numbers the annotations 1, 2, ... in the order of the dicts.
    source = [(i, j) for i, d in enumerate(dicts) for j in range(len(d.get("annotations", [])))]
    annotations = coco_dict["annotations"]
    if len(source) != len(annotations):  # the loader gave different dicts the second time
        raise AnalysisInputError(
            f"dataset {dataset_name}: {len(annotations)} COCO annotations for {len(source)} "
            "annotations in its dicts"
        )
    return GroundTruth(
        dataset_name=dataset_name,
        coco=coco,
        dataset_dicts=dicts,
        annotation_source={a["id"]: s for a, s in zip(annotations, source, strict=True)},
        image_index={img["id"]: i for i, img in enumerate(coco_dict["images"])},
    )


def _check_results(results: list, gt: GroundTruth, source: str) -> None:
    """Every result names an image and a class of the dataset and has a mask of its size."""
    if not isinstance(results, list):
        raise AnalysisInputError(
            f"{source}: expected a JSON list of COCO results, got {type(results).__name__}"
        )
    images, categories = gt.coco.imgs, gt.coco.cats
    for i, result in enumerate(results):
        missing = {"image_id", "category_id", "score", "segmentation"} - set(result)
        if not isinstance(result, dict) or missing:
            what = f"lacks {sorted(missing)}" if isinstance(result, dict) else "is not an object"
            raise AnalysisInputError(
                f"{source}: result {i} {what} (mask analysis needs image_id, category_id, score "
                "and an RLE segmentation per result)"
            )
        image = images.get(result["image_id"])
        if image is None:
            raise AnalysisInputError(
                f"{source}: result {i} is for image id {result['image_id']!r}, which dataset "
                f"{gt.dataset_name} does not have (predictions of another dataset?)"
            )
        if result["category_id"] not in categories:
            raise AnalysisInputError(
                f"{source}: result {i} has category_id {result['category_id']!r}; dataset "
                f"{gt.dataset_name} has {sorted(categories)}"
            )
        segmentation = result["segmentation"]
        size = segmentation.get("size") if isinstance(segmentation, dict) else None
        if size is None or "counts" not in segmentation:
            raise AnalysisInputError(f"{source}: result {i}: segmentation is not a COCO RLE")
        if list(size) != [image["height"], image["width"]]:
            raise AnalysisInputError(
                f"{source}: result {i} has a {size[1]}x{size[0]} mask but image "
                f"{image['file_name']} is {image['width']}x{image['height']} (WxH)"
            )


def load_predictions(predictions: str | os.PathLike | list[dict], gt: GroundTruth) -> COCO:
    """COCO results (a file or a list) checked against ``gt`` and loaded with ``COCO.loadRes``.

    Raises :class:`AnalysisInputError` naming the file for anything ``loadRes``/``COCOeval``
    would fail on deep inside (not JSON, not a list, unknown image or class, no RLE mask).
    """
    if isinstance(predictions, list):
        source, results = "predictions", copy.deepcopy(predictions)
    else:
        source = os.fspath(predictions)
        try:
            with open(source, encoding="utf-8") as f:
                results = json.load(f)
        except FileNotFoundError:
            raise AnalysisInputError(f"{source}: predictions file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AnalysisInputError(f"{source}: not a readable JSON file ({exc})") from None
    _check_results(results, gt, source)
    if not results:  # loadRes needs one result to tell the kind; no prediction is no error
        empty = COCO()
        empty.dataset = {
            "images": list(gt.coco.dataset["images"]),
            "categories": list(gt.coco.dataset["categories"]),
            "annotations": [],
        }
        with quiet():
            empty.createIndex()
        return empty
    with quiet():
        return gt.coco.loadRes(results)


def evaluate_segm(
    gt: GroundTruth,
    predictions: COCO,
    *,
    use_categories: bool = True,
    iou_thresholds: Sequence[float] | None = None,
) -> COCOeval:
    """``COCOeval`` (segm) after ``evaluate()`` and ``accumulate()``, area "all", 100 detections.

    ``evalImgs`` has one entry per (class, image) (one per image without ``use_categories``:
    class-agnostic matching, for the confusion matrix); ``eval["precision"]`` is T x R x K x 1 x 1.
    """
    evaluation = COCOeval(gt.coco, predictions, iouType="segm")
    params = evaluation.params
    params.areaRng, params.areaRngLbl = [params.areaRng[0]], ["all"]
    params.maxDets = [MAX_DETECTIONS]
    params.useCats = int(use_categories)
    if iou_thresholds is not None:
        params.iouThrs = np.asarray(iou_thresholds, dtype=float)
    with quiet():
        evaluation.evaluate()
        evaluation.accumulate()
    return evaluation


def ap_from_precision(precision: np.ndarray) -> float:
    """COCO AP in percent of a precision array (-1 marks a class without ground truth)."""
    valid = precision[precision > -1]
    return float(np.mean(valid) * 100) if valid.size else float("nan")


def iou_index(evaluation: COCOeval, iou: float) -> int:
    """Index of ``iou`` in the evaluation's IoU thresholds."""
    matches = np.where(np.isclose(evaluation.params.iouThrs, iou))[0]
    if not len(matches):
        raise ValueError(f"IoU {iou} is not one of {evaluation.params.iouThrs.tolist()}")
    return int(matches[0])


def ground_truth_as_predictions(gt: GroundTruth, score: float = 1.0) -> list[dict]:
    """The non-crowd ground truth as COCO results (RLE masks): a perfect model's predictions."""
    results = []
    for ann in gt.coco.dataset["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        rle = gt.coco.annToRLE(ann)
        counts = rle["counts"]
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "bbox": list(ann["bbox"]),
                "score": score,
                "segmentation": {
                    "size": list(rle["size"]),
                    "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
                },
            }
        )
    return results
