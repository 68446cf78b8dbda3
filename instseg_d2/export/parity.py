"""Parity of an exported model with the eager model: same detections, within stated tolerances.

The two models' detections on an image are matched one to one, greedily: in the eager model's
score order, each detection takes the unmatched exported detection of the same class with the
highest box IoU (at least :data:`MATCH_IOU`). A matched pair must agree within
:class:`Tolerances`: box corners within 0.5 px, scores within 1e-3, mask IoU >= 0.98. A detection
left unmatched fails the check, unless it is borderline: its score is within the score tolerance
of the score threshold, or of the lowest score of a list cut at ``max_detections`` (the other
model may have put it just below the cut). Random weights make NMS and the
threshold arbitrary (ties everywhere), so the check is meant for trained models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..utils.errors import UserError

__all__ = [
    "Detections",
    "ParityError",
    "ParityReport",
    "Tolerances",
    "compare_detections",
]

# Box IoU needed to pair two detections at all; the tolerances decide whether the pair agrees.
MATCH_IOU = 0.5


class ParityError(UserError, RuntimeError):
    """An exported model's detections differ from the eager model's beyond the tolerances."""


@dataclass(frozen=True)
class Tolerances:
    """How far a matched pair of detections may differ (the issue's acceptance figures)."""

    box_px: float = 0.5
    score: float = 1e-3
    min_mask_iou: float = 0.98


@dataclass
class Detections:
    """One image's detections as numpy arrays (the exported model's output format)."""

    boxes: np.ndarray  # N x 4 float32, XYXY
    scores: np.ndarray  # N float32
    classes: np.ndarray  # N int64
    masks: np.ndarray  # N x H x W bool

    @classmethod
    def from_instances(cls, instances) -> Detections:
        """From Detectron2 ``Instances`` with ``pred_boxes``, ``scores``, ``pred_classes``,
        ``pred_masks`` (what ``BatchPredictor`` returns)."""
        instances = instances.to("cpu")
        return cls(
            instances.pred_boxes.tensor.numpy().astype(np.float32),
            instances.scores.numpy().astype(np.float32),
            instances.pred_classes.numpy().astype(np.int64),
            instances.pred_masks.numpy().astype(bool),
        )

    @classmethod
    def from_outputs(cls, outputs: dict[str, np.ndarray]) -> Detections:
        """From an exported model's output dict (``boxes``, ``scores``, ``classes``, ``masks``)."""
        return cls(
            np.asarray(outputs["boxes"], dtype=np.float32),
            np.asarray(outputs["scores"], dtype=np.float32),
            np.asarray(outputs["classes"], dtype=np.int64),
            np.asarray(outputs["masks"]).astype(bool),
        )

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class ParityReport:
    """Worst differences over all matched pairs, and the detections that found no partner."""

    tolerances: Tolerances = field(default_factory=Tolerances)
    num_images: int = 0
    num_eager: int = 0
    num_exported: int = 0
    num_matched: int = 0
    max_box_px: float = 0.0
    max_score_diff: float = 0.0
    min_mask_iou: float = 1.0
    # Unmatched detections: (image index, which model, score), borderline ones included.
    unmatched: list[tuple[int, str, float]] = field(default_factory=list)
    num_borderline: int = 0  # unmatched, but within the score tolerance of the threshold

    @property
    def failures(self) -> list[str]:
        """What broke the tolerances, one line each (empty when parity holds)."""
        tol = self.tolerances
        problems = []
        if self.max_box_px > tol.box_px:
            problems.append(f"box corners differ by {self.max_box_px:.3g} px (> {tol.box_px})")
        if self.max_score_diff > tol.score:
            problems.append(f"scores differ by {self.max_score_diff:.3g} (> {tol.score})")
        if self.min_mask_iou < tol.min_mask_iou:
            problems.append(f"a mask IoU is {self.min_mask_iou:.4f} (< {tol.min_mask_iou})")
        hard = len(self.unmatched) - self.num_borderline
        if hard:
            problems.append(f"{hard} detection(s) without a counterpart")
        return problems

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        """JSON-ready figures (for the metadata file)."""
        out = asdict(self)
        out["unmatched"] = [
            {"image": i, "model": model, "score": round(score, 6)}
            for i, model, score in self.unmatched
        ]
        out["passed"] = self.passed
        out["failures"] = self.failures
        return out

    def summary(self) -> str:
        """One line: counts and worst figures."""
        return (
            f"{self.num_matched}/{self.num_eager} eager detections matched on {self.num_images} "
            f"image(s) ({self.num_exported} exported); max box diff {self.max_box_px:.3g} px, "
            f"max score diff {self.max_score_diff:.3g}, min mask IoU {self.min_mask_iou:.4f}"
        )


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _match(eager: Detections, exported: Detections) -> list[tuple[int, int]]:
    """Greedy one-to-one pairs ``(eager index, exported index)``, same class, IoU >= MATCH_IOU."""
    if len(eager) == 0 or len(exported) == 0:
        return []
    iou = _box_iou(eager.boxes, exported.boxes)
    iou[eager.classes[:, None] != exported.classes[None, :]] = -1.0
    taken = np.zeros(len(exported), dtype=bool)
    pairs = []
    for i in np.argsort(-eager.scores, kind="stable"):
        row = np.where(taken, -1.0, iou[i])
        j = int(row.argmax())
        if row[j] >= MATCH_IOU:
            taken[j] = True
            pairs.append((int(i), j))
    return pairs


def compare_detections(
    eager: Sequence[Detections],
    exported: Sequence[Detections],
    score_threshold: float,
    tolerances: Tolerances | None = None,
    max_detections: int | None = None,
) -> ParityReport:
    """Match the detections of each image and pool the worst differences into one report.

    ``max_detections``: ``TEST.DETECTIONS_PER_IMAGE``, where lists are cut (None: no cut).
    """
    if len(eager) != len(exported):
        raise ValueError(f"{len(eager)} eager images but {len(exported)} exported ones")
    report = ParityReport(tolerances=tolerances or Tolerances(), num_images=len(eager))
    tol = report.tolerances.score
    for index, (ref, cand) in enumerate(zip(eager, exported, strict=True)):
        report.num_eager += len(ref)
        report.num_exported += len(cand)
        pairs = _match(ref, cand)
        report.num_matched += len(pairs)
        for i, j in pairs:
            report.max_box_px = max(
                report.max_box_px, float(np.abs(ref.boxes[i] - cand.boxes[j]).max())
            )
            report.max_score_diff = max(
                report.max_score_diff, float(abs(ref.scores[i] - cand.scores[j]))
            )
            report.min_mask_iou = min(report.min_mask_iou, _mask_iou(ref.masks[i], cand.masks[j]))
        for name, dets, matched in (
            ("eager", ref, {i for i, _ in pairs}),
            ("exported", cand, {j for _, j in pairs}),
        ):
            cut = score_threshold
            if max_detections is not None and len(dets) >= max_detections:
                cut = max(cut, float(dets.scores.min()))
            for k in sorted(set(range(len(dets))) - matched):
                score = float(dets.scores[k])
                report.unmatched.append((index, name, score))
                report.num_borderline += int(score < cut + tol)
    return report
