#!/usr/bin/env python
"""Rebuild the self-contained HTML report of a run: ``OUTPUT_DIR/report.html``.

Example::

    python tools/make_report.py output/pennfudan_r18 --num-samples 3
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
from detectron2.utils.logger import setup_logger  # noqa: E402

from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402
from instseg_d2.visualization.report import write_report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = ToolArgumentParser(__doc__.split("\n\n")[0], config_file=False)
    parser.add_argument("run", metavar="OUTPUT_DIR", help="the run folder")
    parser.add_argument(
        "--output", metavar="FILE", help="report file (default: OUTPUT_DIR/report.html)"
    )
    parser.add_argument("--num-samples", type=int, default=3, help="comparison panels (0: none)")
    args = parser.parse_args(argv)
    setup_logger(name="instseg_d2")
    print(write_report(args.run, num_samples=args.num_samples, report_path=args.output))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
