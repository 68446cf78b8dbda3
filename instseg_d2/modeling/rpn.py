"""``InstSegRPNHead`` and ``InstSegRPN``: Detectron2's RPN head with its output convs in fp32, and
its RPN with each image's proposals selected on a thread of its own.

- ``InstSegRPNHead``: the objectness and anchor-delta 1x1 convs produce what the RPN's NMS and
  top-k compare; under autocast their rounding would reorder proposals, while they cost well
  under 1% of the time. Same parameters and state-dict keys; without autocast it computes what
  ``StandardRPNHead`` does. ``INSTSEG.FUSED_RPN_OUTPUTS``: both 1x1 convs run as one conv (their
  weights stacked, on every call) over a single fp32 copy of the map, instead of two convs that
  each copy the map to fp32 and read it: on the stride-4 level of a batch that copy is tens of
  MB, forward and backward. Each output channel is the same dot product (float rounding aside).
- ``InstSegRPN`` (``INSTSEG.PARALLEL_PROPOSALS``): choosing the proposals of an image (top-k per
  level, NMS per level, top-k overall) is independent of the other images, and torchvision's CPU
  NMS runs on one core while the others wait; with a batch of several images on CPU, each
  image's selection runs on a thread of its own (torchvision's NMS releases the GIL). The same
  Detectron2 function on each image alone, so the proposals are exactly those of ``RPN``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
from detectron2.config import configurable
from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY, RPN_HEAD_REGISTRY
from detectron2.modeling.proposal_generator.proposal_utils import find_top_rpn_proposals
from detectron2.modeling.proposal_generator.rpn import RPN, StandardRPNHead
from detectron2.structures import Boxes, Instances
from torch.nn import functional as F

from .precision import run_in_fp32
from .speedups import speedup_enabled

__all__ = ["InstSegRPN", "InstSegRPNHead"]


@RPN_HEAD_REGISTRY.register()
class InstSegRPNHead(StandardRPNHead):
    """``StandardRPNHead`` whose objectness and anchor-delta convs run in fp32 under autocast."""

    # Children kept in fp32 when the inference build step stores the other weights in bf16.
    FP32_LAYERS = ("objectness_logits", "anchor_deltas")

    @configurable
    def __init__(self, *, fused_outputs: bool = False, **kwargs):
        """
        Args:
            fused_outputs: run the objectness and anchor-delta convs as one conv.
            kwargs: the arguments of ``StandardRPNHead``.
        """
        super().__init__(**kwargs)
        self.fused_outputs = fused_outputs

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["fused_outputs"] = speedup_enabled(cfg, "INSTSEG.FUSED_RPN_OUTPUTS")
        return ret

    def _fused_outputs(
        self, t: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Objectness logits and anchor deltas of the map ``t`` from one conv with the two
        output layers' concatenated ``weight`` and ``bias``."""
        out = F.conv2d(t, weight.to(t.dtype), bias.to(t.dtype))
        split = self.objectness_logits.out_channels
        return out[:, :split], out[:, split:]

    def forward(
        self, features: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        pred_objectness_logits = []
        pred_anchor_deltas = []
        if self.fused_outputs:  # concatenated once for all feature levels
            weight = torch.cat([self.objectness_logits.weight, self.anchor_deltas.weight])
            bias = torch.cat([self.objectness_logits.bias, self.anchor_deltas.bias])
        for x in features:
            t = self.conv(x)
            if self.fused_outputs:
                objectness, deltas = run_in_fp32(
                    lambda fp32_map: self._fused_outputs(fp32_map, weight, bias), t
                )
            else:
                objectness = run_in_fp32(self.objectness_logits, t)
                deltas = run_in_fp32(self.anchor_deltas, t)
            pred_objectness_logits.append(objectness)
            pred_anchor_deltas.append(deltas)
        return pred_objectness_logits, pred_anchor_deltas


@PROPOSAL_GENERATOR_REGISTRY.register()
class InstSegRPN(RPN):
    """``RPN`` that selects the proposals of the images of a CPU batch in parallel threads
    (module docstring)."""

    @configurable
    def __init__(self, *, parallel_proposals: bool = False, **kwargs):
        """
        Args:
            parallel_proposals: select each image's proposals on a thread of its own (CPU,
                batches of several images, more than one torch thread).
            kwargs: the arguments of ``RPN``.
        """
        super().__init__(**kwargs)
        self.parallel_proposals = parallel_proposals

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["parallel_proposals"] = speedup_enabled(cfg, "INSTSEG.PARALLEL_PROPOSALS")
        return ret

    def predict_proposals(
        self,
        anchors: list[Boxes],
        pred_objectness_logits: list[torch.Tensor],
        pred_anchor_deltas: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[Instances]:
        workers = min(len(image_sizes), torch.get_num_threads())
        on_cpu = pred_objectness_logits[0].device.type == "cpu"
        if not (self.parallel_proposals and on_cpu and workers > 1):
            return super().predict_proposals(
                anchors, pred_objectness_logits, pred_anchor_deltas, image_sizes
            )
        with torch.no_grad():
            proposals = self._decode_proposals(anchors, pred_anchor_deltas)
        settings = (
            self.nms_thresh,
            self.pre_nms_topk[self.training],
            self.post_nms_topk[self.training],
            self.min_box_size,
            self.training,
        )
        # Grad mode and autocast are per thread: the workers get the caller's.
        autocast = torch.is_autocast_enabled("cpu")
        autocast_dtype = torch.get_autocast_dtype("cpu")

        def select(i: int) -> Instances:
            with torch.no_grad(), torch.autocast("cpu", autocast_dtype, enabled=autocast):
                return find_top_rpn_proposals(
                    [p[i : i + 1] for p in proposals],
                    [s[i : i + 1] for s in pred_objectness_logits],
                    image_sizes[i : i + 1],
                    *settings,
                )[0]

        with ThreadPoolExecutor(workers, thread_name_prefix="instseg-rpn") as pool:
            return list(pool.map(select, range(len(image_sizes))))
