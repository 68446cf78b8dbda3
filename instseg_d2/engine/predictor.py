"""Batched inference: DefaultPredictor's pre-processing, several images per forward pass."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from ..modeling.optimize import (
    optimize_for_inference,
    prepare_for_autocast_inference,
    rcnn_inference,
)


def _to_cpu(value):
    # Instances and tensors move; anything else (e.g. panoptic tuples) is passed through.
    return value.to("cpu") if hasattr(value, "to") else value


class BatchPredictor:
    """Like Detectron2's ``DefaultPredictor``, but takes a list of images.

    It builds the model of ``cfg``, loads ``cfg.MODEL.WEIGHTS`` with ``DetectionCheckpointer``,
    resizes each image with ``ResizeShortestEdge(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)`` and
    runs the whole list in one forward pass under ``torch.inference_mode()``. The model pads the
    batch itself, so images of different sizes can share a batch; predictions come back in the
    coordinates of each original image.

    ``optimize`` applies the fp32-exact speed-ups of ``instseg_d2.modeling.optimize`` (frozen BN
    folded into convolutions, channels-last, fast CPU RoIAlign; outputs equal up to float
    rounding, see BENCHMARKS.md). They are CPU speed-ups: the default ``None`` applies them on
    CPU only, because on a GPU (an H200, batch 1) they made inference slower, not faster.
    ``bf16`` runs the network under bf16 autocast (fp16 on CUDA) with fp32 outputs and
    post-processing (CPU: about 2x faster; small AP change, see BENCHMARKS.md).
    """

    def __init__(self, cfg: CfgNode, *, optimize: bool | None = None, bf16: bool = False):
        self.cfg = cfg.clone()  # build_model may modify it
        self.model = build_model(self.cfg)
        self.model.eval()
        self.metadata = (
            MetadataCatalog.get(cfg.DATASETS.TEST[0]) if len(cfg.DATASETS.TEST) else None
        )
        DetectionCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        if optimize is None:
            optimize = self.model.device.type == "cpu"
        if optimize:
            # After loading: folding rewrites the convolution weights.
            optimize_for_inference(self.model)
        self.bf16 = bf16
        if bf16:
            prepare_for_autocast_inference(self.model)
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

    def __call__(self, original_images: Sequence[np.ndarray]) -> list[dict]:
        """Predict a batch.

        Args:
            original_images: images of shape (H, W, 3) in BGR order, as ``cv2.imread`` gives.

        Returns:
            one dict per image (``{"instances": Instances}`` for Mask R-CNN), in input order,
            with tensors moved to the CPU.
        """
        if len(original_images) == 0:
            return []
        inputs = [self._to_model_input(img) for img in original_images]
        with torch.inference_mode():
            outputs = rcnn_inference(self.model, inputs, autocast=self.bf16)
        return [{k: _to_cpu(v) for k, v in out.items()} for out in outputs]

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
