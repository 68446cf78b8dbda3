"""tools/analyze_errors.py, its files and pictures, the report's sections, and the analysis
written at the end of a training run."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from analysis_fixtures import make_dicts, register, unregister
from test_report import CHROMIUM, _external_references
from viz_tiny_model import FAST_TEST_OPTS, TINY_CONFIG

from instseg_d2.evaluation.segm_eval import ground_truth_as_predictions, load_ground_truth
from instseg_d2.visualization.candidate_panels import HIGHLIGHT_RGB
from instseg_d2.visualization.report import write_report

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_tool():
    spec = importlib.util.spec_from_file_location(
        "analyze_errors", REPO_ROOT / "tools/analyze_errors.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.fixture(scope="module")
def synthetic_analysis(tmp_path_factory):
    """The tool run with --predictions on a synthetic set whose image 10 lacks an annotation
    (the predictions are the full ground truth): its output folder and the removed box."""
    root = tmp_path_factory.mktemp("synthetic")
    dicts = make_dicts(root / "images")
    full = register(dicts)
    predictions = ground_truth_as_predictions(load_ground_truth(full))
    edited = copy.deepcopy(dicts)
    removed = edited[0]["annotations"].pop(2)
    name = register(edited)
    (root / "predictions.json").write_text(json.dumps(predictions))
    (root / "config.yaml").write_text(TINY_CONFIG)
    output = root / "run" / "analysis" / name
    status = load_tool().main([
        "--config-file", str(root / "config.yaml"), "--dataset", name,
        "--predictions", str(root / "predictions.json"), "--output", str(output),
    ])  # fmt: skip
    assert status == 0
    yield output, removed
    unregister(full)
    unregister(name)


def test_tool_writes_every_file(synthetic_analysis):
    output, removed = synthetic_analysis
    for name in ("error_analysis.json", "annotation_candidates.json", "annotation_candidates.md",
                 "pr_curves.json", "pr_curves.png", "confusion_matrix.json",
                 "confusion_matrix.png"):  # fmt: skip
        assert (output / name).stat().st_size > 0, name
    analysis = json.loads((output / "error_analysis.json").read_text())
    assert analysis["images"][0]["image_id"] == 10  # the image with the unlabelled object
    assert analysis["totals"]["errors"]["background"] == 1
    candidates = json.loads((output / "annotation_candidates.json").read_text())["candidates"]
    assert candidates[0]["kind"] == "unlabelled_object"
    assert candidates[0]["box_xywh"] == removed["bbox"]
    assert candidates[0]["picture"] == "candidates/001_img0_unlabelled_object.jpg"
    listing = (output / "annotation_candidates.md").read_text()
    assert "| 1 | unlabelled_object | 1.00 | img0.png | 10 | - |" in listing
    matrix = json.loads((output / "confusion_matrix.json").read_text())["matrix"]
    assert matrix[2] == [1, 0, 0]  # the cat without annotation: a prediction in the background row


def test_candidate_picture_highlights_the_candidate(synthetic_analysis):
    output, removed = synthetic_analysis
    picture = cv2.imread(str(output / "candidates/001_img0_unlabelled_object.jpg"))[:, :, ::-1]
    width = picture.shape[1] // 3  # image | predictions | ground truth, same width each
    header = picture.shape[0] - width
    magenta = np.all(np.abs(picture.astype(int) - HIGHLIGHT_RGB) < 60, axis=2)
    x, y, w, h = (int(v) for v in removed["bbox"])
    for column in range(3):
        box_rows = magenta[header:, column * width : (column + 1) * width]
        ys, xs = np.nonzero(box_rows)
        assert len(xs), f"no highlight in column {column}"
        # the box sits just outside the object (a few pixels of margin)
        assert abs(xs.min() - x) <= 6 and abs(xs.max() - (x + w)) <= 6
        assert abs(ys.max() - (y + h)) <= 6


def test_tool_reports_bad_predictions(synthetic_analysis, tmp_path, capsys):
    output, _ = synthetic_analysis
    bad = tmp_path / "bad.json"
    bad.write_text('[{"image_id": 5, "category_id": 1, "score": 1, "segmentation": {}}]')
    tool = load_tool()
    status = tool.run_tool(tool.main, [
        "--config-file", str(output.parents[2] / "config.yaml"), "--dataset", output.name,
        "--predictions", str(bad), "--output", str(tmp_path / "out"),
    ])  # fmt: skip
    assert status == 1
    assert capsys.readouterr().err.startswith(f"error: {bad}: result 0 is for image id 5")


@pytest.fixture(scope="module")
def report_with_analysis(synthetic_analysis) -> Path:
    output, _ = synthetic_analysis
    return write_report(output.parents[1], num_samples=0)


def test_report_has_the_analysis_sections_worst_first(report_with_analysis, synthetic_analysis):
    page = report_with_analysis.read_text(encoding="utf-8")
    key = synthetic_analysis[0].name.replace("_", "-")
    for section in ("annotation-candidates", "costly-images", "error-types", "pr-curves",
                    "confusion-matrix"):  # fmt: skip
        assert f'<section id="{section}-{key}">' in page
    assert _external_references(page) == []
    assert "#1 unlabelled_object, score 1.00: img0.png (image id 10" in page
    rows = re.search(rf'<table id="costly-images-{key}">(.*?)</table>', page, re.S).group(1)
    assert re.findall(r"<tr><td>(\d+)</td><td>([^<]+)</td>", rows)[0] == ("1", "img0.png")
    types = re.search(rf'<table id="error-types-{key}">(.*?)</table>', page, re.S).group(1)
    assert re.findall(r"<tr><td>([a-z_]+)</td>", types)[0] == "background"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_with_analysis_renders_in_chromium(report_with_analysis, tmp_path):
    page = report_with_analysis.read_text(encoding="utf-8")
    num_images = len(re.findall(r"<img ", page))
    assert num_images >= 3  # a candidate picture, the PR curves, the confusion matrix
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         report_with_analysis.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f'data-images-loaded="{num_images}/{num_images}"' in proc.stdout
    assert "Possible annotation errors" in proc.stdout


def test_report_without_analysis_says_how_to_get_one(tmp_path):
    page = write_report(tmp_path, num_samples=0).read_text(encoding="utf-8")
    assert '<section id="error-analysis">' in page and "tools/analyze_errors.py" in page


def test_training_run_writes_the_analysis(tiny_training_run):
    """The end of tools/train_net.py analyses the final evaluation's predictions."""
    folder = tiny_training_run / "analysis" / "pennfudan_val_mini"
    analysis = json.loads((folder / "error_analysis.json").read_text())
    final = json.loads((tiny_training_run / "final_metrics.json").read_text())
    assert analysis["predictions"].endswith(
        "inference/pennfudan_val_mini/coco_instances_results.json"
    )
    assert analysis["totals"]["AP"] == pytest.approx(final["segm"]["AP"], abs=1e-6)
    assert len(analysis["images"]) == 5
    candidates = json.loads((folder / "annotation_candidates.json").read_text())["candidates"]
    assert all((folder / c["picture"]).is_file() for c in candidates if c.get("picture"))


@pytest.mark.slow
def test_tool_runs_the_model(tiny_training_run, tmp_path):
    """Without --predictions the tool runs the run's model and keeps its predictions."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_training_run / "config.yaml", run / "config.yaml")
    (run / "model_final.pth").symlink_to(tiny_training_run / "model_final.pth")
    output = tmp_path / "analysis"
    status = load_tool().main([
        "--config-file", str(run / "config.yaml"), "--dataset", "pennfudan_val_mini",
        "--output", str(output), "--num-pictures", "2", *FAST_TEST_OPTS,
    ])  # fmt: skip
    assert status == 0
    predictions = json.loads((output / "predictions.json").read_text())
    image_ids = {d["image_id"] for d in predictions}
    assert image_ids <= {r["image_id"] for r in json.loads(
        (output / "error_analysis.json").read_text())["images"]}  # fmt: skip
    assert len(list((output / "candidates").iterdir())) <= 2
