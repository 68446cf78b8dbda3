"""Pictures of annotation-error candidates: image | predictions | ground truth, candidate boxed."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data.catalog import Metadata
from detectron2.structures import Boxes, BoxMode, Instances

from ..evaluation.annotation_candidates import Candidate
from .panels import draw_ground_truth, draw_predictions, labelled_row

HIGHLIGHT_RGB = (255, 0, 255)  # magenta: in no Visualizer palette, visible on photos and masks
HIGHLIGHT_MARGIN = 4


def dataset_to_contiguous(metadata: Metadata | None):
    """COCO ``category_id`` of a results file -> the model's class index (inverse of
    ``instseg_d2.engine.coco_results.category_id_mapper``)."""
    mapping = getattr(metadata, "thing_dataset_id_to_contiguous_id", None) if metadata else None
    return (lambda category_id: mapping[category_id]) if mapping else int


def results_to_instances(
    results: Sequence[dict], height: int, width: int, metadata: Metadata | None = None
) -> Instances:
    """COCO results of one image (RLE masks) as Detectron2 ``Instances`` to draw."""
    to_contiguous = dataset_to_contiguous(metadata)
    instances = Instances((height, width))
    boxes = [BoxMode.convert(list(r["bbox"]), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) for r in results]
    instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.scores = torch.tensor([float(r["score"]) for r in results], dtype=torch.float32)
    instances.pred_classes = torch.tensor(
        [to_contiguous(r["category_id"]) for r in results], dtype=torch.int64
    )
    masks = [mask_util.decode(r["segmentation"]).astype(bool) for r in results]
    instances.pred_masks = torch.from_numpy(
        np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool)
    )
    return instances


def highlight(picture_rgb: np.ndarray, box_xywh: Sequence[float], label: str) -> np.ndarray:
    """A copy of ``picture_rgb`` with a thick box (a few pixels outside ``box_xywh``) and label."""
    out = np.ascontiguousarray(picture_rgb[:, :, :3]).copy()
    x, y, w, h = box_xywh
    height, width = out.shape[:2]
    x0, y0 = max(0, int(x) - HIGHLIGHT_MARGIN), max(0, int(y) - HIGHLIGHT_MARGIN)
    x1 = min(width - 1, int(np.ceil(x + w)) + HIGHLIGHT_MARGIN)
    y1 = min(height - 1, int(np.ceil(y + h)) + HIGHLIGHT_MARGIN)
    thickness = max(2, round(min(height, width) / 150))
    cv2.rectangle(out, (x0, y0), (x1, y1), HIGHLIGHT_RGB, thickness, cv2.LINE_AA)
    text_y = y0 - 4 if y0 > 16 else min(height - 4, y1 + 14)
    cv2.putText(out, label, (x0, text_y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, HIGHLIGHT_RGB, 2,
                cv2.LINE_AA)  # fmt: skip
    return out


def candidate_panel(
    image_rgb: np.ndarray,
    candidate: Candidate,
    rank: int,
    drawn_predictions: np.ndarray,
    drawn_ground_truth: np.ndarray,
    num_predictions: int,
    num_ground_truth: int,
    score_threshold: float,
) -> np.ndarray:
    """image | predictions | ground truth (RGB) with the candidate's box on each, and a caption.

    The drawings come from :func:`draw_candidate_columns` so that candidates of one image share
    them.
    """
    label = f"#{rank}"
    caption = f"#{rank} {candidate.kind} (score {candidate.score:.2f}): {candidate.note}"
    return labelled_row(
        [
            highlight(img, candidate.box, label)
            for img in (image_rgb, drawn_predictions, drawn_ground_truth)
        ],  # fmt: skip
        [
            "image",
            f"predictions, score >= {score_threshold:g} ({num_predictions})",
            f"ground truth ({num_ground_truth})",
        ],
        caption,
    )


def draw_candidate_columns(
    image_rgb: np.ndarray, predictions: Instances, dataset_dict: dict, metadata: Metadata | None
) -> tuple[np.ndarray, np.ndarray]:
    """The predictions and ground-truth drawings of one image (Detectron2's ``Visualizer``)."""
    return (
        draw_predictions(image_rgb, predictions, metadata),
        draw_ground_truth(image_rgb, dataset_dict, metadata),
    )
