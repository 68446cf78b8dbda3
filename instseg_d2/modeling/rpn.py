"""``InstSegRPNHead``: Detectron2's ``StandardRPNHead`` with its output convs in fp32.

The objectness and anchor-delta 1x1 convs produce what the RPN's NMS and top-k compare; under
autocast their rounding would reorder proposals, while they cost well under 1% of the time. Same
parameters and state-dict keys; without autocast it computes what ``StandardRPNHead`` does.
"""

from __future__ import annotations

import torch
from detectron2.modeling.proposal_generator import RPN_HEAD_REGISTRY
from detectron2.modeling.proposal_generator.rpn import StandardRPNHead

from .precision import run_in_fp32

__all__ = ["InstSegRPNHead"]


@RPN_HEAD_REGISTRY.register()
class InstSegRPNHead(StandardRPNHead):
    """``StandardRPNHead`` whose objectness and anchor-delta convs run in fp32 under autocast."""

    # Children kept in fp32 when the inference build step stores the other weights in bf16.
    FP32_LAYERS = ("objectness_logits", "anchor_deltas")

    def forward(
        self, features: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        pred_objectness_logits = []
        pred_anchor_deltas = []
        for x in features:
            t = self.conv(x)
            pred_objectness_logits.append(run_in_fp32(self.objectness_logits, t))
            pred_anchor_deltas.append(run_in_fp32(self.anchor_deltas, t))
        return pred_objectness_logits, pred_anchor_deltas
