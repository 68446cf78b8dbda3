"""``InstSegROIHeads``: ``StandardROIHeads`` with the CPU RoIAlign and fp32 box outputs.

Why an ROI-heads class: the poolers and the box predictor are built in
``StandardROIHeads._init_box_head`` / ``_init_mask_head``, which Detectron2 projects override to
build other ones (PointRend does for its mask head). What differs from ``StandardROIHeads``
(same parameters, buffers and state-dict keys; the poolers have none):

- ``INSTSEG.CPU_ROI_ALIGN``: both poolers are :class:`EmbeddingBagROIPooler`, whose RoIAlign
  runs :func:`~.roi_align.roi_align_embedding_bag` on CPU maps (forward and backward; equal to
  torchvision's kernels up to float rounding). It reads each FPN map as an fp32 channels-last
  table, so :meth:`InstSegROIHeads.forward` converts each map once for both poolers (a no-op for
  the fp32 channels-last maps of a channels-last model) instead of once per pooler.
- The box predictor is :class:`FP32OutputLayers`: class scores and box deltas in fp32 under
  autocast (:func:`~.precision.run_in_fp32`); the same as ``FastRCNNOutputLayers`` without it.
"""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.layers import ROIAlign
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from torch import nn

from .precision import run_in_fp32
from .roi_align import CPUROIAlign
from .speedups import speedup_enabled

__all__ = ["EmbeddingBagROIPooler", "FP32OutputLayers", "InstSegROIHeads"]


class EmbeddingBagROIPooler(ROIPooler):
    """``ROIPooler`` whose ``ROIAlign`` levels are :class:`~.roi_align.CPUROIAlign` (the
    embedding-bag kernel on CPU maps, the wrapped ``ROIAlign`` elsewhere)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.level_poolers = nn.ModuleList(
            CPUROIAlign(p) if isinstance(p, ROIAlign) else p for p in self.level_poolers
        )


class FP32OutputLayers(FastRCNNOutputLayers):
    """``FastRCNNOutputLayers`` whose class scores and box deltas are computed in fp32."""

    # Children kept in fp32 when the inference build step stores the other weights in bf16.
    FP32_LAYERS = ("cls_score", "bbox_pred")

    @classmethod
    def like(cls, layers: FastRCNNOutputLayers, cfg, input_shape) -> FP32OutputLayers:
        """An instance with the settings of ``cfg`` and the parameters of ``layers``.

        Built on the meta device, so that it draws nothing from the random generator: a model
        built from the same seed gets the same initial weights as with Detectron2's class.
        """
        with torch.device("meta"):
            new = cls(cfg, input_shape)
        new.load_state_dict(layers.state_dict(), assign=True)
        return new

    def forward(self, x: torch.Tensor):
        return run_in_fp32(super().forward, x)


def _fp32_channels_last(features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k: v.to(torch.float32, memory_format=torch.channels_last) if v.device.type == "cpu" else v
        for k, v in features.items()
    }


@ROI_HEADS_REGISTRY.register()
class InstSegROIHeads(StandardROIHeads):
    """``StandardROIHeads`` with the pooler that ``INSTSEG.CPU_ROI_ALIGN`` names and fp32 box
    outputs (module docstring)."""

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        poolers = (self.box_pooler, getattr(self, "mask_pooler", None))
        self.pools_fp32_channels_last = any(isinstance(p, EmbeddingBagROIPooler) for p in poolers)

    @staticmethod
    def _embedding_bag_pooler(cfg, input_shape, head_cfg) -> EmbeddingBagROIPooler:
        """The pooler of a head (``head_cfg``: ``MODEL.ROI_BOX_HEAD`` or ``ROI_MASK_HEAD``) with
        the arguments ``StandardROIHeads`` gives its ``ROIPooler``."""
        return EmbeddingBagROIPooler(
            output_size=head_cfg.POOLER_RESOLUTION,
            scales=tuple(1.0 / input_shape[k].stride for k in cfg.MODEL.ROI_HEADS.IN_FEATURES),
            sampling_ratio=head_cfg.POOLER_SAMPLING_RATIO,
            pooler_type=head_cfg.POOLER_TYPE,
        )

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        if speedup_enabled(cfg, "INSTSEG.CPU_ROI_ALIGN"):
            ret["box_pooler"] = cls._embedding_bag_pooler(cfg, input_shape, cfg.MODEL.ROI_BOX_HEAD)
        ret["box_predictor"] = FP32OutputLayers.like(
            ret["box_predictor"], cfg, ret["box_head"].output_shape
        )
        return ret

    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        ret = super()._init_mask_head(cfg, input_shape)
        if ret.get("mask_pooler") is not None and speedup_enabled(cfg, "INSTSEG.CPU_ROI_ALIGN"):
            head = cfg.MODEL.ROI_MASK_HEAD
            ret["mask_pooler"] = cls._embedding_bag_pooler(cfg, input_shape, head)
        return ret

    def forward(self, images, features, proposals, targets=None):
        if self.pools_fp32_channels_last:
            features = _fp32_channels_last(features)
        return super().forward(images, features, proposals, targets)
