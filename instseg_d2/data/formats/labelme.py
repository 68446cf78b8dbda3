"""LabelMe json folders: :func:`load_labelme`.

Every ``*.json`` under the folder (sub-folders included) is one image's LabelMe file:
``shapes[*]`` with ``label``, ``points``, ``shape_type`` and ``group_id``; ``imagePath``
(relative to the json; Windows back-slashes accepted), ``imageData`` (base64, may be null),
``imageHeight``/``imageWidth`` (used as the record's size, so no image is opened for it).

Shapes: ``polygon`` (at least 3 points), ``rectangle`` (2 opposite corners), ``circle`` (the
centre and a point on the circle; ``ELLIPSE_POINTS`` points) and ``mask`` (LabelMe 5: a base64
PNG of the box between its 2 points). ``line``, ``linestrip``, ``point`` and ``points`` have no
area and are errors. Shapes with the same ``label`` and the same non-null ``group_id`` form one
instance (as labelme's own ``labelme2coco.py`` groups them): polygons become one multi-polygon
segmentation; an instance with a ``mask`` shape becomes an RLE of the union.

Coordinates: LabelMe stores the mouse position in image coordinates, which are Detectron2's
continuous coordinates already (``labelme2coco.py`` copies them unchanged), so no shift is
applied, unlike VIA's integer pixel indices.

When ``imagePath`` is not found but the json embeds ``imageData``, that image is written once
(named by its content hash) to ``embedded_image_dir`` (default ``<cache_dir>/labelme_images``)
and used, with a note. Classes are the labels found, sorted (LabelMe declares no order).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from ..image_io import BadImageError, image_size
from ..masks import encode_binary_mask
from ..paths import cache_dir
from .common import (
    OUTSIDE_TOLERANCE,
    LoadedSplit,
    ProblemLog,
    check_unique_image_ids,
    clip_polygons,
    ellipse_polygon,
    finite_numbers,
    list_images,
    polygon_annotation,
    sample,
    stable_image_id,
)

NO_AREA_SHAPES = ("line", "linestrip", "point", "points")
_PIL_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


def _write_embedded_image(data: str, out_dir: Path) -> Path:
    """Write base64 ``data`` to ``out_dir/<sha1>.<ext>`` once (atomically); raises ValueError."""
    try:
        raw = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(raw)) as image:
            suffix = _PIL_SUFFIX.get(image.format or "", f".{(image.format or 'img').lower()}")
    except (binascii.Error, OSError, ValueError) as exc:
        raise ValueError(f"'imageData' is not a base64 image ({exc})") from None
    path = out_dir / f"{hashlib.sha1(raw).hexdigest()}{suffix}"
    if not path.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, suffix=".part", delete=False) as f:
            f.write(raw)
        os.replace(f.name, path)  # two processes writing the same image both end with it whole
    return path


def _image_file(json_file: Path, doc: dict, out_dir: Path, log: ProblemLog) -> Path | None:
    image_path = doc.get("imagePath")
    if isinstance(image_path, str) and image_path:
        candidate = json_file.parent / image_path.replace("\\", "/")
        if candidate.is_file():
            return candidate
    if isinstance(doc.get("imageData"), str) and doc["imageData"]:
        try:
            path = _write_embedded_image(doc["imageData"], out_dir)
        except ValueError as exc:
            log.error(json_file, str(exc))
            return None
        log.note(
            json_file, f"image {image_path!r} not found; using the image the json embeds ({path})"
        )
        return path
    log.error(
        json_file, f"image {image_path!r} not found (relative to the json) and no 'imageData'"
    )
    return None


def _points(shape: dict) -> list[list[float]] | None:
    points = shape.get("points")
    if not isinstance(points, list) or not all(finite_numbers(p) and len(p) == 2 for p in points):
        return None
    return [[float(x), float(y)] for x, y in points]


def _mask_shape(shape: dict, points: list[list[float]], height: int, width: int) -> np.ndarray:
    """The full-image boolean mask of a LabelMe ``mask`` shape; raises ValueError."""
    if len(points) != 2 or not isinstance(shape.get("mask"), str):
        raise ValueError("a 'mask' shape needs 2 points and a base64 PNG 'mask'")
    try:
        with Image.open(io.BytesIO(base64.b64decode(shape["mask"], validate=True))) as image:
            crop = np.asarray(image.convert("L")) > 0
    except (binascii.Error, OSError, ValueError) as exc:
        raise ValueError(f"'mask' is not a base64 image ({exc})") from None
    # labelme: (x1, y1), (x2, y2) = points.astype(int); mask[y1 : y2 + 1, x1 : x2 + 1] = crop
    (x1, y1), (x2, y2) = (tuple(int(v) for v in p) for p in points)
    if crop.shape != (y2 - y1 + 1, x2 - x1 + 1):
        raise ValueError(
            f"mask is {crop.shape[1]}x{crop.shape[0]} but its box is {x2 - x1 + 1}x{y2 - y1 + 1}"
        )
    if x1 < 0 or y1 < 0 or x2 >= width or y2 >= height:
        raise ValueError(
            f"mask box ({x1}, {y1})-({x2}, {y2}) is outside the {width}x{height} image"
        )
    full = np.zeros((height, width), dtype=bool)
    full[y1 : y2 + 1, x1 : x2 + 1] = crop
    return full


def _shape_geometry(shape: dict, height: int, width: int) -> tuple[str, Any]:
    """``("polygon", flat)`` or ``("mask", array)`` of one shape; raises ValueError saying why."""
    shape_type = shape.get("shape_type") or "polygon"
    points = _points(shape)
    if points is None:
        raise ValueError("'points' must be a list of [x, y] pairs of finite numbers")
    if shape_type == "polygon":
        if len(points) < 3:
            raise ValueError(f"a polygon needs at least 3 points, got {len(points)}")
        return "polygon", [v for p in points for v in p]
    if shape_type == "rectangle":
        if len(points) != 2:
            raise ValueError(f"a rectangle needs 2 points (opposite corners), got {len(points)}")
        (xa, ya), (xb, yb) = points
        x0, x1, y0, y1 = min(xa, xb), max(xa, xb), min(ya, yb), max(ya, yb)
        return "polygon", [x0, y0, x1, y0, x1, y1, x0, y1]
    if shape_type == "circle":
        if len(points) != 2:
            raise ValueError(f"a circle needs 2 points (centre, a point on it), got {len(points)}")
        (cx, cy), (px, py) = points
        radius = math.hypot(px - cx, py - cy)
        return "polygon", ellipse_polygon(cx, cy, radius, radius)
    if shape_type == "mask":
        return "mask", _mask_shape(shape, points, height, width)
    if shape_type in NO_AREA_SHAPES:
        raise ValueError(f"{shape_type!r} shapes have no area and cannot be instance masks")
    raise ValueError(
        f"unsupported shape_type {shape_type!r} (supported: polygon, rectangle, circle, mask)"
    )


def _instance_annotation(
    parts: list[tuple[str, Any]], height: int, width: int, category: int
) -> dict:
    polygons = [g for kind, g in parts if kind == "polygon"]
    masks = [g for kind, g in parts if kind == "mask"]
    if not masks:
        return polygon_annotation(polygons, category)
    from detectron2.structures import BoxMode

    union = np.logical_or.reduce(masks)
    if polygons:
        rle = mask_util.merge(mask_util.frPyObjects(polygons, height, width))
        union |= mask_util.decode(rle).astype(bool)
    rle = encode_binary_mask(union)
    return {
        "bbox": [float(v) for v in mask_util.toBbox(rle)],
        "bbox_mode": BoxMode.XYWH_ABS,
        "segmentation": rle,
        "category_id": category,
        "iscrowd": 0,
    }


def _read_doc(json_file: Path, log: ProblemLog) -> dict | None:
    try:
        doc = json.loads(json_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.error(json_file, f"not valid JSON ({exc})")
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        log.error(json_file, "not a LabelMe file (no 'shapes' list)")
        return None
    return doc


def load_labelme(
    folder: str | os.PathLike,
    *,
    outside_tolerance: float | None = OUTSIDE_TOLERANCE,
    embedded_image_dir: str | os.PathLike | None = None,
) -> LoadedSplit:
    """The LabelMe files under ``folder`` (module docstring), sorted by json path; ``image_id`` is
    a stable hash of the json's path relative to ``folder``. Raises DatasetError listing every
    problem (file, shape index and label)."""
    folder = Path(folder)
    out_dir = Path(embedded_image_dir) if embedded_image_dir else cache_dir() / "labelme_images"
    log = ProblemLog(folder)
    json_files = sorted(folder.rglob("*.json")) if folder.is_dir() else []
    if not folder.is_dir():
        log.error(folder, "folder not found")
    elif not json_files:
        log.error(folder, "no LabelMe .json files in this folder")
    log.raise_if_errors()

    images: list[tuple[Path, Path, int, int, list[tuple[str, list]]]] = []
    used: dict[Path, Path] = {}
    for json_file in json_files:
        doc = _read_doc(json_file, log)
        if doc is None:
            continue
        image = _image_file(json_file, doc, out_dir, log)
        if image is None:
            continue
        key = image.resolve()
        if key in used:
            log.error(json_file, f"image {image} is also annotated by {used[key]}")
            continue
        used[key] = json_file
        height, width = doc.get("imageHeight"), doc.get("imageWidth")
        if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
            try:
                height, width = image_size(image)
            except BadImageError as exc:
                log.error(image, str(exc).removeprefix(f"{image}: "))
                continue
        instances: dict[Any, tuple[str, list]] = {}
        for i, shape in enumerate(doc["shapes"]):
            label = shape.get("label") if isinstance(shape, dict) else None
            where = f"shape {i} ({label!r})"
            if not isinstance(label, str) or not label.strip():
                log.error(json_file, f"shape {i}: needs a non-empty 'label'")
                continue
            try:
                kind, geometry = _shape_geometry(shape, height, width)
            except ValueError as exc:
                log.error(json_file, f"{where}: {exc}")
                continue
            if kind == "polygon":
                (geometry,) = clip_polygons(
                    [geometry], height, width, outside_tolerance, log, json_file, where
                )
            group = shape.get("group_id")
            key = (label.strip(), group) if group is not None else (label.strip(), "shape", i)
            instances.setdefault(key, (label.strip(), []))[1].append((kind, geometry))
        images.append((json_file, image, height, width, list(instances.values())))

    classes = sorted({label for *_, instances in images for label, _ in instances})
    index = {name: i for i, name in enumerate(classes)}
    dicts = [
        {
            "file_name": str(image),
            "height": height,
            "width": width,
            "image_id": stable_image_id(json_file.relative_to(folder).as_posix()),
            "annotations": [
                _instance_annotation(parts, height, width, index[label])
                for label, parts in instances
            ],
        }
        for json_file, image, height, width, instances in images
    ]
    unused = [
        p.relative_to(folder).as_posix()
        for p in list_images(folder, recursive=True)
        if p.resolve() not in used
    ]
    if unused:
        log.note(
            folder,
            f"{len(unused)} image(s) have no LabelMe json and are not used: {sample(unused)}",
        )
    check_unique_image_ids(log, dicts, folder, "json paths")
    log.raise_if_errors()
    return LoadedSplit(
        dicts=dicts,
        classes=classes,
        dataset_ids=list(range(1, len(classes) + 1)),
        notes=log.notes,
        num_negative_images=sum(not d["annotations"] for d in dicts),
        source=str(folder),
        class_order="sorted",
    )
