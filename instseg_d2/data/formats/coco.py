"""COCO instances json: :func:`load_coco`.

What it does that Detectron2's ``load_coco_json`` does not: every problem is an error that names
the json file and the annotation id, instead of an ``assert``, a ``KeyError`` or a warning after
silently dropping an instance (``load_coco_json`` drops polygons with fewer than 3 points and
annotations of unknown images). Like it, it opens no image when the json records the sizes, so a
json of 20,000 images registers in well under a second (``benchmarks/data_scale.py``).

* ``categories`` give the classes, ordered by id; ids may be non-contiguous (``dataset_ids``
  keeps them); a category without an instance stays a class (validation warns about it).
* ``images``: ``file_name`` may have sub-folders and is joined onto ``image_root``; duplicated
  ids or file names are errors; images without annotations are kept as negatives and counted;
  a missing ``height``/``width`` is read from the image header (and noted).
* ``annotations``: ``bbox`` is COCO's ``XYWH``; ``segmentation`` is polygons, uncompressed RLE
  (``counts`` a list, turned into compressed RLE as Detectron2 does) or compressed RLE
  (``counts`` a string). ``iscrowd`` is kept; ``ignore: 1`` (an older convention) becomes
  ``iscrowd: 1``, noted. Polygon points and boxes slightly outside the image are clipped
  (see :mod:`.common`). An annotation without a mask is an error: Mask R-CNN needs one.

(About 300 lines: one check per thing a COCO json can get wrong, each with its own message.)
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pycocotools.mask as mask_util
from detectron2.structures import BoxMode

from ..errors import DatasetError
from ..image_io import BadImageError, image_size
from .common import (
    OUTSIDE_TOLERANCE,
    LoadedSplit,
    ProblemLog,
    clip_polygons,
    clip_xy,
    finite_numbers,
    sample,
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_json(json_file: Path) -> dict:
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{json_file}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{json_file}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{json_file}: expected a COCO json object, got {type(data).__name__}")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{json_file}: no '{key}' list; is this a COCO instances json?")
    if not isinstance(data.get("annotations", []), list):
        raise DatasetError(f"{json_file}: 'annotations' must be a list")
    return data


def _categories(data: dict, json_file: Path, log: ProblemLog) -> dict[int, str]:
    names: dict[int, str] = {}
    for i, category in enumerate(data["categories"]):
        cid = category.get("id") if isinstance(category, dict) else None
        name = category.get("name") if isinstance(category, dict) else None
        if not _is_int(cid) or not isinstance(name, str) or not name:
            log.error(
                json_file, f"categories[{i}]: needs an integer 'id' and a 'name', got {category!r}"
            )
        elif cid in names:
            log.error(json_file, f"category id {cid} is used twice ({names[cid]!r} and {name!r})")
        else:
            names[cid] = name
    duplicated = [n for n, count in Counter(names.values()).items() if count > 1]
    for name in duplicated:
        ids = [cid for cid, n in names.items() if n == name]
        log.error(json_file, f"category name {name!r} is used by ids {ids}; one class, one id")
    if not data["categories"]:
        log.error(json_file, "'categories' is empty; a dataset needs at least one class")
    return names


def _images(data: dict, json_file: Path, image_root: Path, log: ProblemLog) -> dict[int, dict]:
    records: dict[int, dict] = {}
    seen_files: dict[str, int] = {}
    missing_size = []
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict):
            log.error(json_file, f"images[{i}]: must be an object, got {image!r}")
            continue
        image_id, file_name = image.get("id"), image.get("file_name")
        if not _is_int(image_id) or not isinstance(file_name, str) or not file_name:
            log.error(json_file, f"images[{i}]: needs an integer 'id' and a 'file_name'")
            continue
        if image_id in records:
            log.error(
                json_file,
                f"image id {image_id} is used twice ({records[image_id]['coco_file_name']!r} "
                f"and {file_name!r})",
            )
            continue
        if file_name in seen_files:
            log.error(
                json_file,
                f"file_name {file_name!r} is listed twice "
                f"(ids {seen_files[file_name]} and {image_id})",
            )
            continue
        seen_files[file_name] = image_id
        path = image_root / file_name
        height, width = image.get("height"), image.get("width")
        if height is None or width is None:
            try:
                height, width = image_size(path)
            except BadImageError as exc:
                reason = str(exc).removeprefix(f"{path}: ")
                log.error(path, f"no height/width in {json_file.name}, and the image: {reason}")
                continue
            missing_size.append(file_name)
        elif not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
            log.error(json_file, f"image id {image_id}: height and width must be positive integers")
            continue
        records[image_id] = {
            "file_name": str(path),
            "height": height,
            "width": width,
            "image_id": image_id,
            "annotations": [],
            "coco_file_name": file_name,  # for messages; removed before returning
        }
    if missing_size:
        log.note(json_file, f"height/width read from the image for {sample(missing_size)}")
    return records


def _segmentation(
    segm: Any, record: dict, tolerance: float | None, log: ProblemLog, json_file: Path, where: str
) -> Any:
    """Detectron2's form of one COCO segmentation, or None after logging why it is unusable."""
    height, width = record["height"], record["width"]
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and list(size) == [height, width]):
            log.error(
                json_file,
                f"{where}: RLE size {size} differs from the image's [height, width] "
                f"[{height}, {width}]",
            )
            return None
        if isinstance(counts, list):  # uncompressed RLE, as COCO writes for iscrowd
            if not all(_is_int(c) and c >= 0 for c in counts) or sum(counts) != height * width:
                log.error(
                    json_file,
                    f"{where}: uncompressed RLE counts must be non-negative integers summing "
                    f"to {height}x{width}",
                )
                return None
            rle = mask_util.frPyObjects(segm, height, width)
            rle["counts"] = rle["counts"].decode("ascii")
            return rle
        if isinstance(counts, str | bytes) and counts:
            return {
                "size": [height, width],
                "counts": counts if isinstance(counts, str) else counts.decode("ascii"),
            }
        log.error(json_file, f"{where}: RLE 'counts' must be a list or a string")
        return None
    if not isinstance(segm, list) or not segm:
        log.error(json_file, f"{where}: no segmentation (Mask R-CNN needs a mask per instance)")
        return None
    polygons = []
    for j, polygon in enumerate(segm):
        if not finite_numbers(polygon):
            log.error(
                json_file,
                f"{where}: polygon {j} must be a list of finite numbers "
                "(COCO nests each polygon in a list)",
            )
        elif len(polygon) % 2 or len(polygon) < 6:
            log.error(
                json_file,
                f"{where}: polygon {j} has {len(polygon)} numbers; "
                "a polygon needs at least 3 (x, y) points",
            )
        else:
            polygons.append(polygon)
    if len(polygons) != len(segm):
        return None
    return clip_polygons(polygons, height, width, tolerance, log, json_file, where)


def _bbox(
    ann: dict,
    segm: Any,
    record: dict,
    tolerance: float | None,
    log: ProblemLog,
    json_file: Path,
    where: str,
) -> list[float] | None:
    bbox = ann.get("bbox")
    if bbox is None:  # some exporters leave it out; it is the mask's extent
        if isinstance(segm, dict):
            return [float(v) for v in mask_util.toBbox(segm)]
        xs = [x for polygon in segm for x in polygon[0::2]]
        ys = [y for polygon in segm for y in polygon[1::2]]
        return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    if not finite_numbers(bbox) or len(bbox) != 4 or bbox[2] < 0 or bbox[3] < 0:
        log.error(
            json_file,
            f"{where}: bbox must be [x, y, width, height] with width, height >= 0, got {bbox!r}",
        )
        return None
    x0, y0, w, h = bbox
    corners, count, worst, within = clip_xy(
        [x0, y0, x0 + w, y0 + h], record["height"], record["width"], tolerance
    )
    if not within:
        log.error(
            json_file,
            f"{where}: bbox {bbox} lies up to {worst:.1f} px outside the "
            f"{record['width']}x{record['height']} image",
        )
        return None
    if count:
        log.note(
            json_file,
            f"{where}: bbox {bbox} clipped onto the {record['width']}x{record['height']} image",
        )
        return [corners[0], corners[1], corners[2] - corners[0], corners[3] - corners[1]]
    return [float(v) for v in bbox]


def load_coco(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    *,
    outside_tolerance: float | None = OUTSIDE_TOLERANCE,
) -> LoadedSplit:
    """The images of a COCO instances json, with files under ``image_root`` (default: the json's
    folder), sorted by image id. Raises DatasetError listing every problem (module docstring)."""
    json_file = Path(json_file)
    image_root = json_file.parent if image_root is None else Path(image_root)
    data = _read_json(json_file)
    log = ProblemLog(json_file)
    names = _categories(data, json_file, log)
    dataset_ids = sorted(names)
    index = {cid: i for i, cid in enumerate(dataset_ids)}
    records = _images(data, json_file, image_root, log)
    seen_ids: set[int] = set()
    for i, ann in enumerate(data.get("annotations", [])):
        if not isinstance(ann, dict):
            log.error(json_file, f"annotations[{i}]: must be an object, got {ann!r}")
            continue
        ann_id = ann.get("id")
        where = f"annotation id {ann_id}" if _is_int(ann_id) else f"annotations[{i}]"
        if not _is_int(ann_id):
            log.error(json_file, f"{where}: needs an integer 'id'")
        elif ann_id in seen_ids:
            log.error(json_file, f"{where}: the id is used twice")
        seen_ids.add(ann_id)
        record = records.get(ann.get("image_id"))
        if record is None:
            log.error(json_file, f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
            continue
        where += f" (image {record['coco_file_name']})"
        category = ann.get("category_id")
        if not _is_int(category) or category not in index:
            log.error(
                json_file,
                f"{where}: category_id {category!r} is not in 'categories' (ids {dataset_ids})",
            )
            continue
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1):
            log.error(json_file, f"{where}: iscrowd must be 0 or 1, got {iscrowd!r}")
            continue
        if ann.get("ignore", 0):
            log.note(
                json_file,
                f"{where}: 'ignore: 1' read as iscrowd 1 "
                "(left out of training, not counted by COCO evaluation)",
            )
            iscrowd = 1
        segm = _segmentation(
            ann.get("segmentation"), record, outside_tolerance, log, json_file, where
        )
        if segm is None:
            continue
        bbox = _bbox(ann, segm, record, outside_tolerance, log, json_file, where)
        if bbox is None:
            continue
        record["annotations"].append(
            {
                "iscrowd": int(iscrowd),
                "bbox": bbox,
                "category_id": index[category],
                "segmentation": segm,
                "bbox_mode": BoxMode.XYWH_ABS,
            }
        )
    log.raise_if_errors()
    dicts = [records[image_id] for image_id in sorted(records)]
    for record in dicts:
        del record["coco_file_name"]
    return LoadedSplit(
        dicts=dicts,
        classes=[names[cid] for cid in dataset_ids],
        dataset_ids=dataset_ids,
        notes=log.notes,
        num_negative_images=sum(not d["annotations"] for d in dicts),
        source=str(json_file),
        class_order="declared",
        has_source_ids=True,
    )
