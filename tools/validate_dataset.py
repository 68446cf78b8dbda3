#!/usr/bin/env python
"""Check datasets image by image and list every problem with its file.

    python tools/validate_dataset.py --dataset pennfudan_train pennfudan_val
    python tools/validate_dataset.py --dataset balloon_train --no-decode --json problems.json
    python tools/validate_dataset.py --dataset-file path/to/data.yaml

``--dataset-file`` checks every split of a dataset file (see instseg_d2/data/dataset_file.py):
the file itself, what its readers found, each split's images and annotations, and what only all
splits together show (a class in val but never in train, a declared class without instances,
an image in two splits). Images are decoded in parallel and the results are remembered in
``<cache>/image_checks.sqlite`` ($INSTSEG_D2_CACHE_DIR, else $XDG_CACHE_HOME/instseg_d2, else
~/.cache/instseg_d2), so unchanged images are not decoded again.

Exits 1 if any dataset has an error (warnings alone exit 0).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, uninstalled

import instseg_d2.data  # noqa: E402,F401  (registers the datasets)
from instseg_d2.data.dataset_validation import validate_dataset_file  # noqa: E402
from instseg_d2.data.image_checks import ImageCheckCache, default_image_cache  # noqa: E402
from instseg_d2.data.validation import format_problems, validate_registered_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", nargs="+", default=[], help="registered dataset names")
    parser.add_argument("--dataset-file", type=Path, help="a dataset YAML: check all its splits")
    parser.add_argument(
        "--no-decode",
        action="store_true",
        help="read image headers only (faster, misses truncation)",
    )
    parser.add_argument("--workers", type=int, help="threads decoding images (default: CPUs)")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--cache", type=Path, help="image-check cache file (default: see above)")
    cache.add_argument("--no-cache", action="store_true", help="decode every image again")
    parser.add_argument("--json", type=Path, help="also write all problems to this JSON file")
    args = parser.parse_args(argv)
    if not args.dataset and args.dataset_file is None:
        raise SystemExit("error: give --dataset or --dataset-file")

    from detectron2.data import DatasetCatalog

    unknown = [name for name in args.dataset if name not in DatasetCatalog.list()]
    if unknown:
        raise SystemExit(
            f"unknown dataset(s): {', '.join(unknown)}; registered: "
            f"{', '.join(sorted(DatasetCatalog.list()))}"
        )
    checks = None if args.no_cache else ImageCheckCache(args.cache) if args.cache else None
    if not args.no_cache and checks is None:
        checks = default_image_cache()
    decode = not args.no_decode
    report = {}
    for name in args.dataset:
        report[name] = validate_registered_dataset(name, decode_images=decode, cache=checks)
    if args.dataset_file is not None:
        report.update(validate_dataset_file(args.dataset_file, decode, args.workers, checks))
    failed = False
    for name, problems in report.items():
        failed |= any(p.severity == "error" for p in problems)
        print(format_problems(problems, name, limit=len(problems)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        serialised = {name: [p.to_dict() for p in problems] for name, problems in report.items()}
        args.json.write_text(json.dumps(serialised, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
