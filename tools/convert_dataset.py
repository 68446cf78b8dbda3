#!/usr/bin/env python
"""Write datasets as COCO, LabelMe, YOLO-seg, VIA or mask folders, with a dataset file.

    python tools/convert_dataset.py --dataset pennfudan_train pennfudan_val --to labelme \
        --output out/pennfudan_labelme
    python tools/convert_dataset.py --dataset-file my/data.yaml --to yolo --output out/my_yolo
    python tools/convert_dataset.py --dataset train=pennfudan_val --to coco --output out/pf_val

Each dataset goes to the split its name ends in (``balloon_train_mini``: train; no split word:
train), or to the one given as ``SPLIT=NAME``; several datasets of one split are merged, their
classes matched by name. ``--dataset-file`` converts every split of a dataset file (a val held out
of train becomes a val split), ``--config-file`` the config's DATASETS.TRAIN and DATASETS.TEST.
``--output`` must be a new or empty folder; it receives the format's files, the images (symlinks,
or copies with ``--copy-images``) and ``data.yaml``, which trains at once with
``INSTSEG.DATASET_FILE``. The result is read back through the format's reader and its counts per
split and class printed, with every lossy step (what the format cannot hold) and how much it cost.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, uninstalled

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
from instseg_d2.data.convert import (  # noqa: E402
    convert,
    gather_registered,
    split_of_name,
    summary_lines,
)
from instseg_d2.data.dataset_file import FORMATS, SPLITS  # noqa: E402
from instseg_d2.engine.defaults import dataset_names_from_args  # noqa: E402
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402
from instseg_d2.utils.errors import UserError  # noqa: E402

CPU_CONFIG = "configs/Custom/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml"


def names_by_split(
    datasets: list[str], dataset_file: Path | None, config_file: str | None, opts: list[str]
) -> dict[str, list[str]]:
    """Registered dataset names per split (``SPLIT=NAME`` or the name's split word)."""
    chosen: dict[str, str] = {}
    plain = []
    for item in datasets:
        split, sep, name = item.partition("=")
        if not sep:
            plain.append(item)
        elif split not in SPLITS:
            raise UserError(f"--dataset {item}: {split!r} is not a split ({', '.join(SPLITS)})")
        else:
            chosen[name] = split
    names = dataset_names_from_args([*plain, *chosen], dataset_file, config_file, opts)
    result: dict[str, list[str]] = {}
    for name in names:
        result.setdefault(chosen.get(name) or split_of_name(name), []).append(name)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = ToolArgumentParser(
        __doc__.split("\n\n")[0],
        config_file="optional",
        output="new folder for the converted dataset",
    )
    parser.add_argument(
        "--dataset",
        nargs="+",
        default=[],
        metavar="NAME",
        help="registered datasets (SPLIT=NAME: into that split)",
    )
    parser.add_argument(
        "--dataset-file", type=Path, metavar="FILE", help="a dataset YAML: all its splits"
    )
    parser.add_argument("--to", required=True, choices=FORMATS, help="the format to write")
    parser.add_argument("--copy-images", action="store_true", help="copy images (default: link)")
    parser.add_argument("--name", help="the dataset file's name (default: the output folder's)")
    args = parser.parse_args(argv)
    if not (args.dataset or args.dataset_file or args.config_file):
        raise UserError("give --dataset, --dataset-file or --config-file")
    splits = names_by_split(args.dataset, args.dataset_file, args.config_file, args.opts)
    if "train" not in splits:
        given = ", ".join(f"{n} ({split})" for split, names in splits.items() for n in names)
        raise UserError(
            f"no training split among {given}; a dataset file needs one: "
            f"--dataset train=NAME puts a dataset into train"
        )
    output = Path(args.output)
    name = args.name or re.sub(r"[^A-Za-z0-9_.-]", "_", output.resolve().name)
    sources = "; ".join(f"{split}: {', '.join(names)}" for split, names in splits.items())
    converted = convert(
        gather_registered(splits),
        args.to,
        output,
        name=name,
        copy_images=args.copy_images,
        comment="\n".join(
            ["instseg_d2 dataset file, written by tools/convert_dataset.py from"]
            + [f"  {split}: {', '.join(names)}" for split, names in splits.items()]
        ),
    )
    images = "copied" if args.copy_images else "linked"
    print(f"wrote {sources} as {args.to} to {output} (images {images})")
    print("\n".join(summary_lines(converted)))
    print(f"next: python tools/validate_dataset.py --dataset-file {converted.dataset_file}")
    print(
        f"      python tools/train_net.py --config-file {CPU_CONFIG} "
        f"INSTSEG.DATASET_FILE {converted.dataset_file}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
