"""Checks that need all splits of a dataset, and the validation of a whole dataset file.

:func:`check_splits` finds what no single split shows: a class with instances in val or test but
none in train (an error: the model cannot learn it, and its AP measures nothing), a declared
class with no instance in any split (a warning: a dead output, AP undefined), and an image in
two splits (an error: the score would be measured on training images).

:func:`validate_dataset_file` runs everything on a dataset file: the schema, the readers (whose
errors and notes become Problems), :func:`~.validation.validate_dataset_dicts` on each split and
:func:`check_splits`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from .dataset_file import DatasetFile, load_dataset_file, read_dataset_file
from .errors import DatasetError
from .image_checks import ImageCheckCache
from .problems import Problem
from .validation import validate_dataset_dicts


def _classes_present(dicts: Sequence[dict]) -> dict[int, str]:
    """category_id -> the first image file where it occurs."""
    present: dict[int, str] = {}
    for record in dicts:
        for ann in record.get("annotations", []):
            present.setdefault(ann["category_id"], str(record["file_name"]))
    return present


def check_splits(
    splits: Mapping[str, Sequence[dict]],
    classes: Sequence[str],
    source: str,
    train_split: str = "train",
) -> list[Problem]:
    """Class coverage and overlap problems of ``splits`` (name -> dicts); ``source`` names the
    dataset in problems that have no single file (e.g. the dataset file)."""
    problems: list[Problem] = []
    present = {name: _classes_present(dicts) for name, dicts in splits.items()}
    in_train = present.get(train_split, {})
    for name, found in present.items():
        if name == train_split:
            continue
        for category, file in sorted(found.items()):
            if category not in in_train:
                problems.append(
                    Problem(
                        file,
                        f"class {classes[category]!r} has instances in {name} (first here) but "
                        f"none in {train_split}: the model cannot learn it",
                    )
                )
    seen_anywhere = {c for found in present.values() for c in found}
    for category, name in enumerate(classes):
        if category not in seen_anywhere:
            problems.append(
                Problem(
                    source,
                    f"class {name!r} is declared but has no instance in any split "
                    f"({', '.join(splits)})",
                    severity="warning",
                )
            )
    owner: dict[str, str] = {}
    for name, dicts in splits.items():
        for record in dicts:
            file = os.path.realpath(str(record["file_name"]))
            if file in owner and owner[file] != name:
                problems.append(
                    Problem(str(record["file_name"]), f"in both {owner[file]} and {name}")
                )
            owner.setdefault(file, name)
    return problems


def validate_dataset_file(
    spec: DatasetFile | str | os.PathLike,
    decode_images: bool = True,
    num_workers: int | None = None,
    cache: ImageCheckCache | None = None,
    val_files: list[str] | None = None,
) -> dict[str, list[Problem]]:
    """Every problem of a dataset file: ``{registered split name: problems}`` and, under the
    dataset's ``name``, the problems of the file itself and those across splits.

    Reader notes (points clipped, negatives kept, ...) are warnings of their split.
    """
    try:
        if not isinstance(spec, DatasetFile):
            spec = read_dataset_file(spec)
        loaded, classes, _ = load_dataset_file(spec, val_files)
    except DatasetError as exc:
        name = spec.name if isinstance(spec, DatasetFile) else os.fspath(spec)
        return {name: exc.as_problems()}
    report: dict[str, list[Problem]] = {}
    for split, data in loaded.items():
        problems = list(data.notes)
        problems += validate_dataset_dicts(
            data.dicts, decode_images, num_workers, num_classes=len(classes), cache=cache
        )
        report[spec.dataset_name(split)] = problems
    splits = {split: data.dicts for split, data in loaded.items()}
    report[spec.name] = check_splits(splits, classes, str(spec.path))
    return report
