#!/usr/bin/env python
"""Compare two sets of runs pair by pair (fold or seed) and say which is better, if either.

    python tools/compare_runs.py output/fp32_cv5 output/bf16_cv5 --output output/fp32_vs_bf16
    python tools/compare_runs.py output/seeds_a output/seeds_b      # run folders seed1, seed2...
    python tools/compare_runs.py output/run_a output/run_b          # one run each, same test set

A and B are each a cross-validation output (tools/cross_validate.py; paired by fold), a folder
of run folders (paired by sub-folder name) or one run folder (a paired bootstrap over the test
images). Prints per metric the mean difference B - A, its 95% interval and a verdict; with
--output also writes comparison.json and comparison.md there.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
from instseg_d2.evaluation.comparison import (  # noqa: E402
    DEFAULT_METRICS,
    compare_run_sets,
    comparison_markdown,
    load_run_set,
)
from instseg_d2.utils.atomic import atomic_write  # noqa: E402
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402
from instseg_d2.utils.errors import UserError  # noqa: E402


def get_parser() -> ToolArgumentParser:
    parser = ToolArgumentParser(__doc__.split("\n\n")[0], config_file=False)
    parser.add_argument("a", metavar="A", help="cross-validation output, folder of runs, or run")
    parser.add_argument("b", metavar="B", help="the same kind of folder as A")
    parser.add_argument("--output", metavar="DIR", help="write comparison.json/.md here")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                        metavar="TASK/METRIC", help="first one gives the verdict (segm/AP ...)")  # fmt: skip
    parser.add_argument("--bootstrap-samples", type=int, default=1000,
                        help="resamples for a single pair of runs (0: none)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    for metric in args.metrics:
        if metric.split("/")[0] not in ("bbox", "segm") or "/" not in metric:
            raise UserError(f"--metrics {metric}: expected bbox/<metric> or segm/<metric>")
    import instseg_d2.data  # noqa: F401  (registers the datasets: ground truth of a single pair)

    result = compare_run_sets(
        load_run_set(args.a), load_run_set(args.b), args.metrics, args.bootstrap_samples, args.seed
    )
    markdown = comparison_markdown(result)
    print(markdown)
    headline = next(iter(result["metrics"].items()))
    print(f"{headline[0]}: {headline[1]['verdict']}")
    if args.output:
        output = Path(args.output)
        output.mkdir(parents=True, exist_ok=True)
        atomic_write(output / "comparison.json", json.dumps(result, indent=2) + "\n")
        atomic_write(output / "comparison.md", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
