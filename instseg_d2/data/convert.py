"""Registered datasets converted to COCO, LabelMe, YOLO-seg, VIA or mask folders, with a dataset
file, and read back through the readers to prove it: ``tools/convert_dataset.py``.

:func:`gather_registered` merges registered datasets into splits with one class list (by class
name, so ``pennfudan_train`` and ``balloon_train`` become one 2-class ``train``);
:func:`write_dataset` writes the splits with :mod:`.writers` (COCO through :mod:`.export`) and the
dataset file ``data.yaml`` (``INSTSEG.DATASET_FILE``); :func:`convert` then reads each split of
that file back (:func:`~.dataset_file.load_dataset_split`, the reader that training uses) and
raises unless it finds the images and the instances per class that were written. Whatever was
not written is a counted lossy step.

The output folder is written in a hidden folder beside it and renamed into place at the end, so
it is either complete or absent (no half-written dataset that a reader would take for whole).
Over 300 lines: gathering, writing and the read-back check are one transaction.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from detectron2.data import MetadataCatalog

from ..utils.atomic import atomic_write
from .catalog import get_dataset_dicts
from .dataset_file import FORMATS, SPLITS, load_dataset_split, read_dataset_file
from .export import dicts_to_coco, write_json
from .formats.common import remap_classes
from .summary import per_class_counts
from .writers import (
    ULTRALYTICS_YAML,
    DatasetWriteError,
    WrittenSplit,
    image_names,
    place_image,
    write_labelme,
    write_mask_folder,
    write_ultralytics_yaml,
    write_via,
    write_yolo,
)

__all__ = ["DATASET_FILE_NAME", "SourceSplits", "convert", "gather_registered", "split_of_name"]

DATASET_FILE_NAME = "data.yaml"
VIA_CLASS_ATTRIBUTE = "name"
_SPLIT_WORD = re.compile(rf"(?:^|_)({'|'.join(SPLITS)})(?=_|$)")


def split_of_name(name: str) -> str:
    """The split a dataset name stands for: its last ``train``/``val``/``test`` word
    (``balloon_train_mini``: train, ``pennfudan_fold0of5_val``: val), else ``train``."""
    found = _SPLIT_WORD.findall(name)
    return found[-1] if found else "train"


@dataclass
class SourceSplits:
    """Dicts per split whose ``category_id`` index ``classes``; ``sources``: split -> names."""

    splits: dict[str, list[dict]]
    classes: list[str]
    dataset_ids: list[int]
    sources: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)


def _dataset_ids(metadata, classes: Sequence[str]) -> dict[str, int]:
    mapping = metadata.get("thing_dataset_id_to_contiguous_id") or {}
    by_index = {index: dataset_id for dataset_id, index in mapping.items()}
    return {name: by_index[i] for i, name in enumerate(classes) if i in by_index}


def gather_registered(
    names_by_split: dict[str, Sequence[str]], classes: Sequence[str] | None = None
) -> SourceSplits:
    """The registered datasets of each split, concatenated, with one class list: ``classes``
    (every source class must be in it), else every source's ``thing_classes`` in order of first
    appearance. Dataset ids are the sources' where they agree, else ``1..K``. Image ids that
    repeat within a split are renumbered ``1..N`` (noted)."""
    merged = list(classes or [])
    ids: dict[str, set[int]] = {}
    loaded: dict[str, list[tuple[str, list[dict], list[str]]]] = {}
    for split, names in names_by_split.items():
        for name in names:
            own = MetadataCatalog.get(name).get("thing_classes")
            if not own:
                raise DatasetWriteError(f"{name}: the dataset's metadata has no thing_classes")
            missing = [c for c in own if c not in merged]
            if classes is not None and missing:
                raise DatasetWriteError(f"{name}: classes {missing} are not in {list(classes)}")
            merged += missing
            for cls, dataset_id in _dataset_ids(MetadataCatalog.get(name), own).items():
                ids.setdefault(cls, set()).add(dataset_id)
            loaded.setdefault(split, []).append((name, get_dataset_dicts(name), list(own)))
    chosen = [next(iter(ids.get(c, {0}))) for c in merged]
    agree = all(len(ids.get(c, ())) == 1 for c in merged) and len(set(chosen)) == len(chosen)
    result = SourceSplits({}, merged, chosen if agree else list(range(1, len(merged) + 1)), {})
    for split, parts in loaded.items():
        dicts = []
        for _, records, own in parts:
            new_id = [merged.index(c) for c in own]
            dicts += [
                {
                    **r,
                    "annotations": [
                        {**a, "category_id": new_id[a["category_id"]]}
                        for a in r.get("annotations", [])
                    ],
                }
                for r in records
            ]
        image_ids = [r.get("image_id") for r in dicts]
        if None in image_ids or len(set(image_ids)) != len(image_ids):
            dicts = [{**r, "image_id": i} for i, r in enumerate(dicts, 1)]
            result.notes.append(f"{split}: image ids repeat across its sources: renumbered 1..N")
        result.splits[split] = dicts
        result.sources[split] = [name for name, _, _ in parts]
    return result


def _write_coco(dicts, classes, dataset_ids, root: Path, split: str, copy_images: bool):
    images = root / "images"
    linked = [
        {**r, "file_name": str(place_image(r["file_name"], images / split / name, copy_images))}
        for r, name in zip(dicts, image_names(dicts), strict=True)
    ]
    path = write_json(
        dicts_to_coco(linked, classes, dataset_ids, image_root=images),
        root / "annotations" / f"{split}.json",
    )
    written = WrittenSplit(path, images=len(dicts))
    written.instances.update(a["category_id"] for r in dicts for a in r.get("annotations", []))
    return written


def _write_split(fmt, dicts, classes, dataset_ids, root: Path, split, copy_images):
    """One split in ``fmt`` under ``root``; returns it and its dataset file entries."""
    if fmt == "coco":
        written = _write_coco(dicts, classes, dataset_ids, root, split, copy_images)
    elif fmt == "labelme":
        written = write_labelme(dicts, classes, root / split, copy_images)
    elif fmt == "yolo":
        written = write_yolo(dicts, classes, root, split, copy_images)
    elif fmt == "via":
        written = write_via(dicts, classes, root / split, VIA_CLASS_ATTRIBUTE, copy_images)
    else:
        written = write_mask_folder(dicts, classes, root / split, "per_class", copy_images)
    return written, written.path.relative_to(root).as_posix()


def write_dataset(
    source: SourceSplits,
    fmt: str,
    output: str | os.PathLike,
    *,
    name: str,
    copy_images: bool = False,
    comment: str = "",
) -> tuple[Path, dict[str, WrittenSplit]]:
    """Write every split of ``source`` in ``fmt`` into the new folder ``output`` with the
    dataset file ``output/data.yaml`` (named ``name``); returns it and what each split wrote."""
    if fmt not in FORMATS:
        raise DatasetWriteError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    if "train" not in source.splits:
        raise DatasetWriteError(f"no train split among {source.sources}; a dataset file needs one")
    output = Path(os.path.abspath(output))
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise DatasetWriteError(f"{output}: already exists; give a new or empty folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    # A fresh hidden folder beside the output (os.mkdir keeps the umask's permissions, which
    # tempfile.mkdtemp would narrow to the owner).
    staging = output.parent / f".{output.name}.{uuid.uuid4().hex[:12]}.partial"
    staging.mkdir()
    try:
        spec: dict = {"name": name, "format": fmt}
        written = {}
        for split in (s for s in SPLITS if s in source.splits):
            written[split], spec[split] = _write_split(
                fmt,
                source.splits[split],
                source.classes,
                source.dataset_ids,
                staging,
                split,
                copy_images,
            )
        if fmt == "coco":
            spec["images"] = "images"
        elif fmt == "yolo":
            write_ultralytics_yaml(staging, source.classes, list(written), final_root=output)
            spec["data_yaml"] = ULTRALYTICS_YAML
        elif fmt == "via":
            spec["class_attribute"] = VIA_CLASS_ATTRIBUTE
        spec["classes"] = list(source.classes)
        header = "".join(f"# {line}\n" for line in comment.splitlines())
        text = header + yaml.safe_dump(spec, sort_keys=False, default_flow_style=None)
        atomic_write(staging / DATASET_FILE_NAME, text)
        if output.exists():
            output.rmdir()
        os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for split in written.values():
        split.path = output / split.path.relative_to(staging)
    return output / DATASET_FILE_NAME, written


@dataclass
class ConvertedDataset:
    """A written dataset and what its dataset file reads back as: split -> ``{"images": n,
    "negative": m, <class>: instances, ...}``."""

    dataset_file: Path
    format: str
    classes: list[str]
    source: SourceSplits
    written: dict[str, WrittenSplit]
    read_back: dict[str, dict[str, int]]


def read_back_counts(dataset_file: Path) -> tuple[list[str], dict[str, dict[str, int]]]:
    """The classes and per-split counts of a dataset file, each split read through its format's
    reader as written (no val is held out of train here)."""
    spec = read_dataset_file(dataset_file)
    classes = list(spec.classes or [])
    counts = {}
    for split in spec.splits:
        records = remap_classes(load_dataset_split(spec, split), classes).dicts
        per_class = per_class_counts(records, classes)
        counts[split] = {
            "images": len(records),
            "negative": sum(not r["annotations"] for r in records),
            **{name: c["instances"] for name, c in per_class.items()},
        }
    return classes, counts


def convert(
    source: SourceSplits,
    fmt: str,
    output: str | os.PathLike,
    *,
    name: str,
    copy_images: bool = False,
    comment: str = "",
) -> ConvertedDataset:
    """:func:`write_dataset`, then the dataset file read back; raises DatasetWriteError unless
    it holds the images and instances per class that were written."""
    dataset_file, written = write_dataset(
        source, fmt, output, name=name, copy_images=copy_images, comment=comment
    )
    classes, counts = read_back_counts(dataset_file)
    problems = [] if classes == source.classes else [f"classes {classes} != {source.classes}"]
    for split, split_written in written.items():
        expected = {
            "images": split_written.images,
            **split_written.instances_per_class(source.classes),
        }
        got = {key: counts.get(split, {}).get(key, 0) for key in expected}
        if got != expected:
            problems.append(f"{split}: wrote {expected}, read back {got}")
    if problems:
        raise DatasetWriteError(
            f"{dataset_file}: the {fmt} reader does not read back what was written: "
            + "; ".join(problems)
        )
    return ConvertedDataset(dataset_file, fmt, classes, source, written, counts)


def summary_lines(converted: ConvertedDataset) -> list[str]:
    """What a conversion wrote and read back, per split and class, and each lossy step."""
    from tabulate import tabulate

    headers = ["split", "images", "negative", "instances", *converted.classes]
    rows = []
    for split, counts in converted.read_back.items():
        instances = sum(counts[c] for c in converted.classes)
        rows.append(
            [
                split,
                counts["images"],
                counts["negative"],
                instances,
                *(counts[c] for c in converted.classes),
            ]
        )
    lines = [
        f"dataset file: {converted.dataset_file}",
        f"read back through the {converted.format} reader (the same as written):",
        tabulate(rows, headers=headers, tablefmt="github"),
    ]
    lossy = []
    for split, written in converted.written.items():
        source = converted.source.splits[split]
        dropped = sum(len(r.get("annotations", [])) for r in source) - sum(
            written.instances.values()
        )
        for step, count in written.lossy.items():
            lossy.append(f"  {split}: {count} {step}")
        if written.mask_ious:
            ious = written.mask_ious
            lossy.append(
                f"  {split}: IoU of the changed masks with the originals: min "
                f"{min(ious):.3f}, mean {sum(ious) / len(ious):.3f} ({len(ious)} masks)"
            )
        if dropped:
            lossy.append(f"  {split}: {dropped} of the source's instances are not in the output")
    if lossy:
        lines += [f"not as in the source (what {converted.format} cannot hold):", *lossy]
    else:
        lines.append(f"nothing lost or changed: {converted.format} holds every instance as it was")
    lines += [f"note: {note}" for note in converted.source.notes]
    return lines
