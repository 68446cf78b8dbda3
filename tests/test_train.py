"""tools/train_net.py end to end on real PennFudan images (tiny CPU runs), and its error paths."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import instseg_d2.data  # noqa: F401  (registers the datasets)
from instseg_d2.checkpoint import WeightsUnavailableError, resolve_weights
from instseg_d2.config import load_config
from instseg_d2.engine.metrics_file import iter_metrics

TRAIN_LOSSES = ("total_loss", "loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls",
                "loss_rpn_loc", "lr")  # fmt: skip
COCO_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def records(output_dir: Path) -> list[dict]:
    return list(iter_metrics(str(output_dir / "metrics.json")))


def test_tiny_run_logs_losses_validation_loss_and_ap(tiny_training_run):
    rows = records(tiny_training_run)
    train_rows = [r for r in rows if "total_loss" in r]
    assert [r["iteration"] for r in train_rows] == [0, 1, 2, 3]
    for r in train_rows:
        assert all(math.isfinite(r[k]) for k in TRAIN_LOSSES), r
    eval_rows = [r for r in rows if "segm/AP" in r]
    # EVAL_PERIOD 2 of MAX_ITER 4: after iteration index 1 and at the end.
    assert len(eval_rows) == 2
    for r in eval_rows:
        assert r["validation_loss"] > 0
        assert r["validation_loss"] == pytest.approx(
            sum(v for k, v in r.items() if k.startswith("validation_loss_"))
        )
        for task in ("bbox", "segm"):
            assert all(f"{task}/{c}" in r for c in COCO_COLUMNS)
            assert 0.0 <= r[f"{task}/AP"] <= 100.0
    # One history: iterations never go back.
    iterations = [r["iteration"] for r in rows]
    assert iterations == sorted(iterations)
    assert list((tiny_training_run).glob("events.out.tfevents.*")), "no TensorBoard events"


def test_tiny_run_writes_loadable_checkpoints_and_final_table(tiny_training_run):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    cfg = load_config(str(tiny_training_run / "config.yaml"))
    model = build_model(cfg)
    for name in ("model_final.pth", "model_best.pth"):
        data = torch.load(tiny_training_run / name, map_location="cpu", weights_only=True)
        assert "model" in data and "iteration" in data
        DetectionCheckpointer(model).load(str(tiny_training_run / name))
        loaded = model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in data["model"].items())
    assert (tiny_training_run / "last_checkpoint").read_text().endswith(".pth")

    final = json.loads((tiny_training_run / "final_metrics.json").read_text())
    last_eval = [r for r in records(tiny_training_run) if "segm/AP" in r][-1]
    for task in ("bbox", "segm"):
        assert set(final[task]) == set(COCO_COLUMNS)
        assert final[task]["AP"] == pytest.approx(last_eval[f"{task}/AP"])
    markdown = (tiny_training_run / "final_metrics.md").read_text()
    assert "| pennfudan_val_mini | segm" in markdown and "AP75" in markdown


def test_eval_only_reproduces_the_final_evaluation(
    tiny_training_run, train_net_command, repo_root, tmp_path
):
    weights = tiny_training_run / "model_final.pth"
    cmd = train_net_command(tmp_path, "MODEL.WEIGHTS", str(weights), flags=("--eval-only",))
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = json.loads((tiny_training_run / "final_metrics.json").read_text())
    evaluated = json.loads((tmp_path / "final_metrics.json").read_text())
    for task in ("bbox", "segm"):
        for column in COCO_COLUMNS:
            a, b = trained[task][column], evaluated[task][column]
            assert (a is None and b is None) or a == pytest.approx(b, abs=1e-6), (task, column)
    assert "| segm" in proc.stdout


@pytest.mark.slow  # ~30 s on 2 idle cores: two training processes
def test_two_cpu_processes_with_gloo_write_one_history(train_net_command, repo_root, tmp_path):
    # SOLVER.REFERENCE_WORLD_SIZE 1 (our configs): with 2 workers Detectron2 doubles the batch
    # and halves MAX_ITER (4 -> 2) and STEPS (2 -> 1), as on 2 GPUs.
    cmd = train_net_command(
        tmp_path, "SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "(2,)", "TEST.EVAL_PERIOD", "0",
        flags=("--num-gpus", "2", "--dist-url", "auto"),
    )  # fmt: skip
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("**/metrics.json")) == ["metrics.json"]
    rows = records(tmp_path)
    assert [r["iteration"] for r in rows if "total_loss" in r] == [0, 1]
    assert any("segm/AP" in r and "validation_loss" in r for r in rows)
    # Both ranks ran (Detectron2's default_setup logs each rank, rank 1 into log.txt.rank1).
    assert "Rank of current process: 0. World size: 2" in (tmp_path / "log.txt").read_text()
    assert "Rank of current process: 1. World size: 2" in (tmp_path / "log.txt.rank1").read_text()


def test_unreachable_model_zoo_weights_stop_with_ways_out(tmp_path):
    # A name that does not exist: fails online (404) and offline (no DNS) alike.
    url = "detectron2://COCO-InstanceSegmentation/no_such_model/0/model_final_000000.pkl"
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights(url)
    message = str(info.value)
    assert url in message and "MODEL.WEIGHTS" in message and "_cpu.yaml" in message
    # A local file that is not there is reported as such.
    with pytest.raises((WeightsUnavailableError, FileNotFoundError, OSError)):
        resolve_weights(str(tmp_path / "missing.pth"))


def test_train_net_reports_missing_weights_before_building_anything(
    train_net_command, repo_root, tmp_path
):
    url = "detectron2://COCO-InstanceSegmentation/no_such_model/0/model_final_000000.pkl"
    proc = subprocess.run(
        train_net_command(tmp_path, "MODEL.WEIGHTS", url),
        cwd=repo_root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert f"cannot download MODEL.WEIGHTS {url}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "metrics.json").exists()


def test_missing_config_file_is_a_clear_error(repo_root, tmp_path):
    script = repo_root / "tools" / "train_net.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--config-file", str(tmp_path / "nope.yaml")],
        cwd=repo_root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "config file not found" in proc.stderr and "nope.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_dataset_folder_is_a_clear_error(train_net_command, repo_root, tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "no_datasets_here"))
    for validate in ("True", "False"):
        proc = subprocess.run(
            train_net_command(tmp_path / validate, "INSTSEG.VALIDATE_DATA", validate),
            cwd=repo_root, capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert proc.returncode != 0
        assert f"{tmp_path}/no_datasets_here/PennFudanPed" in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr


def test_dataset_validation_stops_training_with_the_bad_file(pennfudan_data, tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from instseg_d2.config import get_instseg_cfg
    from instseg_d2.engine.trainer import DatasetValidationError, validate_datasets

    good = DatasetCatalog.get("pennfudan_val_mini")[0]
    bad = dict(good, file_name=str(tmp_path / "vanished.png"), image_id="vanished")
    DatasetCatalog.register("test_train_broken_set", lambda: [good, bad])
    MetadataCatalog.get("test_train_broken_set").set(thing_classes=["pedestrian"])
    cfg = get_instseg_cfg()
    cfg.DATASETS.TRAIN = ("pennfudan_val_mini",)
    cfg.DATASETS.TEST = ("test_train_broken_set",)
    try:
        with pytest.raises(DatasetValidationError, match="vanished.png"):
            validate_datasets(cfg)
        cfg.DATASETS.TEST = ()
        validate_datasets(cfg)  # the good set alone passes
    finally:
        DatasetCatalog.remove("test_train_broken_set")
        MetadataCatalog.remove("test_train_broken_set")


@pytest.mark.slow  # ~30 s on 2 idle cores: one more tiny training run
def test_early_stopping_ends_the_run_and_still_writes_the_final_results(
    train_net_command, repo_root, tmp_path
):
    # A metric that deterministically stops improving: during warm-up the LR only grows, so with
    # mode "min" the evaluation after iteration index 3 is worse than the one after index 1.
    proc = subprocess.run(
        train_net_command(
            tmp_path, "SOLVER.MAX_ITER", "8", "SOLVER.STEPS", "(7,)", "SOLVER.WARMUP_ITERS", "8",
            "TEST.EVAL_PERIOD", "2", "SOLVER.CHECKPOINT_PERIOD", "100",
            "INSTSEG.BEST_METRIC", "lr", "INSTSEG.BEST_METRIC_MODE", "min",
            "INSTSEG.EARLY_STOP_PATIENCE", "1",
        ),
        cwd=repo_root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "early stopping at iteration 3" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert [r["iteration"] for r in records(tmp_path) if "total_loss" in r] == [0, 1, 2, 3]
    final = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == 3
    best = torch.load(tmp_path / "model_best.pth", map_location="cpu", weights_only=True)
    assert best["iteration"] == 1  # the lowest LR was at the first evaluation
    assert json.loads((tmp_path / "final_metrics.json").read_text())["iteration"] == 3
