"""The whole prediction of a Detectron2 Mask R-CNN as one traceable function: image in, detections
out.

``BatchPredictor`` runs three steps around the network: the test-time resize (Pillow), the
network (``GeneralizedRCNN.inference``) and ``detector_postprocess`` (boxes scaled back to the
image, clipped, empty ones dropped, 28 x 28 masks pasted at full resolution). Detectron2's own
export (``tools/deploy/export_model.py``) traces only the network, so its artifact returns boxes
in the resized image and 28 x 28 mask logits. :class:`ImageToDetections` runs all three, as
Detectron2's ``TracingAdapter`` wants them (an ``inference_func``): the resize and the pasting as
the traceable re-expressions of :mod:`.resize` and :mod:`.paste`, the box handling with
Detectron2's own ``detector_postprocess``.

The traced function takes one ``H x W x 3`` uint8 image in BGR order (what ``cv2.imread`` gives
and ``BatchPredictor`` takes; an RGB model flips it inside) and returns, in this order (the
adapter flattens the output dict by sorted key):

- ``boxes``: ``N x 4`` float32, XYXY in the input image's pixels;
- ``classes``: ``N`` int64, contiguous class indices (``thing_classes`` order);
- ``masks``: ``N x H x W`` bool, at the input image's size;
- ``scores``: ``N`` float32, descending per class (Detectron2's order).
"""

from __future__ import annotations

import contextlib

import torch
from detectron2.config import CfgNode
from detectron2.export import TracingAdapter
from detectron2.modeling.postprocessing import detector_postprocess
from torch import nn

from ..modeling.meta_arch import mask_threshold_of
from .paste import paste_masks
from .resize import image_size, resize_bilinear_like_pillow, shortest_edge_size

__all__ = ["OUTPUT_NAMES", "ImageToDetections", "build_tracing_adapter"]

# The order in which TracingAdapter flattens the output dict (sorted keys).
OUTPUT_NAMES = ("boxes", "classes", "masks", "scores")


class ImageToDetections:
    """``inference_func(model, image)`` for ``TracingAdapter``: BGR uint8 image -> detections.

    ``bf16`` runs the network under CPU bf16 autocast and casts its outputs back to fp32 before
    the box and mask post-processing, as ``BatchPredictor(bf16=True)`` does; the trace records
    the casts.
    """

    def __init__(
        self,
        min_size: int,
        max_size: int,
        input_format: str,
        *,
        bf16: bool = False,
        mask_threshold: float = 0.5,
    ):
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be RGB or BGR, got {input_format!r}")
        self.min_size = min_size
        self.max_size = max_size
        self.input_format = input_format
        self.bf16 = bf16
        self.mask_threshold = mask_threshold

    @classmethod
    def from_config(cls, cfg: CfgNode, *, bf16: bool = False) -> ImageToDetections:
        """The resize, channel order and mask threshold of ``BatchPredictor`` for ``cfg``."""
        return cls(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.FORMAT, bf16=bf16,
                   mask_threshold=mask_threshold_of(cfg))  # fmt: skip

    def __call__(self, model: nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
        size = image_size(image)
        if self.input_format == "RGB":
            image = image.flip(-1)
        resized = resize_bilinear_like_pillow(image, shortest_edge_size(size, self.min_size,
                                                                         self.max_size))  # fmt: skip
        network_input = [{"image": resized.permute(2, 0, 1)}]
        precision = (
            torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        )
        with precision:
            instances = model.inference(network_input, do_postprocess=False)[0]
        # The mask probabilities travel through detector_postprocess under another name, so that
        # it filters them with the boxes but leaves the pasting to paste_masks.
        mask_probs = instances.get("pred_masks")[:, 0].float()
        instances.remove("pred_masks")
        instances.set("mask_probs", mask_probs)
        instances.set("scores", instances.scores.float())
        instances.pred_boxes.tensor = instances.pred_boxes.tensor.float()
        instances = detector_postprocess(instances, size[0], size[1])
        boxes = instances.pred_boxes.tensor
        return {
            "boxes": boxes,
            "classes": instances.pred_classes,
            "masks": paste_masks(instances.mask_probs, boxes, size, self.mask_threshold),
            "scores": instances.scores,
        }


def build_tracing_adapter(
    model: nn.Module, cfg: CfgNode, sample_image: torch.Tensor, *, bf16: bool = False
) -> TracingAdapter:
    """Detectron2's ``TracingAdapter`` around ``model`` (eval mode, CPU) with
    :class:`ImageToDetections`; trace it with ``(sample_image,)``, an ``H x W x 3`` uint8 tensor."""
    if sample_image.dtype != torch.uint8 or sample_image.dim() != 3 or sample_image.shape[2] != 3:
        raise ValueError(
            f"sample image must be H x W x 3 uint8, got {tuple(sample_image.shape)} "
            f"{sample_image.dtype}"
        )
    model.eval()
    adapter = TracingAdapter(model, (sample_image,), ImageToDetections.from_config(cfg, bf16=bf16))
    adapter.eval()
    return adapter
