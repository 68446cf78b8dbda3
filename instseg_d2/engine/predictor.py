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
    INPUT.MAX_SIZE_TEST)`` and runs the whole list in one forward pass under
    ``torch.inference_mode()``. The model pads the batch itself, so images of different sizes can
    share a batch; predictions come back in the coordinates of each original image.

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
            outputs = self.model(inputs)
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
