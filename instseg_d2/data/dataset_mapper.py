"""The dataset mapper: one way to read and prepare an image for training, validation loss,
evaluation and inference.

Detectron2's ``DatasetMapper`` reads with ``detection_utils.read_image``, which clips 16-bit PNGs
at 255 (an almost white image) while this project's validation and inference read them scaled
(:mod:`instseg_d2.data.image_io`). :class:`InstSegDatasetMapper` is Detectron2's mapper with the
project's reader, so the model is trained on the pixels it is tested on. It is chosen by
``INPUT.DATASET_MAPPER_NAME`` (as in Mask2Former) from ``MAPPER_REGISTRY``;
:func:`build_dataset_mapper` is what the Trainer's loaders use.

For training it also applies the augmentations of :mod:`instseg_d2.data.augmentation` that the
config selects (LSJ, photometric jitter, copy-paste from a pool of training dicts).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import DatasetMapper, get_detection_dataset_dicts
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils.registry import Registry

from .augmentation import CopyPaste, build_train_augmentations, crops_training_images
from .image_io import read_image

__all__ = ["MAPPER_REGISTRY", "InstSegDatasetMapper", "build_dataset_mapper"]

logger = logging.getLogger(__name__)

MAPPER_REGISTRY = Registry("INSTSEG_DATASET_MAPPER")
MAPPER_REGISTRY.__doc__ = """Dataset mappers, selected by ``cfg.INPUT.DATASET_MAPPER_NAME``.

A mapper is built as ``Mapper(cfg, is_train)`` or ``Mapper(cfg, is_train, augmentations=[...])``
(Detectron2's ``@configurable`` convention) and maps one dataset dict to the model's input.
"""


@MAPPER_REGISTRY.register()
class InstSegDatasetMapper(DatasetMapper):
    """Detectron2's ``DatasetMapper`` that reads images with :func:`~.image_io.read_image`.

    Same steps as Detectron2's (read, check the recorded size, augment, annotations to
    ``Instances``); the reader scales 16-bit images instead of clipping them, drops alpha, applies
    the EXIF orientation, and names the file when it is missing, empty or corrupt.

    In training, the augmentations are those of
    :func:`~instseg_d2.data.augmentation.build_train_augmentations`, and ``copy_paste`` (a
    :class:`~instseg_d2.data.augmentation.CopyPaste`, from ``INSTSEG.COPY_PASTE`` and the pool
    of training dicts given as ``paste_pool``) pastes objects onto the image before them.
    """

    @configurable
    def __init__(self, is_train: bool, *, copy_paste: CopyPaste | None = None, **kwargs):
        super().__init__(is_train, **kwargs)
        self.copy_paste = copy_paste if is_train else None

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True, paste_pool=None) -> dict:
        """Detectron2's arguments, with the training augmentations and copy-paste of ``cfg``.

        ``paste_pool``: the dataset dicts copy-paste draws from (the Trainer passes those of its
        training loader); by default those of ``DATASETS.TRAIN``.
        """
        ret = super().from_config(cfg, is_train)
        if not is_train:
            return ret
        ret["augmentations"] = build_train_augmentations(cfg)
        if cfg.INSTSEG.COPY_PASTE.ENABLED:
            if paste_pool is None:
                paste_pool = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=True)
            ret["copy_paste"] = CopyPaste.from_config(cfg, paste_pool)
            # Occluded masks are bitmaps; polygons cannot lose a pasted object's pixels.
            ret["instance_mask_format"] = "bitmask"
        # Cropped or covered objects: their boxes must follow what is left of their masks.
        if cfg.MODEL.MASK_ON and (crops_training_images(cfg) or cfg.INSTSEG.COPY_PASTE.ENABLED):
            ret["recompute_boxes"] = True
        return ret

    def load_image(self, dataset_dict: dict) -> np.ndarray:
        """The image of ``dataset_dict`` as HxWxC uint8 in ``INPUT.FORMAT``, before augmentation."""
        image = read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        return image

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)  # modified below
        image = self.load_image(dataset_dict)
        if self.copy_paste is not None and "annotations" in dataset_dict:
            image, dataset_dict["annotations"], _ = self.copy_paste(
                image, dataset_dict["annotations"], self.load_image, dataset_dict["file_name"]
            )
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]
        # Tensors cross the data-loader worker boundary through shared memory; numpy arrays would
        # be pickled.
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict


def build_dataset_mapper(
    cfg: CfgNode,
    is_train: bool,
    augmentations: Sequence[T.Augmentation] | None = None,
    *,
    paste_pool: Sequence[dict] | None = None,
) -> DatasetMapper:
    """The mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME``.

    ``augmentations`` replaces the config's, copy-paste included (e.g. the validation-loss loader
    keeps the annotations of ``is_train=True`` but resizes as at test time). ``paste_pool``: the
    training dicts that copy-paste draws from, when ``INSTSEG.COPY_PASTE.ENABLED``.
    """
    mapper_class = MAPPER_REGISTRY.get(cfg.INPUT.DATASET_MAPPER_NAME)
    kwargs = {}
    if augmentations is not None:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.INSTSEG.AUG.LSJ.ENABLED = False
        cfg.INSTSEG.AUG.PHOTOMETRIC.ENABLED = False
        cfg.INSTSEG.COPY_PASTE.ENABLED = False
        kwargs["augmentations"] = list(augmentations)
    elif paste_pool is not None and is_train and cfg.INSTSEG.COPY_PASTE.ENABLED:
        kwargs["paste_pool"] = paste_pool
    return mapper_class(cfg, is_train, **kwargs)
