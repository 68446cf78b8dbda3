"""A user's dataset file registered as Detectron2 datasets, and the config that uses it.

``INSTSEG.DATASET_FILE path/to/data.yaml`` (see :mod:`instseg_d2.data.dataset_file` for its keys)
registers ``<name>_train``, ``<name>_val`` and ``<name>_test`` in ``DatasetCatalog`` with their
metadata (``thing_classes``, one colour per class, ``thing_dataset_id_to_contiguous_id``), and
:func:`apply_dataset_file` points the config at them: ``DATASETS.TRAIN`` / ``DATASETS.TEST``,
``MODEL.ROI_HEADS.NUM_CLASSES`` and, when a mask is RLE, ``INPUT.MASK_FORMAT bitmask``. Every tool
calls it through :func:`instseg_d2.engine.defaults.setup_config`, so it works alike in training,
``--eval-only``, inference, the data tools and every process that ``launch`` starts.

A run records its data in ``OUTPUT_DIR``: ``dataset.json`` (the classes in the model's order,
their dataset ids, the images per split) and, when ``val`` was held out of ``train``,
``dataset_split.json`` (the held-out files), which later registrations with the same
``OUTPUT_DIR`` read back, so ``--resume`` and later evaluations hold out the same images even if
the images in ``train`` change.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.colormap import colormap

from ...utils.atomic import atomic_write
from ...utils.errors import ConfigError
from ..dataset_file import DatasetFile, DatasetFileError, load_dataset_file, read_dataset_file
from ..formats.common import LoadedSplit

__all__ = [
    "DATASET_RECORD_FILE",
    "SPLIT_RECORD_FILE",
    "RegisteredDatasetFile",
    "apply_dataset_file",
    "class_colors",
    "register_dataset_file",
]

logger = logging.getLogger(__name__)

DATASET_RECORD_FILE = "dataset.json"
SPLIT_RECORD_FILE = "dataset_split.json"
# MODEL.ROI_HEADS.NUM_CLASSES 0: "as many as the dataset file has" (configs/Custom use it).
NUM_CLASSES_FROM_FILE = 0


@dataclass(frozen=True)
class RegisteredDatasetFile:
    """What registering a dataset file produced."""

    spec: DatasetFile
    classes: list[str]
    dataset_ids: list[int]
    names: dict[str, str]  # split -> registered dataset name
    mask_format: str  # "polygon" if every mask is a polygon, else "bitmask"
    counts: dict[str, dict[str, int]]  # split -> images, instances, negative images
    held_out: list[str] | None  # val's file names when val was held out of train

    def record(self) -> dict:
        """The ``dataset.json`` written with a run."""
        return {
            "name": self.spec.name,
            "dataset_file": str(self.spec.path),
            "format": self.spec.format,
            "classes": self.classes,
            "dataset_ids": self.dataset_ids,
            "datasets": self.names,
            "mask_format": self.mask_format,
            "splits": self.counts,
            "val_held_out_of_train": self.held_out is not None,
        }


def class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """One distinct RGB colour per class, from Detectron2's colour map (repeats after 74)."""
    palette = colormap(rgb=True, maximum=255)
    return [tuple(int(v) for v in palette[i % len(palette)]) for i in range(num_classes)]


def _saved_val_files(spec: DatasetFile, output_dir: str | os.PathLike | None) -> list[str] | None:
    """The held-out val files a run with ``output_dir`` recorded for this dataset file."""
    if output_dir is None or "val" in spec.splits:
        return None
    path = Path(output_dir) / SPLIT_RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        same = (record["dataset_file"], record["val_fraction"], record["seed"]) == (
            str(spec.path),
            spec.val_fraction,
            spec.seed,
        )
        val = record["val"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetFileError(f"{path}: not a saved val split ({exc}); delete it") from None
    if not same:
        raise DatasetFileError(
            f"{path}: was made for another dataset file, val_fraction or seed than "
            f"{spec.path}; use another OUTPUT_DIR or delete it"
        )
    return [str(v) for v in val]


def _counts(split: LoadedSplit) -> dict[str, int]:
    return {
        "images": len(split.dicts),
        "instances": split.num_instances(),
        "negative_images": split.num_negative_images,
    }


def _register(name: str, dicts: list[dict], metadata: dict) -> None:
    # A second registration in one process (another tool call, a test) replaces the first.
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: list(dicts))
    MetadataCatalog.get(name).set(**metadata)


def register_dataset_file(
    path: str | os.PathLike, output_dir: str | os.PathLike | None = None
) -> RegisteredDatasetFile:
    """Read the dataset file ``path`` and register its splits (``<name>_train``, ...).

    With ``output_dir``, a val split saved there by an earlier run (``dataset_split.json``) is
    used instead of making the split anew. Raises DatasetError naming the file for anything that
    cannot be read.
    """
    spec = read_dataset_file(path)
    loaded, classes, dataset_ids = load_dataset_file(spec, _saved_val_files(spec, output_dir))
    mask_format = (
        "bitmask" if any(s.mask_format == "bitmask" for s in loaded.values()) else "polygon"
    )
    metadata = {
        "thing_classes": list(classes),
        "thing_colors": class_colors(len(classes)),
        "thing_dataset_id_to_contiguous_id": {d: i for i, d in enumerate(dataset_ids)},
        "evaluator_type": "coco",
        "dataset_file": str(spec.path),
        "mask_format": mask_format,
    }
    names = {}
    for split, data in loaded.items():
        names[split] = spec.dataset_name(split)
        _register(names[split], data.dicts, {**metadata, "num_images": len(data.dicts)})
    held_out = None if "val" in spec.splits else [d["file_name"] for d in loaded["val"].dicts]
    return RegisteredDatasetFile(
        spec,
        list(classes),
        list(dataset_ids),
        names,
        mask_format,
        {split: _counts(data) for split, data in loaded.items()},
        held_out,
    )


def write_dataset_records(registered: RegisteredDatasetFile, output_dir: str | os.PathLike) -> None:
    """Write ``dataset.json`` (and ``dataset_split.json`` for a held-out val) into a run folder."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(output_dir / DATASET_RECORD_FILE, json.dumps(registered.record(), indent=1) + "\n")
    if registered.held_out is not None:
        spec = registered.spec
        split = {
            "dataset_file": str(spec.path),
            "val_fraction": spec.val_fraction,
            "seed": spec.seed,
            "val": registered.held_out,
        }
        atomic_write(output_dir / SPLIT_RECORD_FILE, json.dumps(split, indent=1) + "\n")


def _uses(names, registered: RegisteredDatasetFile) -> bool:
    ours = set(registered.names.values())
    return bool(names) and all(name in ours for name in names)


def apply_dataset_file(cfg: CfgNode, *, write_records: bool = False) -> list[str]:
    """Register ``cfg.INSTSEG.DATASET_FILE`` (if set) and point ``cfg`` at it; returns notes.

    ``DATASETS.TRAIN`` / ``DATASETS.TEST`` become ``<name>_train`` / ``<name>_val`` unless they
    already name splits of this file (e.g. ``DATASETS.TEST ('<name>_test',)``).
    ``MODEL.ROI_HEADS.NUM_CLASSES`` becomes the number of classes; a config that sets another
    positive number is an error (0 means "from the dataset file"). With ``write_records`` the
    run's ``dataset.json`` / ``dataset_split.json`` are written into ``OUTPUT_DIR``.
    """
    if not cfg.INSTSEG.DATASET_FILE:
        return []
    registered = register_dataset_file(cfg.INSTSEG.DATASET_FILE, cfg.OUTPUT_DIR)
    num_classes = len(registered.classes)
    configured = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if configured not in (NUM_CLASSES_FROM_FILE, num_classes):
        raise ConfigError(
            f"MODEL.ROI_HEADS.NUM_CLASSES is {configured} but {registered.spec.path} has "
            f"{num_classes} class(es) ({', '.join(registered.classes)}): set "
            f"MODEL.ROI_HEADS.NUM_CLASSES {num_classes}, or 0 to take it from the dataset file "
            "(the configs in configs/Custom/ do)"
        )
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    # Absolute, so that the run's config.yaml finds the file from any working directory.
    cfg.INSTSEG.DATASET_FILE = str(registered.spec.path)
    notes = []
    if not _uses(cfg.DATASETS.TRAIN, registered):
        cfg.DATASETS.TRAIN = (registered.names["train"],)
    if not _uses(cfg.DATASETS.TEST, registered):
        cfg.DATASETS.TEST = (registered.names["val"],)
    if registered.mask_format == "bitmask" and cfg.INPUT.MASK_FORMAT != "bitmask":
        notes.append(
            f"{registered.spec.path}: some masks are RLE: INPUT.MASK_FORMAT "
            f"{cfg.INPUT.MASK_FORMAT} -> bitmask"
        )
        cfg.INPUT.MASK_FORMAT = "bitmask"
    logger.info(
        "dataset file %s: %d class(es) %s; %s",
        registered.spec.path,
        num_classes,
        registered.classes,
        ", ".join(f"{n} {c['images']} images" for n, c in registered.counts.items()),
    )
    if write_records:
        write_dataset_records(registered, cfg.OUTPUT_DIR)
    return notes
