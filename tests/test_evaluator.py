"""The evaluation path: ground truth fed back as predictions must score AP 100 (bbox and segm).

If the dataset dicts, the COCO conversion, the mask encoding or COCOEvaluator's wiring were
broken (e.g. boxes in the wrong mode, masks transposed, category ids shifted), this would drop.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils as utils
from detectron2.structures import Boxes, BoxMode, Instances

import instseg_d2.data  # noqa: F401  (registers the datasets)
from instseg_d2.config import get_instseg_cfg
from instseg_d2.engine.trainer import Trainer


def gt_as_predictions(record: dict, shift: int = 0) -> dict:
    """The image's annotations as a model output with score 1.0 (boxes shifted by ``shift``)."""
    h, w = record["height"], record["width"]
    anns = record["annotations"]
    boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns])
    masks = utils.annotations_to_instances(anns, (h, w), mask_format="bitmask").gt_masks.tensor
    instances = Instances((h, w))
    instances.pred_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32) + shift)
    instances.scores = torch.ones(len(anns))
    instances.pred_classes = torch.as_tensor([a["category_id"] for a in anns])
    instances.pred_masks = torch.roll(masks, shifts=shift, dims=2) if shift else masks
    return {"instances": instances}


def evaluate(dataset: str, tmp_path, shift: int = 0) -> dict:
    cfg = get_instseg_cfg()
    cfg.MODEL.MASK_ON = True  # evaluate segm as well as bbox
    cfg.OUTPUT_DIR = str(tmp_path)
    evaluator = Trainer.build_evaluator(cfg, dataset)
    evaluator.reset()
    for record in DatasetCatalog.get(dataset):
        evaluator.process([record], [gt_as_predictions(record, shift)])
    return evaluator.evaluate()


@pytest.mark.parametrize("dataset", ["pennfudan_val_mini", "balloon_val_mini"])
def test_ground_truth_as_predictions_scores_ap_100(dataset, shared_data, tmp_path):
    results = evaluate(dataset, tmp_path)
    for task in ("bbox", "segm"):
        assert results[task]["AP"] == pytest.approx(100.0), (task, results[task])
        assert results[task]["AP50"] == pytest.approx(100.0)
        assert results[task]["AP75"] == pytest.approx(100.0)


def test_shifted_predictions_score_lower(shared_data, tmp_path):
    # Control: the same path does not give 100 to everything.
    results = evaluate("pennfudan_val_mini", tmp_path, shift=15)
    for task in ("bbox", "segm"):
        assert results[task]["AP"] < 90.0, (task, results[task])


def test_evaluator_survives_a_deleted_json_cache(shared_data, tmp_path):
    """COCOEvaluator records its converted json in the global metadata; once that folder is
    gone (a temporary folder, a deleted run) the next evaluator must rebuild it, not crash."""
    import os

    from detectron2.data import MetadataCatalog

    evaluate("balloon_val_mini", tmp_path / "first")
    cached = MetadataCatalog.get("balloon_val_mini").json_file
    os.remove(cached)
    results = evaluate("balloon_val_mini", tmp_path / "second")
    assert results["segm"]["AP"] == pytest.approx(100.0)
    assert os.path.isfile(MetadataCatalog.get("balloon_val_mini").json_file)
    assert MetadataCatalog.get("balloon_val_mini").thing_classes == ["balloon"]
