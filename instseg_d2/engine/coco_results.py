"""Predictions as COCO "results" entries (bbox XYWH, score, category_id, RLE segmentation)."""

from __future__ import annotations

from collections.abc import Callable

from detectron2.data.catalog import Metadata
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Instances


def category_id_mapper(metadata: Metadata | None) -> Callable[[int], int]:
    """Contiguous class index -> COCO ``category_id``, as Detectron2's ``convert_to_coco_dict``.

    With ``thing_dataset_id_to_contiguous_id`` in the metadata the dataset's own ids are used;
    without it the contiguous index is the category id (that is what the COCO export writes too),
    so results load against either export with ``COCO.loadRes``.
    """
    mapping = getattr(metadata, "thing_dataset_id_to_contiguous_id", None) if metadata else None
    if not mapping:
        return int
    reverse = {contiguous: dataset_id for dataset_id, contiguous in mapping.items()}
    return lambda contiguous: int(reverse[contiguous])


def instances_to_coco_results(
    instances: Instances, image_id: int | str, metadata: Metadata | None = None
) -> list[dict]:
    """COCO results of one image (Detectron2's ``instances_to_coco_json`` + id mapping)."""
    to_category_id = category_id_mapper(metadata)
    results = instances_to_coco_json(instances.to("cpu"), image_id)
    for result in results:
        result["category_id"] = to_category_id(result["category_id"])
    return results
