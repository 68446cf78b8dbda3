"""Check that a speed-up leaves a model's predictions unchanged (within a stated tolerance).

Predictions are compared as sets: each detection of the reference is matched greedily (in score
order) to the unmatched detection of the candidate with the highest box IoU. Random weights give
many tied scores, so the order of the output list is not meaningful; the matched pairs are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torchvision.ops import box_iou


@dataclass
class Detections:
    """One image's predictions in a library-neutral form (CPU tensors, original image size)."""

    boxes: torch.Tensor  # (N, 4) float32 XYXY
    scores: torch.Tensor  # (N,)
    masks: torch.Tensor | None = None  # (N, H, W) bool

    @classmethod
    def from_instances(cls, instances) -> Detections:
        """From Detectron2 ``Instances`` (``pred_boxes``, ``scores``, ``pred_masks``)."""
        instances = instances.to("cpu")
        masks = instances.pred_masks.bool() if instances.has("pred_masks") else None
        return cls(instances.pred_boxes.tensor.float(), instances.scores.float(), masks)

    @classmethod
    def from_torchvision(cls, output: dict, mask_threshold: float = 0.5) -> Detections:
        """From a torchvision detection dict (``masks`` are probabilities, N x 1 x H x W)."""
        masks = output.get("masks")
        if masks is not None:
            masks = masks[:, 0].float().cpu() >= mask_threshold
        return cls(output["boxes"].float().cpu(), output["scores"].float().cpu(), masks)


@dataclass
class Agreement:
    """How closely a candidate's detections reproduce a reference's on the same image(s)."""

    num_reference: int = 0
    num_candidate: int = 0
    num_matched: int = 0  # pairs with box IoU >= match_iou
    max_box_abs_diff: float = 0.0  # over matched pairs, pixels
    max_score_abs_diff: float = 0.0
    mean_box_iou: float = 1.0
    mean_mask_iou: float = 1.0

    @property
    def matched_fraction(self) -> float:
        denom = max(self.num_reference, self.num_candidate)
        return 1.0 if denom == 0 else self.num_matched / denom

    def as_dict(self) -> dict[str, float]:
        out = asdict(self)
        out["matched_fraction"] = self.matched_fraction
        return out


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    inter = (a & b).sum().item()
    union = (a | b).sum().item()
    return 1.0 if union == 0 else inter / union


def compare_detections(
    reference: list[Detections], candidate: list[Detections], match_iou: float = 0.5
) -> Agreement:
    """Match ``candidate`` to ``reference`` image by image and pool the statistics."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference images but {len(candidate)} candidate images")
    agg = Agreement()
    box_ious: list[float] = []
    mask_ious: list[float] = []
    for ref, cand in zip(reference, candidate, strict=True):
        agg.num_reference += len(ref.boxes)
        agg.num_candidate += len(cand.boxes)
        if len(ref.boxes) == 0 or len(cand.boxes) == 0:
            continue
        ious = box_iou(ref.boxes, cand.boxes)
        taken = torch.zeros(len(cand.boxes), dtype=torch.bool)
        for i in torch.argsort(ref.scores, descending=True, stable=True).tolist():
            row = ious[i].masked_fill(taken, -1.0)
            j = int(row.argmax())
            if row[j] < match_iou:
                continue
            taken[j] = True
            agg.num_matched += 1
            box_ious.append(float(row[j]))
            agg.max_box_abs_diff = max(
                agg.max_box_abs_diff, float((ref.boxes[i] - cand.boxes[j]).abs().max())
            )
            agg.max_score_abs_diff = max(
                agg.max_score_abs_diff, float((ref.scores[i] - cand.scores[j]).abs())
            )
            if ref.masks is not None and cand.masks is not None:
                mask_ious.append(_mask_iou(ref.masks[i], cand.masks[j]))
    if box_ious:
        agg.mean_box_iou = sum(box_ious) / len(box_ious)
    if mask_ious:
        agg.mean_mask_iou = sum(mask_ious) / len(mask_ious)
    return agg
