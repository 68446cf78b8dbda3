"""Large-scale jitter (LSJ): Detectron2's ``ResizeScale`` + ``FixedSizeCrop``, as in its
new_baselines ``mask_rcnn_*_LSJ.py`` configs and the Simple Copy-Paste paper."""

from __future__ import annotations

from detectron2.config import CfgNode
from detectron2.data import transforms as T

from ...utils.errors import ConfigError

__all__ = ["build_lsj_augmentations", "lsj_size"]


def lsj_size(cfg: CfgNode) -> int:
    """The side of the square LSJ crop: ``INSTSEG.AUG.LSJ.SIZE``, or when 0 the largest
    ``INPUT.MIN_SIZE_TRAIN`` (the config's own training scale)."""
    size = int(cfg.INSTSEG.AUG.LSJ.SIZE) or max(cfg.INPUT.MIN_SIZE_TRAIN)
    if size <= 0:
        raise ConfigError(
            f"INSTSEG.AUG.LSJ.SIZE must be > 0 (or 0 for the largest INPUT.MIN_SIZE_TRAIN), "
            f"got {size}"
        )
    return size


def build_lsj_augmentations(cfg: CfgNode) -> list[T.Augmentation]:
    """``[ResizeScale, FixedSizeCrop]``: a random ``MIN_SCALE..MAX_SCALE`` of a SIZE x SIZE
    square, then a random SIZE x SIZE crop, padded at the right/bottom where the image is smaller.

    The padding of masks is 0 (background): Detectron2's default ``seg_pad_value`` of 255 is the
    "ignore" label of semantic segmentation, and it would turn the padded area of every instance
    bitmask (RLE annotations) into foreground.
    """
    lsj = cfg.INSTSEG.AUG.LSJ
    if not 0 < lsj.MIN_SCALE <= lsj.MAX_SCALE:
        raise ConfigError(
            f"INSTSEG.AUG.LSJ.MIN_SCALE/MAX_SCALE must satisfy 0 < MIN_SCALE <= MAX_SCALE, got "
            f"{lsj.MIN_SCALE}, {lsj.MAX_SCALE}"
        )
    if cfg.INPUT.CROP.ENABLED:
        raise ConfigError(
            "INPUT.CROP.ENABLED and INSTSEG.AUG.LSJ.ENABLED both crop the training images: "
            "turn one of them off"
        )
    size = lsj_size(cfg)
    return [
        T.ResizeScale(lsj.MIN_SCALE, lsj.MAX_SCALE, target_height=size, target_width=size),
        T.FixedSizeCrop(crop_size=(size, size), pad=True, seg_pad_value=0),
    ]
