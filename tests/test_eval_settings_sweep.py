"""benchmarks/eval_settings_sweep.py: trained runs evaluated under other test-time settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from viz_tiny_model import FAST_TEST_OPTS, run_dir

from benchmarks.eval_settings_sweep import AS_TRAINED, evaluate_run, main, markdown, sweep
from instseg_d2.utils.errors import UserError


@pytest.fixture(scope="module")
def tiny_run(request, tmp_path_factory) -> Path:
    return run_dir(request, tmp_path_factory)


def test_settings_are_applied_and_the_runs_files_stay(tiny_run, pennfudan_data):
    before = {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*") if p.is_file()}
    one_detection = [*FAST_TEST_OPTS, "TEST.DETECTIONS_PER_IMAGE", "1"]
    results = sweep([tiny_run], [FAST_TEST_OPTS, one_detection])
    assert list(results) == [AS_TRAINED, " ".join(FAST_TEST_OPTS), " ".join(one_detection)]
    label = tiny_run.name
    fast, single = results[" ".join(FAST_TEST_OPTS)][label], results[" ".join(one_detection)][label]
    assert set(fast) == {"bbox AP", "bbox AP75", "segm AP", "segm AP75"}
    # Each setting is a fresh evaluation of the same model: the same settings score the same.
    assert evaluate_run(tiny_run, FAST_TEST_OPTS) == fast
    # One detection per image finds at most what four find (the top one is among the four).
    assert single["bbox AP"] <= fast["bbox AP"] + 1e-9
    assert {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*") if p.is_file()} == before

    table = markdown({AS_TRAINED: {"a": fast, "b": fast}, "X 1": {"a": single, "b": fast}})
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[1].startswith(f"| {AS_TRAINED} |") and rows[2].startswith("| X 1 |")
    half = (single["bbox AP"] - fast["bbox AP"]) / 2
    assert f"{half:+.2f} (" in rows[2]  # mean paired difference of the two runs, with interval


def test_bad_settings_and_runs_are_clear_errors(tiny_run, tmp_path):
    with pytest.raises(UserError, match="KEY VALUE pairs"):
        main([str(tiny_run), "--setting", "TEST.DETECTIONS_PER_IMAGE"])
    with pytest.raises(UserError, match="MODEL.ROI_HEADS.NMS_THRES"):
        evaluate_run(tiny_run, ["MODEL.ROI_HEADS.NMS_THRES", "0.4"])
    (tmp_path / "config.yaml").write_text("")
    with pytest.raises(UserError, match="no model_final.pth"):
        evaluate_run(tmp_path, [])
