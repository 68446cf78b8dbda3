"""Per-dataset statistics: images, instances, instances per image, mask areas, image sizes, and
instances and images per class."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pycocotools.mask as mask_util
from detectron2.structures import BoxMode

from .validation import _polygon_area

# COCO's size classes (area in pixels), the ones APs/APm/APl are computed on.
COCO_SMALL, COCO_MEDIUM = 32**2, 96**2


def annotation_area(ann: dict) -> float:
    """Mask area in pixels (RLE pixel count, polygon area), else the box area."""
    segm = ann.get("segmentation")
    if isinstance(segm, dict):
        rle = (
            segm
            if isinstance(segm["counts"], str | bytes)
            else mask_util.frPyObjects(segm, *segm["size"])
        )
        return float(mask_util.area(rle))
    if isinstance(segm, list) and segm:
        return float(sum(_polygon_area(poly) for poly in segm))
    x0, y0, x1, y1 = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYXY_ABS)
    return float(max(0.0, x1 - x0) * max(0.0, y1 - y0))


def per_class_counts(dicts: Sequence[dict], classes: Sequence[str] | None = None) -> dict:
    """``{class name: {"instances": n, "images": m}}`` in class order; every class of
    ``classes`` is listed (0 when absent). Without ``classes`` the names are the category ids."""
    instances: Counter = Counter()
    images: Counter = Counter()
    for record in dicts:
        present = [a["category_id"] for a in record.get("annotations", [])]
        instances.update(present)
        images.update(set(present))
    ids = range(len(classes)) if classes is not None else sorted(instances)
    name = (lambda i: classes[i]) if classes is not None else str
    counts = {name(i): {"instances": instances[i], "images": images[i]} for i in ids}
    unknown = sorted(set(instances) - set(ids))
    for i in unknown:  # a category_id beyond the class list: shown, not hidden
        counts[f"<unknown id {i}>"] = {"instances": instances[i], "images": images[i]}
    return counts


def summarize_dataset_dicts(dicts: Sequence[dict], classes: Sequence[str] | None = None) -> dict:
    """JSON-serializable statistics of Detectron2 dataset dicts (``classes``: their names)."""
    per_image = np.array([len(d.get("annotations", [])) for d in dicts], dtype=float)
    areas = np.array(
        [annotation_area(a) for d in dicts for a in d.get("annotations", [])], dtype=float
    )
    sizes = Counter(f"{d['width']}x{d['height']}" for d in dicts)
    widths = [d["width"] for d in dicts]
    heights = [d["height"] for d in dicts]

    def stats(values: np.ndarray) -> dict:
        if values.size == 0:
            return {"min": None, "median": None, "mean": None, "max": None}
        return {
            "min": float(values.min()),
            "median": float(np.median(values)),
            "mean": round(float(values.mean()), 2),
            "max": float(values.max()),
        }

    return {
        "images": len(dicts),
        "instances": int(per_image.sum()),
        "images_without_instances": int((per_image == 0).sum()),
        "instances_per_image": stats(per_image),
        "mask_area": {
            **stats(areas),
            "p10": float(np.percentile(areas, 10)) if areas.size else None,
            "p90": float(np.percentile(areas, 90)) if areas.size else None,
            "small": int((areas < COCO_SMALL).sum()),
            "medium": int(((areas >= COCO_SMALL) & (areas < COCO_MEDIUM)).sum()),
            "large": int((areas >= COCO_MEDIUM).sum()),
        },
        "image_width": stats(np.array(widths, dtype=float)),
        "image_height": stats(np.array(heights, dtype=float)),
        "distinct_image_sizes": len(sizes),
        "most_common_image_sizes": dict(sizes.most_common(3)),
        "classes": per_class_counts(dicts, classes),
    }


def summary_table_rows(summaries: dict[str, dict]) -> list[list]:
    """One row per dataset for ``tabulate`` (see SUMMARY_HEADERS)."""
    rows = []
    for name, s in summaries.items():
        ipi, area = s["instances_per_image"], s["mask_area"]

        def fmt(v, digits=0):
            return "-" if v is None else f"{v:.{digits}f}"

        rows.append(
            [
                name,
                s["images"],
                s["instances"],
                s["images_without_instances"],
                f"{fmt(ipi['min'])}/{fmt(ipi['mean'], 2)}/{fmt(ipi['max'])}",
                f"{fmt(area['min'])}/{fmt(area['median'])}/{fmt(area['max'])}",
                f"{area['small']}/{area['medium']}/{area['large']}",
                f"{fmt(s['image_width']['min'])}-{fmt(s['image_width']['max'])} x "
                f"{fmt(s['image_height']['min'])}-{fmt(s['image_height']['max'])}",
            ]
        )
    return rows


SUMMARY_HEADERS = [
    "dataset",
    "images",
    "instances",
    "no inst.",
    "inst./image min/mean/max",
    "mask area px min/median/max",
    "COCO S/M/L",
    "image W x H",
]


CLASS_HEADERS = ["dataset", "class", "instances", "images with it"]


def class_table_rows(summaries: dict[str, dict]) -> list[list]:
    """One row per dataset and class for ``tabulate`` (see CLASS_HEADERS)."""
    return [
        [name, cls, counts["instances"], counts["images"]]
        for name, s in summaries.items()
        for cls, counts in s["classes"].items()
    ]
