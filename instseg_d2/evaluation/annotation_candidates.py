"""Annotations that are possibly wrong, found where a model and the labels disagree.

Four kinds, each with a score in [0, 1] (higher: look at it first), computed on the matches of
:mod:`.error_analysis` (mask IoU, COCOeval's greedy matching at 0.5):

* ``unlabelled_object``: a confident detection (score >= the score threshold) whose mask IoU
  with every annotation of the image is < 0.1 (COCO's "background" error) and that lies in no
  crowd region: possibly an object nobody labelled. Score: the detection's score. Of detections
  overlapping each other at IoU >= 0.5 only the highest-scoring one is listed.
* ``unfound_annotation``: a non-crowd annotation that no confident detection matches at IoU 0.5:
  possibly a stray label, a wrong class or an outline drawn in the wrong place. Score:
  ``recall * (1 - support)``, where ``support`` is the highest detection score x mask IoU over
  the detections of its class (any score) and ``recall`` the fraction of its class's annotations
  that confident detections do match: the more of the other objects the model finds, the more an
  unfound one says about its label, and a model that finds few objects ranks its misses low.
* ``box_mask_mismatch``: an annotation whose box and the box around its mask have IoU < 0.8.
  Score: 1 - that IoU.
* ``near_duplicate``: two non-crowd annotations of one image with mask IoU >= 0.5 (the same
  object labelled twice, or with two classes). Score: their IoU.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pycocotools.mask as mask_util

from .error_analysis import BACKGROUND_IOU, ERROR_IOU, ErrorAnalysis, ImageOverlaps
from .segm_eval import GroundTruth

KINDS = ("unlabelled_object", "unfound_annotation", "box_mask_mismatch", "near_duplicate")
# Box vs mask-extent IoU under which an annotation's box and mask are taken to disagree: a box
# drawn from the same outline agrees to within a pixel (IoU > 0.9 for objects over ~20 px).
BOX_MASK_MIN_IOU = 0.8
DUPLICATE_MIN_IOU = 0.5
# Keys of a dataset dict's annotation that identify it in its source file (a COCO file's "id",
# Penn-Fudan's "instance_id": the pixel value of the instance in its mask PNG).
SOURCE_ID_KEYS = ("id", "instance_id")


@dataclass
class Candidate:
    """One possibly wrong annotation (or missing one), with where to find it and why."""

    kind: str
    score: float
    image_id: int | str
    file_name: str
    category: str
    box: list[float]  # XYWH of what to look at (the detection's or the annotation's box)
    note: str
    annotation_ids: list[int] = field(default_factory=list)
    detection: dict | None = None

    def to_json(self, gt: GroundTruth, rank: int) -> dict:
        """The candidate with its annotations located in the dataset (COCO id, index, source)."""
        annotations = []
        for annotation_id in self.annotation_ids:
            _, index = gt.annotation_source[annotation_id]
            anno = gt.dataset_annotation(annotation_id)
            annotations.append(
                {
                    "annotation_id": annotation_id,
                    "index_in_image": index,
                    "source_ids": {k: anno[k] for k in SOURCE_ID_KEYS if k in anno},
                }
            )
        return {
            "rank": rank,
            "kind": self.kind,
            "score": round(self.score, 4),
            "image_id": self.image_id,
            "file_name": self.file_name,
            "category": self.category,
            "box_xywh": [round(v, 1) for v in self.box],
            "annotations": annotations,
            "detection": self.detection,
            "note": self.note,
        }


def _box_iou_xywh(a, b) -> float:
    return float(mask_util.iou([list(a)], [list(b)], [0])[0][0])


class _Finder:
    """The state the four searches share: the analysis and each image's annotations."""

    def __init__(self, analysis: ErrorAnalysis):
        self.analysis = analysis
        self.gt = analysis.gt
        self.matches = analysis.matches[ERROR_IOU]

    def image(self, image_id) -> tuple[str, list[dict]]:
        d = self.gt.dataset_dicts[self.gt.image_index[image_id]]
        return d["file_name"], self.gt.coco.loadAnns(self.gt.coco.getAnnIds(imgIds=[image_id]))

    def detection_json(self, o: ImageOverlaps, row: int) -> dict:
        det = self.analysis.predictions.anns[o.detection_ids[row]]
        return {
            "score": round(float(det["score"]), 4),
            "category": self.gt.category_name(det["category_id"]),
            "bbox_xywh": [round(float(v), 1) for v in det["bbox"]],
        }

    def confident_ids(self, o: ImageOverlaps) -> set[int]:
        return {d for d, c in zip(o.detection_ids, self.analysis.confident(o), strict=True) if c}

    def unlabelled_objects(self, o: ImageOverlaps) -> list[Candidate]:
        file_name, _ = self.image(o.image_id)
        found: list[Candidate] = []
        kept_rles: list[dict] = []
        for row in np.flatnonzero(self.analysis.confident(o)):
            if o.ious[row].max(initial=0.0) >= BACKGROUND_IOU:
                continue
            if o.crowd_overlap[row] >= BACKGROUND_IOU:
                continue
            det = self.analysis.predictions.anns[o.detection_ids[row]]
            rle = self.analysis.predictions.annToRLE(det)
            if kept_rles and np.max(mask_util.iou([rle], kept_rles, [0] * len(kept_rles))) >= 0.5:
                continue  # a lower-scoring copy of a detection already listed
            kept_rles.append(rle)
            score = float(det["score"])
            found.append(
                Candidate(
                    kind="unlabelled_object",
                    score=score,
                    image_id=o.image_id,
                    file_name=file_name,
                    category=self.gt.category_name(det["category_id"]),
                    box=[float(v) for v in det["bbox"]],
                    note=f"no annotation within mask IoU {BACKGROUND_IOU:g} of this detection: "
                    "possibly an object nobody labelled",
                    detection=self.detection_json(o, int(row)),
                )
            )
        return found

    def class_recall(self) -> dict[int, float]:
        """Per class: the fraction of its annotations that a confident detection matches."""
        found, total = defaultdict(int), defaultdict(int)
        for o in self.analysis.overlaps.values():
            confident = self.confident_ids(o)
            for g, category in zip(o.gt_ids, o.gt_categories, strict=True):
                if g in self.matches.ignored_gt:
                    continue
                total[category] += 1
                found[category] += self.matches.gt_to_detection.get(g, 0) in confident
        return {c: found[c] / total[c] for c in total}

    def unfound_annotations(self, o: ImageOverlaps, recall: dict[int, float]) -> list[Candidate]:
        file_name, _ = self.image(o.image_id)
        confident = self.analysis.confident(o)
        found = []
        for col, (g, category) in enumerate(zip(o.gt_ids, o.gt_categories, strict=True)):
            if g in self.matches.ignored_gt:
                continue
            if self.matches.gt_to_detection.get(g, 0) in self.confident_ids(o):
                continue
            ious = o.ious[:, col]
            same = o.detection_categories == category
            support = float(np.max(o.scores[same] * ious[same], initial=0.0))
            same_confident = ious[same & confident].max(initial=0.0)
            other = ious[~same & confident]
            if other.size and other.max() >= ERROR_IOU:
                row = int(np.flatnonzero(~same & confident)[np.argmax(other)])
                other_class = self.gt.category_name(o.detection_categories[row])
                note = f"detected as {other_class} (IoU {other.max():.2f}): possibly a wrong class"
            elif same_confident >= BACKGROUND_IOU:
                note = (
                    f"the best confident detection overlaps it at mask IoU {same_confident:.2f} "
                    "only: outline possibly shifted or drawn wrong"
                )
            else:
                note = "no confident detection overlaps it: possibly a stray or wrong label"
            annotation = self.gt.coco.anns[g]
            found.append(
                Candidate(
                    kind="unfound_annotation",
                    score=recall.get(category, 0.0) * (1.0 - support),
                    image_id=o.image_id,
                    file_name=file_name,
                    category=self.gt.category_name(annotation["category_id"]),
                    box=[float(v) for v in annotation["bbox"]],
                    note=note,
                    annotation_ids=[g],
                )
            )
        return found

    def box_mask_mismatches(self, image_id, min_iou: float) -> list[Candidate]:
        file_name, annotations = self.image(image_id)
        found = []
        for annotation in annotations:
            mask_box = mask_util.toBbox(self.gt.coco.annToRLE(annotation)).tolist()
            iou = _box_iou_xywh(annotation["bbox"], mask_box)
            if iou >= min_iou:
                continue
            found.append(
                Candidate(
                    kind="box_mask_mismatch",
                    score=1.0 - iou,
                    image_id=image_id,
                    file_name=file_name,
                    category=self.gt.category_name(annotation["category_id"]),
                    box=[float(v) for v in annotation["bbox"]],
                    note=f"box {[round(v) for v in annotation['bbox']]} vs mask extent "
                    f"{[round(v) for v in mask_box]} (XYWH): IoU {iou:.2f}",
                    annotation_ids=[annotation["id"]],
                )
            )
        return found

    def near_duplicates(self, image_id, min_iou: float) -> list[Candidate]:
        file_name, annotations = self.image(image_id)
        regular = [a for a in annotations if not a.get("iscrowd", 0)]
        if len(regular) < 2:
            return []
        rles = [self.gt.coco.annToRLE(a) for a in regular]
        ious = np.asarray(mask_util.iou(rles, rles, [0] * len(rles)), dtype=float)
        found = []
        for i, j in zip(*np.triu_indices(len(regular), k=1), strict=True):
            if ious[i, j] < min_iou:
                continue
            a, b = regular[i], regular[j]
            names = {
                self.gt.category_name(a["category_id"]),
                self.gt.category_name(b["category_id"]),
            }
            found.append(
                Candidate(
                    kind="near_duplicate",
                    score=float(ious[i, j]),
                    image_id=image_id,
                    file_name=file_name,
                    category=" / ".join(sorted(names)),
                    box=[float(v) for v in a["bbox"]],
                    note=f"annotations {a['id']} and {b['id']} overlap at mask IoU "
                    f"{ious[i, j]:.2f}: the same object labelled twice?",
                    annotation_ids=[a["id"], b["id"]],
                )
            )
        return found


def find_candidates(
    analysis: ErrorAnalysis,
    box_mask_min_iou: float = BOX_MASK_MIN_IOU,
    duplicate_min_iou: float = DUPLICATE_MIN_IOU,
) -> list[Candidate]:
    """Every candidate of the four kinds (module docstring), highest score first."""
    finder = _Finder(analysis)
    recall = finder.class_recall()
    candidates: list[Candidate] = []
    for image_id, o in analysis.overlaps.items():
        candidates += finder.unlabelled_objects(o)
        candidates += finder.unfound_annotations(o, recall)
        candidates += finder.box_mask_mismatches(image_id, box_mask_min_iou)
        candidates += finder.near_duplicates(image_id, duplicate_min_iou)
    order = {kind: i for i, kind in enumerate(KINDS)}
    candidates.sort(key=lambda c: (-c.score, order[c.kind]))
    return candidates
