"""A run's config.yaml alone rebuilds the model that ran (tiny_training_run: a real run).

``Trainer.build_model`` on the run's ``config.yaml`` gives the very module tree the run logged
when it built its model (Detectron2 logs it in log.txt); with ``model_final.pth`` loaded, its COCO
evaluation reproduces the predictions the run wrote at its last evaluation, to float rounding
(box corners within 0.01 px, scores within 1e-4, mask IoU > 0.99).
"""

from __future__ import annotations

import json
from collections import defaultdict

import pycocotools.mask as mask_util
import pytest
import torch

import instseg_d2.data  # noqa: F401  (registers the datasets)
from instseg_d2.config import load_config
from instseg_d2.engine.trainer import Trainer
from instseg_d2.modeling.meta_arch import InstSegRCNN

RESULTS = "inference/pennfudan_val_mini/coco_instances_results.json"


def _by_image(path) -> dict[int, list[dict]]:
    detections = defaultdict(list)
    for d in json.loads(path.read_text()):
        detections[d["image_id"]].append(d)
    return {k: sorted(v, key=lambda d: -d["score"]) for k, v in detections.items()}


@pytest.fixture(scope="module")
def rebuilt(tiny_training_run, tmp_path_factory):
    cfg = load_config(
        str(tiny_training_run / "config.yaml"),
        ["MODEL.WEIGHTS", str(tiny_training_run / "model_final.pth"),
         "OUTPUT_DIR", str(tmp_path_factory.mktemp("rebuilt"))],
    )  # fmt: skip
    model = Trainer.build_model(cfg)
    return cfg, model


def test_config_yaml_builds_the_module_tree_the_run_trained(tiny_training_run, rebuilt):
    _, model = rebuilt
    assert isinstance(model, InstSegRCNN)
    log = (tiny_training_run / "log.txt").read_text()
    assert repr(model) in log  # Detectron2's "Model:" log line of the run, class by class
    # Not in the repr: the memory layout the CPU config's speed-ups chose.
    stem = model.backbone.bottom_up.stem.conv1.weight
    assert stem.is_contiguous(memory_format=torch.channels_last)


def test_config_yaml_and_weights_reproduce_the_run_evaluation(tiny_training_run, rebuilt):
    from detectron2.checkpoint import DetectionCheckpointer

    cfg, model = rebuilt
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    Trainer.test(cfg, model)
    ran = _by_image(tiny_training_run / RESULTS)
    again = _by_image(type(tiny_training_run)(cfg.OUTPUT_DIR) / RESULTS)
    assert ran.keys() == again.keys() and len(ran) == 5
    for image_id, detections in ran.items():
        assert len(again[image_id]) == len(detections) > 0
        for a, b in zip(detections, again[image_id], strict=True):
            assert a["category_id"] == b["category_id"]
            assert b["score"] == pytest.approx(a["score"], abs=1e-4)
            assert b["bbox"] == pytest.approx(a["bbox"], abs=1e-2)
            areas = mask_util.area([a["segmentation"], b["segmentation"]])
            if areas.max() > 0:  # four iterations of training paste empty masks
                iou = mask_util.iou([b["segmentation"]], [a["segmentation"]], [False])[0][0]
                assert iou > 0.99
