"""Error analysis on synthetic datasets: error types, AP cost per image, annotation-error
candidates, PR curves against pycocotools, confusion matrix, F1 thresholds, bad predictions."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
from analysis_fixtures import make_dicts, rectangle_annotation, register, unregister
from pycocotools.cocoeval import COCOeval

from instseg_d2.evaluation import error_analysis
from instseg_d2.evaluation.annotation_candidates import find_candidates
from instseg_d2.evaluation.curves import confusion_matrix, f1_thresholds, pr_curves
from instseg_d2.evaluation.error_analysis import analyze_errors
from instseg_d2.evaluation.segm_eval import (
    AnalysisInputError,
    ground_truth_as_predictions,
    load_ground_truth,
    load_predictions,
    quiet,
)


@pytest.fixture
def dataset(tmp_path):
    """``dataset(dicts)`` registers ``dicts`` and returns the name; removed after the test."""
    names = []

    def make(dicts):
        names.append(register(dicts))
        return names[-1]

    yield make
    for name in names:
        unregister(name)


@pytest.fixture
def dicts(tmp_path):
    return make_dicts(tmp_path / "images")


def perfect_predictions(name: str) -> list[dict]:
    return ground_truth_as_predictions(load_ground_truth(name))


def analyse(name: str, predictions: list[dict], score_threshold: float = 0.5):
    gt = load_ground_truth(name)
    return analyze_errors(gt, load_predictions(predictions, gt), score_threshold)


def prediction_of(predictions, image_id, index_in_image):
    return [p for p in predictions if p["image_id"] == image_id][index_in_image]


def moved(prediction: dict, dx: int, category_id: int | None = None, score: float | None = None):
    """A copy of a rectangle prediction moved ``dx`` pixels to the right."""
    x, y, w, h = (int(v) for v in prediction["bbox"])
    anno = rectangle_annotation(x + dx, y, w, h, 0)
    return dict(
        prediction,
        bbox=anno["bbox"],
        segmentation=anno["segmentation"],
        category_id=prediction["category_id"] if category_id is None else category_id,
        score=prediction["score"] if score is None else score,
    )


def predictions_with_each_error(name: str) -> list[dict]:
    """Ground truth as predictions (score 0.9), with one error of each COCO type (totals in the
    test); the duplicate and the background detection score higher, so they cost AP."""
    predictions = perfect_predictions(name)
    for p in predictions:
        p["score"] = 0.9
    shifted = prediction_of(predictions, 11, 1)  # a cat, moved: IoU 0.41 with its object
    confused = prediction_of(predictions, 12, 1)  # a dog, called cat
    dropped = prediction_of(predictions, 12, 2)  # a dog, missed
    out = []
    for p in predictions:
        if p is shifted:
            p = moved(p, 15)
        elif p is confused:
            p = dict(p, category_id=1)
        if p is not dropped:
            out.append(p)
    duplicate = dict(prediction_of(predictions, 10, 0), score=0.95)
    nothing_there = rectangle_annotation(80, 5, 30, 20, 0)
    background = {"image_id": 11, "category_id": 2, "score": 0.97, "bbox": nothing_there["bbox"],
                  "segmentation": nothing_there["segmentation"]}  # fmt: skip
    return out + [duplicate, background]


def test_each_error_type_is_counted_once(dicts, dataset):
    name = dataset(dicts)
    analysis = analyse(name, predictions_with_each_error(name))
    totals = analysis.totals
    assert totals["errors"] == {
        "localisation": 1,
        "duplicate": 1,
        "class_confusion": 1,
        "background": 1,
        "missed": 1,
    }
    assert totals["iou50"] == {"tp": 5, "fp": 4, "fn": 3}
    by_image = {r["image_id"]: r for r in analysis.images}
    assert by_image[11]["errors"]["localisation"] == 1 and by_image[11]["errors"]["background"] == 1
    assert by_image[12]["errors"]["class_confusion"] == 1 and by_image[12]["errors"]["missed"] == 1
    image10 = by_image[10]["iou50"]
    assert (image10["tp"], image10["fp"], image10["fn"], image10["missed"]) == (3, 1, 0, [])
    assert [(score, iou) for _, score, iou in image10["matched"]] == [
        (0.95, 1.0),
        (0.9, 1.0),
        (0.9, 1.0),
    ]
    gt = load_ground_truth(name)
    missed = [gt.annotation_source[g] for g in by_image[12]["iou50"]["missed"]]
    assert sorted(missed) == [(2, 1), (2, 2)]  # (image, annotation) of the two dogs not found
    assert by_image[11]["iou75"]["fn"] == 1
    # Each kind of false positive lowers AP50; removing it gives the AP back.
    assert all(totals["ap50_gain_if_removed"][k] > 0 for k in ("duplicate", "background"))


def test_ap_gain_is_the_ap_of_the_image_made_perfect(dicts, dataset):
    name = dataset(dicts)
    predictions = predictions_with_each_error(name)
    analysis = analyse(name, predictions)
    gt = load_ground_truth(name)
    perfect = perfect_predictions(name)

    def coco_ap(results):
        with quiet():
            evaluation = COCOeval(gt.coco, gt.coco.loadRes(copy.deepcopy(results)), "segm")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        return evaluation.stats[0] * 100

    base = coco_ap(predictions)
    assert analysis.totals["AP"] == pytest.approx(base)
    for record in analysis.images:
        image_id = record["image_id"]
        fixed = [p for p in predictions if p["image_id"] != image_id]
        fixed += [p for p in perfect if p["image_id"] == image_id]
        assert record["ap_gain"] == pytest.approx(coco_ap(fixed) - base, abs=1e-9)
    gains = [r["ap_gain"] for r in analysis.images]
    assert gains == sorted(gains, reverse=True) and gains[-1] > 0  # every image has an error


def test_large_datasets_are_ranked_by_errors_without_ap_gain(dicts, dataset, monkeypatch):
    monkeypatch.setattr(error_analysis, "AP_GAIN_MAX_IMAGES", 2)
    name = dataset(dicts)
    records = analyse(name, predictions_with_each_error(name)).images
    assert all(r["ap_gain"] is None for r in records)
    assert [r["image_id"] for r in records] == [11, 12, 10]  # 2 FP + 1 FN, 1 + 2, 1 + 0


def test_removed_annotation_is_a_missing_label_candidate(dicts, dataset):
    predictions = perfect_predictions(dataset(dicts))
    edited = copy.deepcopy(dicts)
    removed = edited[0]["annotations"].pop(2)
    analysis = analyse(dataset(edited), predictions)
    candidates = find_candidates(analysis)
    assert [c.kind for c in candidates] == ["unlabelled_object"]
    assert candidates[0].image_id == 10 and candidates[0].box == removed["bbox"]
    assert candidates[0].score == pytest.approx(1.0)
    assert analysis.images[0]["image_id"] == 10 and analysis.images[0]["ap_gain"] > 0


def test_shifted_annotation_and_shifted_mask_are_flagged(dicts, dataset):
    predictions = perfect_predictions(dataset(dicts))
    edited = copy.deepcopy(dicts)
    # Image 11, annotation 1 (source id 101) drawn 15 px too far right, box and mask.
    edited[1]["annotations"][1] = dict(rectangle_annotation(25, 20, 36, 36, 0), id=101)
    # Image 12, annotation 0 (source id 200): the mask 20 px right of its box.
    edited[2]["annotations"][0] = dict(
        rectangle_annotation(20, 30, 50, 60, 0, mask_offset=(20, 0)), id=200
    )
    name = dataset(edited)
    analysis = analyse(name, predictions)
    gt = load_ground_truth(name)
    found = [c.to_json(gt, rank) for rank, c in enumerate(find_candidates(analysis), 1)]
    unfound = {
        e["annotations"][0]["source_ids"]["id"]: e
        for e in found
        if e["kind"] == "unfound_annotation"
    }
    assert set(unfound) == {101, 200}
    assert unfound[101]["image_id"] == 11 and unfound[101]["annotations"][0]["index_in_image"] == 1
    assert "shifted" in unfound[101]["note"]
    mismatch = [e for e in found if e["kind"] == "box_mask_mismatch"]
    assert len(mismatch) == 1 and mismatch[0]["annotations"][0]["source_ids"] == {"id": 200}
    assert mismatch[0]["score"] == pytest.approx(1 - 1800 / 4200, abs=1e-3)  # box IoU 0.43
    assert mismatch[0]["file_name"] == dicts[2]["file_name"]
    # The COCO annotation id is that of Detectron2's conversion (tools/export_coco.py).
    coco_id = mismatch[0]["annotations"][0]["annotation_id"]
    assert gt.coco.anns[coco_id]["image_id"] == 12 and gt.coco.anns[coco_id]["bbox"] == [
        20,
        30,
        50,
        60,
    ]


def test_near_duplicate_annotations(dicts, dataset):
    predictions = perfect_predictions(dataset(dicts))
    edited = copy.deepcopy(dicts)
    edited[1]["annotations"].append(dict(rectangle_annotation(72, 70, 40, 40, 1), id=999))
    name = dataset(edited)
    gt = load_ground_truth(name)
    found = [c.to_json(gt, 1) for c in find_candidates(analyse(name, predictions))]
    duplicates = [e for e in found if e["kind"] == "near_duplicate"]
    assert len(duplicates) == 1
    assert [a["source_ids"]["id"] for a in duplicates[0]["annotations"]] == [100, 999]
    assert duplicates[0]["score"] == pytest.approx(38 / 42, abs=1e-3)


def test_pr_curves_are_pycocotools_precision(dicts, dataset):
    name = dataset(dicts)
    predictions = predictions_with_each_error(name)
    # Two detections a little off (IoU 0.82 and 0.67): true positives at low IoU thresholds only.
    predictions[0], predictions[1] = moved(predictions[0], 3), moved(predictions[1], 8)
    rng = np.random.default_rng(1)
    for p in predictions:
        p["score"] = float(rng.uniform(0.05, 1))
    gt = load_ground_truth(name)
    analysis = analyze_errors(gt, load_predictions(predictions, gt))
    curves = pr_curves(analysis.evaluation, gt)
    with quiet():
        reference = COCOeval(gt.coco, gt.coco.loadRes(copy.deepcopy(predictions)), "segm")
        reference.evaluate()
        reference.accumulate()
    precision = reference.eval["precision"]  # T x R x K x A(all, s, m, l) x M(1, 10, 100)
    assert curves["recall"] == reference.params.recThrs.tolist()
    for k, name_k in enumerate(["cat", "dog"]):
        for t, iou in enumerate(reference.params.iouThrs):
            curve = curves["classes"][name_k][f"{iou:.2f}"]
            np.testing.assert_array_equal(curve["precision"], precision[t, :, k, 0, 2])
            np.testing.assert_array_equal(curve["scores"], reference.eval["scores"][t, :, k, 0, 2])
    assert (precision[:, :, :, 0, 2] < 1).any()  # not a trivial curve
    assert not np.array_equal(precision[0, :, :, 0, 2], precision[-1, :, :, 0, 2])


def test_confusion_matrix(dicts, dataset):
    name = dataset(dicts)
    gt = load_ground_truth(name)
    perfect = confusion_matrix(gt, load_predictions(perfect_predictions(name), gt))
    assert perfect["classes"] == ["cat", "dog", "background"]
    assert perfect["matrix"] == [[4, 0, 0], [0, 4, 0], [0, 0, 0]]
    with_errors = confusion_matrix(gt, load_predictions(predictions_with_each_error(name), gt))
    # rows ground truth, columns prediction; see predictions_with_each_error
    assert with_errors["matrix"] == [[3, 0, 1], [1, 2, 1], [2, 1, 0]]


def test_f1_threshold(dicts, dataset):
    name = dataset(dicts)
    predictions = [p for p in perfect_predictions(name) if p["category_id"] == 1]  # 4 cats
    scores = iter([0.9, 0.6, 0.4])
    predictions = [dict(p, score=next(scores)) for p in predictions[:3]]  # one cat missed
    background = rectangle_annotation(80, 5, 30, 20, 0)
    for score in (0.7, 0.3):
        mask = {"bbox": background["bbox"], "segmentation": background["segmentation"]}
        predictions.append({"image_id": 11, "category_id": 1, "score": score, **mask})
    gt = load_ground_truth(name)
    evaluation = analyze_errors(gt, load_predictions(predictions, gt)).evaluation
    best = f1_thresholds(evaluation, gt)
    # Thresholds 0.9/0.7/0.6/0.4/0.3 give F1 0.40/0.33/0.57/0.75/0.67.
    assert best["cat"]["score_threshold"] == pytest.approx(0.4)
    assert best["cat"]["f1"] == pytest.approx(0.75)
    assert best["cat"]["precision"] == pytest.approx(0.75)
    assert best["cat"]["num_ground_truth"] == 4
    assert best["dog"]["score_threshold"] is None  # no dog predicted


def test_no_predictions_misses_everything(dicts, dataset):
    analysis = analyse(dataset(dicts), [])
    assert analysis.totals["errors"]["missed"] == 8
    assert analysis.totals["AP"] == 0
    assert {c.kind for c in find_candidates(analysis)} == {"unfound_annotation"}


@pytest.mark.parametrize(
    "content, message",
    [
        ("{broken", "not a readable JSON file"),
        ('{"a": 1}', "expected a JSON list of COCO results, got dict"),
        ('[{"image_id": 10, "category_id": 1, "score": 1, "bbox": [0, 0, 1, 1]}]',
         "lacks ['segmentation']"),
        ('[{"image_id": 99, "category_id": 1, "score": 1, "segmentation": {}}]',
         "image id 99, which dataset"),
        ('[{"image_id": 10, "category_id": 7, "score": 1, "segmentation": {}}]', "category_id 7"),
        ('[{"image_id": 10, "category_id": 1, "score": 1, '
         '"segmentation": {"size": [64, 64], "counts": "x"}}]', "has a 64x64 mask but image"),
    ],
)  # fmt: skip
def test_bad_predictions_file(dicts, dataset, tmp_path, content, message):
    gt = load_ground_truth(dataset(dicts))
    path = tmp_path / "predictions.json"
    path.write_text(content)
    with pytest.raises(AnalysisInputError, match="^" + re.escape(str(path))) as info:
        load_predictions(path, gt)
    assert message in str(info.value)


def test_missing_predictions_file(dicts, dataset, tmp_path):
    gt = load_ground_truth(dataset(dicts))
    with pytest.raises(AnalysisInputError, match="predictions file not found"):
        load_predictions(tmp_path / "nope.json", gt)
