"""tools/compare_runs.py: runs paired by fold or seed, the interval of the difference, the
verdict; a run compared with itself shows no difference, a clear shift is named."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from coco_fixtures import write_coco

from instseg_d2.evaluation.comparison import (
    ComparisonError,
    compare_run_sets,
    load_run_set,
    verdict,
)
from instseg_d2.evaluation.intervals import t_interval

REPO_ROOT = Path(__file__).resolve().parents[1]
TASKS, METRICS = ("bbox", "segm"), ("AP", "AP50", "AP75")


def load_tool():
    spec = importlib.util.spec_from_file_location(
        "compare_runs", REPO_ROOT / "tools/compare_runs.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def write_run(folder: Path, test_set: str, segm_ap: float, offset: float = 0.0) -> Path:
    """A run folder's final_metrics.json as tools/train_net.py writes it."""
    tasks = {t: {m: segm_ap + offset + i for i, m in enumerate(METRICS)} for t in TASKS}
    folder.mkdir(parents=True, exist_ok=True)
    document = {"datasets": {test_set: tasks}, **tasks, "seed": 0, "iteration": 9}
    (folder / "final_metrics.json").write_text(json.dumps(document))
    return folder


def write_cv(folder: Path, values: list[float], shift: float = 0.0) -> Path:
    """A cross-validation output: cv_summary.json and its fold folders."""
    folds = []
    for i, value in enumerate(values):
        name, test = f"r0_fold{i}", f"pool_cv{len(values)}s0_fold{i}_val"
        run = write_run(folder / name, test, value, shift)
        metrics = json.loads((run / "final_metrics.json").read_text())["datasets"][test]
        folds.append({"name": name, "repeat": 0, "fold": i, "test": test, "metrics": metrics})
    summary = {"num_folds": len(values), "repeats": 1, "folds": folds, "summary": {}}
    (folder / "cv_summary.json").write_text(json.dumps(summary))
    return folder


def test_verdict_words():
    assert verdict([1.23, 4.5]) == "B is better by 1.2 to 4.5 AP"
    assert verdict([-4.5, -1.25]) == "A is better by 1.2 to 4.5 AP"
    assert verdict([-1.0, 2.0]).startswith("no difference this data can resolve")
    assert verdict(None).startswith("cannot tell")


def test_cross_validation_compared_with_itself_shows_no_difference(tmp_path):
    a = load_run_set(write_cv(tmp_path / "a", [30.1, 27.4, 33.0, 29.2, 31.7]))
    result = compare_run_sets(a, a)
    assert result["paired_by"] == [f"r0_fold{i}" for i in range(5)]
    for row in result["metrics"].values():
        assert row["mean_difference"] == 0 and row["ci95"] == [0.0, 0.0]
        assert row["verdict"].startswith("no difference")


def test_a_clear_shift_is_named_with_the_corrected_interval(tmp_path):
    values = [30.1, 27.4, 33.0, 29.2, 31.7]
    noise = [0.4, -0.3, 0.2, -0.5, 0.1]
    a = write_cv(tmp_path / "a", values)
    b = write_cv(tmp_path / "b", [v + n for v, n in zip(values, noise, strict=True)], shift=3.0)
    row = compare_run_sets(load_run_set(a), load_run_set(b))["metrics"]["segm/AP"]
    differences = [3.0 + n for n in noise]
    plain = t_interval(differences)
    assert row["mean_difference"] == pytest.approx(np.mean(differences))
    assert row["ci95"] == pytest.approx([plain.low, plain.high])
    # Folds share training images: the verdict uses Nadeau and Bengio's wider interval.
    corrected = t_interval(differences, test_train_ratio=1 / 4)
    assert row["ci95_corrected"] == pytest.approx([corrected.low, corrected.high])
    assert corrected.high - corrected.low > plain.high - plain.low
    assert row["basis"] == "corrected t-interval over folds"
    assert row["verdict"] == f"B is better by {corrected.low:.1f} to {corrected.high:.1f} AP"
    reverse = compare_run_sets(load_run_set(b), load_run_set(a))["metrics"]["segm/AP"]
    assert reverse["verdict"].startswith("A is better by")


def test_seed_folders_are_paired_by_name_and_noisy_pairs_are_not_resolved(tmp_path):
    for seed, (va, vb) in enumerate([(30.0, 31.0), (28.0, 27.5), (33.0, 33.4)]):
        write_run(tmp_path / "a" / f"seed{seed}", "val", va)
        write_run(tmp_path / "b" / f"seed{seed}", "val", vb)
    write_run(tmp_path / "b" / "seed9", "val", 50.0)  # no partner in A
    result = compare_run_sets(load_run_set(tmp_path / "a"), load_run_set(tmp_path / "b"))
    assert result["paired_by"] == ["seed0", "seed1", "seed2"] and result["unpaired"] == ["seed9"]
    row = result["metrics"]["segm/AP"]
    assert [p["difference"] for p in row["pairs"]] == pytest.approx([1.0, -0.5, 0.4])
    assert row["basis"] == "t-interval over pairs" and "ci95_corrected" not in row
    assert row["verdict"].startswith("no difference this data can resolve")


def test_one_pair_of_runs_gets_a_paired_bootstrap_over_the_test_images(tmp_path):
    def run_with_predictions(folder: Path, quality: float) -> Path:
        write_run(folder, "synthetic_val", 0.0)
        inference = folder / "inference" / "synthetic_val"
        gt, _ = write_coco(inference, 80, seed=6, quality=quality)
        # COCOEvaluator's cached conversion of an unregistered (e.g. pooled) test set.
        gt.rename(inference / "synthetic_val_coco_format.json")
        return folder

    a = load_run_set(run_with_predictions(tmp_path / "a", 0.0))
    same = compare_run_sets(a, a, bootstrap_samples=200)["metrics"]["segm/AP"]
    assert same["basis"] == "paired bootstrap over test images"
    assert same["ci95_bootstrap"] == (0.0, 0.0) and same["verdict"].startswith("no difference")
    b = load_run_set(run_with_predictions(tmp_path / "b", 0.6))
    better = compare_run_sets(a, b, bootstrap_samples=200)["metrics"]["segm/AP50"]
    assert better["verdict"].startswith("B is better by")


def test_runs_that_cannot_be_paired_are_clear_errors(tmp_path):
    a = load_run_set(write_cv(tmp_path / "a", [1.0, 2.0]))
    write_run(tmp_path / "other" / "r0_fold0", "another_val", 1.0)
    write_run(tmp_path / "other" / "r0_fold1", "another_val", 1.0)
    with pytest.raises(ComparisonError, match="r0_fold0: tested on pool_cv2s0_fold0_val in"):
        compare_run_sets(a, load_run_set(tmp_path / "other"))
    with pytest.raises(ComparisonError, match="cannot pair one run"):
        compare_run_sets(a, load_run_set(write_run(tmp_path / "single", "val", 1.0)))
    write_run(tmp_path / "seeds" / "seed1", "val", 1.0)
    with pytest.raises(ComparisonError, match="no run of .* pairs with one of"):
        compare_run_sets(a, load_run_set(tmp_path / "seeds"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ComparisonError, match="neither a cross-validation output"):
        load_run_set(tmp_path / "empty")


def test_tool_prints_the_verdict_and_writes_json_and_markdown(tmp_path, capsys):
    a = write_cv(tmp_path / "a", [30.0, 31.0, 29.5])
    b = shutil.copytree(a, tmp_path / "b")
    assert load_tool().main([str(a), str(b), "--output", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "segm/AP: no difference this data can resolve" in printed
    document = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert document["metrics"]["bbox/AP"]["mean_difference"] == 0
    assert "| segm/AP " in (tmp_path / "out" / "comparison.md").read_text()
