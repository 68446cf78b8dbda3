#!/usr/bin/env python
"""Write a registered dataset as a COCO json that pycocotools loads.

    python tools/export_coco.py --dataset pennfudan_val --output output/pennfudan_val_coco.json

Uses Detectron2's ``convert_to_coco_json``. Boxes become COCO XYWH, Penn-Fudan masks stay RLE,
balloon masks stay polygons; category ids follow the dataset's
``thing_dataset_id_to_contiguous_id`` (class 1 for pedestrian / balloon).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, uninstalled

import instseg_d2.data  # noqa: E402,F401  (registers the datasets)
from instseg_d2.data.errors import DatasetError  # noqa: E402


def export_coco(dataset: str, output: Path) -> dict[str, int]:
    """Write ``dataset`` to ``output`` and return the counts pycocotools reads back."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets.coco import convert_to_coco_json
    from pycocotools.coco import COCO

    if dataset not in DatasetCatalog.list():
        raise SystemExit(
            f"unknown dataset {dataset!r}; registered: {', '.join(sorted(DatasetCatalog.list()))}"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        convert_to_coco_json(dataset, str(output), allow_cached=False)
    except DatasetError as exc:
        raise SystemExit(f"{dataset}: {exc}") from None
    finally:
        # convert_to_coco_json guards the file with a lock file that it leaves behind.
        Path(f"{output}.lock").unlink(missing_ok=True)
    coco = COCO(str(output))  # the check that the file is usable
    return {"images": len(coco.imgs), "annotations": len(coco.anns), "categories": len(coco.cats)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", required=True, help="registered dataset name")
    parser.add_argument("--output", required=True, type=Path, help="COCO json file to write")
    args = parser.parse_args(argv)
    counts = export_coco(args.dataset, args.output)
    print(
        f"wrote {args.output}: {counts['images']} images, {counts['annotations']} annotations, "
        f"{counts['categories']} categories"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
