#!/usr/bin/env python
"""Download (or take a local copy of) the balloon dataset and place it at $DETECTRON2_DATASETS/balloon.

    python datasets/prepare_balloon.py                         # download matterport's zip
    python datasets/prepare_balloon.py --archive balloon_dataset.zip
    python datasets/prepare_balloon.py --source /path/to/unpacked/balloon

Every extracted file is checked against datasets/balloon.sha256 (see datasets/README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, uninstalled

from instseg_d2.data.prepare import BALLOON, prepare_cli  # noqa: E402
from instseg_d2.utils.cli import run_tool  # noqa: E402

MANIFEST = Path(__file__).resolve().parent / "balloon.sha256"

if __name__ == "__main__":
    sys.exit(run_tool(lambda argv: prepare_cli(BALLOON, MANIFEST, __doc__, argv)))
