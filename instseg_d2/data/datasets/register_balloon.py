"""The balloon dataset (matterport Mask_RCNN) as Detectron2 datasets, from VIA polygons.

Coordinates: VIA stores integer pixel indices, and matterport rasterises them as pixel centres
(``skimage.draw.polygon``). Detectron2's continuous coordinates put pixel ``i`` on ``[i, i + 1)``,
so its centre is ``i + 0.5``; we add 0.5 to every VIA coordinate, as Detectron2's balloon
tutorial does. Points are then clipped to the image (``[0, width] x [0, height]``): 13 train
polygons touch the border with ``x == width`` or ``y == height``. Boxes are the polygon extents
in ``XYXY_ABS``. Images without regions stay in the dataset with no annotations.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..errors import DatasetError
from ..image_io import BadImageError, image_size
from ..via import ViaImage, load_via_file

logger = logging.getLogger(__name__)

BALLOON_DIR = "balloon"
VIA_FILE = "via_region_data.json"
BALLOON_METADATA = {
    "thing_classes": ["balloon"],
    "thing_colors": [(0, 122, 255)],
    "evaluator_type": "coco",
    # COCO category ids start at 1: exports and COCOEvaluator results call the class 1, while
    # the model's contiguous class index is 0.
    "thing_dataset_id_to_contiguous_id": {1: 0},
}
PIXEL_CENTER_SHIFT = 0.5
MINI_SIZES = {"train": 10, "val": 5}
_PREPARE_HINT = (
    "run `python datasets/prepare_balloon.py` or unpack balloon_dataset.zip there by hand "
    "(see datasets/README.md)"
)


def via_image_id(relative_path: str) -> int:
    """Stable 31-bit id from the image's path relative to the dataset folder."""
    return zlib.crc32(relative_path.encode("utf-8")) & 0x7FFFFFFF


def polygon_to_annotation(
    points: Sequence[tuple[float, float]], height: int, width: int, category_id: int = 0
) -> dict:
    """A Detectron2 polygon annotation from VIA points: shifted to pixel centres, clipped."""
    xy = [
        (
            min(max(x + PIXEL_CENTER_SHIFT, 0.0), float(width)),
            min(max(y + PIXEL_CENTER_SHIFT, 0.0), float(height)),
        )
        for x, y in points
    ]
    xs, ys = [p[0] for p in xy], [p[1] for p in xy]
    return {
        "bbox": [min(xs), min(ys), max(xs), max(ys)],
        "bbox_mode": BoxMode.XYXY_ABS,
        "segmentation": [[v for p in xy for v in p]],
        "category_id": category_id,
        "iscrowd": 0,
    }


def via_images_to_dicts(images: Sequence[ViaImage], image_dir: str | os.PathLike) -> list[dict]:
    """Dataset dicts, sorted by file name, for parsed VIA ``images`` stored in ``image_dir``.

    Raises DatasetError naming the file for a missing or unreadable image or a file listed twice.
    """
    image_dir = Path(image_dir)
    seen: set[str] = set()
    dicts = []
    for image in sorted(images, key=lambda im: im.filename):
        path = image_dir / image.filename
        if image.filename in seen:
            raise DatasetError(f"{path}: listed more than once in {image_dir / VIA_FILE}")
        seen.add(image.filename)
        if not path.is_file():
            raise DatasetError(f"{path}: image listed in {VIA_FILE} not found ({_PREPARE_HINT})")
        try:
            height, width = image_size(path)
        except BadImageError as exc:
            raise DatasetError(str(exc)) from None
        if image.size is not None and image.size != path.stat().st_size:
            logger.warning(
                "%s: %d bytes but VIA recorded %d; the annotations may be for another version",
                path,
                path.stat().st_size,
                image.size,
            )
        dicts.append(
            {
                "file_name": str(path),
                "height": height,
                "width": width,
                "image_id": via_image_id(f"{image_dir.name}/{image.filename}"),
                "annotations": [polygon_to_annotation(p, height, width) for p in image.polygons],
            }
        )
    ids = [d["image_id"] for d in dicts]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{image_dir}: two image file names hash to the same image_id")
    return dicts


def load_balloon_dicts(split_dir: str | os.PathLike) -> list[dict]:
    """Dataset dicts of one balloon folder (``<root>/balloon/train`` or ``val``)."""
    split_dir = Path(split_dir)
    json_file = split_dir / VIA_FILE
    if not json_file.is_file():
        raise DatasetError(f"{json_file}: balloon annotations not found; {_PREPARE_HINT}")
    return via_images_to_dicts(load_via_file(json_file), split_dir)


def register_balloon(root: str | os.PathLike) -> None:
    """Register ``balloon_train``, ``balloon_val`` and their ``_mini`` subsets (lazy loaders)."""
    dataset_dir = Path(root) / BALLOON_DIR
    for split in ("train", "val"):
        split_dir = dataset_dir / split
        subsets = {f"balloon_{split}": None, f"balloon_{split}_mini": MINI_SIZES[split]}
        for name, size in subsets.items():
            DatasetCatalog.register(name, lambda d=split_dir, n=size: load_balloon_dicts(d)[:n])
            MetadataCatalog.get(name).set(**BALLOON_METADATA, dataset_root=str(split_dir))
