"""stratified_split and stratified_kfold: deterministic, stratified by class, partitions."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from instseg_d2.data.splits import stratified_kfold, stratified_split


def _dataset(n=60, seed=1):
    """``n`` images; class 2 is rare (6 images), a tenth of the images are negatives."""
    rng = random.Random(seed)
    dicts = []
    for i in range(n):
        if i % 10 == 9:
            classes = []
        elif i % 10 == 0:
            classes = [2, 0]
        else:
            classes = rng.sample([0, 1], rng.randint(1, 2))
        dicts.append(
            {"file_name": f"{i:03d}.jpg", "annotations": [{"category_id": c} for c in classes]}
        )
    return dicts


def _images_with(dicts, category):
    return sum(any(a["category_id"] == category for a in d["annotations"]) for d in dicts)


def test_split_is_deterministic_sized_and_stratified():
    dicts = _dataset()
    train, val = stratified_split(dicts, 0.25, seed=3)
    assert len(val) == 15 and len(train) == 45
    assert {d["file_name"] for d in train}.isdisjoint(d["file_name"] for d in val)
    assert stratified_split(dicts, 0.25, seed=3) == (train, val)
    assert stratified_split(list(reversed(dicts)), 0.25, seed=3)[1] == list(reversed(val))
    assert stratified_split(dicts, 0.25, seed=4)[1] != val
    # The rare class (6 images) and the negatives (6) go to val in proportion, not by luck.
    assert _images_with(val, 2) in (1, 2) and sum(not d["annotations"] for d in val) in (1, 2)
    assert [d for d in dicts if d in val] == val  # input order kept


def test_a_class_with_one_image_stays_in_train():
    # 4 + 4 images and the only image of class 5: by largest remainder class 5's group (0.6 of
    # an image) would be first to give one to val.
    dicts = [
        {"file_name": f"{c}{i}", "annotations": [{"category_id": c}]}
        for c in (0, 1)
        for i in range(4)
    ]
    dicts.append({"file_name": "rare", "annotations": [{"category_id": 5}]})
    for seed in range(5):
        train, val = stratified_split(dicts, 0.6, seed=seed)
        assert len(val) == 5 and _images_with(train, 5) == 1
    dicts = _dataset()
    dicts[9]["annotations"] = [{"category_id": 5}]
    for seed in range(5):
        assert _images_with(stratified_split(dicts, 0.5, seed=seed)[0], 5) == 1


def test_tiny_datasets_still_get_a_val_image():
    dicts = [
        {"file_name": "a", "annotations": [{"category_id": 0}]},
        {"file_name": "b", "annotations": [{"category_id": 1}]},
    ]
    train, val = stratified_split(dicts, 0.2)
    assert len(train) == len(val) == 1
    with pytest.raises(ValueError, match="cannot split 1 image"):
        stratified_split(dicts[:1], 0.2)
    with pytest.raises(ValueError, match="val_fraction must be between 0 and 1"):
        stratified_split(dicts, 0)


def test_kfold_partitions_and_stratifies():
    dicts = _dataset()
    vals = [stratified_kfold(dicts, 5, fold, seed=2)[1] for fold in range(5)]
    names = [d["file_name"] for v in vals for d in v]
    assert sorted(names) == sorted(d["file_name"] for d in dicts)  # a partition
    assert Counter(len(v) for v in vals) == {12: 5}
    assert all(_images_with(v, 2) in (1, 2) for v in vals)  # 6 rare images over 5 folds
    train, val = stratified_kfold(dicts, 5, 0, seed=2)
    assert len(train) + len(val) == 60 and val == vals[0]
    with pytest.raises(ValueError, match="fold must be in 0..4"):
        stratified_kfold(dicts, 5, 5)
