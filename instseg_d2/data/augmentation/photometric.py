"""Photometric jitter: Detectron2's ``RandomBrightness``, ``RandomContrast``,
``RandomSaturation`` and ``RandomLighting``, in the channel order of ``INPUT.FORMAT``."""

from __future__ import annotations

import numpy as np
from detectron2.config import CfgNode
from detectron2.data import transforms as T

from ...utils.errors import ConfigError

__all__ = ["InRGBOrder", "build_photometric_augmentations"]


class InRGBOrder(T.Augmentation):
    """Runs an augmentation written for RGB images on a BGR image.

    Detectron2's ``RandomSaturation`` (grey = 0.299 R + 0.587 G + 0.114 B) and ``RandomLighting``
    (AlexNet's RGB principal components) assume RGB; Detectron2's default ``INPUT.FORMAT`` is
    BGR. The transform it returns flips the channels, applies the RGB transform and flips back,
    so that each colour gets the weight meant for it.
    """

    def __init__(self, augmentation: T.Augmentation):
        super().__init__()
        self.augmentation = augmentation

    def get_transform(self, image: np.ndarray) -> T.Transform:
        rgb_transform = self.augmentation.get_transform(image[:, :, ::-1])
        return T.ColorTransform(lambda img: rgb_transform.apply_image(img[:, :, ::-1])[:, :, ::-1])


def _intensity_range(cfg_node: CfgNode, key: str) -> tuple[float, float]:
    value = tuple(getattr(cfg_node, key))
    if len(value) != 2 or not 0 <= value[0] <= value[1]:
        raise ConfigError(
            f"INSTSEG.AUG.PHOTOMETRIC.{key} must be (min, max) with 0 <= min <= max, got {value}"
        )
    return float(value[0]), float(value[1])


def build_photometric_augmentations(cfg: CfgNode) -> list[T.Augmentation]:
    """Brightness, contrast, saturation and lighting jitter from ``INSTSEG.AUG.PHOTOMETRIC``.

    ``LIGHTING`` is AlexNet's standard deviation for images scaled to [0, 1]; Detectron2's
    ``RandomLighting`` adds its offset to 0..255 pixel values unscaled, so it is given 255 times
    the value (with 0.1 unscaled the offsets would be a fraction of one grey level).
    """
    photometric = cfg.INSTSEG.AUG.PHOTOMETRIC
    fmt = cfg.INPUT.FORMAT
    if fmt not in ("BGR", "RGB"):
        raise ConfigError(f"INSTSEG.AUG.PHOTOMETRIC needs INPUT.FORMAT BGR or RGB, got {fmt!r}")
    in_rgb = (lambda aug: aug) if fmt == "RGB" else InRGBOrder
    augmentations: list[T.Augmentation] = [
        T.RandomBrightness(*_intensity_range(photometric, "BRIGHTNESS")),
        T.RandomContrast(*_intensity_range(photometric, "CONTRAST")),
        in_rgb(T.RandomSaturation(*_intensity_range(photometric, "SATURATION"))),
    ]
    if photometric.LIGHTING < 0:
        raise ConfigError(
            f"INSTSEG.AUG.PHOTOMETRIC.LIGHTING must be >= 0, got {photometric.LIGHTING}"
        )
    if photometric.LIGHTING > 0:
        augmentations.append(in_rgb(T.RandomLighting(photometric.LIGHTING * 255.0)))
    return augmentations
