#!/usr/bin/env python
"""Rebuild the self-contained HTML report of a run: ``OUTPUT_DIR/report.html``.

Example::

    python tools/make_report.py output/pennfudan_r18 --num-samples 3
"""

from __future__ import annotations

import argparse
import sys

from detectron2.utils.logger import setup_logger

from instseg_d2.visualization.report import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", metavar="OUTPUT_DIR")
    parser.add_argument(
        "--num-samples", type=int, default=3, help="comparison panels to include (0: none)"
    )
    args = parser.parse_args(argv)
    setup_logger(name="instseg_d2")
    try:
        path = write_report(args.output_dir, num_samples=args.num_samples)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
