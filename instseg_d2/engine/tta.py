"""Test-time augmentation (TTA): Detectron2's ``GeneralizedRCNNWithTTA`` in evaluation and
inference.

Each image is run at every ``TEST.AUG.MIN_SIZES`` (short side, long side at most
``TEST.AUG.MAX_SIZE``), and mirrored as well when ``TEST.AUG.FLIP``; the boxes of all passes are
merged by NMS, then the mask head runs on the merged boxes in every pass and the mask
probabilities are averaged. Images enter at their original size, so each pass resizes once (the
evaluation loader of :func:`tta_test_loader` does not resize them first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader
from detectron2.modeling import GeneralizedRCNNWithTTA
from detectron2.structures import ROIMasks
from torch import nn

from ..data.dataset_mapper import build_dataset_mapper
from ..modeling.meta_arch import mask_threshold_of
from ..modeling.precision import autocast_context
from ..utils.errors import ConfigError
from .final_metrics import per_dataset
from .predictor import BatchPredictor

__all__ = [
    "RCNNWithTTA",
    "TTAPredictor",
    "build_tta_model",
    "tta_test_loader",
    "with_tta_results",
]

TTA_SUFFIX = "_TTA"  # as in Detectron2's tools/train_net.py: "bbox_TTA", "<dataset>_TTA"


class _ROIMasksAt(ROIMasks):
    """``ROIMasks`` pasted at a fixed threshold: Detectron2's TTA pastes its averaged masks with
    ``detector_postprocess``'s default 0.5, and this carries ``INSTSEG.MASK_THRESHOLD`` there."""

    def __init__(self, tensor: torch.Tensor, threshold: float):
        super().__init__(tensor)
        self.threshold = threshold

    def __getitem__(self, item) -> _ROIMasksAt:
        return _ROIMasksAt(super().__getitem__(item).tensor, self.threshold)

    def to_bitmasks(self, boxes, height, width, threshold=0.5):
        return super().to_bitmasks(boxes, height, width, self.threshold)


class RCNNWithTTA(GeneralizedRCNNWithTTA):
    """``GeneralizedRCNNWithTTA`` whose network may run under autocast (bf16 on CPU), and whose
    averaged masks are pasted at ``INSTSEG.MASK_THRESHOLD``.

    The outputs of each pass are cast back to fp32 before they are merged: the merge maps boxes
    through NumPy, which has no bf16, and the averaged masks are pasted at full precision. An
    ``InstSegRCNN`` built with ``INSTSEG.INFERENCE.BF16`` runs its own inference under autocast
    with fp32 outputs, so it needs no ``autocast`` here; the option is for other models.
    """

    def __init__(self, cfg: CfgNode, model: nn.Module, *, autocast: bool = False,
                 batch_size: int = 3):  # fmt: skip
        super().__init__(cfg, model, batch_size=batch_size)
        self.autocast = autocast
        self.mask_threshold = mask_threshold_of(cfg)

    def _reduce_pred_masks(self, outputs, tfms):
        return _ROIMasksAt(super()._reduce_pred_masks(outputs, tfms)[:, 0], self.mask_threshold)

    def _batch_inference(self, batched_inputs, detected_instances=None):
        with autocast_context(self.model.device, enabled=self.autocast):
            outputs = super()._batch_inference(batched_inputs, detected_instances)
        if self.autocast:
            for instances in outputs:
                for name in ("scores", "pred_masks"):
                    if instances.has(name):
                        instances.set(name, instances.get(name).float())
                instances.pred_boxes.tensor = instances.pred_boxes.tensor.float()
        return outputs


def build_tta_model(cfg: CfgNode, model: nn.Module, *, autocast: bool = False) -> RCNNWithTTA:
    """``model`` wrapped for TTA with the sizes and flip of ``cfg.TEST.AUG``."""
    if not len(cfg.TEST.AUG.MIN_SIZES) or min(cfg.TEST.AUG.MIN_SIZES) <= 0:
        raise ConfigError(f"TEST.AUG.MIN_SIZES must be one or more sizes > 0, got "
                          f"{cfg.TEST.AUG.MIN_SIZES}")  # fmt: skip
    if cfg.TEST.AUG.MAX_SIZE < max(cfg.TEST.AUG.MIN_SIZES):
        raise ConfigError(
            f"TEST.AUG.MAX_SIZE {cfg.TEST.AUG.MAX_SIZE} is smaller than the largest "
            f"TEST.AUG.MIN_SIZES {max(cfg.TEST.AUG.MIN_SIZES)}"
        )
    return RCNNWithTTA(cfg, model, autocast=autocast)


def tta_test_loader(cfg: CfgNode, dataset_name: str):
    """The evaluation loader of ``dataset_name`` with images at their original size."""
    mapper = build_dataset_mapper(cfg, is_train=False, augmentations=[])
    return build_detection_test_loader(cfg, dataset_name, mapper=mapper)


def with_tta_results(
    results: Mapping, tta_results: Mapping, test_sets: Sequence[str]
) -> tuple[dict, list[str]]:
    """Plain and TTA results per dataset, the TTA ones as ``<dataset>_TTA``, and the dataset
    names in order: the arguments :func:`~.final_metrics.write_final_metrics` takes."""
    merged = per_dataset(results, test_sets)
    names = list(test_sets)
    for name in test_sets:
        if len(test_sets) == 1:  # Detectron2 drops the dataset level: {"bbox_TTA": {...}}
            tasks = {k[: -len(TTA_SUFFIX)]: v for k, v in tta_results.items()
                     if k.endswith(TTA_SUFFIX)}  # fmt: skip
        else:
            tasks = tta_results.get(f"{name}{TTA_SUFFIX}", {})
        if tasks:
            merged[f"{name}{TTA_SUFFIX}"] = dict(tasks)
            names.append(f"{name}{TTA_SUFFIX}")
    return merged, names


class TTAPredictor(BatchPredictor):
    """:class:`~.predictor.BatchPredictor` that predicts with test-time augmentation.

    Same construction (weights, ``optimize``, ``bf16``) and call (BGR images in, one
    ``{"instances": Instances}`` per image out, at the image's size); the images go to the TTA
    model at their original size, which resizes them to each ``TEST.AUG.MIN_SIZES``.
    """

    def __init__(self, cfg: CfgNode, *, optimize: bool | None = None, bf16: bool | None = None):
        super().__init__(cfg, optimize=optimize, bf16=bf16)
        # bf16 (INSTSEG.INFERENCE.BF16) is in the model's own inference: see RCNNWithTTA.
        self.tta_model = build_tta_model(self.cfg, self.model)

    def __call__(self, original_images: Sequence[np.ndarray]) -> list[dict]:
        inputs = []
        for image in original_images:
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"expected an HxWx3 BGR image, got shape {image.shape}")
            if self.input_format == "RGB":
                image = image[:, :, ::-1]
            tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
            inputs.append({"image": tensor, "height": image.shape[0], "width": image.shape[1]})
        if not inputs:
            return []
        with torch.inference_mode():
            outputs = self.tta_model(inputs)
        return [{"instances": out["instances"].to("cpu")} for out in outputs]
