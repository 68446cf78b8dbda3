#!/usr/bin/env python
"""Download (or take a local copy of) Penn-Fudan and place it at $DETECTRON2_DATASETS/PennFudanPed.

    python datasets/prepare_pennfudan.py                       # download the official zip
    python datasets/prepare_pennfudan.py --archive PennFudanPed.zip
    python datasets/prepare_pennfudan.py --source /path/to/unpacked/PennFudanPed

Every extracted file is checked against datasets/PennFudanPed.sha256 (see datasets/README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, uninstalled

from instseg_d2.data.prepare import PENNFUDAN, prepare_cli  # noqa: E402
from instseg_d2.utils.cli import run_tool  # noqa: E402

MANIFEST = Path(__file__).resolve().parent / "PennFudanPed.sha256"

if __name__ == "__main__":
    sys.exit(run_tool(lambda argv: prepare_cli(PENNFUDAN, MANIFEST, __doc__, argv)))
