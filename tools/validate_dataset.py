#!/usr/bin/env python
"""Check datasets image by image and list every problem with its file.

    python tools/validate_dataset.py --dataset pennfudan_train pennfudan_val
    python tools/validate_dataset.py --dataset balloon_train --no-decode --output problems.json
    python tools/validate_dataset.py --dataset-file path/to/data.yaml
    python tools/validate_dataset.py --config-file CFG INSTSEG.DATASET_FILE path/to/data.yaml

``--config-file`` checks the config's DATASETS.TRAIN and DATASETS.TEST (after its
INSTSEG.DATASET_FILE is registered). ``--dataset-file`` checks every split of a dataset file (see instseg_d2/data/dataset_file.py):
the file itself, what its readers found, each split's images and annotations, and what only all
splits together show (a class in val but never in train, a declared class without instances,
an image in two splits). Images are decoded in parallel and the results are remembered in
``<cache>/image_checks.sqlite`` ($INSTSEG_D2_CACHE_DIR, else $XDG_CACHE_HOME/instseg_d2, else
~/.cache/instseg_d2), so unchanged images are not decoded again.

Exits 1 if any dataset has an error (warnings alone exit 0).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, uninstalled

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
from detectron2.data import MetadataCatalog  # noqa: E402

from instseg_d2.data.dataset_validation import validate_dataset_file  # noqa: E402
from instseg_d2.data.image_checks import ImageCheckCache, default_image_cache  # noqa: E402
from instseg_d2.data.validation import format_problems, validate_registered_dataset  # noqa: E402
from instseg_d2.engine.defaults import dataset_names_from_args  # noqa: E402
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402
from instseg_d2.utils.errors import UserError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = ToolArgumentParser(__doc__.split("\n\n")[0], config_file="optional",
                                output="also write every problem to this JSON file",
                                output_required=False)  # fmt: skip
    parser.add_argument("--dataset", nargs="+", default=[], help="registered dataset names")
    parser.add_argument("--dataset-file", type=Path, help="a dataset YAML: check all its splits")
    parser.add_argument("--no-decode", action="store_true", help="read image headers only")
    parser.add_argument("--workers", type=int, help="threads decoding images (default: CPUs)")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--cache", type=Path, help="image-check cache file")
    cache.add_argument("--no-cache", action="store_true", help="decode every image again")
    args = parser.parse_args(argv)
    if not (args.dataset or args.dataset_file or args.config_file):
        raise UserError("give --dataset, --dataset-file or --config-file")
    names = dataset_names_from_args(args.dataset, None, args.config_file, args.opts)
    checks = None if args.no_cache else ImageCheckCache(args.cache) if args.cache else None
    if not args.no_cache and checks is None:
        checks = default_image_cache()
    decode = not args.no_decode
    report = {}
    file_checked = set()
    for name in names:
        dataset_file = MetadataCatalog.get(name).get("dataset_file")
        if dataset_file and dataset_file not in file_checked:
            # All splits together: also what only they show (a class in val but not in train).
            file_checked.add(dataset_file)
            report.update(validate_dataset_file(Path(dataset_file), decode, args.workers, checks))
        elif not dataset_file:
            report[name] = validate_registered_dataset(name, decode_images=decode, cache=checks)
    if args.dataset_file is not None:
        report.update(validate_dataset_file(args.dataset_file, decode, args.workers, checks))
    failed = False
    for name, problems in report.items():
        failed |= any(p.severity == "error" for p in problems)
        print(format_problems(problems, name, limit=len(problems)))
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        serialised = {name: [p.to_dict() for p in problems] for name, problems in report.items()}
        output.write_text(json.dumps(serialised, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
