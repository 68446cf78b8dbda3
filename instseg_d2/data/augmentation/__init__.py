"""Training augmentations beyond Detectron2's resize and flip, one module each, selected in the
config under ``INSTSEG.AUG`` and ``INSTSEG.COPY_PASTE``:

* :mod:`.lsj`: large-scale jitter (Detectron2's ``ResizeScale`` + ``FixedSizeCrop``);
* :mod:`.photometric`: brightness, contrast, saturation and lighting jitter;
* :mod:`.copy_paste`: Simple Copy-Paste, applied by the dataset mapper before the others.

Every random draw goes through NumPy's global RNG, as in Detectron2's own augmentations, so a
run is reproducible under ``SEED``.
"""

from __future__ import annotations

from detectron2.config import CfgNode
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .copy_paste import CopyPaste
from .lsj import build_lsj_augmentations
from .photometric import build_photometric_augmentations

__all__ = ["CopyPaste", "build_train_augmentations", "crops_training_images"]


def crops_training_images(cfg: CfgNode) -> bool:
    """Whether training augmentation cuts objects (LSJ or Detectron2's ``INPUT.CROP``), so that
    their boxes must be recomputed from what is left of their masks."""
    return bool(cfg.INSTSEG.AUG.LSJ.ENABLED or cfg.INPUT.CROP.ENABLED)


def build_train_augmentations(cfg: CfgNode) -> list[T.Augmentation]:
    """The training augmentations of ``cfg``, in order: geometric, then photometric.

    Geometric: LSJ (``INSTSEG.AUG.LSJ``) or Detectron2's default (``ResizeShortestEdge`` of
    ``INPUT.MIN_SIZE_TRAIN``, after ``INPUT.CROP`` when enabled), then the flip of
    ``INPUT.RANDOM_FLIP``. Photometric jitter (``INSTSEG.AUG.PHOTOMETRIC``) comes last.
    """
    default = utils.build_augmentation(cfg, is_train=True)
    if cfg.INSTSEG.AUG.LSJ.ENABLED:
        flips = [aug for aug in default if isinstance(aug, T.RandomFlip)]
        augmentations = build_lsj_augmentations(cfg) + flips
    else:
        augmentations = default
        if cfg.INPUT.CROP.ENABLED:  # as Detectron2's DatasetMapper.from_config
            augmentations.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    if cfg.INSTSEG.AUG.PHOTOMETRIC.ENABLED:
        augmentations += build_photometric_augmentations(cfg)
    return augmentations
