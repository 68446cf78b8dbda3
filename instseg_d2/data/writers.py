"""Detectron2 dataset dicts written as LabelMe, YOLO-seg, VIA 2 or instance-mask folders.

Each writer takes the dicts of one split, whose ``category_id`` index ``classes``, and writes them
so that the format's reader (:mod:`instseg_d2.data.formats`) reads them back; it returns a
:class:`WrittenSplit`: the path to give that reader, what was written per class, and every lossy
step (what the format cannot hold, and what was done instead), so that nothing is lost silently.
COCO json is written by :mod:`instseg_d2.data.export` (one place for COCO);
:func:`instseg_d2.data.convert.write_dataset` writes every split of a dataset in any of the five
formats with its dataset file.

Images are symlinked (to the real file) or, with ``copy_images``, copied, under the name of the
source file; names whose stems clash within a split (``a.jpg`` twice, or ``a.jpg`` and ``a.png``)
get an ``_<crc32 of the source path>`` suffix, since LabelMe, YOLO and mask folders pair an image
with its annotation file by stem. Per-image files are written directly (``atomic_write``'s fsync
would cost ~10 ms per file); whole datasets are made complete-or-absent by ``write_dataset``.

(Longer than ~300 lines: four writers that share the image naming, the accounting of lossy steps
and the contract with :mod:`.formats`; apart, that contract would live in four places.)
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import shutil
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from ..utils.atomic import atomic_write
from .errors import DatasetError
from .formats.via import PIXEL_CENTER_SHIFT
from .mask_polygons import annotation_mask, annotation_polygon

__all__ = [
    "DatasetWriteError",
    "WrittenSplit",
    "write_labelme",
    "write_mask_folder",
    "write_ultralytics_yaml",
    "write_via",
    "write_yolo",
]

LABELME_VERSION = "5.4.1"  # the LabelMe release whose file layout is written (mask shapes: >= 5)
# Ultralytics writes normalised coordinates with 6 decimals (0.5e-6 x the side of rounding).
YOLO_DECIMALS = 6
ULTRALYTICS_YAML = "ultralytics.yaml"
VIA_JSON = "via_region_data.json"  # the name the VIA balloon data and matterport's code use
NO_CROWD = "crowd regions (iscrowd 1) dropped: the format cannot mark them"


class DatasetWriteError(DatasetError):
    """Dicts that cannot be written in a format (an image listed twice, an annotation without a
    mask, a class name that cannot be a folder name); the message names the image or class."""


@dataclass
class WrittenSplit:
    """What a writer wrote: ``path`` for the format's reader, the images, the instances per
    ``category_id``, the lossy steps (description -> instances) and, for each mask that became
    something else, its IoU with the original (``mask_ious``)."""

    path: Path
    images: int = 0
    instances: Counter = field(default_factory=Counter)
    lossy: Counter = field(default_factory=Counter)
    mask_ious: list[float] = field(default_factory=list)

    def instances_per_class(self, classes: Sequence[str]) -> dict[str, int]:
        return {name: self.instances[i] for i, name in enumerate(classes)}


def image_names(dicts: Sequence[dict]) -> list[str]:
    """The file name of each record's image in the written split (module docstring)."""
    paths = [os.path.abspath(r["file_name"]) for r in dicts]
    repeated = [p for p, n in Counter(paths).items() if n > 1]
    if repeated:
        raise DatasetWriteError(f"{repeated[0]}: listed twice in one split; merge its records")
    stems = Counter(Path(p).stem.lower() for p in paths)
    names = []
    for path in paths:
        name = Path(path)
        if stems[name.stem.lower()] > 1:
            name = name.with_name(f"{name.stem}_{zlib.crc32(path.encode()):08x}{name.suffix}")
        names.append(name.name)
    return names


def place_image(source: str, target: Path, copy_images: bool) -> Path:
    """Symlink (to the resolved source) or copy ``source`` to ``target``."""
    if not os.path.isfile(source):
        raise DatasetWriteError(f"{source}: image not found")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    if copy_images:
        shutil.copyfile(source, target)
    else:
        os.symlink(os.path.realpath(source), target)
    return target


def _annotations(record: dict, written: WrittenSplit) -> list[dict]:
    """The record's annotations to write: crowd regions are dropped (and counted) in formats
    that cannot mark them, as Ultralytics' COCO converter does; a missing mask is an error."""
    kept = []
    for k, ann in enumerate(record.get("annotations", [])):
        if not ann.get("segmentation"):
            raise DatasetWriteError(
                f"{record['file_name']}: annotation {k} has no segmentation; instance "
                "segmentation formats need a mask for every instance"
            )
        if ann.get("iscrowd", 0):
            written.lossy[NO_CROWD] += 1
            continue
        kept.append(ann)
    return kept


def _single_polygons(record: dict, written: WrittenSplit, quantise=None):
    """``(annotation, flat polygon)`` of each instance, for one-polygon formats; ``quantise``:
    what the format does to coordinates, for the IoU (see :func:`annotation_polygon`)."""
    h, w = record["height"], record["width"]
    for ann in _annotations(record, written):
        polygon, iou = annotation_polygon(ann, h, w, quantise)
        segm = ann["segmentation"]
        if polygon is None:
            written.lossy["empty masks dropped: no polygon encloses no pixel"] += 1
            continue
        if isinstance(segm, dict):
            written.lossy["masks (RLE) written as one polygon each (holes as bridged parts)"] += 1
            written.mask_ious.append(iou)
        elif len(segm) > 1:
            written.lossy["instances of several polygons joined by zero-width bridges"] += 1
            written.mask_ious.append(iou)
        yield ann, polygon


def write_labelme(
    dicts: Sequence[dict],
    classes: Sequence[str],
    folder: str | os.PathLike,
    copy_images: bool = False,
) -> WrittenSplit:
    """``folder/<stem>.json`` beside each image, ``imagePath`` relative to the json.

    Lossless: polygons are ``polygon`` shapes (the polygons of one instance share a
    ``group_id``), an RLE mask is a ``mask`` shape (LabelMe 5: a PNG of its box). LabelMe cannot
    mark crowd regions: those are dropped and counted. An empty RLE mask is dropped and counted.
    """
    folder = Path(folder)
    written = WrittenSplit(folder)
    for record, name in zip(dicts, image_names(dicts), strict=True):
        image = place_image(record["file_name"], folder / name, copy_images)
        h, w = record["height"], record["width"]
        shapes = []
        for k, ann in enumerate(_annotations(record, written)):
            label, segm = classes[ann["category_id"]], ann["segmentation"]
            if isinstance(segm, dict):
                mask = annotation_mask(ann, h, w)
                if not mask.any():
                    written.lossy["empty masks dropped: a LabelMe mask needs a pixel"] += 1
                    continue
                ys, xs = np.nonzero(mask)
                x1, y1, x2, y2 = (int(v) for v in (xs.min(), ys.min(), xs.max(), ys.max()))
                png = io.BytesIO()
                Image.fromarray(mask[y1 : y2 + 1, x1 : x2 + 1]).save(png, format="PNG")
                shapes.append(
                    {
                        "label": label,
                        "points": [[x1, y1], [x2, y2]],
                        "group_id": None,
                        "shape_type": "mask",
                        "flags": {},
                        "mask": base64.b64encode(png.getvalue()).decode(),
                    }
                )
            else:
                for polygon in segm:
                    points = np.asarray(polygon, dtype=float).reshape(-1, 2).tolist()
                    shapes.append(
                        {
                            "label": label,
                            "points": points,
                            "shape_type": "polygon",
                            "group_id": k if len(segm) > 1 else None,
                            "flags": {},
                        }
                    )
            written.instances[ann["category_id"]] += 1
        doc = {
            "version": LABELME_VERSION,
            "flags": {},
            "shapes": shapes,
            "imagePath": image.name,
            "imageData": None,
            "imageHeight": h,
            "imageWidth": w,
        }
        (folder / f"{image.stem}.json").write_text(json.dumps(doc), encoding="utf-8")
        written.images += 1
    return written


def _yolo_values(polygon: list[float], height: int, width: int) -> list[str]:
    """A polygon as YOLO writes it: normalised by the image side, 6 decimals."""
    sides = (width, height)
    return [f"{v / sides[i % 2]:.{YOLO_DECIMALS}f}" for i, v in enumerate(polygon)]


def _yolo_read_back(polygon: list[float], height: int, width: int) -> list[float]:
    """The polygon a reader gets back from :func:`_yolo_values`."""
    sides = (width, height)
    return [float(v) * sides[i % 2] for i, v in enumerate(_yolo_values(polygon, height, width))]


def write_yolo(
    dicts: Sequence[dict],
    classes: Sequence[str],
    root: str | os.PathLike,
    split: str = "train",
    copy_images: bool = False,
) -> WrittenSplit:
    """Ultralytics layout: ``root/images/<split>/`` and ``root/labels/<split>/<stem>.txt``, one
    line ``class x1 y1 x2 y2 ...`` per instance, normalised, 6 decimals (as Ultralytics writes);
    an image without instances gets an empty label file (a background image). ``path`` is the
    images folder; :func:`write_ultralytics_yaml` writes the class names.

    YOLO holds one polygon per instance: several polygons are joined into one by zero-width
    bridges, an RLE mask becomes one polygon of the same pixels (:mod:`.mask_polygons`; the IoU
    of each, after rounding, is recorded); crowd regions, empty masks and repeats of an
    identical instance are dropped (counted).
    """
    images = Path(root) / "images" / split
    labels = Path(root) / "labels" / split
    labels.mkdir(parents=True, exist_ok=True)
    written = WrittenSplit(images)
    for record, name in zip(dicts, image_names(dicts), strict=True):
        image = place_image(record["file_name"], images / name, copy_images)
        h, w = record["height"], record["width"]
        lines = []
        quantise = functools.partial(_yolo_read_back, height=h, width=w)
        for ann, polygon in _single_polygons(record, written, quantise):
            line = " ".join([str(ann["category_id"]), *_yolo_values(polygon, h, w)])
            if line in lines:  # Ultralytics (and our reader) drop repeated lines
                written.lossy["identical instances of one image written once"] += 1
                continue
            lines.append(line)
            written.instances[ann["category_id"]] += 1
        (labels / f"{image.stem}.txt").write_text("".join(f"{line}\n" for line in lines))
        written.images += 1
    return written


def write_ultralytics_yaml(
    root: str | os.PathLike,
    classes: Sequence[str],
    splits: Sequence[str],
    final_root: str | os.PathLike | None = None,
) -> Path:
    """``root/ultralytics.yaml`` for ``yolo segment train data=...``: the split folders and the
    names. ``path`` is absolute (``final_root``, where ``root`` will be moved, else ``root``)
    because Ultralytics resolves a relative one against its own datasets folder."""
    data = {
        "path": os.path.abspath(final_root if final_root is not None else root),
        **{split: f"images/{split}" for split in splits},
        "names": dict(enumerate(classes)),
    }
    path = Path(root) / ULTRALYTICS_YAML
    atomic_write(path, "# Ultralytics dataset YAML\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def _via_number(value: float) -> float | int:
    """VIA's points are integers when drawn in VIA; keep them integers when they are."""
    return int(value) if float(value).is_integer() else float(value)


def write_via(
    dicts: Sequence[dict],
    classes: Sequence[str],
    folder: str | os.PathLike,
    class_attribute: str | None = "name",
    copy_images: bool = False,
) -> WrittenSplit:
    """A VIA 2 json export (``folder/via_region_data.json``, as the balloon data) beside the
    images; each instance is a ``polygon`` region whose ``region_attributes[class_attribute]`` is
    its class (None: no attribute, for instances of one class). Points are VIA's pixel indices (the reader's
    +0.5 undone). ``path`` is the json.

    VIA regions are single polygons: as in :func:`write_yolo`, parts are joined, an RLE mask
    becomes one polygon of its pixels, crowd regions and empty masks are dropped (counted).
    """
    folder = Path(folder)
    used = {a["category_id"] for r in dicts for a in r.get("annotations", [])}
    if class_attribute is None and len(used) > 1:
        raise DatasetWriteError(
            f"{folder}: instances of {len(used)} classes need a class attribute to name them"
        )
    written = WrittenSplit(folder / VIA_JSON)
    data = {}
    for record, name in zip(dicts, image_names(dicts), strict=True):
        image = place_image(record["file_name"], folder / name, copy_images)
        regions = []
        for ann, polygon in _single_polygons(record, written):
            attributes = {class_attribute: classes[ann["category_id"]]} if class_attribute else {}
            xs = [_via_number(x - PIXEL_CENTER_SHIFT) for x in polygon[0::2]]
            ys = [_via_number(y - PIXEL_CENTER_SHIFT) for y in polygon[1::2]]
            regions.append(
                {
                    "shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
                    "region_attributes": attributes,
                }
            )
            written.instances[ann["category_id"]] += 1
        size = image.stat().st_size
        data[f"{name}{size}"] = {
            "filename": name,
            "size": size,
            "regions": regions,
            "file_attributes": {},
        }
        written.images += 1
    atomic_write(written.path, json.dumps(data))
    return written


def _folder_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name:
        raise DatasetWriteError(f"class {name!r} cannot be a folder name of a mask folder")
    return name


def write_mask_folder(
    dicts: Sequence[dict],
    classes: Sequence[str],
    folder: str | os.PathLike,
    layout: str = "per_class",
    copy_images: bool = False,
) -> WrittenSplit:
    """``folder/images/`` and PNG instance-id masks (pixel ``k``: the ``k``-th instance; 16 bit
    past 255 instances): ``masks/<class>/<stem>.png`` (layout ``per_class``) or
    ``masks/<stem>.png`` with ``folder/class_map.json`` ``{stem: {id: class}}`` (layout ``map``).

    An id mask holds pixels, one instance each: polygons are rasterised (pycocotools), a pixel
    claimed by two instances (of one class, or any with ``map``) keeps the later one, and an
    instance left without pixels is dropped; crowd regions are dropped. Each is counted, with
    the IoU of every changed mask. ``path`` is ``folder``.
    """
    if layout not in ("per_class", "map"):
        raise ValueError(f"write_mask_folder: layout must be 'per_class' or 'map', got {layout!r}")
    folder = Path(folder)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    written, class_map = WrittenSplit(folder), {}
    for record, name in zip(dicts, image_names(dicts), strict=True):
        image = place_image(record["file_name"], folder / "images" / name, copy_images)
        h, w = record["height"], record["width"]
        anns = _annotations(record, written)
        written.lossy["polygons rasterised to pixels"] += sum(
            isinstance(a["segmentation"], list) for a in anns
        )
        groups: dict[str, list[dict]] = {}
        for ann in anns:
            key = _folder_name(classes[ann["category_id"]]) if layout == "per_class" else ""
            groups.setdefault(key, []).append(ann)
        mapping: dict[str, str] = {}
        for key, group in groups.items():
            originals = [annotation_mask(a, h, w) for a in group]
            id_mask = np.zeros((h, w), np.uint16 if len(group) > 255 else np.uint8)
            for k, mask in enumerate(originals, 1):
                id_mask[mask] = k
            next_id = 1  # ids are renumbered 1..n over the instances that keep a pixel
            final = np.zeros_like(id_mask)
            for k, (ann, original) in enumerate(zip(group, originals, strict=True), 1):
                kept = id_mask == k
                if not kept.any():
                    written.lossy["instances without a pixel of their own dropped"] += 1
                    continue
                if kept.sum() != original.sum():
                    written.lossy["masks that lost pixels to a later overlapping instance"] += 1
                    written.mask_ious.append(float(kept.sum() / original.sum()))
                final[kept] = next_id
                mapping[str(next_id)] = classes[ann["category_id"]]
                written.instances[ann["category_id"]] += 1
                next_id += 1
            if next_id > 1:
                path = folder / "masks" / key / f"{image.stem}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(final).save(path)
        if layout == "map":
            class_map[image.stem] = mapping
        written.images += 1
    if layout == "map":
        atomic_write(folder / "class_map.json", json.dumps(class_map))
    written.lossy = +written.lossy  # drops the zero counts
    return written
