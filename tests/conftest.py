"""Shared test set-up: the real datasets in ../shared/data are the DETECTRON2_DATASETS root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("INSTSEG_D2_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Set before any test imports instseg_d2.data, which registers the builtin datasets from it.
os.environ.setdefault("DETECTRON2_DATASETS", str(SHARED_DATA))
# Two cores: keep torch from oversubscribing them when tests run subprocesses.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "PennFudanPed").is_dir() or not (SHARED_DATA / "balloon").is_dir():
        pytest.skip(f"real datasets not found under {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


# --- Training fixtures (training helper) -------------------------------------------------------
# A tiny but real run of tools/train_net.py: the CPU config (R18-FPN, GroupNorm, from scratch) on
# 10 PennFudan training images at 128 px, 4 iterations, evaluated on 5 validation images after
# iterations 2 and 4. SCORE_THRESH_TEST 0 keeps the untrained model's low-score detections so
# that AP is a number (not NaN) and model_best.pth gets written.
CPU_CONFIG = "configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml"
TINY_TRAIN_OPTS = (
    "DATASETS.TRAIN", "('pennfudan_train_mini',)",
    "DATASETS.TEST", "('pennfudan_val_mini',)",
    "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "224",
    "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "224",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "200",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "20",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.005",
    "SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "(3,)", "SOLVER.WARMUP_ITERS", "2",
    "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "2",
    "DATALOADER.NUM_WORKERS", "0", "INSTSEG.LOG_PERIOD", "1", "INSTSEG.REPORT", "False",
)  # fmt: skip


@pytest.fixture(scope="session")
def train_net_command(repo_root, shared_data):
    """``train_net_command(output_dir, *opts, flags=())`` -> argv of a tiny CPU training run:
    ``flags`` such as ``("--resume",)`` go before, ``KEY VALUE`` opts after the tiny settings."""

    import sys

    def command(output_dir, *opts: str, flags: tuple[str, ...] = ()) -> list[str]:
        return [
            sys.executable, str(repo_root / "tools" / "train_net.py"),
            "--config-file", str(repo_root / CPU_CONFIG), *flags,
            *TINY_TRAIN_OPTS, "OUTPUT_DIR", str(output_dir), *opts,
        ]  # fmt: skip

    return command


@pytest.fixture(scope="session")
def tiny_training_run(tmp_path_factory, train_net_command, repo_root) -> Path:
    """OUTPUT_DIR of one tiny training run (metrics.json, model_final.pth, model_best.pth,
    config.yaml, final_metrics.json/.md, TensorBoard events), shared by the whole session."""
    import subprocess

    output_dir = tmp_path_factory.mktemp("tiny_training_run")
    proc = subprocess.run(
        train_net_command(output_dir), cwd=repo_root, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        pytest.fail(f"tiny training run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return output_dir
