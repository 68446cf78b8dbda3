"""INSTSEG.SHAPE_GROUPING: training batches of images that pad to one shape."""

from __future__ import annotations

import random

import pytest
import torch
from detectron2.data.common import AspectRatioGroupedDataset

from instseg_d2.config import load_config
from instseg_d2.data.shape_grouping import (
    PaddedShapeGroupedDataset,
    group_by_padded_shape,
    padded_shape,
)
from instseg_d2.engine.trainer import Trainer
from instseg_d2.utils.errors import ConfigError

CPU_RECIPE = "configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml"


def _stream(n: int, seed: int = 0) -> list[dict]:
    """Mapped dicts with images of a few heights and many widths, landscape and portrait."""
    rng = random.Random(seed)
    dicts = []
    for i in range(n):
        height, width = rng.choice([288, 320, 352]), rng.randint(200, 600)
        dicts.append({"id": i, "image": torch.zeros(3, height, width), "height": height,
                      "width": width})  # fmt: skip
    return dicts


def _padded_pixels(batches: list[list[dict]]) -> int:
    total = 0
    for batch in batches:
        height = max(d["image"].shape[1] for d in batch)
        width = max(d["image"].shape[2] for d in batch)
        total += (
            len(batch) * padded_shape(height, width, 32)[0] * padded_shape(height, width, 32)[1]
        )
    return total


def test_every_batch_has_one_padded_shape_and_images_are_not_repeated():
    stream = _stream(400)
    batches = list(PaddedShapeGroupedDataset(stream, batch_size=4, bin=32))
    assert batches and all(len(b) == 4 for b in batches)
    for batch in batches:
        shapes = {padded_shape(*d["image"].shape[1:], 32) for d in batch}
        assert len(shapes) == 1
        ids = [d["id"] for d in batch]
        assert ids == sorted(ids)  # each bucket keeps the stream's order
    ids = [d["id"] for b in batches for d in b]
    assert len(ids) == len(set(ids))
    # At most batch_size - 1 images wait in each shape's bucket when the stream ends.
    shapes = {padded_shape(*d["image"].shape[1:], 32) for d in stream}
    assert len(stream) - len(ids) <= 3 * len(shapes)


def test_less_padding_than_detectron2s_aspect_ratio_grouping():
    stream = _stream(400)
    ours = list(PaddedShapeGroupedDataset(stream, batch_size=4, bin=32))
    detectron2 = list(AspectRatioGroupedDataset(stream, batch_size=4))
    real = sum(d["image"].shape[1] * d["image"].shape[2] for b in ours for d in b)
    per_image_ours = _padded_pixels(ours) / sum(len(b) for b in ours)
    per_image_d2 = _padded_pixels(detectron2) / sum(len(b) for b in detectron2)
    assert per_image_ours < 0.9 * per_image_d2
    # Only the rounding up to 32 pixels is left.
    assert _padded_pixels(ours) < 1.15 * real


def test_bad_bin_and_ungrouped_loader_are_config_errors():
    with pytest.raises(ConfigError, match="INSTSEG.SHAPE_GROUPING.BIN must be > 0"):
        PaddedShapeGroupedDataset([], batch_size=2, bin=0)
    with pytest.raises(ConfigError, match="DATALOADER.ASPECT_RATIO_GROUPING True"):
        group_by_padded_shape([[{}]], 32)


def test_trainer_loader_batches_real_images_of_one_padded_shape(pennfudan_data):
    cfg = load_config(CPU_RECIPE, ["INSTSEG.SHAPE_GROUPING.ENABLED", "True",
                                   "DATALOADER.NUM_WORKERS", "0", "SEED", "0"])  # fmt: skip
    loader = Trainer.build_train_loader(cfg)
    assert isinstance(loader, PaddedShapeGroupedDataset)
    for batch, _ in zip(loader, range(3), strict=False):
        assert len(batch) == cfg.SOLVER.IMS_PER_BATCH
        assert len({padded_shape(*d["image"].shape[1:], 32) for d in batch}) == 1
