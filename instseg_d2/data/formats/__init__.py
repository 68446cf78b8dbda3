"""Readers of users' annotation formats; each returns a :class:`LoadedSplit`.

One module per format: ``coco``, ``labelme``, ``yolo``, ``via``, ``mask_folder``; ``common``
holds what they share (the LoadedSplit, problem collection, clipping, class remapping).
"""

from .common import LoadedSplit, remap_classes
from .via import ViaFormatError, load_via

__all__ = ["LoadedSplit", "ViaFormatError", "load_via", "remap_classes"]
