"""What each side runs per image (inference) and per batch (training), as its users would.

Ours follows Detectron2's ``DefaultPredictor`` / ``SimpleTrainer`` path; torchvision's follows the
fine-tuning tutorial (``model([image])`` on a float RGB tensor; ``loss = sum(model(images,
targets).values())``). Each callable does exactly the work that is timed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.solver import build_optimizer
from torch import nn

from benchmarks.detection_match import Detections
from instseg_d2.modeling.optimize import (
    autocast_context,
    compile_backbone,
    optimize_for_inference,
    optimize_for_training,
    prepare_for_autocast_inference,
    rcnn_inference,
)


class OursPredictor:
    """Detectron2 inference on one BGR uint8 image, as ``DefaultPredictor`` does it.

    ``optimized`` applies ``optimize_for_inference`` (BN fold, channels-last, fast CPU RoIAlign;
    fp32-exact);
    ``autocast`` adds bf16 (CPU) / fp16 (CUDA) autocast around the network; ``compiled``
    ``torch.compile``s the backbone (the first call compiles).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: CfgNode,
        *,
        optimized: bool | dict = False,
        autocast: bool = False,
        compiled: bool = False,
    ):
        self.model = copy.deepcopy(model).eval()
        if optimized:  # a dict selects optimize_for_inference's steps (ablation)
            optimize_for_inference(self.model, **(optimized if isinstance(optimized, dict) else {}))
        if compiled:
            compile_backbone(self.model)
        if autocast:
            prepare_for_autocast_inference(self.model)
        self.autocast = autocast
        self.resize = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )

    def __call__(self, image_bgr: np.ndarray):
        height, width = image_bgr.shape[:2]
        image = self.resize.get_transform(image_bgr).apply_image(image_bgr)
        # uint8 CHW: the model normalises (and so converts to float) on its device in one op.
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        inputs = [{"image": tensor, "height": height, "width": width}]
        with torch.inference_mode():
            return rcnn_inference(self.model, inputs, autocast=self.autocast)[0]["instances"]

    @staticmethod
    def to_detections(output) -> Detections:
        return Detections.from_instances(output)


class TorchvisionPredictor:
    """torchvision inference on one BGR uint8 image, as the tutorial does it (float RGB 0-1)."""

    def __init__(self, model: nn.Module, *, autocast: bool = False):
        self.model = copy.deepcopy(model).eval()
        self.device = next(self.model.parameters()).device
        self.autocast = autocast

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


class OursTrainStep:
    """One ``SimpleTrainer.run_step`` (forward, loss, backward, clipped SGD step) on our model.

    The same step the project's Trainer runs; ``autocast`` wraps it in bf16 autocast as
    ``INSTSEG.CPU_BF16`` does; ``optimized`` applies ``optimize_for_training`` (channels-last
    convolutions, frozen BatchNorms applied to the conv weights).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: CfgNode,
        batches: list[list[dict]],
        *,
        autocast: bool = False,
        optimized: bool | dict = False,
    ):
        from detectron2.utils.events import EventStorage

        self.model = copy.deepcopy(model).train()
        if optimized:  # a dict selects optimize_for_training's steps (ablation)
            optimize_for_training(self.model, **(optimized if isinstance(optimized, dict) else {}))
        self.device = cfg.MODEL.DEVICE
        optimizer = build_optimizer(cfg, self.model)
        # On CUDA, fp16 needs loss scaling: Detectron2's AMPTrainer (as the Trainer uses it).
        self.cuda_amp = autocast and torch.device(self.device).type == "cuda"
        trainer_class = AMPTrainer if self.cuda_amp else SimpleTrainer
        self.trainer = trainer_class(self.model, _cycle(batches), optimizer)
        self.storage = EventStorage(0)
        self.autocast = autocast and not self.cuda_amp
        self.losses: list[float] = []

    def __call__(self) -> float:
        with self.storage, autocast_context(self.device, enabled=self.autocast):
            self.trainer.iter = self.storage.iter
            self.trainer.run_step()
            self.storage.step()
        loss = self.storage.history("total_loss").latest()
        self.losses.append(float(loss))
        return loss


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
        autocast: bool = False,
    ):
        self.model = copy.deepcopy(model).train()
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
        self.autocast = autocast
        cuda_amp = autocast and torch.device(self.device).type == "cuda"
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


TrainStep = Callable[[], float]
