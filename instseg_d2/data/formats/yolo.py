"""YOLO segmentation labels in the Ultralytics layout: :func:`load_yolo`.

Images are every image file under ``images_dir`` (sub-folders included). The label of an image
is found as Ultralytics finds it: the last ``images`` component of the image's path replaced by
``labels`` and the suffix by ``.txt`` (``data/images/train/a.jpg`` -> ``data/labels/train/a.txt``).
An image without a label file is a negative (Ultralytics' "background"), counted and noted; a
label file without an image is noted; no label file at all is an error (wrong layout).

A label line is ``class x1 y1 x2 y2 ...``: a class index into ``class_names`` and a polygon
normalised to ``[0, 1]`` by the image's width and height (Detectron2's continuous coordinates
once multiplied back, no shift). A line with exactly 4 numbers after the class is a detection box
(``cx cy w h``): an error by default, since a box is no mask, or a box-shaped polygon with
``boxes_as_polygons``. Repeated identical lines are dropped with a note (Ultralytics does too).
Image sizes are read from the image headers (threads). Precision: Ultralytics writes 6 decimals,
i.e. at most ``0.5e-6 x side`` pixels of rounding (0.0003 px on a 640 px side).

``dataset_ids`` are ``1..K`` (YOLO's class ``k`` is id ``k + 1``, so that COCO exports start at 1).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ...utils.parallel import parallel_map
from ..errors import DatasetError
from ..image_io import BadImageError
from .common import (
    OUTSIDE_TOLERANCE,
    LoadedSplit,
    ProblemLog,
    check_unique_image_ids,
    clip_polygons,
    image_size_or_error,
    list_images,
    polygon_annotation,
    sample,
    stable_image_id,
)


def yolo_label_path(image: str | os.PathLike) -> Path | None:
    """The label file Ultralytics reads for ``image`` (None when its path has no ``images``)."""
    path = os.fspath(Path(image).absolute())
    images, labels = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if images not in path:
        return None
    return Path(labels.join(path.rsplit(images, 1))).with_suffix(".txt")


def read_yolo_class_names(data_yaml: str | os.PathLike) -> list[str]:
    """Class names from an Ultralytics ``data.yaml``: ``names`` as a list or ``{0: a, 1: b}``."""
    import yaml

    data_yaml = Path(data_yaml)
    try:
        data = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{data_yaml}: file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DatasetError(f"{data_yaml}: not valid YAML ({exc})") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        try:
            by_index = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError):
            raise DatasetError(f"{data_yaml}: 'names' keys must be class indices 0..K-1") from None
        if sorted(by_index) != list(range(len(by_index))):
            raise DatasetError(
                f"{data_yaml}: 'names' keys must be 0..{len(by_index) - 1}, got {sorted(by_index)}"
            )
        names = [by_index[i] for i in range(len(by_index))]
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{data_yaml}: no 'names' list or {{index: name}} mapping")
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise DatasetError(f"{data_yaml}: 'names' must be distinct non-empty strings, got {names}")
    nc = data.get("nc")
    if nc is not None and nc != len(names):
        raise DatasetError(f"{data_yaml}: nc is {nc} but 'names' has {len(names)} entries")
    return [str(n) for n in names]


def _parse_line(
    line: str, num_classes: int, boxes_as_polygons: bool
) -> tuple[int, list[float]] | str:
    """``(class, normalised flat polygon)`` of one label line, or the reason it is unusable."""
    try:
        values = [float(v) for v in line.split()]
    except ValueError:
        return "not a list of numbers"
    if not all(math.isfinite(v) for v in values):
        return "non-finite number"
    cls, coords = values[0], values[1:]
    if not cls.is_integer() or not 0 <= cls < num_classes:
        return f"class {line.split()[0]} is not an index 0..{num_classes - 1} of the class names"
    if len(coords) == 4:
        if not boxes_as_polygons:
            return (
                "4 numbers after the class: a detection box (cx cy w h), not a polygon; "
                "instance segmentation needs polygons (boxes_as_polygons: true turns boxes into "
                "box-shaped masks)"
            )
        cx, cy, w, h = coords
        x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        coords = [x0, y0, x1, y0, x1, y1, x0, y1]
    elif len(coords) % 2 or len(coords) < 6:
        return f"{len(coords)} coordinates; a polygon needs an even number, at least 6 (3 points)"
    return int(cls), coords


def _read_labels(label: Path | None) -> str | None | OSError:
    if label is None or not label.is_file():
        return None
    try:
        return label.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return OSError(str(exc))


def load_yolo(
    images_dir: str | os.PathLike,
    class_names: list[str],
    *,
    boxes_as_polygons: bool = False,
    outside_tolerance: float | None = OUTSIDE_TOLERANCE,
    num_workers: int | None = None,
) -> LoadedSplit:
    """The images under ``images_dir`` with their YOLO-seg labels (module docstring), sorted by
    path; ``image_id`` is a stable hash of the path relative to ``images_dir``. Raises
    DatasetError listing every problem (label file and line)."""
    images_dir = Path(images_dir)
    log = ProblemLog(images_dir)
    images = list_images(images_dir, recursive=True) if images_dir.is_dir() else []
    if not images_dir.is_dir():
        log.error(images_dir, "folder not found")
    elif not images:
        log.error(images_dir, "no image files in this folder")
    elif yolo_label_path(images[0]) is None:
        log.error(
            images_dir,
            "the Ultralytics layout finds labels by replacing an 'images' folder in the image "
            "path with 'labels', but this path has no 'images' folder",
        )
    log.raise_if_errors()

    labels = [yolo_label_path(p) for p in images]

    def read(job: tuple[Path, Path | None]) -> tuple[Any, Any]:
        return image_size_or_error(job[0]), _read_labels(job[1])

    results = parallel_map(read, list(zip(images, labels, strict=True)), num_workers)
    if all(text is None for _, text in results):
        log.error(
            images_dir,
            f"no label file for any of the {len(images)} images (expected e.g. {labels[0]})",
        )
        log.raise_if_errors()

    dicts, unlabelled = [], []
    for image, label, (size, text) in zip(images, labels, results, strict=True):
        if isinstance(size, BadImageError):
            log.error(image, str(size).removeprefix(f"{image}: "))
            continue
        if isinstance(text, OSError):
            log.error(label, f"cannot be read ({text})")
            continue
        height, width = size
        annotations, seen = [], set()
        for number, line in enumerate((text or "").splitlines(), 1):
            if not line.strip():
                continue
            parsed = _parse_line(line, len(class_names), boxes_as_polygons)
            if isinstance(parsed, str):
                log.error(label, f"line {number}: {parsed}")
                continue
            if tuple(line.split()) in seen:
                log.note(label, f"line {number}: repeats an earlier line; dropped")
                continue
            seen.add(tuple(line.split()))
            cls, coords = parsed
            flat = [v * (width if i % 2 == 0 else height) for i, v in enumerate(coords)]
            polygons = clip_polygons(
                [flat], height, width, outside_tolerance, log, label, f"line {number}"
            )
            annotations.append(polygon_annotation(polygons, cls))
        if text is None:
            unlabelled.append(image.relative_to(images_dir).as_posix())
        dicts.append(
            {
                "file_name": str(image),
                "height": height,
                "width": width,
                "image_id": stable_image_id(image.relative_to(images_dir).as_posix()),
                "annotations": annotations,
            }
        )
    if unlabelled:
        log.note(
            images_dir,
            f"{len(unlabelled)} image(s) without a label file kept as negatives: "
            f"{sample(unlabelled)}",
        )
    label_dir = yolo_label_path(images_dir / "_")
    if label_dir is not None and label_dir.parent.is_dir():
        expected = {p.absolute() for p in labels if p is not None}
        orphans = [
            p.name for p in sorted(label_dir.parent.rglob("*.txt")) if p.absolute() not in expected
        ]
        if orphans:
            log.note(
                label_dir.parent,
                f"{len(orphans)} label file(s) without an image are not used: {sample(orphans)}",
            )
    check_unique_image_ids(log, dicts, images_dir, "image paths")
    log.raise_if_errors()
    return LoadedSplit(
        dicts=dicts,
        classes=list(class_names),
        dataset_ids=list(range(1, len(class_names) + 1)),
        notes=log.notes,
        num_negative_images=sum(not d["annotations"] for d in dicts),
        source=str(images_dir),
        class_order="declared",
        has_source_ids=True,
    )
