"""Seeded train/val and k-fold splits of Penn-Fudan, stratified by source (Fudan vs Penn).

Penn-Fudan has no official split. The committed ``splits/pennfudan.json`` was made with
:func:`make_pennfudan_split` (seed 0, 50 val images): 22 Fudan + 28 Penn images in val, i.e. both
sources in proportion (74/170 and 96/170). Regenerate with
``python -m instseg_d2.data.datasets.pennfudan_split``; the output is deterministic.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

SPLIT_FILE = Path(__file__).resolve().parent / "splits" / "pennfudan.json"
SOURCES = ("FudanPed", "PennPed")
NUM_IMAGES = {"FudanPed": 74, "PennPed": 96}


def all_pennfudan_stems() -> list[str]:
    """The 170 official image stems, FudanPed00001..00074 and PennPed00001..00096."""
    return [f"{src}{i:05d}" for src in SOURCES for i in range(1, NUM_IMAGES[src] + 1)]


def _by_source(stems: Sequence[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {src: [] for src in SOURCES}
    for stem in stems:
        source = next((src for src in SOURCES if stem.startswith(src)), None)
        if source is None:
            raise ValueError(f"{stem!r} is not a Penn-Fudan image name (FudanPed*/PennPed*)")
        groups[source].append(stem)
    return groups


def make_pennfudan_split(
    stems: Sequence[str] | None = None, num_val: int = 50, seed: int = 0
) -> dict[str, list[str]]:
    """Train/val split with each source in val in proportion to its share of ``stems``."""
    stems = sorted(all_pennfudan_stems() if stems is None else stems)
    groups = _by_source(stems)
    rng = random.Random(seed)
    val: list[str] = []
    remaining = num_val
    for i, source in enumerate(SOURCES):
        group = groups[source]
        # The last source takes the remainder, so the counts always add up to num_val.
        take = remaining if i == len(SOURCES) - 1 else round(num_val * len(group) / len(stems))
        val += rng.sample(group, take)
        remaining -= take
    val_set = set(val)
    return {"train": [s for s in stems if s not in val_set], "val": sorted(val_set)}


def make_pennfudan_kfold(
    fold: int, num_folds: int = 5, stems: Sequence[str] | None = None, seed: int = 0
) -> dict[str, list[str]]:
    """Fold ``fold`` (0-based) of a stratified ``num_folds``-fold split of all images.

    Each source is shuffled with ``seed`` and dealt round-robin into the folds, so every fold has
    both sources in proportion and the folds' val sets partition the images.
    """
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold must be in 0..{num_folds - 1}, got {fold}")
    stems = sorted(all_pennfudan_stems() if stems is None else stems)
    groups = _by_source(stems)
    rng = random.Random(seed)
    val: list[str] = []
    for source in SOURCES:
        group = list(groups[source])
        rng.shuffle(group)
        val += group[fold::num_folds]
    val_set = set(val)
    return {"train": [s for s in stems if s not in val_set], "val": sorted(val_set)}


def load_pennfudan_split(path: Path = SPLIT_FILE) -> dict[str, list[str]]:
    with open(path) as f:
        split = json.load(f)
    return {"train": list(split["train"]), "val": list(split["val"])}


if __name__ == "__main__":
    split = make_pennfudan_split()
    document = {
        "description": "Penn-Fudan train/val split: make_pennfudan_split(num_val=50, seed=0), "
        "stratified by source (Fudan/Penn)",
        "seed": 0,
        **split,
    }
    SPLIT_FILE.parent.mkdir(parents=True, exist_ok=True)
    SPLIT_FILE.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {SPLIT_FILE}: {len(split['train'])} train, {len(split['val'])} val")
