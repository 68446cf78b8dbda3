#!/usr/bin/env python
"""Check registered datasets image by image and list every problem with its file.

    python tools/validate_dataset.py --dataset pennfudan_train pennfudan_val
    python tools/validate_dataset.py --dataset balloon_train --no-decode --json problems.json

Exits 1 if any dataset has an error (warnings alone exit 0).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, uninstalled

import instseg_d2.data  # noqa: E402,F401  (registers the datasets)
from instseg_d2.data.validation import format_problems, validate_registered_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", nargs="+", required=True, help="registered dataset names")
    parser.add_argument(
        "--no-decode",
        action="store_true",
        help="read image headers only (faster, misses truncation)",
    )
    parser.add_argument("--json", type=Path, help="also write all problems to this JSON file")
    args = parser.parse_args(argv)

    from detectron2.data import DatasetCatalog

    unknown = [name for name in args.dataset if name not in DatasetCatalog.list()]
    if unknown:
        raise SystemExit(
            f"unknown dataset(s): {', '.join(unknown)}; registered: "
            f"{', '.join(sorted(DatasetCatalog.list()))}"
        )
    report, failed = {}, False
    for name in args.dataset:
        problems = validate_registered_dataset(name, decode_images=not args.no_decode)
        report[name] = [p.to_dict() for p in problems]
        failed |= any(p.severity == "error" for p in problems)
        print(format_problems(problems, name, limit=len(problems)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
