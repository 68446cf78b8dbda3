"""Comparison panels (image | predictions | ground truth) for the images of a registered split."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from detectron2.data import MetadataCatalog

from ..data.image_io import BadImageError, read_image
from ..engine.predictor import BatchPredictor
from .matching import MatchResult
from .panels import comparison_panel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComparedImage:
    """One image's panel (RGB) and its matching counts."""

    dataset_dict: dict
    panel: np.ndarray
    match: MatchResult


def compare_split(
    predictor: BatchPredictor,
    dataset_name: str,
    dataset_dicts: list[dict],
    batch_size: int = 1,
    iou_threshold: float = 0.5,
) -> Iterator[ComparedImage]:
    """Predict ``dataset_dicts`` in batches and yield a ``ComparedImage`` per readable image.

    An image that cannot be read is logged and skipped.
    """
    metadata = MetadataCatalog.get(dataset_name)
    readable: list[dict] = []

    def images() -> Iterator[np.ndarray]:
        for d in dataset_dicts:
            try:
                image = read_image(d["file_name"], format="BGR")
            except BadImageError as exc:
                logger.warning("skipped: %s", exc)
                continue
            readable.append(d)
            yield image

    for i, (image_bgr, prediction) in enumerate(predictor.predict_batches(images(), batch_size)):
        d = readable[i]
        panel, match = comparison_panel(
            np.ascontiguousarray(image_bgr[:, :, ::-1]),
            prediction["instances"],
            d,
            metadata,
            iou_threshold,
            name=Path(d["file_name"]).name,
        )
        yield ComparedImage(d, panel, match)
