"""An exported model behind ``BatchPredictor``'s interface, for ``instseg_d2.engine.inference``.

``run_on_images`` / ``run_on_video`` need ``predict_batches(images, batch_size)`` yielding
``(image, {"instances": Instances})``; :class:`ExportedPredictor` gives exactly that from an
export folder, so ``tools/predict_exported.py`` writes the same drawings, ``predictions.json``
and ``image_index.json`` as ``tools/infer.py``. (The artifact itself needs no Detectron2; this
adapter does, for ``Instances`` and the writers.)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from detectron2.data.catalog import Metadata
from detectron2.structures import Boxes, Instances

from .runtime import ExportedModel

__all__ = ["ExportedPredictor", "outputs_to_instances"]


def outputs_to_instances(outputs: dict[str, np.ndarray], image_shape: tuple[int, int]) -> Instances:
    """An exported model's output dict as Detectron2 ``Instances`` (what BatchPredictor gives)."""
    instances = Instances(image_shape)
    instances.pred_boxes = Boxes(torch.from_numpy(np.asarray(outputs["boxes"], np.float32)))
    instances.scores = torch.from_numpy(np.asarray(outputs["scores"], np.float32))
    instances.pred_classes = torch.from_numpy(np.asarray(outputs["classes"], np.int64))
    instances.pred_masks = torch.from_numpy(np.asarray(outputs["masks"]).astype(bool))
    return instances


class ExportedPredictor:
    """Run an export folder's artifact image by image; ``min_score`` drops lower scores."""

    def __init__(
        self,
        export_dir: str | os.PathLike,
        *,
        min_score: float | None = None,
        threads: int | None = None,
    ):
        self.model = ExportedModel(export_dir, threads=threads)
        self.min_score = min_score
        # Class names and dataset category ids from metadata.json: the drawings and the
        # category_id of predictions.json come out as tools/infer.py writes them.
        self.metadata = Metadata(name="exported", thing_classes=self.model.class_names)
        ids = self.model.metadata.get("category_ids")
        if ids:
            self.metadata.thing_dataset_id_to_contiguous_id = {d: i for i, d in enumerate(ids)}

    def __call__(self, images: Iterable[np.ndarray]) -> list[dict]:
        """``[{"instances": Instances}]`` for a list of BGR uint8 images (one at a time)."""
        return [
            {"instances": outputs_to_instances(self.model(image, self.min_score), image.shape[:2])}
            for image in images
        ]

    def predict_batches(
        self, images: Iterable[np.ndarray], batch_size: int = 1
    ) -> Iterator[tuple[np.ndarray, dict]]:
        """Yield ``(image, prediction)``; ``batch_size`` is accepted for the interface, the
        artifact runs one image per call."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for image in images:
            yield image, self([image])[0]
