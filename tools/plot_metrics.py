#!/usr/bin/env python
"""Plot the learning curve and validation metrics of one or several runs from metrics.json.

Example::

    python tools/plot_metrics.py output/run_a output/run_b --output output/plots

Writes ``learning_curve.png`` (total and per-term training loss, raw and smoothed, with the
validation loss) and ``eval_metrics.png`` (bbox and segm AP, AP50, AP75 over iterations) into
``--output`` (default: the first run's folder). Several runs share each plot, one color per run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402
from instseg_d2.utils.errors import UserError  # noqa: E402
from instseg_d2.visualization.metrics import load_series  # noqa: E402
from instseg_d2.visualization.plots import (  # noqa: E402
    eval_metrics_figure,
    learning_curve_figure,
    save_figure,
)


def get_parser() -> ToolArgumentParser:
    parser = ToolArgumentParser(__doc__.split("\n\n")[0], config_file=False)
    parser.add_argument("runs", nargs="+", metavar="OUTPUT_DIR", help="run folders or metrics.json")
    parser.add_argument("--output", metavar="DIR", help="where the PNGs go (first run's folder)")
    parser.add_argument(
        "--labels", nargs="+", help="legend names of the runs (default: folder names)"
    )
    parser.add_argument("--smoothing", type=float, default=0.6, help="EMA weight in [0, 1)")
    parser.add_argument("--dpi", type=int, default=80)
    return parser


def run_label(run: str) -> str:
    path = Path(run).resolve()
    return path.parent.name if path.is_file() else path.name


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        raise UserError(f"{len(args.runs)} runs but {len(args.labels)} --labels")
    if not 0.0 <= args.smoothing < 1.0:
        raise UserError(f"--smoothing must be in [0, 1), got {args.smoothing}")
    labels = args.labels or [run_label(r) for r in args.runs]
    if len(set(labels)) != len(labels):  # two runs in folders of the same name
        labels = [f"{label} ({i})" for i, label in enumerate(labels)]
    runs = {}
    for label, run in zip(labels, args.runs, strict=True):
        runs[label] = load_series(run)
    first = Path(args.runs[0])
    output = Path(args.output) if args.output else (first if first.is_dir() else first.parent)
    for path in (
        save_figure(
            learning_curve_figure(runs, args.smoothing), output / "learning_curve.png", args.dpi
        ),
        save_figure(eval_metrics_figure(runs), output / "eval_metrics.png", args.dpi),
    ):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
