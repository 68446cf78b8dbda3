"""Check Detectron2 dataset dicts before training: every problem, each with its file.

:func:`validate_dataset_dicts` decodes every image (in parallel, remembered in an
:class:`~.image_checks.ImageCheckCache` when one is given, so unchanged files are not decoded
again) and checks the recorded size, duplicate files and ids, boxes, polygons (at least 3 points,
finite, inside the image, non-zero area) and RLE masks (size equals the image, non-empty). It
never raises for bad data: it returns :class:`Problem` records, so a caller sees all problems at
once. The trainer calls :func:`check_registered_datasets` at the start of training
(``cfg.INSTSEG.VALIDATE_DATA``); ``tools/validate_dataset.py`` is the command line. Checks that
need several splits (a class seen in val but never in train, ...) are in
:mod:`.dataset_validation`; checks of a source file's own structure are in the readers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
from detectron2.structures import BoxMode

from ..utils.errors import UserError
from .errors import DatasetError
from .image_checks import ImageCheck, ImageCheckCache, check_images, default_image_cache
from .problems import Problem, format_problems

__all__ = [
    "DatasetValidationError",
    "check_registered_datasets",
    "Problem",
    "format_problems",
    "validate_dataset_dicts",
    "validate_registered_dataset",
]

# Coordinates may sit exactly on the border (x == width); allow float round-off beyond it.
_EDGE_TOLERANCE = 1e-3


class DatasetValidationError(UserError, ValueError):
    """Raised by callers that stop on validation errors; the message lists them."""

    def __init__(self, problems: Sequence[Problem], dataset: str = "dataset"):
        self.problems = list(problems)
        self.dataset = dataset
        super().__init__(format_problems(self.problems, dataset))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def _finite(values: Iterable[Any]) -> bool:
    return all(_is_number(v) and math.isfinite(v) for v in values)


def _polygon_area(flat: Sequence[float]) -> float:
    xs, ys = np.asarray(flat[0::2], dtype=float), np.asarray(flat[1::2], dtype=float)
    return 0.5 * abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))))


def _check_polygons(segm: list, height: int, width: int, where: str) -> list[str]:
    messages = []
    if not segm:
        return [f"{where}: empty polygon list"]
    for j, poly in enumerate(segm):
        tag = f"{where} polygon {j}"
        if not isinstance(poly, list | tuple) or not _finite(poly):
            messages.append(f"{tag}: coordinates must be a flat list of finite numbers")
            continue
        if len(poly) % 2 or len(poly) < 6:
            messages.append(f"{tag}: needs at least 3 (x, y) points, got {len(poly)} numbers")
            continue
        xs, ys = poly[0::2], poly[1::2]
        if (
            min(xs) < -_EDGE_TOLERANCE
            or min(ys) < -_EDGE_TOLERANCE
            or max(xs) > width + _EDGE_TOLERANCE
            or max(ys) > height + _EDGE_TOLERANCE
        ):
            messages.append(
                f"{tag}: points outside the {width}x{height} image "
                f"(x {min(xs):.1f}..{max(xs):.1f}, y {min(ys):.1f}..{max(ys):.1f})"
            )
        if _polygon_area(poly) <= 0:
            messages.append(f"{tag}: zero area")
    return messages


def _check_rle(segm: dict, height: int, width: int, where: str) -> list[str]:
    size = segm.get("size")
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or [int(v) for v in size] != [height, width]
    ):
        return [
            f"{where}: RLE size {size} differs from the image's [height, width] {[height, width]}"
        ]
    try:
        rle = (
            segm
            if isinstance(segm.get("counts"), str | bytes)
            else mask_util.frPyObjects(segm, *size)
        )
        area = int(mask_util.area(rle))
    except (TypeError, ValueError, KeyError) as exc:
        return [f"{where}: RLE cannot be decoded ({exc})"]
    return [] if area > 0 else [f"{where}: empty mask (0 pixels)"]


def _check_annotation(
    ann: Any, height: int, width: int, where: str, num_classes: int | None
) -> list[str]:
    if not isinstance(ann, dict):
        return [f"{where}: not a dict"]
    messages = []
    category = ann.get("category_id")
    if not isinstance(category, int | np.integer) or isinstance(category, bool) or category < 0:
        messages.append(f"{where}: category_id must be a non-negative int, got {category!r}")
    elif num_classes is not None and category >= num_classes:
        messages.append(
            f"{where}: category_id {category} but the dataset has {num_classes} class(es)"
        )
    bbox = ann.get("bbox")
    if not isinstance(bbox, list | tuple | np.ndarray) or len(bbox) != 4 or not _finite(bbox):
        messages.append(f"{where}: bbox must be 4 finite numbers, got {bbox!r}")
    else:
        mode = ann.get("bbox_mode", BoxMode.XYXY_ABS)
        x0, y0, x1, y1 = BoxMode.convert(list(bbox), mode, BoxMode.XYXY_ABS)
        if x1 <= x0 or y1 <= y0:
            messages.append(f"{where}: box {[x0, y0, x1, y1]} (XYXY) has no area")
        elif (
            x0 < -_EDGE_TOLERANCE
            or y0 < -_EDGE_TOLERANCE
            or x1 > width + _EDGE_TOLERANCE
            or y1 > height + _EDGE_TOLERANCE
        ):
            messages.append(
                f"{where}: box {[x0, y0, x1, y1]} (XYXY) outside the {width}x{height} image"
            )
    segm = ann.get("segmentation")
    if segm is None:
        messages.append(f"{where}: no segmentation (Mask R-CNN needs a mask per instance)")
    elif isinstance(segm, list):
        messages += _check_polygons(segm, height, width, where)
    elif isinstance(segm, dict):
        messages += _check_rle(segm, height, width, where)
    else:
        messages.append(
            f"{where}: segmentation must be polygons or an RLE dict, got {type(segm).__name__}"
        )
    return messages


def _check_record(record: dict, image: ImageCheck, num_classes: int | None) -> list[Problem]:
    file_name = str(record.get("file_name"))
    if image.error is not None:
        return [Problem(file_name, image.error)]
    h, w = image.height, image.width
    height, width = record.get("height", h), record.get("width", w)
    if (height, width) != (h, w):
        return [
            Problem(file_name, f"recorded size {width}x{height} (WxH) but the image is {w}x{h}")
        ]
    problems = []
    annotations = record.get("annotations", [])
    if not isinstance(annotations, list):
        return [Problem(file_name, "'annotations' must be a list")]
    for i, ann in enumerate(annotations):
        messages = _check_annotation(ann, h, w, f"annotation {i}", num_classes)
        problems += [Problem(file_name, m) for m in messages]
    return problems


def validate_dataset_dicts(
    dicts: Sequence[dict],
    decode_images: bool = True,
    num_workers: int | None = None,
    num_classes: int | None = None,
    cache: ImageCheckCache | None = None,
) -> list[Problem]:
    """Every problem of Detectron2 dataset ``dicts``, in dataset order; empty when all is well.

    ``num_classes`` (e.g. ``len(metadata.thing_classes)``) also checks ``category_id`` < it.
    With ``decode_images`` every image is fully decoded (catches truncated files); without, only
    headers are read. Images are read by ``num_workers`` threads (None: one per CPU; PIL decodes
    without the GIL); ``cache`` remembers the results (see :mod:`.image_checks`).
    """
    problems: list[Problem] = []
    seen_files: dict[str, int] = {}
    seen_ids: dict[Any, str] = {}
    records = []
    for index, record in enumerate(dicts):
        if not isinstance(record, dict) or "file_name" not in record:
            problems.append(Problem(f"<record {index}>", "not a dict with a 'file_name'"))
            continue
        file_name = str(record["file_name"])
        if file_name in seen_files:
            problems.append(
                Problem(file_name, f"listed twice (records {seen_files[file_name]} and {index})")
            )
        seen_files.setdefault(file_name, index)
        image_id = record.get("image_id")
        if image_id is None:
            problems.append(Problem(file_name, "no image_id"))
        elif image_id in seen_ids and seen_ids[image_id] != file_name:
            problems.append(
                Problem(file_name, f"image_id {image_id!r} also used by {seen_ids[image_id]}")
            )
        else:
            seen_ids[image_id] = file_name
        records.append(record)
    images = check_images((str(r["file_name"]) for r in records), decode_images, num_workers, cache)
    for record in records:
        problems += _check_record(record, images[str(record["file_name"])], num_classes)
    return problems


def validate_registered_dataset(
    name: str, decode_images: bool = True, cache: ImageCheckCache | None = None
) -> list[Problem]:
    """Problems of the registered dataset ``name``, including a loader that fails (each of the
    problems a reader lists becomes one Problem).

    For Penn-Fudan datasets, disagreements between the .txt boxes and the masks are added as
    warnings (the masks are the ground truth).
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    try:
        dicts = DatasetCatalog.get(name)
    except DatasetError as exc:
        return exc.as_problems()
    except OSError as exc:
        file, _, message = str(exc).partition(": ")
        return [Problem(file, message or str(exc))]
    thing_classes = MetadataCatalog.get(name).get("thing_classes")
    num_classes = len(thing_classes) if thing_classes else None
    problems = validate_dataset_dicts(
        dicts, decode_images=decode_images, num_classes=num_classes, cache=cache
    )
    if name.startswith("pennfudan"):
        from .datasets.register_pennfudan import pennfudan_annotation_disagreements

        root = MetadataCatalog.get(name).get("dataset_root")
        for line in pennfudan_annotation_disagreements(root, dicts):
            file, _, message = line.partition(": ")
            problems.append(Problem(file, message, severity="warning"))
    return problems


def check_registered_datasets(
    names: Iterable[str],
    decode_images: bool = True,
    cache: ImageCheckCache | None | str = "default",
) -> None:
    """Validate registered datasets; log warnings, raise DatasetValidationError on any error.

    The one call a trainer needs:
    ``check_registered_datasets(cfg.DATASETS.TRAIN + cfg.DATASETS.TEST)``.
    ``cache`` "default" uses :func:`~.image_checks.default_image_cache`; None decodes every time.
    """
    import logging

    logger = logging.getLogger(__name__)
    if cache == "default":
        cache = default_image_cache()
    for name in dict.fromkeys(names):  # unique, in order
        problems = validate_registered_dataset(name, decode_images=decode_images, cache=cache)
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            raise DatasetValidationError(problems, name)
        if problems:
            logger.warning(format_problems(problems, name))
        else:
            logger.info("%s: validated, no problems", name)
