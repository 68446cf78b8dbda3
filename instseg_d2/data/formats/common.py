"""What every reader shares: the :class:`LoadedSplit` it returns, problem collection, clipping.

Coordinates: every reader produces Detectron2's continuous pixel coordinates (pixel ``i`` covers
``[i, i + 1)``; a polygon lies in ``[0, width] x [0, height]``). A point outside the image by at
most ``outside_limit(side)`` pixels (2% of that image side, at least 2 px) is clipped onto the
border and counted in the split's notes: annotation tools let points slip past the border when
a user clicks at the image's edge. A point further out is an error, since it means the
annotation was made for another image size. ``outside_tolerance=None`` clips any distance.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..image_io import BadImageError, image_size
from ..problems import Problem

# Fraction of the image side (with OUTSIDE_MIN_PX as a floor) that a point may lie outside the
# image and still be clipped onto it; see the module docstring.
OUTSIDE_TOLERANCE = 0.02
OUTSIDE_MIN_PX = 2.0
# Points of the polygon that stands for a circle or an ellipse (LabelMe, VIA).
ELLIPSE_POINTS = 32
# Files the readers take for images (what PIL reads without plugins).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


@dataclass
class LoadedSplit:
    """One split of a dataset as read from its source files.

    ``dicts`` are Detectron2 dataset dicts; each annotation's ``category_id`` indexes
    ``classes``. ``dataset_ids[k]`` is the source's own id of ``classes[k]`` (COCO category ids,
    YOLO index + 1; ``1..K`` where the format has none, which ``has_source_ids`` False says), the
    keys of ``thing_dataset_id_to_contiguous_id``.
    ``class_order`` says where the order of ``classes`` comes from: ``"declared"`` by the source
    (COCO categories, YOLO names, VIA attribute options) or ``"sorted"`` (names found in the
    annotations, sorted), which decides how the classes of several splits are merged.
    """

    dicts: list[dict]
    classes: list[str]
    dataset_ids: list[int]
    notes: list[Problem] = field(default_factory=list)
    num_negative_images: int = 0
    source: str = ""
    class_order: str = "declared"
    has_source_ids: bool = False

    @property
    def mask_format(self) -> str:
        """The ``INPUT.MASK_FORMAT`` the data needs: "polygon" if every mask is polygons."""
        for record in self.dicts:
            for ann in record.get("annotations", []):
                if isinstance(ann.get("segmentation"), dict):
                    return "bitmask"
        return "polygon"

    @property
    def thing_dataset_id_to_contiguous_id(self) -> dict[int, int]:
        return {dataset_id: index for index, dataset_id in enumerate(self.dataset_ids)}

    def num_instances(self) -> int:
        return sum(len(record.get("annotations", [])) for record in self.dicts)


class ProblemLog:
    """Collects a reader's errors and notes; :meth:`raise_if_errors` raises them all at once."""

    def __init__(self, source: str | os.PathLike, error_class: type[DatasetError] = DatasetError):
        self.source = os.fspath(source)
        self.error_class = error_class
        self.errors: list[Problem] = []
        self.notes: list[Problem] = []

    def error(self, file: str | os.PathLike, message: str) -> None:
        self.errors.append(Problem(os.fspath(file), message))

    def note(self, file: str | os.PathLike, message: str) -> None:
        self.notes.append(Problem(os.fspath(file), message, severity="warning"))

    def raise_if_errors(self) -> None:
        if self.errors:
            raise self.error_class.from_problems(self.source, self.errors)


def stable_image_id(relative_path: str) -> int:
    """A 31-bit image id from a path that names the image inside its dataset (crc32).

    Stable across runs and machines, unlike an index that shifts when files are added.
    """
    return zlib.crc32(relative_path.encode("utf-8")) & 0x7FFFFFFF


def check_unique_image_ids(
    log: ProblemLog, dicts: list[dict], where: str | os.PathLike, what: str
) -> None:
    """An error in ``log`` when two of ``dicts`` share a :func:`stable_image_id` (a crc32
    collision); ``what`` names the paths the ids were made from."""
    if len({d["image_id"] for d in dicts}) != len(dicts):
        log.error(where, f"two {what} hash to the same image_id; rename one")


def outside_limit(side: float, tolerance: float | None) -> float:
    """How far (pixels) a point may lie outside an image side of ``side`` pixels and be clipped."""
    if tolerance is None:
        return math.inf
    return max(OUTSIDE_MIN_PX, tolerance * side)


def clip_xy(
    flat: Sequence[float], height: int, width: int, tolerance: float | None
) -> tuple[list[float], int, float, bool]:
    """Clip a flat ``[x0, y0, x1, y1, ...]`` list onto ``[0, width] x [0, height]``.

    Returns ``(clipped, values clipped, largest distance outside, within tolerance)``.
    """
    clipped: list[float] = []
    count, worst, within = 0, 0.0, True
    for index, value in enumerate(flat):
        side = width if index % 2 == 0 else height
        excess = max(-value, value - side)
        if excess > 0:
            count += 1
            worst = max(worst, excess)
            within &= excess <= outside_limit(side, tolerance)
            value = min(max(value, 0.0), float(side))
        clipped.append(float(value))
    return clipped, count, worst, within


def clip_polygons(
    polygons: Sequence[Sequence[float]],
    height: int,
    width: int,
    tolerance: float | None,
    log: ProblemLog,
    file: str | os.PathLike,
    where: str,
) -> list[list[float]]:
    """Clip each polygon onto the image; note clipped values, log an error past the tolerance."""
    result, count, worst, within = [], 0, 0.0, True
    for polygon in polygons:
        clipped, n, excess, ok = clip_xy(polygon, height, width, tolerance)
        result.append(clipped)
        count, worst, within = count + n, max(worst, excess), within and ok
    if not within:
        log.error(
            file,
            f"{where}: points up to {worst:.1f} px outside the {width}x{height} image, more than "
            f"the tolerance (max({OUTSIDE_MIN_PX:g} px, {tolerance:g} x the image side)); "
            "is the annotation made for another image size?",
        )
    elif count:
        log.note(
            file,
            f"{where}: {count} coordinate(s) up to {worst:.2f} px outside the {width}x{height} "
            "image clipped onto it",
        )
    return result


def finite_numbers(values: Any) -> bool:
    """True for a list/tuple of finite real numbers (bools excluded)."""
    return isinstance(values, list | tuple) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )


def polygon_annotation(polygons: list[list[float]], category_id: int, iscrowd: int = 0) -> dict:
    """A Detectron2 annotation from flat polygons; the box is their extent in ``XYXY_ABS``."""
    from detectron2.structures import BoxMode

    xs = [x for polygon in polygons for x in polygon[0::2]]
    ys = [y for polygon in polygons for y in polygon[1::2]]
    return {
        "bbox": [min(xs), min(ys), max(xs), max(ys)],
        "bbox_mode": BoxMode.XYXY_ABS,
        "segmentation": polygons,
        "category_id": category_id,
        "iscrowd": iscrowd,
    }


def ellipse_polygon(cx: float, cy: float, rx: float, ry: float, theta: float = 0.0) -> list[float]:
    """``ELLIPSE_POINTS`` points on an ellipse (radii ``rx``, ``ry``, rotated by ``theta``)."""
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    flat: list[float] = []
    for i in range(ELLIPSE_POINTS):
        a = 2 * math.pi * i / ELLIPSE_POINTS
        x, y = rx * math.cos(a), ry * math.sin(a)
        flat += [cx + x * cos_t - y * sin_t, cy + x * sin_t + y * cos_t]
    return flat


def image_size_or_error(path: str | os.PathLike) -> tuple[int, int] | BadImageError:
    """``(height, width)`` from the header, or the BadImageError (for ``parallel_map``)."""
    try:
        return image_size(path)
    except BadImageError as exc:
        return exc


def list_images(folder: Path, recursive: bool) -> list[Path]:
    """Image files (by suffix, any case) under ``folder``, sorted."""
    pattern = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(p for p in pattern if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def sample(names: Sequence[str], limit: int = 5) -> str:
    """``a, b, c`` or ``a, b, c, ... (12 in all)`` for messages about many files."""
    shown = ", ".join(str(n) for n in names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


def remap_classes(
    split: LoadedSplit, classes: Sequence[str], dataset_ids: Sequence[int] | None = None
) -> LoadedSplit:
    """``split`` with its ``category_id``s re-indexed into ``classes`` (the user's order).

    ``dataset_ids`` (one per class) default to the source's ids when it has ids of its own and
    every class, else ``1..K``. A class of the data that is not in ``classes`` raises
    :class:`DatasetError`
    naming the images where it occurs; nothing is dropped.
    """
    classes = list(classes)
    if len(set(classes)) != len(classes):
        duplicated = sorted({c for c in classes if classes.count(c) > 1})
        raise DatasetError(f"{split.source}: classes listed twice: {', '.join(duplicated)}")
    if dataset_ids is None:
        own = dict(zip(split.classes, split.dataset_ids, strict=True))
        has_all = split.has_source_ids and all(c in own for c in classes)
        dataset_ids = [own[c] for c in classes] if has_all else None
        if dataset_ids is None or len(set(dataset_ids)) != len(dataset_ids):
            dataset_ids = list(range(1, len(classes) + 1))
    if len(dataset_ids) != len(classes):
        raise ValueError(
            f"remap_classes: {len(dataset_ids)} dataset ids for {len(classes)} classes"
        )
    index = {name: i for i, name in enumerate(classes)}
    new_id = [index.get(name) for name in split.classes]
    unknown: dict[str, list[str]] = {}
    for record in split.dicts:
        for ann in record.get("annotations", []):
            if new_id[ann["category_id"]] is None:
                files = unknown.setdefault(split.classes[ann["category_id"]], [])
                if not files or files[-1] != record["file_name"]:
                    files.append(record["file_name"])
    if unknown:
        raise DatasetError.from_problems(
            split.source,
            [
                Problem(
                    split.source,
                    f"class {name!r} is not in the classes {classes}; it occurs in {sample(files)}",
                )
                for name, files in unknown.items()
            ],
        )
    dicts = [
        {
            **record,
            "annotations": [
                {**ann, "category_id": new_id[ann["category_id"]]}
                for ann in record.get("annotations", [])
            ],
        }
        for record in split.dicts
    ]
    return replace(split, dicts=dicts, classes=classes, dataset_ids=list(dataset_ids))
