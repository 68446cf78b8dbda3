"""torchvision's side: what the PyTorch fine-tuning tutorial runs, plain and with two-line tricks.

Inference is ``model([image])`` on a float RGB 0-1 tensor, training ``loss =
sum(model(images, targets).values())``, backward and an SGD step, and data loading its
``PennFudanDataset.__getitem__``. ``tricks=True`` adds what a user can add in two lines:
``model.to(memory_format=torch.channels_last)`` and ``torch.autocast`` (bf16 on CPU; fp16 with a
``GradScaler`` on CUDA). Beating only the plain fp32 tutorial would not be the honest comparison.
Each callable does exactly the work that is timed.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator

import numpy as np
import torch
from detectron2.config import CfgNode
from torch import nn

from instseg_d2.modeling.precision import autocast_context

from .detection_match import Detections


def _with_tricks(model: nn.Module, tricks: bool) -> nn.Module:
    model = copy.deepcopy(model)
    return model.to(memory_format=torch.channels_last) if tricks else model


class TorchvisionPredictor:
    """torchvision inference on one BGR uint8 image, as the tutorial does it (float RGB 0-1)."""

    def __init__(self, model: nn.Module, *, tricks: bool = False):
        self.model = _with_tricks(model, tricks).eval()
        self.device = next(self.model.parameters()).device
        self.autocast = tricks

    def __call__(self, image_bgr: np.ndarray) -> dict:
        tensor = torch.from_numpy(np.ascontiguousarray(image_bgr[:, :, ::-1].transpose(2, 0, 1)))
        tensor = tensor.to(self.device).float().div_(255.0)
        with torch.inference_mode(), autocast_context(self.device, enabled=self.autocast):
            return self.model([tensor])[0]

    @staticmethod
    def to_detections(output: dict) -> Detections:
        return Detections.from_torchvision(output)


def _cycle(items: list) -> Iterator:
    while True:
        yield from items


class TorchvisionTrainStep:
    """One step of the tutorial's loop: ``sum(model(images, targets).values())``, backward, SGD.

    Same optimizer settings and gradient clipping as ``cfg``'s ``SOLVER`` (Detectron2 clips each
    parameter's gradient separately, so this does too).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: CfgNode,
        batches: list[tuple[list[torch.Tensor], list[dict]]],
        *,
        tricks: bool = False,
    ):
        self.model = _with_tricks(model, tricks).train()
        # Train at cfg's training size (the batches are already resized to it: a no-op resize).
        self.model.transform.min_size = tuple(cfg.INPUT.MIN_SIZE_TRAIN)
        self.model.transform.max_size = cfg.INPUT.MAX_SIZE_TRAIN
        self.device = cfg.MODEL.DEVICE
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(
            params,
            lr=cfg.SOLVER.BASE_LR,
            momentum=cfg.SOLVER.MOMENTUM,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        )
        self.clip = cfg.SOLVER.CLIP_GRADIENTS
        self.params = params
        self.batches = _cycle(batches)
        self.autocast = tricks
        cuda_amp = tricks and torch.device(self.device).type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if cuda_amp else None
        self.losses: list[float] = []

    def __call__(self) -> float:
        images, targets = next(self.batches)
        with autocast_context(self.device, enabled=self.autocast):
            loss_dict = self.model(images, targets)
            loss = sum(loss_dict.values())
        self.optimizer.zero_grad()
        if self.scaler is not None:  # fp16 on CUDA: scale the loss, unscale before clipping
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.clip.ENABLED and self.clip.CLIP_TYPE == "norm":
            for p in self.params:
                nn.utils.clip_grad_norm_(p, self.clip.CLIP_VALUE, self.clip.NORM_TYPE)
        elif self.clip.ENABLED:
            nn.utils.clip_grad_value_(self.params, self.clip.CLIP_VALUE)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.losses.append(float(loss.detach()))
        return self.losses[-1]


def torchvision_batch(batch: list[dict], device: str) -> tuple[list[torch.Tensor], list[dict]]:
    """Our mapped batch as torchvision inputs: the same resized pixels (RGB 0-1) and targets."""
    images, targets = [], []
    for d in batch:
        images.append(d["image"].flip(0).to(device).float().div(255.0))
        inst = d["instances"]
        targets.append(
            {
                "boxes": inst.gt_boxes.tensor.to(device),
                "labels": (inst.gt_classes + 1).to(device),  # torchvision: 0 is background
                "masks": inst.gt_masks.tensor.to(device=device, dtype=torch.uint8),
            }
        )
    return images, targets


def tutorial_dataset_item(image_path: str, mask_path: str) -> tuple[torch.Tensor, dict]:
    """The torchvision tutorial's ``PennFudanDataset.__getitem__`` (decode, masks, boxes)."""
    from torchvision.io import read_image
    from torchvision.ops import masks_to_boxes

    image = read_image(image_path)
    mask = read_image(mask_path)[0]
    obj_ids = torch.unique(mask)[1:]
    masks = (mask == obj_ids[:, None, None]).to(torch.uint8)
    boxes = masks_to_boxes(masks)
    target = {
        "boxes": boxes,
        "labels": torch.ones((len(obj_ids),), dtype=torch.int64),
        "masks": masks,
        "area": (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 2] - boxes[:, 0]),
    }
    return image.float().div_(255.0), target


def pennfudan_mask_path(image_path: str) -> str | None:
    """The tutorial's instance-mask PNG for a Penn-Fudan image, or None (another dataset)."""
    head, name = os.path.split(image_path)
    mask = os.path.join(os.path.dirname(head), "PedMasks", name.replace(".png", "_mask.png"))
    return mask if os.path.isfile(mask) else None
