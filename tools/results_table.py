#!/usr/bin/env python
"""Print the results of finished runs as markdown table rows (for docs/results.md).

    python tools/results_table.py output/pennfudan_cpu output/balloon_cpu
    python tools/results_table.py output/cv5/r0_fold* --output results.md

One row per run folder, from its ``final_metrics.json`` (bbox and segm AP / AP50 with the 95%
bootstrap interval of AP when there is one, the seed, the iteration) and ``metrics.json`` (median
seconds per iteration of Detectron2's ``time`` entries), so that the log quotes the runs' own
files instead of copied numbers.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, uninstalled

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
from instseg_d2.engine.metrics_file import iter_metrics  # noqa: E402
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402
from instseg_d2.utils.errors import UserError  # noqa: E402

HEADER = "| run | iteration | seed | bbox AP [95% CI] / AP50 | segm AP [95% CI] / AP50 | s/it |"


def _metric(final: dict, task: str) -> str:
    values = final.get(task) or {}
    ap, ap50 = values.get("AP"), values.get("AP50")
    if ap is None:
        return "-"
    text = f"{ap:.1f}"
    interval = (final.get(f"{task}_ci95") or {}).get("AP")
    if interval:
        text += f" [{interval[0]:.1f}, {interval[1]:.1f}]"
    return text + (f" / {ap50:.1f}" if ap50 is not None else "")


def result_row(run: Path) -> str:
    """The markdown row of the run folder ``run``."""
    path = run / "final_metrics.json"
    try:
        final = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found (is {run} a finished run?)") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    times = [
        r["time"] for r in iter_metrics(run / "metrics.json") if isinstance(r.get("time"), float)
    ]
    seconds = f"{statistics.median(times):.2f}" if times else "-"
    return (
        f"| {run.name} | {final.get('iteration', '-')} | {final.get('seed', '-')} | "
        f"{_metric(final, 'bbox')} | {_metric(final, 'segm')} | {seconds} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = ToolArgumentParser(__doc__.split("\n\n")[0], config_file=False,
                                output="also write the table to this file",
                                output_required=False)  # fmt: skip
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders (OUTPUT_DIR)")
    args = parser.parse_args(argv)
    table = "\n".join(
        [HEADER, "|---|---|---|---|---|---|", *(result_row(Path(r)) for r in args.runs)]
    )
    print(table)
    if args.output:
        Path(args.output).write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
