"""Greedy one-to-one matching of predicted and ground-truth masks by mask IoU."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pycocotools.mask as mask_util


@dataclass(frozen=True)
class MatchResult:
    """Counts of one image, and which prediction matched which ground truth (with its IoU)."""

    true_positives: int
    false_positives: int
    false_negatives: int
    # (prediction index, ground-truth index, IoU), in the order the greedy pass made them.
    pairs: list[tuple[int, int, float]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"tp": self.true_positives, "fp": self.false_positives, "fn": self.false_negatives}


def encode_masks(masks: np.ndarray) -> list[dict]:
    """NxHxW binary masks -> pycocotools RLEs."""
    masks = np.asarray(masks, dtype=np.uint8)
    if masks.ndim != 3:
        raise ValueError(f"expected NxHxW masks, got shape {masks.shape}")
    return mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0)))


def mask_iou_matrix(pred_rles: list[dict], gt_rles: list[dict]) -> np.ndarray:
    """IoU of every prediction (rows) with every ground truth (columns)."""
    if not pred_rles or not gt_rles:
        return np.zeros((len(pred_rles), len(gt_rles)))
    return np.asarray(mask_util.iou(pred_rles, gt_rles, [0] * len(gt_rles)), dtype=float)


def match_by_mask_iou(
    pred_rles: list[dict],
    pred_scores: np.ndarray,
    gt_rles: list[dict],
    iou_threshold: float = 0.5,
) -> MatchResult:
    """Match predictions to ground truth greedily by score.

    In decreasing score order each prediction takes the still unmatched ground truth with which
    it has the highest IoU, if that IoU is >= ``iou_threshold`` (COCO's rule at one threshold):
    a matched prediction is a true positive, an unmatched one a false positive, and every
    ground truth left unmatched a false negative.
    """
    if len(pred_rles) != len(pred_scores):
        raise ValueError(f"{len(pred_rles)} predicted masks but {len(pred_scores)} scores")
    ious = mask_iou_matrix(pred_rles, gt_rles)
    gt_taken = np.zeros(len(gt_rles), dtype=bool)
    pairs = []
    for p in np.argsort(-np.asarray(pred_scores, dtype=float), kind="stable"):
        if not len(gt_rles):
            break
        candidates = np.where(gt_taken, -1.0, ious[p])
        g = int(np.argmax(candidates))
        if candidates[g] >= iou_threshold:
            gt_taken[g] = True
            pairs.append((int(p), g, float(candidates[g])))
    tp = len(pairs)
    return MatchResult(tp, len(pred_rles) - tp, len(gt_rles) - tp, pairs)
