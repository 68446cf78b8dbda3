"""tools/cross_validate.py end to end: a tiny 2-fold cross-validation of real Penn-Fudan images
(2 iterations per fold) whose summary repeats the folds' own results, then an interrupted fold
resumed without retraining the finished one."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from instseg_d2.engine.metrics_file import iter_metrics
from instseg_d2.evaluation.intervals import t_interval

# On top of the tiny training settings: 2 iterations, a checkpoint after each, one evaluation.
FOLD_OPTS = ("SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "1",
             "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "0", "INSTSEG.VAL_LOSS", "False",
             "INSTSEG.BOOTSTRAP.SAMPLES", "200")  # fmt: skip


@pytest.fixture(scope="module")
def cv_command(train_net_command, repo_root, tmp_path_factory):
    """``cv_command(output, *extra_opts)``: the tiny cross-validation's argv."""
    tiny = train_net_command(tmp_path_factory.mktemp("unused"))
    start = tiny.index("--config-file")
    config, opts = tiny[start + 1], tiny[start + 2 : tiny.index("OUTPUT_DIR")]

    def command(output, *extra: str) -> list[str]:
        return [sys.executable, str(repo_root / "tools" / "cross_validate.py"),
                "--config-file", config, "--folds", "2", "--output", str(output),
                *opts, *FOLD_OPTS, *extra]  # fmt: skip

    return command


@pytest.fixture(scope="module")
def cross_validation(cv_command, repo_root, tmp_path_factory):
    output = tmp_path_factory.mktemp("cv")
    proc = subprocess.run(cv_command(output), cwd=repo_root, capture_output=True, text=True,
                          timeout=1200)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return output


@pytest.mark.slow  # two tiny training runs
def test_summary_equals_the_folds_own_final_metrics(cross_validation):
    summary = json.loads((cross_validation / "cv_summary.json").read_text())
    assert [f["name"] for f in summary["folds"]] == ["r0_fold0", "r0_fold1"]
    tests = [f["test"] for f in summary["folds"]]
    # The mini sets have no built-in folds: their 15 images are pooled and split in two.
    assert tests == [f"pennfudan_train_mini+pennfudan_val_mini_cv2s0_fold{i}_val" for i in (0, 1)]
    finals = [json.loads((cross_validation / f / "final_metrics.json").read_text())
              for f in ("r0_fold0", "r0_fold1")]  # fmt: skip
    for fold, final in zip(summary["folds"], finals, strict=True):
        assert fold["metrics"]["segm"] == final["datasets"][fold["test"]]["segm"]
        assert fold["seed"] == final["seed"] == 0
    for task in ("bbox", "segm"):
        for metric in ("AP", "AP50", "AP75"):
            values = [final[task][metric] for final in finals]
            row = summary["summary"][task][metric]
            assert row["values"] == values
            assert row["mean"] == pytest.approx(np.mean(values))
            expected = t_interval(values)
            assert row["ci95"] == pytest.approx([expected.low, expected.high])
    markdown = (cross_validation / "cv_summary.md").read_text()
    assert "| segm   | AP " in markdown and "r0_fold1" in markdown
    assert (cross_validation / "cv_summary.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_a_cross_validation_compared_with_itself_shows_no_difference(cross_validation, repo_root):
    tool = repo_root / "tools" / "compare_runs.py"
    proc = subprocess.run([sys.executable, str(tool), str(cross_validation), str(cross_validation)],
                          cwd=repo_root, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "segm/AP: no difference this data can resolve" in proc.stdout


@pytest.mark.slow  # one more training iteration
def test_rerun_keeps_finished_folds_and_resumes_an_interrupted_one(
    cross_validation, cv_command, repo_root
):
    done = cross_validation / "r0_fold0" / "final_metrics.json"
    done_before = done.stat().st_mtime_ns
    # Fold 1 as if killed after its first checkpoint: no results, no final weights.
    fold = cross_validation / "r0_fold1"
    for name in ("final_metrics.json", "model_final.pth", "model_best.pth"):
        (fold / name).unlink()
    (fold / "last_checkpoint").write_text("model_0000000.pth")
    proc = subprocess.run(cv_command(cross_validation), cwd=repo_root, capture_output=True,
                          text=True, timeout=1200)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "r0_fold0: done" in proc.stdout  # Detectron2's logger writes to stdout
    assert done.stat().st_mtime_ns == done_before  # not retrained
    assert "resume=True" in (fold / "train_net.out").read_text()
    iterations = [r["iteration"] for r in iter_metrics(fold / "metrics.json") if "total_loss" in r]
    assert iterations == [0, 1]  # iteration 1 again, once: resumed from the checkpoint of 0
    assert (fold / "final_metrics.json").is_file()
    # Other settings in the same folder would mix two experiments.
    proc = subprocess.run(cv_command(cross_validation, "SOLVER.BASE_LR", "0.01"), cwd=repo_root,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "holds a cross-validation with other settings (opts differ" in proc.stderr


def test_more_repeats_extend_a_cross_validation_other_changes_are_refused(tmp_path, repo_root):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "cross_validate", repo_root / "tools/cross_validate.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    plan = {"config_file": "c.yaml", "opts": [], "num_folds": 5, "repeats": 1, "seed": 0,
            "config_sha256": "ab"}  # fmt: skip
    tool.check_plan(tmp_path, plan)
    tool.check_plan(tmp_path, plan)  # the same settings: a resumed run
    tool.check_plan(tmp_path, {**plan, "repeats": 3})
    assert json.loads((tmp_path / tool.PLAN_FILE).read_text())["repeats"] == 3
    for changed, other in (
        ("repeats", {"repeats": 2}),
        ("num_folds, seed", {"num_folds": 3, "seed": 1}),
    ):
        with pytest.raises(tool.CrossValidationError, match=f"other settings \\({changed} differ"):
            tool.check_plan(tmp_path, {**plan, "repeats": 3, **other})
    assert json.loads((tmp_path / tool.PLAN_FILE).read_text())["repeats"] == 3
