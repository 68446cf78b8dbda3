"""Readers of users' annotation formats; each returns a :class:`LoadedSplit`.

One module per format: ``coco``, ``labelme``, ``yolo``, ``via``, ``mask_folder``; ``common``
holds what they share (the LoadedSplit, problem collection, clipping, class remapping).
"""

from .coco import load_coco
from .common import LoadedSplit, remap_classes
from .labelme import load_labelme
from .mask_folder import load_mask_folder
from .via import ViaFormatError, load_via
from .yolo import load_yolo, read_yolo_class_names, yolo_label_path

__all__ = [
    "LoadedSplit",
    "ViaFormatError",
    "load_coco",
    "load_labelme",
    "load_mask_folder",
    "load_via",
    "load_yolo",
    "read_yolo_class_names",
    "remap_classes",
    "yolo_label_path",
]
