#!/usr/bin/env python
"""Print tables of dataset statistics, per split and per class, optionally also as JSON.

python tools/dataset_summary.py                       # the four main splits
python tools/dataset_summary.py --dataset pennfudan_train balloon_val --json summary.json
python tools/dataset_summary.py --dataset-file path/to/data.yaml   # every split of the file
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, uninstalled

import instseg_d2.data  # noqa: E402,F401  (registers the datasets)
from instseg_d2.data.dataset_file import load_dataset_file, read_dataset_file  # noqa: E402
from instseg_d2.data.errors import DatasetError  # noqa: E402
from instseg_d2.data.summary import (  # noqa: E402
    CLASS_HEADERS,
    SUMMARY_HEADERS,
    class_table_rows,
    summarize_dataset_dicts,
    summary_table_rows,
)

DEFAULT_DATASETS = ["pennfudan_train", "pennfudan_val", "balloon_train", "balloon_val"]


def summarize_dataset_file(path: Path) -> dict[str, dict]:
    """Statistics of every split of a dataset file, under their registered names."""
    spec = read_dataset_file(path)
    splits, classes, _ = load_dataset_file(spec)
    return {
        spec.dataset_name(split): summarize_dataset_dicts(loaded.dicts, classes)
        for split, loaded in splits.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", nargs="+", help="registered names")
    parser.add_argument("--dataset-file", type=Path, help="a dataset YAML: all its splits")
    parser.add_argument("--json", type=Path, help="also write the statistics to this JSON file")
    args = parser.parse_args(argv)
    names = args.dataset if args.dataset or args.dataset_file else DEFAULT_DATASETS

    from detectron2.data import DatasetCatalog, MetadataCatalog
    from tabulate import tabulate

    summaries = {}
    for name in names or []:
        if name not in DatasetCatalog.list():
            raise SystemExit(
                f"unknown dataset {name!r}; registered: {', '.join(sorted(DatasetCatalog.list()))}"
            )
        try:
            classes = MetadataCatalog.get(name).get("thing_classes")
            summaries[name] = summarize_dataset_dicts(DatasetCatalog.get(name), classes)
        except DatasetError as exc:
            raise SystemExit(f"{name}: {exc}") from None
    if args.dataset_file is not None:
        try:
            summaries.update(summarize_dataset_file(args.dataset_file))
        except DatasetError as exc:
            raise SystemExit(f"error: {exc}") from None
    print(tabulate(summary_table_rows(summaries), headers=SUMMARY_HEADERS, tablefmt="github"))
    print()
    print(tabulate(class_table_rows(summaries), headers=CLASS_HEADERS, tablefmt="github"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summaries, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
