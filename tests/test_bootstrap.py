"""The bootstrap AP interval: exact on the identity sample, duplicates counted twice, coverage
of the point estimate, narrower with more images, fast enough, paired differences."""

from __future__ import annotations

import contextlib
import io
import json
import time

import numpy as np
import pytest
from coco_fixtures import make_coco, write_coco
from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from instseg_d2.evaluation.bootstrap import (
    BootstrapError,
    bootstrap_ap,
    load_matchings,
    paired_bootstrap_ap,
    resample_counts,
)

METRICS = ("AP", "AP50", "AP75")


def coco_evaluator_ap(gt: dict, predictions: list[dict], task: str) -> dict[str, float]:
    """AP/AP50/AP75 exactly as Detectron2's COCOEvaluator computes them (its own function)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))
        coco_gt.createIndex()
        coco_eval = _evaluate_predictions_on_coco(
            coco_gt, json.loads(json.dumps(predictions)), task, cocoeval_fn=COCOeval
        )
    return {m: float(coco_eval.stats[i] * 100) for i, m in enumerate(METRICS)}


def identity(matching) -> np.ndarray:
    return np.ones((1, len(matching.image_ids)), dtype=np.int64)


@pytest.mark.parametrize("num_images,seed", [(40, 0), (6, 3)])
def test_identity_sample_equals_coco_evaluator_exactly(tmp_path, num_images, seed):
    gt_path, results_path = write_coco(tmp_path, num_images, seed)
    gt, predictions = json.loads(gt_path.read_text()), json.loads(results_path.read_text())
    matchings = load_matchings(gt_path, results_path)
    assert set(matchings) == {"bbox", "segm"}
    for task, matching in matchings.items():
        ours = matching.average_precision(identity(matching))
        reference = coco_evaluator_ap(gt, predictions, task)
        for metric in METRICS:
            assert ours[metric][0] == reference[metric], (task, metric)  # bit for bit


def test_a_resample_equals_coco_eval_of_the_materialised_sample(tmp_path):
    """Counts [2, 0, 1, ...] give the AP of a test set holding image 0 twice and no image 1."""
    gt, predictions = make_coco(12, seed=5)
    gt_path, results_path = tmp_path / "gt.json", tmp_path / "results.json"
    gt_path.write_text(json.dumps(gt))
    results_path.write_text(json.dumps(predictions))
    matchings = load_matchings(gt_path, results_path)
    image_ids = matchings["bbox"].image_ids
    counts = resample_counts(len(image_ids), 3, seed=11)
    assert (counts > 1).any() and (counts == 0).any()
    for row in counts:
        # The same sample written out: every copy of an image becomes a new image.
        images, annotations, results = [], [], []
        for image_id, copies in zip(image_ids, row, strict=True):
            for _copy in range(copies):
                new_id = len(images) + 1
                images.append(
                    {**next(i for i in gt["images"] if i["id"] == image_id), "id": new_id}
                )
                for a in gt["annotations"]:
                    if a["image_id"] == image_id:
                        annotations.append({**a, "image_id": new_id, "id": len(annotations) + 1})
                results += [
                    {**p, "image_id": new_id} for p in predictions if p["image_id"] == image_id
                ]
        sample_gt = {**gt, "images": images, "annotations": annotations}
        for task, matching in matchings.items():
            ours = matching.average_precision(row[None, :])
            reference = coco_evaluator_ap(sample_gt, results, task)
            for metric in METRICS:
                assert ours[metric][0] == pytest.approx(reference[metric], abs=1e-9), (task, metric)


def test_interval_contains_the_estimate_and_shrinks_with_more_images(tmp_path):
    widths = {}
    for num_images in (25, 400):
        gt_path, results_path = write_coco(tmp_path / str(num_images), num_images, seed=1)
        matchings = load_matchings(gt_path, results_path)
        intervals = bootstrap_ap(matchings, samples=400, seed=0)
        for task, matching in matchings.items():
            point = matching.average_precision(identity(matching))
            for metric in METRICS:
                low, high = intervals[task][metric]
                assert low <= point[metric][0] <= high, (num_images, task, metric)
                widths[num_images, task, metric] = high - low
    for task in ("bbox", "segm"):
        for metric in METRICS:
            # 16x the images: about a quarter of the width (1/sqrt(n)); well under half here.
            assert widths[400, task, metric] < 0.5 * widths[25, task, metric], (task, metric)


def test_seeded_and_fast_on_50_images_x_1000_samples(tmp_path):
    gt_path, results_path = write_coco(tmp_path, 50, seed=2)
    matchings = load_matchings(gt_path, results_path)
    start = time.perf_counter()
    first = bootstrap_ap(matchings, samples=1000, seed=7)
    elapsed = time.perf_counter() - start
    assert first == bootstrap_ap(matchings, samples=1000, seed=7)
    assert first != bootstrap_ap(matchings, samples=1000, seed=8)
    # About 0.5 s on one idle core; generous for shared CI cores.
    assert elapsed < 20, elapsed


def test_paired_bootstrap_of_a_run_with_itself_and_with_a_better_run(tmp_path):
    gt_path, results_path = write_coco(tmp_path / "a", 60, seed=4)
    a = load_matchings(gt_path, results_path)
    same = paired_bootstrap_ap(a, a, samples=200)
    for metric in METRICS:
        assert same["segm"][metric]["difference"] == 0
        assert same["segm"][metric]["ci95"] == (0.0, 0.0)
    # The same objects found with better scores: true positives now rank above the false ones.
    _, better_results = write_coco(tmp_path / "b", 60, seed=4, quality=0.6)
    b = load_matchings(gt_path, better_results)
    paired = paired_bootstrap_ap(a, b, samples=300)
    for task in ("bbox", "segm"):
        low, high = paired[task]["AP50"]["ci95"]
        assert 0 < low <= paired[task]["AP50"]["difference"] <= high


def test_unusable_files_are_named(tmp_path):
    gt_path, results_path = write_coco(tmp_path, 3)
    with pytest.raises(BootstrapError, match="missing.json: COCO results not found"):
        load_matchings(gt_path, tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(BootstrapError, match="broken.json: COCO results is not valid JSON"):
        load_matchings(gt_path, tmp_path / "broken.json")
    (tmp_path / "empty.json").write_text("[]")
    assert load_matchings(gt_path, tmp_path / "empty.json") == {}
    other_gt, _ = write_coco(tmp_path / "other", 2, seed=9)
    with pytest.raises(BootstrapError, match="not on the same test images"):
        paired_bootstrap_ap(load_matchings(gt_path, results_path), load_matchings(other_gt, _))


def test_final_metrics_and_report_show_the_intervals(tmp_path, capsys):
    from instseg_d2.engine.final_metrics import write_final_metrics
    from instseg_d2.evaluation.bootstrap import describe_method
    from instseg_d2.visualization.report import write_report

    results = {"segm": {"AP": 31.2, "AP50": 60.0, "AP75": 30.0, "APs": float("nan")},
               "bbox": {"AP": 35.0, "AP50": 70.0, "AP75": 33.0}}  # fmt: skip
    intervals = {"val": {"segm": {"AP": (27.04, 35.1), "AP50": (55.0, 64.0), "AP75": None}}}
    summary = write_final_metrics(results, str(tmp_path), ["val"], weights="w.pth", iteration=9,
                                  seed=42, intervals=intervals,
                                  interval_method=describe_method(1000, 0))  # fmt: skip
    data = json.loads((tmp_path / "final_metrics.json").read_text())
    assert data == summary
    assert data["seed"] == 42 and data["bootstrap"]["samples"] == 1000
    assert data["segm_ci95"] == {"AP": [27.04, 35.1], "AP50": [55.0, 64.0], "AP75": None}
    assert "bbox_ci95" not in data and data["datasets"]["val"]["segm_ci95"]["AP"] == [27.04, 35.1]
    markdown = (tmp_path / "final_metrics.md").read_text()
    assert (
        "Seed: 42" in markdown
        and "| val       | segm   | 27.04-35.10 | 55.00-64.00 | -" in markdown
    )
    assert "27.04-35.10" in capsys.readouterr().out
    page = write_report(tmp_path, num_samples=0).read_text(encoding="utf-8")
    assert '<td>31.20 <span class="ci">[27.04, 35.10]</span></td>' in page
    assert "<td>35.00</td>" in page  # bbox: no interval given
    assert "95% interval, percentile bootstrap over test images, 1000 samples, seed 0" in page
