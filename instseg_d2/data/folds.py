"""K-fold cross-validation splits as registered Detectron2 datasets.

Two sources of folds (chosen by :mod:`instseg_d2.evaluation.cross_validation`):

* built-in folds: a dataset whose metadata has ``cv_folds = {k: [(train, test), ...]}`` over the
  pool ``cv_pool`` (Penn-Fudan's ``pennfudan_fold{i}of5_{train,val}``, stratified by source);
* pooled folds: the images of the config's training and test sets (a user's dataset, any k, any
  seed) split by a seeded k-fold stratified by class, registered as
  ``<pool>_cv<k>s<seed>_fold<i>_{train,val}``. The split is defined by
  ``INSTSEG.CROSS_VALIDATION`` in the config, and :func:`register_config_folds` (run by
  :func:`instseg_d2.engine.defaults.setup_config`) registers it in every process that loads
  such a config, so a fold run's config.yaml works on its own (workers, infer, report).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..utils.errors import ConfigError
from .catalog import check_dataset_names, get_dataset_dicts
from .errors import DatasetError
from .splits import stratified_kfold

__all__ = [
    "builtin_folds",
    "pooled_fold_names",
    "register_config_folds",
    "register_pooled_fold",
]

# Metadata that describes one registered dataset and is not copied onto a fold of a pool
# (``dataset_root`` is, when every pooled dataset has the same).
_OWN_METADATA = {"name", "json_file", "num_images", "cv_folds", "cv_pool", "dataset_root"}


def builtin_folds(pool: Sequence[str], num_folds: int) -> list[tuple[str, str]] | None:
    """``[(train, test), ...]`` of the first dataset's built-in ``num_folds`` folds when they
    split exactly the datasets of ``pool``; else None."""
    metadata = MetadataCatalog.get(pool[0])
    folds = (metadata.get("cv_folds") or {}).get(num_folds)
    if folds and set(metadata.get("cv_pool") or ()) == set(pool):
        return [tuple(pair) for pair in folds]
    return None


def pooled_fold_names(pool: Sequence[str], num_folds: int, fold: int, seed: int) -> tuple[str, str]:
    """The registered ``(train, test)`` names of fold ``fold`` of the pooled split."""
    stem = f"{'+'.join(pool)}_cv{num_folds}s{seed}_fold{fold}"
    return f"{stem}_train", f"{stem}_val"


@functools.lru_cache(maxsize=4)
def _pool_dicts(pool: tuple[str, ...]) -> list[dict]:
    """The images of every dataset of ``pool`` once each (cached: every loader asks again)."""
    dicts, files, ids = [], set(), set()
    for name in pool:
        for record in get_dataset_dicts(name):
            if record["file_name"] in files:
                continue  # the same image in two pooled datasets
            if record["image_id"] in ids:
                raise DatasetError(
                    f"{name}: image_id {record['image_id']} of {record['file_name']} is also the "
                    f"id of another image of {', '.join(pool)}; pooled datasets need distinct ids"
                )
            files.add(record["file_name"])
            ids.add(record["image_id"])
            dicts.append(record)
    return dicts


def _pool_metadata(pool: Sequence[str]) -> dict:
    """The metadata every dataset of ``pool`` shares (classes, colors, id mapping)."""
    first = MetadataCatalog.get(pool[0])
    for name in pool[1:]:
        if MetadataCatalog.get(name).get("thing_classes") != first.get("thing_classes"):
            raise DatasetError(
                f"cannot pool {pool[0]} and {name}: their classes differ "
                f"({first.get('thing_classes')} vs {MetadataCatalog.get(name).get('thing_classes')})"
            )
    shared = {k: v for k, v in first.as_dict().items() if k not in _OWN_METADATA}
    roots = {MetadataCatalog.get(name).get("dataset_root") for name in pool}
    if len(roots) == 1 and None not in roots:  # e.g. Penn-Fudan: its .txt files are checked
        shared["dataset_root"] = roots.pop()
    return shared


def register_pooled_fold(
    pool: Sequence[str], num_folds: int, fold: int, seed: int
) -> tuple[str, str]:
    """Register fold ``fold`` of the pooled split (if not yet) and return its names.

    Registration is lazy like every dataset's: the pool is read when a fold is first loaded.
    """
    pool = tuple(pool)
    names = pooled_fold_names(pool, num_folds, fold, seed)
    metadata = _pool_metadata(pool)
    for part, name in enumerate(names):
        if name in DatasetCatalog.list():
            continue

        def load(part=part):
            split = stratified_kfold(_pool_dicts(pool), num_folds, fold, seed)
            return copy.deepcopy(split[part])

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(**metadata)
    return names


def register_config_folds(cfg) -> None:
    """Register the pooled fold that ``INSTSEG.CROSS_VALIDATION`` describes and make it the
    config's ``DATASETS.TRAIN``/``TEST``; nothing when ``NUM_FOLDS`` is 0. ``cfg`` must not be
    frozen."""
    cv = cfg.INSTSEG.CROSS_VALIDATION
    if cv.NUM_FOLDS <= 0:
        return
    if not cv.POOL:
        raise ConfigError("INSTSEG.CROSS_VALIDATION.NUM_FOLDS is set but POOL names no dataset")
    if cv.NUM_FOLDS < 2 or not 0 <= cv.FOLD < cv.NUM_FOLDS:
        raise ConfigError(
            f"INSTSEG.CROSS_VALIDATION: FOLD {cv.FOLD} of NUM_FOLDS {cv.NUM_FOLDS} does not exist "
            "(NUM_FOLDS >= 2, 0 <= FOLD < NUM_FOLDS)"
        )
    check_dataset_names(cv.POOL)
    train, test = register_pooled_fold(cv.POOL, cv.NUM_FOLDS, cv.FOLD, cv.SEED)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (train,), (test,)
