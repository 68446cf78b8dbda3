"""Batched inference: DefaultPredictor's pre-processing, several images per forward pass.

Only images whose padded input size is the same share a forward pass: the model pads a batch to
its largest image, and with GroupNorm (the CPU configs) the normalisation statistics would then
include the padding and change every feature. So every batch size gives the detections of batch
size 1 (and of ``--eval-only``, which runs one image at a time).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import ImageList

from ..modeling.inference_step import prepare_for_inference
from ..modeling.speedups import override_all


def _to_cpu(value):
    # Instances and tensors move; anything else (e.g. panoptic tuples) is passed through.
    return value.to("cpu") if hasattr(value, "to") else value


class BatchPredictor:
    """Like Detectron2's ``DefaultPredictor``, but takes a list of images.

    It builds the model of ``cfg``, loads ``cfg.MODEL.WEIGHTS`` with ``DetectionCheckpointer``,
    runs the inference build step (:func:`~instseg_d2.modeling.inference_step.
    prepare_for_inference`), resizes each image with ``ResizeShortestEdge(INPUT.MIN_SIZE_TEST,
    INPUT.MAX_SIZE_TEST)`` and runs the images under ``torch.inference_mode()``, one forward pass
    per group of images with the same padded size (module docstring). Predictions come back in
    the coordinates of each original image, in input order.

    The speed-ups are the config's (``INSTSEG.*``, ``INSTSEG.INFERENCE.*``; by default the
    fp32-exact ones on CPU only: on an H200 at batch 1 they made inference slower). ``optimize``
    True/False turns all of them on/off; ``bf16`` sets ``INSTSEG.INFERENCE.BF16`` (bf16 autocast,
    fp16 on CUDA, with fp32 outputs and post-processing; CPU: about 2x faster, small AP change,
    see BENCHMARKS.md). ``self.cfg`` is the config the model was built from.
    """

    def __init__(self, cfg: CfgNode, *, optimize: bool | None = None, bf16: bool | None = None):
        cfg = cfg.clone()  # build_model may modify it
        cfg.defrost()
        if optimize is not None:
            cfg = override_all(cfg, optimize)
        if bf16 is not None:
            cfg.INSTSEG.INFERENCE.BF16 = bf16
        self.cfg = cfg
        self.model = build_model(cfg)
        self.model.eval()
        self.metadata = (
            MetadataCatalog.get(cfg.DATASETS.TEST[0]) if len(cfg.DATASETS.TEST) else None
        )
        DetectionCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        # After loading: folding and the bf16 cast rewrite the loaded weights.
        prepare_for_inference(self.model, cfg)
        self.aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be RGB or BGR, got {self.input_format!r}")

    def _to_model_input(self, original_image: np.ndarray) -> dict:
        if original_image.ndim != 3 or original_image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 BGR image, got shape {original_image.shape}")
        if self.input_format == "RGB":
            original_image = original_image[:, :, ::-1]
        height, width = original_image.shape[:2]
        image = self.aug.get_transform(original_image).apply_image(original_image)
        image = torch.as_tensor(np.ascontiguousarray(image.astype("float32").transpose(2, 0, 1)))
        # The model moves inputs to its device itself (in preprocess_image).
        return {"image": image, "height": height, "width": width}

    def padded_size(self, image: torch.Tensor) -> tuple[int, int]:
        """The (height, width) the model pads ``image`` (C, H, W) to, alone or in a batch of
        images of its size: Detectron2's ``ImageList`` rule, computed on an empty tensor."""
        backbone = self.model.backbone
        empty = image.new_empty((0, *image.shape[-2:]))
        padded = ImageList.from_tensors(
            [empty], backbone.size_divisibility, padding_constraints=backbone.padding_constraints
        )
        return tuple(padded.tensor.shape[-2:])

    def __call__(self, original_images: Sequence[np.ndarray]) -> list[dict]:
        """Predict a batch.

        Args:
            original_images: images of shape (H, W, 3) in BGR order, as ``cv2.imread`` gives.

        Returns:
            one dict per image (``{"instances": Instances}`` for Mask R-CNN), in input order,
            with tensors moved to the CPU. Images of different padded sizes run in separate
            forward passes (module docstring).
        """
        inputs = [self._to_model_input(img) for img in original_images]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, item in enumerate(inputs):
            groups.setdefault(self.padded_size(item["image"]), []).append(i)
        outputs: list[dict] = [{} for _ in inputs]
        for indices in groups.values():
            with torch.inference_mode():
                results = self.model([inputs[i] for i in indices])
            for i, out in zip(indices, results, strict=True):
                outputs[i] = {k: _to_cpu(v) for k, v in out.items()}
        return outputs

    def predict_batches(
        self, images: Iterable[np.ndarray], batch_size: int
    ) -> Iterator[tuple[np.ndarray, dict]]:
        """Yield ``(image, prediction)`` pairs, running ``batch_size`` images per forward."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch: list[np.ndarray] = []
        for image in images:
            batch.append(image)
            if len(batch) == batch_size:
                yield from zip(batch, self(batch), strict=True)
                batch = []
        if batch:
            yield from zip(batch, self(batch), strict=True)
