#!/usr/bin/env python
"""Write the 2-class example dataset (pedestrians and balloons) as COCO, LabelMe and YOLO-seg.

    python datasets/make_two_class_example.py            # the *_mini sets: 10+10 train, 5+5 val
    python datasets/make_two_class_example.py --full     # all: 120+61 train, 50+13 val
    python datasets/make_two_class_example.py --output output/two_class --copy-images

Pedestrians come from Penn-Fudan (RLE masks), balloons from balloon (VIA polygons); the classes
are pedestrian (0) and balloon (1). Each format goes to ``<output>/<format>/`` with its dataset
file ``data.yaml`` (named ``two_class_<format>``), ready for ``INSTSEG.DATASET_FILE``; the default
output is ``$DETECTRON2_DATASETS/two_class_example``. Images are symlinked unless
``--copy-images``. This is the data of the README's "Your own data" walkthrough.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, uninstalled

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
import instseg_d2.data  # noqa: E402,F401  (registers pennfudan_* and balloon_*)
from instseg_d2.data.convert import (  # noqa: E402
    DATASET_FILE_NAME,
    convert,
    gather_registered,
    summary_lines,
)
from instseg_d2.data.paths import dataset_root  # noqa: E402
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402
from instseg_d2.utils.errors import UserError  # noqa: E402

CLASSES = ["pedestrian", "balloon"]
FORMATS = ("coco", "labelme", "yolo")
DEFAULT_FOLDER = "two_class_example"


def sources(full: bool) -> dict[str, list[str]]:
    """The registered datasets of each split: Penn-Fudan's and balloon's (``_mini`` unless
    ``full``)."""
    suffix = "" if full else "_mini"
    return {
        split: [f"pennfudan_{split}{suffix}", f"balloon_{split}{suffix}"]
        for split in ("train", "val")
    }


def main(argv: list[str] | None = None) -> int:
    parser = ToolArgumentParser(
        __doc__.split("\n\n")[0],
        config_file=False,
        output_required=False,
        output=f"folder (default: $DETECTRON2_DATASETS/{DEFAULT_FOLDER})",
    )
    parser.add_argument("--full", action="store_true", help="all images, not the *_mini sets")
    parser.add_argument("--copy-images", action="store_true", help="copy images (default: link)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the format folders an earlier run of this script wrote",
    )
    args = parser.parse_args(argv)
    output = Path(args.output) if args.output else dataset_root() / DEFAULT_FOLDER
    for fmt in FORMATS:
        folder = output / fmt
        if args.force and folder.is_dir():
            if not (folder / DATASET_FILE_NAME).is_file():
                raise UserError(f"{folder}: has no {DATASET_FILE_NAME}; not replacing it")
            shutil.rmtree(folder)
        elif folder.exists():
            raise UserError(f"{folder}: already exists; --force replaces it")
    names = sources(args.full)
    source = gather_registered(names, CLASSES)
    described = "; ".join(f"{split}: {' + '.join(n)}" for split, n in names.items())
    for fmt in FORMATS:
        converted = convert(
            source,
            fmt,
            output / fmt,
            name=f"two_class_{fmt}",
            copy_images=args.copy_images,
            comment=f"2-class example (datasets/make_two_class_example.py)\n  {described}",
        )
        print(f"== {fmt}")
        print("\n".join(summary_lines(converted)))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
