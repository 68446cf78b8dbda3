"""A run folder for the visualization tests: config.yaml, model_final.pth and metrics.json.

The tests use the session fixture ``tiny_training_run`` of conftest.py (a real, tiny training
run) when it exists; without it they use ``make_tiny_run``: a small, randomly initialised Mask
R-CNN (ResNet-18 FPN, GroupNorm, 1 class) saved with DetectionCheckpointer and a metrics.json in
Detectron2's format. Either way the tools see the layout a training run leaves.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

# Small everything: tests must stay fast on 2 CPU cores.
TINY_CONFIG = """\
_BASE_: "model_zoo://Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml"
MODEL:
  DEVICE: cpu
  WEIGHTS: ""
  RESNETS:
    DEPTH: 18
    RES2_OUT_CHANNELS: 64
  FPN:
    OUT_CHANNELS: 64
  ROI_BOX_HEAD:
    FC_DIM: 128
  ROI_HEADS:
    NUM_CLASSES: 1
  RPN:
    PRE_NMS_TOPK_TEST: 200
    POST_NMS_TOPK_TEST: 50
INPUT:
  MASK_FORMAT: bitmask
  MIN_SIZE_TEST: 128
  MAX_SIZE_TEST: 192
TEST:
  DETECTIONS_PER_IMAGE: 4
DATASETS:
  TRAIN: ("pennfudan_train_mini",)
  TEST: ("pennfudan_val_mini",)
"""

# Overrides for any run's config so inference in tests stays cheap and always has detections
# (an untrained or barely trained model scores low: threshold 0 keeps its top detections).
FAST_TEST_OPTS = [
    "INPUT.MIN_SIZE_TEST",
    "128",
    "INPUT.MAX_SIZE_TEST",
    "192",
    "TEST.DETECTIONS_PER_IMAGE",
    "4",
    "MODEL.DEVICE",
    "cpu",
    # 1000 proposals through the box head take most of the time of a small model on CPU.
    "MODEL.RPN.PRE_NMS_TOPK_TEST",
    "200",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "50",
]


def metrics_lines() -> list[dict]:
    """Detectron2-style metrics.json lines: losses every 10 its, eval at 20 and 40, a resume."""
    lines = []
    for it in (9, 19, 29, 39):
        lines.append(
            {
                "iteration": it,
                "total_loss": 4.0 - it / 20,
                "loss_cls": 0.7 - it / 100,
                "loss_box_reg": 0.5,
                "loss_mask": 0.69 - it / 200,
                "loss_rpn_cls": 0.6,
                "loss_rpn_loc": 0.2,
                "lr": 0.01,
                "data_time": 0.1,
            }
        )
        if it in (19, 39):
            lines.append(
                {
                    "iteration": it,
                    "validation_loss": 3.5 - it / 40,
                    "bbox/AP": it / 4,
                    "bbox/AP50": it / 2,
                    "bbox/AP75": it / 8,
                    "bbox/APs": math.nan,
                    "segm/AP": it / 5,
                    "segm/AP50": it / 3,
                    "segm/AP75": it / 10,
                    "segm/APs": math.nan,
                }
            )
    # Resumed from the checkpoint at iteration 29: it is written again and the new line wins.
    lines.append({"iteration": 29, "total_loss": 2.25, "loss_cls": 0.4, "lr": 0.01})
    return lines


def write_metrics(path: Path, lines: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")  # NaN is written as NaN, as Detectron2 does
    return path


def make_tiny_run(out_dir: Path) -> Path:
    """Write config.yaml, model_final.pth (random weights, seed 0) and metrics.json."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from instseg_d2.config import load_config

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(TINY_CONFIG, encoding="utf-8")
    cfg = load_config(str(out_dir / "config.yaml"))
    torch.manual_seed(0)
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(out_dir)).save("model_final")
    write_metrics(out_dir / "metrics.json", metrics_lines())
    return out_dir


def run_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared tiny training run if conftest.py has one, else our own tiny run."""
    try:
        return Path(request.getfixturevalue("tiny_training_run"))
    except pytest.FixtureLookupError:
        return make_tiny_run(tmp_path_factory.mktemp("tiny_run"))
