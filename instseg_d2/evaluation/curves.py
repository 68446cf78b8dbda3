"""Precision-recall curves, F1-maximising score thresholds and the confusion matrix (mask IoU).

The PR curves are pycocotools' own: ``COCOeval.eval["precision"]`` (interpolated precision at the
101 recall thresholds) with ``eval["scores"]``, per class and IoU threshold, area "all", 100
detections. The F1 thresholds come from the same matches before interpolation, so the
precision/recall/F1 given for a threshold are what keeping the detections at or above it gives.
"""

from __future__ import annotations

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .segm_eval import GroundTruth, evaluate_segm, iou_index

BACKGROUND = "background"


def _iou_key(iou: float) -> str:
    return f"{iou:.2f}"


def pr_curves(evaluation: COCOeval, gt: GroundTruth) -> dict:
    """``{"recall": [...], "iou_thresholds": [...], "classes": {name: {iou: {"precision",
    "scores"}}}}``: ``precision[t, :, k, 0, 0]`` of the evaluation (-1 where a class has no
    ground truth), ``scores`` the detection score at which each recall is reached (0 beyond the
    last recall reached)."""
    params = evaluation.params
    precision, scores = evaluation.eval["precision"], evaluation.eval["scores"]
    classes = {}
    for k, category_id in enumerate(params.catIds):
        classes[gt.category_name(category_id)] = {
            _iou_key(iou): {
                "precision": precision[t, :, k, 0, 0].tolist(),
                "scores": scores[t, :, k, 0, 0].tolist(),
            }
            for t, iou in enumerate(params.iouThrs)
        }
    return {
        "recall": params.recThrs.tolist(),
        "iou_thresholds": [float(v) for v in params.iouThrs],
        "classes": classes,
    }


def _class_detections(evaluation: COCOeval, k: int, t: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores (descending) and true-positive flags of class ``k`` at IoU index ``t``, as
    ``accumulate`` orders them, and the number of ground truths that count."""
    num_images = len(evaluation.params.imgIds)
    entries = [e for e in evaluation.evalImgs[k * num_images : (k + 1) * num_images] if e]
    if not entries:
        return np.zeros(0), np.zeros(0, dtype=bool), 0
    scores = np.concatenate([e["dtScores"] for e in entries])
    matched = np.concatenate([e["dtMatches"][t] for e in entries]) > 0
    ignored = np.concatenate([e["dtIgnore"][t] for e in entries]).astype(bool)
    num_gt = int(sum(np.count_nonzero(e["gtIgnore"] == 0) for e in entries))
    order = np.argsort(-scores, kind="mergesort")
    keep = ~ignored[order]
    return scores[order][keep], matched[order][keep], num_gt


def f1_thresholds(evaluation: COCOeval, gt: GroundTruth, iou: float = 0.5) -> dict[str, dict]:
    """Per class: the score threshold with the highest F1 at mask IoU ``iou``, and its precision,
    recall and F1 (``score_threshold`` None when the class has no true positive)."""
    t = iou_index(evaluation, iou)
    result = {}
    for k, category_id in enumerate(evaluation.params.catIds):
        scores, tp, num_gt = _class_detections(evaluation, k, t)
        entry = {"score_threshold": None, "f1": 0.0, "precision": 0.0, "recall": 0.0}
        entry["num_ground_truth"], entry["iou"] = num_gt, iou
        if tp.any() and num_gt:
            tps, fps = np.cumsum(tp), np.cumsum(~tp)
            precision, recall = tps / (tps + fps), tps / num_gt
            f1 = 2 * precision * recall / np.maximum(precision + recall, np.finfo(float).eps)
            # A threshold keeps every detection with that score: only the last of equal scores.
            last_of_score = np.append(scores[1:] != scores[:-1], True)
            best = int(np.argmax(np.where(last_of_score, f1, -1.0)))
            entry.update(
                score_threshold=float(scores[best]),
                f1=float(f1[best]),
                precision=float(precision[best]),
                recall=float(recall[best]),
            )
        result[gt.category_name(category_id)] = entry
    return result


def confusion_matrix(
    gt: GroundTruth, predictions: COCO, score_threshold: float = 0.5, iou: float = 0.5
) -> dict:
    """Class-agnostic COCO matching at mask IoU ``iou`` of the detections scoring at least
    ``score_threshold``, counted as ``matrix[ground-truth class][predicted class]``.

    The last row and column are ``background``: a detection that matches no ground truth counts in
    the background row (a false positive), a ground truth that no confident detection matches in
    the background column (a miss). Crowd regions and the detections they absorb are left out.
    """
    evaluation = evaluate_segm(gt, predictions, use_categories=False, iou_thresholds=[iou])
    category_ids = gt.category_ids
    index = {c: i for i, c in enumerate(category_ids)}
    background = len(category_ids)
    matrix = np.zeros((background + 1, background + 1), dtype=int)
    for entry in evaluation.evalImgs:
        if entry is None:
            continue
        confident = set()
        for dt_id, score, gt_id, ignored in zip(
            entry["dtIds"], entry["dtScores"], entry["dtMatches"][0], entry["dtIgnore"][0],
            strict=True,
        ):  # fmt: skip
            if score < score_threshold or ignored:
                continue
            confident.add(dt_id)
            predicted = index[predictions.anns[dt_id]["category_id"]]
            actual = index[gt.coco.anns[int(gt_id)]["category_id"]] if gt_id else background
            matrix[actual, predicted] += 1
        for gt_id, dt_id, ignored in zip(
            entry["gtIds"], entry["gtMatches"][0], entry["gtIgnore"], strict=True
        ):
            if not ignored and int(dt_id) not in confident:
                matrix[index[gt.coco.anns[gt_id]["category_id"]], background] += 1
    return {
        "classes": [gt.category_name(c) for c in category_ids] + [BACKGROUND],
        "rows": "ground truth",
        "columns": "prediction",
        "iou": iou,
        "score_threshold": score_threshold,
        "matrix": matrix.tolist(),
    }
