"""``InstSegMaskHead``: Detectron2's ``MaskRCNNConvUpsampleHead`` with channels-last input and
its mask predictor in fp32.

- ``INSTSEG.CHANNELS_LAST``: the pooled RoI features come out of ``ROIPooler`` in NCHW (its output
  buffer); the head's 3x3 convs run faster on them in channels-last, so they are converted once
  here.
- The 1x1 predictor's logits are the masks that get pasted and thresholded: computed in fp32
  under autocast. Without autocast it computes what ``MaskRCNNConvUpsampleHead`` does.

Same parameters and state-dict keys.
"""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.modeling.roi_heads.mask_head import (
    ROI_MASK_HEAD_REGISTRY,
    MaskRCNNConvUpsampleHead,
)

from .precision import run_in_fp32
from .speedups import speedup_enabled

__all__ = ["InstSegMaskHead"]


@ROI_MASK_HEAD_REGISTRY.register()
class InstSegMaskHead(MaskRCNNConvUpsampleHead):
    """``MaskRCNNConvUpsampleHead`` with channels-last input (``INSTSEG.CHANNELS_LAST``) and an
    fp32 predictor under autocast."""

    # Children kept in fp32 when the inference build step stores the other weights in bf16.
    FP32_LAYERS = ("predictor",)

    @configurable
    def __init__(self, input_shape, *, channels_last: bool = False, **kwargs):
        super().__init__(input_shape, **kwargs)
        self.channels_last = channels_last

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["channels_last"] = speedup_enabled(cfg, "INSTSEG.CHANNELS_LAST")
        return ret

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for layer in self:
            x = run_in_fp32(layer, x) if layer is self.predictor else layer(x)
        return x
