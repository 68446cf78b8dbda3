#!/usr/bin/env python
"""Write a dataset as a COCO instances json that pycocotools loads.

    python tools/export_coco.py --dataset pennfudan_val --output output/pennfudan_val_coco.json
    python tools/export_coco.py --dataset-file data.yaml --split train --output train_coco.json

``--dataset`` exports a registered dataset, ``--dataset-file`` one split of a dataset file in
any format (LabelMe, YOLO, VIA, mask folders, COCO), so converting a dataset to COCO is one
command. Categories are the class names with the dataset's ids (``thing_dataset_id_to_contiguous_id``;
1..K when it has none). Boxes become COCO XYWH; masks stay what they are (RLE or polygons).
``file_name`` is the image path, or relative to ``--image-root`` (give the same root to read
the json back). The written file is read back with pycocotools as a check.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, uninstalled

import instseg_d2.data  # noqa: E402,F401  (registers the datasets)
from instseg_d2.data.dataset_file import load_dataset_file, read_dataset_file  # noqa: E402
from instseg_d2.data.errors import DatasetError  # noqa: E402
from instseg_d2.data.export import dicts_to_coco, registered_to_coco, write_json  # noqa: E402


def _counts(output: Path) -> dict[str, int]:
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(output))  # the check that the file is usable
    return {"images": len(coco.imgs), "annotations": len(coco.anns), "categories": len(coco.cats)}


def export_coco(dataset: str, output: Path, image_root: Path | None = None) -> dict[str, int]:
    """Write the registered ``dataset`` to ``output``; the counts pycocotools reads back."""
    from detectron2.data import DatasetCatalog

    if dataset not in DatasetCatalog.list():
        raise SystemExit(
            f"unknown dataset {dataset!r}; registered: {', '.join(sorted(DatasetCatalog.list()))}"
        )
    try:
        write_json(registered_to_coco(dataset, image_root), output)
    except DatasetError as exc:
        raise SystemExit(f"{dataset}: {exc}") from None
    return _counts(output)


def export_dataset_file(
    dataset_file: Path, split: str, output: Path, image_root: Path | None = None
) -> dict[str, int]:
    """Write split ``split`` of a dataset file to ``output``; the counts read back."""
    try:
        spec = read_dataset_file(dataset_file)
        if split not in spec.splits and not (split == "val" and "train" in spec.splits):
            raise SystemExit(f"error: {dataset_file} has no split {split!r}")
        splits, classes, dataset_ids = load_dataset_file(spec)
        write_json(dicts_to_coco(splits[split].dicts, classes, dataset_ids, image_root), output)
    except DatasetError as exc:
        raise SystemExit(f"error: {exc}") from None
    return _counts(output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="registered dataset name")
    source.add_argument("--dataset-file", type=Path, help="a dataset YAML (with --split)")
    parser.add_argument("--split", default="train", help="split of --dataset-file (train)")
    parser.add_argument("--output", required=True, type=Path, help="COCO json file to write")
    parser.add_argument("--image-root", type=Path, help="write file names relative to this")
    args = parser.parse_args(argv)
    if args.dataset:
        counts = export_coco(args.dataset, args.output, args.image_root)
    else:
        counts = export_dataset_file(args.dataset_file, args.split, args.output, args.image_root)
    print(
        f"wrote {args.output}: {counts['images']} images, {counts['annotations']} annotations, "
        f"{counts['categories']} categories"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
