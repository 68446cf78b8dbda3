#!/usr/bin/env python
"""Print a table of dataset statistics, per split, optionally also as JSON.

python tools/dataset_summary.py                       # the four main splits
python tools/dataset_summary.py --dataset pennfudan_train balloon_val --json summary.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, uninstalled

import instseg_d2.data  # noqa: E402,F401  (registers the datasets)
from instseg_d2.data.errors import DatasetError  # noqa: E402
from instseg_d2.data.summary import (  # noqa: E402
    SUMMARY_HEADERS,
    summarize_dataset_dicts,
    summary_table_rows,
)

DEFAULT_DATASETS = ["pennfudan_train", "pennfudan_val", "balloon_train", "balloon_val"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", nargs="+", default=DEFAULT_DATASETS, help="registered names")
    parser.add_argument("--json", type=Path, help="also write the statistics to this JSON file")
    args = parser.parse_args(argv)

    from detectron2.data import DatasetCatalog
    from tabulate import tabulate

    summaries = {}
    for name in args.dataset:
        if name not in DatasetCatalog.list():
            raise SystemExit(
                f"unknown dataset {name!r}; registered: {', '.join(sorted(DatasetCatalog.list()))}"
            )
        try:
            summaries[name] = summarize_dataset_dicts(DatasetCatalog.get(name))
        except DatasetError as exc:
            raise SystemExit(f"{name}: {exc}") from None
    print(tabulate(summary_table_rows(summaries), headers=SUMMARY_HEADERS, tablefmt="github"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summaries, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
