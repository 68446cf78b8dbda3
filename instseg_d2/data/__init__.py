"""Data: image reading, dataset registration (on import), validation and export helpers.

Users' own data: readers of COCO, LabelMe, YOLO-seg, VIA and mask folders in ``formats/``, the
dataset file that describes a dataset in ``dataset_file.py``, seeded stratified splits in
``splits.py``, checks in ``validation.py`` / ``dataset_validation.py``, COCO export in
``export.py``, writers of the other formats in ``writers.py`` (one polygon per mask:
``mask_polygons.py``) and whole-dataset conversion in ``convert.py``.

``import instseg_d2.data`` registers pennfudan_* and balloon_* in Detectron2's DatasetCatalog.
"""

from . import datasets  # noqa: F401  (registers the builtin datasets)
from .errors import DatasetError
from .image_io import BadImageError, read_image

__all__ = ["BadImageError", "DatasetError", "read_image"]
