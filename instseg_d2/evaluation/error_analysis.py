"""What each image costs the AP, and the COCO error types of its detections and ground truth.

Matching is pycocotools' (``COCOeval`` segm, :mod:`.segm_eval`): in decreasing score order each
detection takes the free ground truth of its class with the highest mask IoU, if that IoU is at
least the threshold. At mask IoU ``ERROR_IOU`` (0.5) every evaluated detection gets one type,
following the COCO analysis (Hoiem et al., "Diagnosing error in object detectors"; cocoapi's
``analyze()``, whose PR curves at IoU .10, "Sim"/"Oth" and "BG" remove these errors in turn):

* ``correct``: matched to a ground truth of its class.
* ``duplicate``: unmatched, although its IoU with a ground truth of its class is >= 0.5: that
  ground truth was taken by a higher-scoring detection.
* ``localisation``: otherwise, IoU in [0.1, 0.5) with a ground truth of its class.
* ``class_confusion``: otherwise, IoU >= 0.1 with a ground truth of another class.
* ``background``: IoU < 0.1 with every ground truth.
* ``ignored``: matched to a crowd region (COCO neither counts nor penalises it).

A ground truth is ``missed`` when no confident detection (score >= the score threshold), of any
class, overlaps it at IoU >= 0.1; one that a confident detection overlaps but does not match is a
false negative explained by that detection's localisation or class-confusion error.

Counts per image and in total are over the confident detections; the AP costs use them all:

* ``ap_gain`` of an image: segm AP (0.5:0.95, percent) of the dataset with that image's
  predictions replaced by its ground truth at score 1, minus the AP as it is. Exact, not a proxy:
  the other images' per-image matches are kept and only pycocotools' ``accumulate`` is rerun, so
  the cost is one accumulate per image, which grows with the dataset: quadratic in its size (a
  second for 50 images, minutes for a thousand). Above ``AP_GAIN_MAX_IMAGES`` images it is not
  computed (null) and the images are ranked by their false positives + false negatives at 0.5.
* ``ap50_gain_if_removed`` of an error type: AP50 with every detection of that type ignored, minus
  AP50 (what the false positives of that type cost).

Over 300 lines: the error types, the counts and both AP costs are computed from one set of
matches and overlaps (``ErrorAnalysis``); split up, each part would have to rebuild them.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .segm_eval import (
    GroundTruth,
    ap_from_precision,
    evaluate_segm,
    ground_truth_as_predictions,
    iou_index,
    load_predictions,
    quiet,
)

logger = logging.getLogger(__name__)

MATCH_IOUS = (0.5, 0.75)
ERROR_IOU = 0.5
# Below this IoU a detection and a ground truth have nothing to do with each other (COCO "BG").
BACKGROUND_IOU = 0.1
# Largest dataset for which ap_gain is computed (module docstring: its cost is quadratic).
AP_GAIN_MAX_IMAGES = 1000
DETECTION_ERRORS = ("localisation", "duplicate", "class_confusion", "background")
ERROR_TYPES = (*DETECTION_ERRORS, "missed")


@dataclass
class Matches:
    """COCOeval's matches at one IoU threshold, by detection and annotation id (0: none)."""

    detection_to_gt: dict[int, int]
    gt_to_detection: dict[int, int]
    ignored_detections: set[int]
    ignored_gt: set[int]


def matches_at(evaluation: COCOeval, iou: float) -> Matches:
    """The matches of ``evaluation.evalImgs`` at ``iou`` (one of its thresholds)."""
    t = iou_index(evaluation, iou)
    result = Matches({}, {}, set(), set())
    for entry in evaluation.evalImgs:
        if entry is None:
            continue
        for dt_id, gt_id, ignored in zip(
            entry["dtIds"], entry["dtMatches"][t], entry["dtIgnore"][t], strict=True
        ):
            result.detection_to_gt[dt_id] = int(gt_id)
            if ignored:
                result.ignored_detections.add(dt_id)
        for gt_id, dt_id, ignored in zip(
            entry["gtIds"], entry["gtMatches"][t], entry["gtIgnore"], strict=True
        ):
            result.gt_to_detection[gt_id] = int(dt_id)
            if ignored:
                result.ignored_gt.add(gt_id)
    return result


@dataclass
class ImageOverlaps:
    """One image's evaluated detections (score order) against its non-crowd ground truth."""

    image_id: int | str
    detection_ids: list[int]
    scores: np.ndarray
    detection_categories: np.ndarray
    gt_ids: list[int]
    gt_categories: np.ndarray
    ious: np.ndarray  # detections x ground truth, mask IoU
    crowd_overlap: np.ndarray  # per detection: COCO's crowd IoU (intersection / detection area)


def image_overlaps(gt: GroundTruth, predictions: COCO, image_id, detection_ids) -> ImageOverlaps:
    """Mask IoUs of the detections ``detection_ids`` with every ground truth of the image."""
    dets = sorted(predictions.loadAnns(detection_ids), key=lambda d: -d["score"])
    annotations = gt.coco.loadAnns(gt.coco.getAnnIds(imgIds=[image_id]))
    regular = [a for a in annotations if not a.get("iscrowd", 0)]
    crowds = [a for a in annotations if a.get("iscrowd", 0)]
    dt_rles = [predictions.annToRLE(d) for d in dets]

    def iou(anns: list[dict], crowd: int) -> np.ndarray:
        if not dets or not anns:
            return np.zeros((len(dets), len(anns)))
        rles = [gt.coco.annToRLE(a) for a in anns]
        return np.asarray(mask_util.iou(dt_rles, rles, [crowd] * len(anns)), dtype=float)

    crowd_iou = iou(crowds, 1)
    return ImageOverlaps(
        image_id=image_id,
        detection_ids=[d["id"] for d in dets],
        scores=np.asarray([d["score"] for d in dets], dtype=float),
        detection_categories=np.asarray([d["category_id"] for d in dets]),
        gt_ids=[a["id"] for a in regular],
        gt_categories=np.asarray([a["category_id"] for a in regular]),
        ious=iou(regular, 0),
        crowd_overlap=crowd_iou.max(axis=1) if crowd_iou.size else np.zeros(len(dets)),
    )


def detection_type(overlaps: ImageOverlaps, row: int, matches: Matches) -> str:
    """The error type of detection ``row`` of an image (module docstring)."""
    dt_id = overlaps.detection_ids[row]
    if dt_id in matches.ignored_detections:
        return "ignored"
    if matches.detection_to_gt.get(dt_id, 0):
        return "correct"
    same = overlaps.gt_categories == overlaps.detection_categories[row]
    ious = overlaps.ious[row]
    best_same = ious[same].max(initial=0.0)
    if best_same >= ERROR_IOU:
        return "duplicate"
    if best_same >= BACKGROUND_IOU:
        return "localisation"
    if ious[~same].max(initial=0.0) >= BACKGROUND_IOU:
        return "class_confusion"
    return "background"


@dataclass
class ErrorAnalysis:
    """Everything the analyses share: the evaluation, per-image overlaps, matches and types."""

    gt: GroundTruth
    predictions: COCO
    evaluation: COCOeval
    score_threshold: float
    overlaps: dict[int | str, ImageOverlaps]
    matches: dict[float, Matches]
    detection_types: dict[int, str]
    images: list[dict] = field(default_factory=list)  # ranked by ap_gain, largest first
    totals: dict = field(default_factory=dict)

    def confident(self, overlaps: ImageOverlaps) -> np.ndarray:
        return overlaps.scores >= self.score_threshold


def _image_counts(analysis: ErrorAnalysis, overlaps: ImageOverlaps) -> dict:
    """TP/FP/FN at each IoU of ``MATCH_IOUS`` (with the matched pairs as ``[annotation id,
    detection score, mask IoU]`` and the missed annotation ids) and the error types, confident
    detections only."""
    confident = analysis.confident(overlaps)
    confident_ids = {d for d, c in zip(overlaps.detection_ids, confident, strict=True) if c}
    row = {d: i for i, d in enumerate(overlaps.detection_ids)}
    col = {g: j for j, g in enumerate(overlaps.gt_ids)}
    counts = {}
    for iou in MATCH_IOUS:
        m = analysis.matches[iou]
        scored = [d for d in overlaps.detection_ids if d in confident_ids]
        scored = [d for d in scored if d not in m.ignored_detections]
        matched = [(d, m.detection_to_gt[d]) for d in scored if m.detection_to_gt.get(d, 0)]
        gt_ids = [g for g in overlaps.gt_ids if g not in m.ignored_gt]
        counts[f"iou{round(iou * 100)}"] = {
            "tp": len(matched),
            "fp": len(scored) - len(matched),
            "fn": len(gt_ids) - len(matched),
            "matched": [
                [
                    g,
                    round(float(overlaps.scores[row[d]]), 4),
                    round(overlaps.ious[row[d], col[g]], 4),
                ]
                for d, g in matched
            ],
            "missed": [g for g in gt_ids if m.gt_to_detection.get(g, 0) not in confident_ids],
        }
    errors = Counter(
        analysis.detection_types[d] for d in confident_ids if d in analysis.detection_types
    )
    near = overlaps.ious[confident].max(axis=0, initial=0.0) if len(overlaps.gt_ids) else []
    m = analysis.matches[ERROR_IOU]
    errors["missed"] = sum(
        1
        for g, best in zip(overlaps.gt_ids, near, strict=True)
        if g not in m.ignored_gt
        and m.gt_to_detection.get(g, 0) not in confident_ids
        and best < BACKGROUND_IOU
    )
    counts["errors"] = {name: errors.get(name, 0) for name in ERROR_TYPES}
    return counts


def _plain(value):
    """COCOeval keeps image ids as numpy integers; JSON and the dataset dicts want plain ones."""
    return value.item() if isinstance(value, np.generic) else value


def ap_gain_per_image(analysis: ErrorAnalysis) -> dict[int | str, float]:
    """AP (percent) with each image's predictions made perfect, minus the AP (module docstring)."""
    evaluation = analysis.evaluation
    perfect = evaluate_segm(
        analysis.gt, load_predictions(ground_truth_as_predictions(analysis.gt), analysis.gt)
    )
    base = ap_from_precision(evaluation.eval["precision"])
    image_ids = [_plain(i) for i in evaluation.params.imgIds]
    num_images, num_classes = len(image_ids), len(evaluation.params.catIds)
    trial = copy.copy(evaluation)  # shares the params; only evalImgs and eval change
    gains = {}
    for i, image_id in enumerate(image_ids):
        entries = list(evaluation.evalImgs)
        for k in range(num_classes):  # evalImgs is ordered class, area ("all" only), image
            entries[k * num_images + i] = perfect.evalImgs[k * num_images + i]
        trial.evalImgs = entries
        with quiet():
            trial.accumulate()
        gains[image_id] = ap_from_precision(trial.eval["precision"]) - base
    return gains


def ap50_gain_if_removed(analysis: ErrorAnalysis, detection_ids: set[int]) -> float:
    """AP50 (percent) with ``detection_ids`` ignored, minus AP50."""
    evaluation = analysis.evaluation
    t = iou_index(evaluation, 0.5)
    base = ap_from_precision(evaluation.eval["precision"][t])
    entries = []
    for entry in evaluation.evalImgs:
        drop = [d in detection_ids for d in entry["dtIds"]] if entry is not None else []
        if any(drop):
            entry = dict(entry, dtIgnore=np.array(entry["dtIgnore"], dtype=bool))
            entry["dtIgnore"][:, np.asarray(drop)] = True
        entries.append(entry)
    trial = copy.copy(evaluation)
    trial.evalImgs = entries
    with quiet():
        trial.accumulate()
    return ap_from_precision(trial.eval["precision"][t]) - base


def analyze_errors(
    gt: GroundTruth, predictions: COCO, score_threshold: float = 0.5
) -> ErrorAnalysis:
    """Evaluate ``predictions`` on ``gt`` and rank the images by what they cost the AP."""
    evaluation = evaluate_segm(gt, predictions)
    matches = {iou: matches_at(evaluation, iou) for iou in MATCH_IOUS}
    evaluated: dict[int | str, list[int]] = {_plain(i): [] for i in evaluation.params.imgIds}
    for entry in evaluation.evalImgs:
        if entry is not None:
            evaluated[_plain(entry["image_id"])].extend(entry["dtIds"])
    overlaps = {
        image_id: image_overlaps(gt, predictions, image_id, dt_ids)
        for image_id, dt_ids in evaluated.items()
    }
    types = {
        o.detection_ids[row]: detection_type(o, row, matches[ERROR_IOU])
        for o in overlaps.values()
        for row in range(len(o.detection_ids))
    }
    analysis = ErrorAnalysis(gt, predictions, evaluation, score_threshold, overlaps, matches, types)
    if len(overlaps) <= AP_GAIN_MAX_IMAGES:
        gains = ap_gain_per_image(analysis)
    else:
        logger.warning(
            "%d images: ap_gain is not computed above %d (its cost is quadratic); images are "
            "ranked by false positives + false negatives at IoU 0.5",
            len(overlaps),
            AP_GAIN_MAX_IMAGES,
        )
        gains = dict.fromkeys(overlaps)
    records = []
    for image_id, o in overlaps.items():
        d = gt.dataset_dicts[gt.image_index[image_id]]
        records.append(
            {
                "image_id": image_id,
                "file_name": d["file_name"],
                "ap_gain": gains[image_id],
                "num_ground_truth": len(o.gt_ids),
                "num_detections": int(analysis.confident(o).sum()),
                **_image_counts(analysis, o),
            }
        )
    records.sort(
        key=lambda r: (
            -r["ap_gain"] if r["ap_gain"] is not None else -(r["iou50"]["fp"] + r["iou50"]["fn"])
        )
    )
    analysis.images = records
    analysis.totals = _totals(analysis)
    return analysis


def _totals(analysis: ErrorAnalysis) -> dict:
    stats = analysis.evaluation.eval["precision"]
    totals: dict = {
        "AP": ap_from_precision(stats),
        "AP50": ap_from_precision(stats[iou_index(analysis.evaluation, 0.5)]),
        "AP75": ap_from_precision(stats[iou_index(analysis.evaluation, 0.75)]),
    }
    for key in [k for k in analysis.images[0] if k.startswith("iou")] if analysis.images else []:
        totals[key] = {c: sum(r[key][c] for r in analysis.images) for c in ("tp", "fp", "fn")}
    totals["errors"] = {
        name: sum(r["errors"][name] for r in analysis.images) for name in ERROR_TYPES
    }
    totals["ap50_gain_if_removed"] = {
        name: ap50_gain_if_removed(
            analysis, {d for d, t in analysis.detection_types.items() if t == name}
        )
        for name in DETECTION_ERRORS
    }
    return totals
