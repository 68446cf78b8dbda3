#!/usr/bin/env python
"""Print tables of dataset statistics, per split and per class, optionally also as JSON.

python tools/dataset_summary.py                       # the four main splits
python tools/dataset_summary.py --dataset pennfudan_train balloon_val --output summary.json
python tools/dataset_summary.py --dataset-file path/to/data.yaml   # every split of the file
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, uninstalled

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from tabulate import tabulate  # noqa: E402

from instseg_d2.data.summary import (  # noqa: E402
    CLASS_HEADERS,
    SUMMARY_HEADERS,
    class_table_rows,
    summarize_dataset_dicts,
    summary_table_rows,
)
from instseg_d2.engine.defaults import dataset_names_from_args  # noqa: E402
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402

DEFAULT_DATASETS = ["pennfudan_train", "pennfudan_val", "balloon_train", "balloon_val"]


def main(argv: list[str] | None = None) -> int:
    parser = ToolArgumentParser(__doc__.split("\n\n")[0], config_file="optional",
                                output="also write the statistics to this JSON file",
                                output_required=False)  # fmt: skip
    parser.add_argument("--dataset", nargs="+", default=[], help="registered names")
    parser.add_argument("--dataset-file", type=Path, help="a dataset YAML: all its splits")
    parser.add_argument("--list", action="store_true", help="list the registered dataset names")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(sorted(DatasetCatalog.list())))
        return 0
    given = args.dataset or args.dataset_file or args.config_file
    names = dataset_names_from_args(
        args.dataset if given else DEFAULT_DATASETS, args.dataset_file, args.config_file, args.opts
    )
    summaries = {
        name: summarize_dataset_dicts(
            DatasetCatalog.get(name), MetadataCatalog.get(name).get("thing_classes")
        )
        for name in names
    }
    print(tabulate(summary_table_rows(summaries), headers=SUMMARY_HEADERS, tablefmt="github"))
    print()
    print(tabulate(class_table_rows(summaries), headers=CLASS_HEADERS, tablefmt="github"))
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(summaries, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
