"""Seeded train/val and k-fold splits of any dataset's dicts, stratified by class.

Each image is put in the group of its rarest class (the class present in the fewest images of
the dataset; ties go to the lower class index), images without instances in a group of their
own; each group is shuffled with ``random.Random(seed)`` (after sorting by file name, so the
order of the input does not matter) and split in proportion. Rare classes thus land in val in
proportion too, and each class group keeps at least one image in train, so that a class is
never seen in val only because of the split.

(Penn-Fudan keeps its own committed split, stratified by source, in
``datasets/pennfudan_split.py``.)
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

NEGATIVE_GROUP = -1


def _groups(dicts: Sequence[dict]) -> dict[int, list[int]]:
    """Group key (rarest class, or NEGATIVE_GROUP) -> indices into ``dicts``, sorted by file."""
    images_per_class = Counter(
        c for d in dicts for c in {a["category_id"] for a in d.get("annotations", [])}
    )
    groups: dict[int, list[int]] = {}
    for index, record in enumerate(dicts):
        present = {a["category_id"] for a in record.get("annotations", [])}
        key = min(present, key=lambda c: (images_per_class[c], c)) if present else NEGATIVE_GROUP
        groups.setdefault(key, []).append(index)
    for members in groups.values():
        members.sort(key=lambda i: (str(dicts[i].get("file_name")), i))
    return dict(sorted(groups.items()))


def _quotas(sizes: dict[int, int], total: int) -> dict[int, int]:
    """Largest-remainder share of ``total`` per group.

    A class group keeps at least one image in train while that still lets val reach ``total``;
    only a dataset too small for both (e.g. every class in one image) gives that up.
    """
    fraction = total / sum(sizes.values())
    strict = {k: n if k == NEGATIVE_GROUP else n - 1 for k, n in sizes.items()}
    quotas = {k: min(math.floor(fraction * n), strict[k]) for k, n in sizes.items()}
    by_remainder = sorted(sizes, key=lambda k: (quotas[k] - fraction * sizes[k], k))
    for caps in (strict, sizes):
        # One more image per group, largest remainder first, until val has ``total``.
        grew = True
        while sum(quotas.values()) < total and grew:
            grew = False
            for k in by_remainder:
                if sum(quotas.values()) < total and quotas[k] < caps[k]:
                    quotas[k] += 1
                    grew = True
    return quotas


def stratified_split(
    dicts: Sequence[dict], val_fraction: float, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """``(train, val)``: about ``val_fraction`` of the images in val, stratified by class.

    Deterministic for a given ``seed``; both lists keep the order of ``dicts``.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if len(dicts) < 2:
        raise ValueError(f"cannot split {len(dicts)} image(s) into train and val")
    total = min(max(round(val_fraction * len(dicts)), 1), len(dicts) - 1)
    groups = _groups(dicts)
    quotas = _quotas({k: len(v) for k, v in groups.items()}, total)
    rng = random.Random(seed)
    val: set[int] = set()
    for key, members in groups.items():
        shuffled = list(members)
        rng.shuffle(shuffled)
        val.update(shuffled[: quotas[key]])
    return (
        [d for i, d in enumerate(dicts) if i not in val],
        [d for i, d in enumerate(dicts) if i in val],
    )


def stratified_kfold(
    dicts: Sequence[dict], num_folds: int, fold: int, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """``(train, val)`` of fold ``fold`` (0-based) of a stratified ``num_folds``-fold split.

    Each group is shuffled and dealt round-robin into the folds, continuing where the previous
    group stopped, so fold sizes differ by at most one and the folds' val parts partition the
    images. Deterministic for a given ``seed``.
    """
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold must be in 0..{num_folds - 1}, got {fold}")
    if len(dicts) < num_folds:
        raise ValueError(f"cannot make {num_folds} folds of {len(dicts)} image(s)")
    rng = random.Random(seed)
    fold_of: dict[int, int] = {}
    dealt = 0
    for members in _groups(dicts).values():
        shuffled = list(members)
        rng.shuffle(shuffled)
        for index in shuffled:
            fold_of[index] = dealt % num_folds
            dealt += 1
    return (
        [d for i, d in enumerate(dicts) if fold_of[i] != fold],
        [d for i, d in enumerate(dicts) if fold_of[i] == fold],
    )
