"""COCO AP of a weighted multiset of test images, from pycocotools' per-image matching.

``COCOeval.evaluate()`` matches detections to ground truth image by image; ``accumulate()`` then
sorts all detections of a category by score and reads precision at 101 recall points. Resampling
images only changes how often each image counts, not the matching, so :class:`ImageMatching`
runs ``evaluate()`` once and :meth:`ImageMatching.average_precision` redoes the accumulation for
many weightings at once (``counts[b, i]``: how often sample ``b`` holds image ``i``), vectorised
over the samples. With every count 1 the result equals ``accumulate()``/``summarize()`` to the
last bit (same float operations in the same order; tested).

An image drawn twice contributes its detections and its ground truth twice. Its two copies of a
detection sit next to each other in the score order, which gives the same interpolated precision
as any other order of the two (a true positive's copies only raise precision, a false
positive's copies do not change recall).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["AP_METRICS", "ImageMatching", "match_images"]

# The metrics resampled: COCOEvaluator's first three, over all object sizes at 100 detections.
AP_METRICS = ("AP", "AP50", "AP75")
# COCOEvaluator's limits of detections per image (TEST.DETECTIONS_PER_IMAGE does not change them).
MAX_DETS = [1, 10, 100]


@dataclass(frozen=True)
class _CategoryMatches:
    """One category of the test set, reduced to what precision at the recall thresholds needs.

    Recall only rises at a true positive, and precision only falls between two of them, so
    accumulate()'s interpolated precision is decided at the true positives alone (ranked by
    score): at the p-th, by the true and false positives ranked up to it. Those counts are
    kept per image, so that any weighting of the images gives them as one matrix product.
    """

    positives_per_image: np.ndarray  # (N,) ground truth that is not ignored, per image
    # Per IoU threshold t, (N, P_t): true positives of image i ranked at or before the p-th
    # true positive, and false positives of image i ranked before it.
    true_up_to: list[np.ndarray]
    false_before: list[np.ndarray]


def _counts_per_image(image_index, flags, at, num_images, side) -> np.ndarray:
    """``(N, len(at))``: detections of each image with ``flags`` set, ranked before ``at``
    (``side="left"``) or at or before it (``"right"``)."""
    stride = len(image_index) + 1
    keys = np.sort(image_index[flags] * stride + np.flatnonzero(flags))
    first = np.arange(num_images)[:, None] * stride
    return (
        np.searchsorted(keys, first + at[None, :], side=side) - np.searchsorted(keys, first)
    ).astype(float)


class ImageMatching:
    """The per-image matching of one task (``bbox`` or ``segm``) and what AP needs of it."""

    def __init__(self, coco_eval: COCOeval):
        """``coco_eval`` after ``evaluate()`` (its ``evalImgs`` are read, nothing is changed)."""
        params = coco_eval.params
        self.image_ids: list[int] = list(params.imgIds)
        self.iou_thresholds = np.asarray(params.iouThrs)
        self.recall_thresholds = np.asarray(params.recThrs)
        self._max_det = params.maxDets[-1]
        num_images = len(self.image_ids)
        num_areas = len(params.areaRng)
        all_area = list(params.areaRngLbl).index("all")
        self._categories: list[_CategoryMatches] = []
        for k in range(len(params.catIds)):
            # evalImgs is ordered category, area range, image.
            start = (k * num_areas + all_area) * num_images
            per_image = coco_eval.evalImgs[start : start + num_images]
            self._categories.append(self._category(per_image))

    def _category(self, per_image: Sequence[dict | None]) -> _CategoryMatches:
        num_t, num_images = len(self.iou_thresholds), len(per_image)
        scores, index, matches, ignored = [], [], [], []
        positives = np.zeros(num_images, dtype=np.int64)
        for i, e in enumerate(per_image):
            if e is None:  # neither ground truth nor detections of this category
                continue
            d = len(e["dtScores"][: self._max_det])
            scores.append(np.asarray(e["dtScores"][: self._max_det], dtype=float))
            index.append(np.full(d, i, dtype=np.int64))
            matches.append(np.asarray(e["dtMatches"][:, : self._max_det]).reshape(num_t, d))
            ignored.append(np.asarray(e["dtIgnore"][:, : self._max_det]).reshape(num_t, d))
            positives[i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
        if not scores:
            none = [np.zeros((num_images, 0))] * num_t
            return _CategoryMatches(positives, none, none)
        # accumulate(): images in imgIds order, then one stable sort by descending score.
        order = np.argsort(-np.concatenate(scores), kind="mergesort")
        image_index = np.concatenate(index)[order]
        dtm = np.concatenate(matches, axis=1)[:, order]
        dt_ignored = np.concatenate(ignored, axis=1)[:, order]
        true_positive = np.logical_and(dtm, np.logical_not(dt_ignored))
        false_positive = np.logical_and(np.logical_not(dtm), np.logical_not(dt_ignored))
        true_up_to, false_before = [], []
        for t in range(num_t):
            at = np.flatnonzero(true_positive[t])
            true_up_to.append(
                _counts_per_image(image_index, true_positive[t], at, num_images, "right")
            )
            false_before.append(
                _counts_per_image(image_index, false_positive[t], at, num_images, "left")
            )
        return _CategoryMatches(positives, true_up_to, false_before)

    def average_precision(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """``{"AP", "AP50", "AP75"}`` in percent (COCOEvaluator's scale), one value per row of
        ``counts`` (shape ``(samples, images)``, integer); NaN where a sample has no ground truth.
        """
        counts = np.asarray(counts)
        if counts.ndim != 2 or counts.shape[1] != len(self.image_ids):
            raise ValueError(
                f"counts must have shape (samples, {len(self.image_ids)}), got {counts.shape}"
            )
        precision = self._precision(counts)  # (B, T, R, K), -1 where a category has no positives
        t50 = np.where(self.iou_thresholds == 0.5)[0]
        t75 = np.where(self.iou_thresholds == 0.75)[0]
        return {
            "AP": _mean_of_valid(precision) * 100,
            "AP50": _mean_of_valid(precision[:, t50]) * 100,
            "AP75": _mean_of_valid(precision[:, t75]) * 100,
        }

    def _precision(self, counts: np.ndarray) -> np.ndarray:
        num_t, num_r = len(self.iou_thresholds), len(self.recall_thresholds)
        out = -np.ones((len(counts), num_t, num_r, len(self._categories)))
        weights = counts.astype(float)  # integer counts: the products below are exact
        for k, cat in enumerate(self._categories):
            positives = counts @ cat.positives_per_image  # (B,)
            valid = positives > 0
            if not valid.any():
                continue
            for t in range(num_t):
                out[valid, t, :, k] = self._interpolated_precision(
                    weights[valid] @ cat.true_up_to[t],
                    weights[valid] @ cat.false_before[t],
                    positives[valid],
                )
        return out

    def _interpolated_precision(self, tp: np.ndarray, fp: np.ndarray, positives: np.ndarray):
        """accumulate()'s ``q`` for each row: precision at the 101 recall thresholds, from the
        cumulative counts at the true positives (``(samples, P)``)."""
        num_b, num_p = tp.shape
        recall = tp / positives[:, None]
        precision = tp / (fp + tp + np.spacing(1))
        # accumulate() makes precision non-increasing from the right: a running max.
        envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
        # Row-wise searchsorted(recall, thresholds, "left") = number of recalls < threshold:
        # each recall counts for every threshold above it (exact float comparisons).
        num_r = len(self.recall_thresholds)
        first_above = np.searchsorted(self.recall_thresholds, recall.ravel(), side="right")
        rows = np.repeat(np.arange(num_b), num_p)
        histogram = np.bincount(rows * (num_r + 1) + first_above, minlength=num_b * (num_r + 1))
        index = np.cumsum(histogram.reshape(num_b, num_r + 1), axis=1)[:, :num_r]
        # A threshold above the last recall has precision 0 (accumulate()'s IndexError).
        padded = np.concatenate([envelope, np.zeros((num_b, 1))], axis=1)
        return np.take_along_axis(padded, index, axis=1)


def _mean_of_valid(precision: np.ndarray) -> np.ndarray:
    """summarize()'s ``np.mean(s[s > -1])`` per sample (-1 when nothing is valid -> NaN)."""
    out = np.full(len(precision), np.nan)
    for b, sample in enumerate(precision):
        valid = sample[sample > -1]
        if valid.size:
            out[b] = np.mean(valid)
    return out


def match_images(coco_gt: COCO, predictions: list[dict], iou_type: str) -> ImageMatching:
    """Run ``COCOeval.evaluate()`` as Detectron2's COCOEvaluator sets it up, and keep the matching.

    ``predictions`` are COCO results (``coco_instances_results.json``); for ``segm`` their boxes
    are dropped, as COCOEvaluator does, so that object sizes come from the masks. Raises
    ValueError when there are no predictions (COCOEvaluator reports NaN then).
    """
    if not predictions:
        raise ValueError("no predictions to evaluate")
    predictions = copy.deepcopy(predictions)  # loadRes adds fields to each prediction
    if iou_type == "segm":
        for p in predictions:
            p.pop("bbox", None)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(predictions), iou_type)
        coco_eval.params.maxDets = list(MAX_DETS)
        coco_eval.evaluate()
    return ImageMatching(coco_eval)
