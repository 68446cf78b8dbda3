"""Data: image reading, dataset registration (on import), validation and export helpers.

``import instseg_d2.data`` registers pennfudan_* and balloon_* in Detectron2's DatasetCatalog.
"""

from . import datasets  # noqa: F401  (registers the builtin datasets)
from .errors import DatasetError
from .image_io import BadImageError, read_image

__all__ = ["BadImageError", "DatasetError", "read_image"]
