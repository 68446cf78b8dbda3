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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, uninstalled

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
import contextlib  # noqa: E402
import io  # noqa: E402

from pycocotools.coco import COCO  # noqa: E402

from instseg_d2.data.dataset_file import read_dataset_file  # noqa: E402
from instseg_d2.data.export import registered_to_coco, write_json  # noqa: E402
from instseg_d2.engine.defaults import dataset_names_from_args  # noqa: E402
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402
from instseg_d2.utils.errors import UserError  # noqa: E402


def export_coco(dataset: str, output: Path, image_root: Path | None = None) -> dict[str, int]:
    """Write the registered ``dataset`` to ``output``; the counts pycocotools reads back."""
    write_json(registered_to_coco(dataset, image_root), output)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(output))  # the check that the file is usable
    return {"images": len(coco.imgs), "annotations": len(coco.anns), "categories": len(coco.cats)}


def main(argv: list[str] | None = None) -> int:
    parser = ToolArgumentParser(__doc__.split("\n\n")[0], config_file="optional",
                                output="COCO json file to write")  # fmt: skip
    parser.add_argument("--dataset", help="registered dataset name")
    parser.add_argument("--dataset-file", type=Path, help="a dataset YAML (with --split)")
    parser.add_argument("--split", default="train", help="split of the dataset file (train)")
    parser.add_argument("--image-root", type=Path, help="write file names relative to this")
    args = parser.parse_args(argv)
    if bool(args.dataset) == bool(args.dataset_file):
        raise UserError("give either --dataset NAME or --dataset-file FILE [--split SPLIT]")
    if args.dataset:
        name = dataset_names_from_args([args.dataset], None, args.config_file, args.opts)[0]
    else:
        spec = read_dataset_file(args.dataset_file)
        # Without a val split, val is held out of train.
        splits = {*spec.splits, "val"} if "train" in spec.splits else set(spec.splits)
        if args.split not in splits:
            raise UserError(f"{spec.path} has no split {args.split!r} (it has {sorted(splits)})")
        dataset_names_from_args([], args.dataset_file)
        name = spec.dataset_name(args.split)
    counts = export_coco(name, Path(args.output), args.image_root)
    print(
        f"wrote {args.output}: {counts['images']} images, {counts['annotations']} annotations, "
        f"{counts['categories']} categories ({name})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
