"""Comparison panels (image | predictions | ground truth) for the images of a registered split."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from instseg_d2.data.image_io import BadImageError, read_image
from instseg_d2.engine.predictor import BatchPredictor

from .matching import MatchResult
from .panels import comparison_panel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComparedImage:
    """One image's panel (RGB) and its matching counts."""

    dataset_dict: dict
    panel: np.ndarray
    match: MatchResult


def load_split(dataset_name: str, num_images: int | None = None) -> list[dict]:
    """The first ``num_images`` dicts of a registered split (all if None), with a clear error."""
    if dataset_name not in DatasetCatalog.list():
        raise KeyError(
            f"dataset {dataset_name!r} is not registered (import instseg_d2.data registers "
            f"the builtin ones); registered: {', '.join(sorted(DatasetCatalog.list()))}"
        )
    dicts = DatasetCatalog.get(dataset_name)
    return dicts if num_images is None else dicts[:num_images]


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
