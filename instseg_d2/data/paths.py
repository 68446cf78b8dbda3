"""Where datasets live: ``$DETECTRON2_DATASETS`` (default ``./datasets``), as in Detectron2; and
where this project keeps its caches (:func:`cache_dir`)."""

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


def cache_dir() -> Path:
    """``$INSTSEG_D2_CACHE_DIR``, else ``$XDG_CACHE_HOME/instseg_d2``, else ``~/.cache/instseg_d2``.

    Holds the image-check cache of validation and the images that LabelMe files embed. Nothing
    in it is needed: deleting it only costs the time to rebuild it.
    """
    explicit = os.environ.get("INSTSEG_D2_CACHE_DIR")
    if explicit:
        return Path(os.path.expanduser(explicit))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(os.path.expanduser(base)) / "instseg_d2"


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
