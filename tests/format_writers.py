"""Test helpers: write Detectron2 dataset dicts as LabelMe, YOLO-seg, VIA and mask folders.

Used to convert the real Penn-Fudan and balloon data into each format (in tmp_path) and read it
back. Images are symlinked, not copied. What each format cannot hold is converted the way the
tools of that format do it: an RLE mask becomes a LabelMe ``mask`` shape (lossless), or for
YOLO and VIA its largest outer contour (OpenCV, points + 0.5 as Detectron2's GenericMask does).
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from instseg_d2.data.formats.via import PIXEL_CENTER_SHIFT


def rasterise(ann: dict, height: int, width: int) -> np.ndarray:
    """The boolean mask of an annotation (RLE or polygons), as pycocotools draws it."""
    segm = ann["segmentation"]
    if isinstance(segm, dict):
        return mask_util.decode(segm).astype(bool)
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(segm, height, width))).astype(
        bool
    )


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def polygons_of(ann: dict, height: int, width: int) -> list[list[float]]:
    """The annotation's polygons; an RLE becomes its largest outer contour."""
    if isinstance(ann["segmentation"], list):
        return ann["segmentation"]
    mask = rasterise(ann, height, width).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    largest = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(float) + 0.5
    return [largest.flatten().tolist()]


def _link(source: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.symlink(os.path.abspath(source), target)
    return target


def write_labelme(dicts: list[dict], classes: list[str], folder: Path) -> Path:
    """One LabelMe json per image, ``imagePath`` relative to the json; RLE as ``mask`` shapes."""
    folder.mkdir(parents=True, exist_ok=True)
    for record in dicts:
        h, w = record["height"], record["width"]
        shapes = []
        for k, ann in enumerate(record["annotations"]):
            label = classes[ann["category_id"]]
            segm = ann["segmentation"]
            if isinstance(segm, dict):
                mask = rasterise(ann, h, w)
                ys, xs = np.nonzero(mask)
                x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
                png = io.BytesIO()
                Image.fromarray(mask[y1 : y2 + 1, x1 : x2 + 1]).save(png, format="PNG")
                shapes.append(
                    {
                        "label": label,
                        "points": [[int(x1), int(y1)], [int(x2), int(y2)]],
                        "group_id": None,
                        "shape_type": "mask",
                        "mask": base64.b64encode(png.getvalue()).decode(),
                        "flags": {},
                    }
                )
                continue
            for polygon in segm:  # several polygons of one instance share a group_id
                shapes.append(
                    {
                        "label": label,
                        "points": [
                            [x, y] for x, y in zip(polygon[0::2], polygon[1::2], strict=True)
                        ],
                        "group_id": k if len(segm) > 1 else None,
                        "shape_type": "polygon",
                        "flags": {},
                    }
                )
        stem = Path(record["file_name"]).stem
        doc = {
            "version": "5.4.1",
            "flags": {},
            "shapes": shapes,
            "imagePath": os.path.relpath(record["file_name"], folder),
            "imageData": None,
            "imageHeight": h,
            "imageWidth": w,
        }
        (folder / f"{stem}.json").write_text(json.dumps(doc))
    return folder


def write_yolo(dicts: list[dict], classes: list[str], root: Path, split: str = "train") -> Path:
    """``root/images/<split>`` (symlinks) and ``root/labels/<split>/*.txt`` (6 decimals, as
    Ultralytics writes); returns the images folder."""
    images = root / "images" / split
    labels = root / "labels" / split
    labels.mkdir(parents=True, exist_ok=True)
    for record in dicts:
        h, w = record["height"], record["width"]
        source = Path(record["file_name"])
        _link(record["file_name"], images / source.name)
        lines = []
        for ann in record["annotations"]:
            for polygon in polygons_of(ann, h, w)[:1]:
                xy = [v / (w if i % 2 == 0 else h) for i, v in enumerate(polygon)]
                lines.append(" ".join([str(ann["category_id"]), *(f"{v:.6f}" for v in xy)]))
        (labels / f"{source.stem}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(
        json.dumps(
            {"path": str(root), "train": f"images/{split}", "names": dict(enumerate(classes))}
        )
    )
    return images


def write_via(
    dicts: list[dict], classes: list[str], folder: Path, class_attribute: str | None = "name"
) -> Path:
    """A VIA 2 export json in ``folder`` beside symlinks to the images; points are VIA's pixel
    indices (the reader's +0.5 undone)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for record in dicts:
        h, w = record["height"], record["width"]
        name = Path(record["file_name"]).name
        _link(record["file_name"], folder / name)
        regions = []
        for ann in record["annotations"]:
            for polygon in polygons_of(ann, h, w)[:1]:
                attributes = (
                    {class_attribute: classes[ann["category_id"]]} if class_attribute else {}
                )
                regions.append(
                    {
                        "shape_attributes": {
                            "name": "polygon",
                            "all_points_x": [x - PIXEL_CENTER_SHIFT for x in polygon[0::2]],
                            "all_points_y": [y - PIXEL_CENTER_SHIFT for y in polygon[1::2]],
                        },
                        "region_attributes": attributes,
                    }
                )
        data[f"{name}{os.path.getsize(record['file_name'])}"] = {
            "filename": name,
            "size": os.path.getsize(record["file_name"]),
            "regions": regions,
            "file_attributes": {},
        }
    json_file = folder / "via_region_data.json"
    json_file.write_text(json.dumps(data))
    return json_file


def write_mask_folder(
    dicts: list[dict], classes: list[str], folder: Path, layout: str = "map"
) -> Path:
    """``folder/images`` (symlinks) and instance-id PNGs: ``masks/<stem>.png`` with a
    ``class_map.json`` (layout "map") or ``masks/<class>/<stem>.png`` (layout "per_class").
    A later instance overwrites an earlier one where they overlap, as in any id mask."""
    for record in dicts:
        h, w = record["height"], record["width"]
        source = Path(record["file_name"])
        _link(record["file_name"], folder / "images" / source.name)
        id_masks: dict[str, np.ndarray] = {}
        mapping: dict[int, str] = {}
        for ann in record["annotations"]:
            label = classes[ann["category_id"]]
            key = label if layout == "per_class" else ""
            id_mask = id_masks.setdefault(key, np.zeros((h, w), np.uint8))
            instance = int(id_mask.max()) + 1 if layout == "per_class" else len(mapping) + 1
            id_mask[rasterise(ann, h, w)] = instance
            mapping[instance] = label
        for key, id_mask in id_masks.items():
            path = folder / "masks" / key / f"{source.stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(id_mask).save(path)
        if layout == "map":
            (folder / "masks").mkdir(parents=True, exist_ok=True)
            class_map = folder / "class_map.json"
            data = json.loads(class_map.read_text()) if class_map.is_file() else {}
            data[source.stem] = {str(k): v for k, v in mapping.items()}
            class_map.write_text(json.dumps(data))
    return folder
