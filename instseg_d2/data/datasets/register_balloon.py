"""The balloon dataset (matterport Mask_RCNN) as Detectron2 datasets, read by the VIA reader.

Coordinates: VIA stores integer pixel indices, and matterport rasterises them as pixel centres
(``skimage.draw.polygon``). Detectron2's continuous coordinates put pixel ``i`` on ``[i, i + 1)``,
so its centre is ``i + 0.5``; the VIA reader adds 0.5 to every VIA coordinate, as Detectron2's
balloon tutorial does. Points are then clipped to the image (``[0, width] x [0, height]``): 13
train polygons touch the border with ``x == width`` or ``y == height``. Balloon clips at any
distance (``outside_tolerance=None``), as matterport's reader did, so that the registered dicts
stay what they have always been. Boxes are the polygon extents in ``XYXY_ABS``. Images without
regions stay in the dataset with no annotations.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..errors import DatasetError
from ..formats.via import load_via

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
MINI_SIZES = {"train": 10, "val": 5}
_PREPARE_HINT = (
    "run `python datasets/prepare_balloon.py` or unpack balloon_dataset.zip there by hand "
    "(see datasets/README.md)"
)


def load_balloon_dicts(split_dir: str | os.PathLike) -> list[dict]:
    """Dataset dicts of one balloon folder (``<root>/balloon/train`` or ``val``).

    Raises DatasetError naming the file for a missing json, a missing or unreadable image, or a
    file listed twice; notes of the reader (e.g. a VIA byte size that differs) are logged.
    """
    split_dir = Path(split_dir)
    json_file = split_dir / VIA_FILE
    if not json_file.is_file():
        raise DatasetError(f"{json_file}: balloon annotations not found; {_PREPARE_HINT}")
    loaded = load_via(json_file, split_dir, class_name="balloon", outside_tolerance=None)
    for note in loaded.notes:
        if "clipped onto it" not in note.message:  # clipping is part of this dataset's recipe
            logger.warning("%s: %s", note.file, note.message)
    return loaded.dicts


def register_balloon(root: str | os.PathLike) -> None:
    """Register ``balloon_train``, ``balloon_val`` and their ``_mini`` subsets (lazy loaders)."""
    dataset_dir = Path(root) / BALLOON_DIR
    for split in ("train", "val"):
        split_dir = dataset_dir / split
        subsets = {f"balloon_{split}": None, f"balloon_{split}_mini": MINI_SIZES[split]}
        for name, size in subsets.items():
            DatasetCatalog.register(name, lambda d=split_dir, n=size: load_balloon_dicts(d)[:n])
            MetadataCatalog.get(name).set(**BALLOON_METADATA, dataset_root=str(split_dir))
