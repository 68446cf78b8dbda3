"""Where datasets live: ``$DETECTRON2_DATASETS`` (default ``./datasets``), as in Detectron2."""

from __future__ import annotations

import os
from pathlib import Path

# Sub-folders each dataset must have under the root; used for discovery and clear errors.
EXPECTED_LAYOUT: dict[str, tuple[str, ...]] = {
    "PennFudanPed": ("PNGImages", "PedMasks", "Annotation"),
    "balloon": ("train", "val"),
}


def dataset_root() -> Path:
    return Path(os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets")))


def missing_parts(root: Path, name: str) -> list[str]:
    """Expected sub-folders of dataset ``name`` that are absent under ``root``."""
    return [sub for sub in EXPECTED_LAYOUT[name] if not (root / name / sub).is_dir()]


def find_datasets(root: Path | None = None) -> dict[str, str]:
    """A one-line status per known dataset: found, or what is missing."""
    root = dataset_root() if root is None else root
    status = {}
    for name in EXPECTED_LAYOUT:
        missing = missing_parts(root, name)
        status[name] = (
            f"found at {root / name}"
            if not missing
            else f"missing {', '.join(missing)} under {root / name}"
        )
    return status
