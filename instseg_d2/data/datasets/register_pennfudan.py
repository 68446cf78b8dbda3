"""Penn-Fudan Pedestrians as Detectron2 datasets: one annotation per person in each mask.

Read by the mask-folder reader (:mod:`..formats.mask_folder`).
``PedMasks/<stem>_mask.png`` holds instance ids (pixel value k is the k-th person, 0 background).
Each id becomes one annotation with a lossless COCO RLE ``segmentation`` (so configs use
``INPUT.MASK_FORMAT: bitmask``) and the tight mask box in ``XYWH_ABS``. The masks are the ground
truth; the boxes of ``Annotation/<stem>.txt`` are only compared against them, and disagreements
(instance count, image size, box IoU below ``BOX_IOU_TOLERANCE``) are logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..errors import DatasetError
from ..formats.mask_folder import load_mask_folder
from ..pascal_txt import box_iou, parse_pascal_txt
from .pennfudan_split import load_pennfudan_split, make_pennfudan_kfold

logger = logging.getLogger(__name__)

PENNFUDAN_DIR = "PennFudanPed"
PENNFUDAN_METADATA = {
    "thing_classes": ["pedestrian"],
    "thing_colors": [(220, 20, 60)],
    "evaluator_type": "coco",
    # COCO category ids start at 1: exports and COCOEvaluator results call the class 1, while
    # the model's contiguous class index is 0.
    "thing_dataset_id_to_contiguous_id": {1: 0},
}
# Box agreement that counts as "the .txt box and the mask box are the same object". On the real
# data 407 of 423 boxes agree exactly and the worst IoU is 0.935 (PennPed00027, object 1).
BOX_IOU_TOLERANCE = 0.9
MINI_SIZES = {"train": 10, "val": 5}
NUM_FOLDS = 5
_SOURCE_ID_BASE = {"FudanPed": 100000, "PennPed": 200000}
_PREPARE_HINT = (
    "run `python datasets/prepare_pennfudan.py` or unpack PennFudanPed.zip there by hand "
    "(see datasets/README.md)"
)


def pennfudan_image_id(stem: str) -> int:
    """Stable integer id from the file name: FudanPed00012 -> 100012, PennPed00007 -> 200007."""
    for source, base in _SOURCE_ID_BASE.items():
        number = stem[len(source) :]
        if stem.startswith(source) and number.isdigit():
            return base + int(number)
    raise DatasetError(f"{stem}: not a Penn-Fudan image name (FudanPedNNNNN or PennPedNNNNN)")


def _check_layout(dataset_dir: Path) -> None:
    missing = [sub for sub in ("PNGImages", "PedMasks") if not (dataset_dir / sub).is_dir()]
    if missing:
        raise DatasetError(
            f"{dataset_dir}: Penn-Fudan not found (missing {', '.join(missing)}); {_PREPARE_HINT}"
        )


def load_pennfudan_dicts(dataset_dir: str | os.PathLike, stems: Sequence[str]) -> list[dict]:
    """Detectron2 dataset dicts for the images ``stems`` of the Penn-Fudan folder ``dataset_dir``.

    Read by the mask-folder reader (``PNGImages/<stem>.png``, ``PedMasks/<stem>_mask.png``, one
    class). Raises DatasetError (naming the file) for a missing image or mask, a mask whose size
    differs from its image, or an unreadable file. A mask with a gap in its ids (e.g. 1 and 3)
    keeps every id it has and logs a warning.
    """
    dataset_dir = Path(dataset_dir)
    _check_layout(dataset_dir)
    loaded = load_mask_folder(
        dataset_dir,
        images_dir="PNGImages",
        masks_dir="PedMasks",
        suffix="_mask",
        class_name=PENNFUDAN_METADATA["thing_classes"][0],
        stems=stems,
        require_masks=True,
    )
    for note in loaded.notes:
        logger.warning("%s: %s", note.file, note.message)
    dicts = loaded.dicts
    for record in dicts:
        record["image_id"] = pennfudan_image_id(Path(record["file_name"]).stem)
    disagreements = pennfudan_annotation_disagreements(dataset_dir, dicts)
    if disagreements:
        logger.warning(
            "%d disagreement(s) between Penn-Fudan .txt annotations and masks (masks are used):\n%s",
            len(disagreements),
            "\n".join(disagreements),
        )
    return dicts


def pennfudan_annotation_disagreements(
    dataset_dir: str | os.PathLike, dicts: Sequence[dict], min_iou: float = BOX_IOU_TOLERANCE
) -> list[str]:
    """Where ``Annotation/<stem>.txt`` disagrees with the mask-derived annotations in ``dicts``.

    One line per problem, starting with the .txt file: missing file, image size, instance count,
    or a box whose IoU with the mask's box is below ``min_iou``.
    """
    problems = []
    for record in dicts:
        stem = Path(record["file_name"]).stem
        txt_file = Path(dataset_dir) / "Annotation" / f"{stem}.txt"
        if not txt_file.is_file():
            problems.append(f"{txt_file}: annotation file missing")
            continue
        try:
            parsed = parse_pascal_txt(txt_file)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        if (parsed.width, parsed.height) != (record["width"], record["height"]):
            problems.append(
                f"{txt_file}: image size {parsed.width}x{parsed.height} but the PNG is "
                f"{record['width']}x{record['height']}"
            )
        annotations = record["annotations"]
        if parsed.num_objects != len(annotations) or len(parsed.boxes) != len(annotations):
            problems.append(
                f"{txt_file}: {parsed.num_objects} objects ({len(parsed.boxes)} boxes) but the mask "
                f"has {len(annotations)} instances"
            )
        for ann in annotations:
            txt_box = parsed.boxes.get(ann["instance_id"])
            if txt_box is None:
                continue
            mask_box = BoxMode.convert(ann["bbox"], ann["bbox_mode"], BoxMode.XYXY_ABS)
            iou = box_iou(txt_box, mask_box)
            if iou < min_iou:
                problems.append(
                    f"{txt_file}: object {ann['instance_id']} box {txt_box} vs mask box "
                    f"{tuple(round(v, 1) for v in mask_box)} (IoU {iou:.2f} < {min_iou})"
                )
    return problems


def pennfudan_splits(num_folds: int = NUM_FOLDS) -> dict[str, list[str]]:
    """Registered name -> image stems, for the fixed split, its mini subsets and the k folds."""
    split = load_pennfudan_split()
    splits = {f"pennfudan_{name}": stems for name, stems in split.items()}
    for name, size in MINI_SIZES.items():
        splits[f"pennfudan_{name}_mini"] = split[name][:size]
    for fold in range(num_folds):
        for name, stems in make_pennfudan_kfold(fold, num_folds).items():
            splits[f"pennfudan_fold{fold}of{num_folds}_{name}"] = stems
    return splits


def register_pennfudan(root: str | os.PathLike, num_folds: int = NUM_FOLDS) -> None:
    """Register every Penn-Fudan split of ``pennfudan_splits`` with data under ``root``.

    Registration only stores a loader; nothing is read until ``DatasetCatalog.get``.
    """
    dataset_dir = Path(root) / PENNFUDAN_DIR
    # The k folds split the images of train + val: tools/cross_validate.py uses them for a config
    # that pools exactly these two sets (instseg_d2.data.folds.builtin_folds).
    folds = [(f"pennfudan_fold{i}of{num_folds}_train", f"pennfudan_fold{i}of{num_folds}_val")
             for i in range(num_folds)]  # fmt: skip
    cv_pool = ("pennfudan_train", "pennfudan_val")
    for name, stems in pennfudan_splits(num_folds).items():
        DatasetCatalog.register(
            name, lambda stems=tuple(stems): load_pennfudan_dicts(dataset_dir, stems)
        )
        MetadataCatalog.get(name).set(
            **PENNFUDAN_METADATA, dataset_root=str(dataset_dir), num_images=len(stems)
        )
        if name in cv_pool:
            MetadataCatalog.get(name).set(cv_folds={num_folds: folds}, cv_pool=cv_pool)
