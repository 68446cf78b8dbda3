"""The dataset file: a YAML that describes a user's dataset, and loading it through the readers.

Keys (paths are relative to the dataset file's folder)::

    name: mydata            # registered as mydata_train, mydata_val (and mydata_test);
                            #   letters, digits and _ . - only
    format: coco            # coco | labelme | yolo | via | masks
    train: annotations/train.json   # a json file (coco, via) or a folder (labelme, yolo, masks)
    val: annotations/val.json       # optional: without it, val_fraction of train, seeded
    test: annotations/test.json     # optional
    images: images          # coco, via: image root (default: the json's folder); a path, or
                            #   {train: path, val: path, ...} when each split has its own
    classes: [cat, dog]     # optional: the model's class order (default: from the data)
    val_fraction: 0.2       # only without val: the share of train held out, stratified by class
    seed: 0                 # only without val: the split's seed
    outside_tolerance: 0.02 # points this far outside the image (x the side, >= 2 px) are
                            #   clipped with a note, further is an error; null clips any distance

Format options:

* ``via``: ``class_attribute`` (the region attribute that names the class, e.g. ``name``;
  without it every region is one class), ``class_name`` (that one class; default: the only entry
  of ``classes``, else ``object``);
* ``yolo``: ``data_yaml`` (an Ultralytics ``data.yaml`` whose ``names`` map YOLO's class indices
  to names; without it ``classes`` are those names), ``boxes_as_polygons`` (read 4-number box
  lines as box-shaped masks instead of rejecting them);
* ``masks``: ``images_dir`` (default ``images``), ``masks_dir`` (default ``masks``),
  ``mask_suffix`` (default: ``""`` or ``_mask``), ``class_map`` (a JSON/YAML file
  ``{stem: {instance_id: class}}``), ``class_name`` (the one class without a map or class
  folders; default: the only entry of ``classes``, else ``object``).

Every schema problem raises :class:`DatasetFileError` naming the dataset file and the key.

(Longer than ~300 lines: the schema documented here, its key-by-key checks and the loading that
reads those keys are one contract; split, the key names would live in two places.)
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import DatasetError
from .formats.coco import load_coco
from .formats.common import OUTSIDE_TOLERANCE, LoadedSplit, remap_classes
from .formats.labelme import load_labelme
from .formats.mask_folder import load_mask_folder
from .formats.via import load_via
from .formats.yolo import load_yolo, read_yolo_class_names
from .problems import Problem
from .splits import stratified_split

FORMATS = ("coco", "labelme", "yolo", "via", "masks")
SPLITS = ("train", "val", "test")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
COMMON_KEYS = ("name", "format", *SPLITS, "images", "classes", "val_fraction", "seed")
FORMAT_KEYS: dict[str, tuple[str, ...]] = {
    "coco": (),
    "labelme": (),
    "yolo": ("data_yaml", "boxes_as_polygons"),
    "via": ("class_attribute", "class_name"),
    "masks": ("images_dir", "masks_dir", "mask_suffix", "class_map", "class_name"),
}
ALL_KEYS = sorted(
    {*COMMON_KEYS, "outside_tolerance", *(k for keys in FORMAT_KEYS.values() for k in keys)}
)
# Formats whose splits are json files, the others are folders; those that take ``images``.
JSON_FORMATS = ("coco", "via")
DEFAULT_VAL_FRACTION = 0.2


class DatasetFileError(DatasetError):
    """A dataset file that does not follow the schema; the message names the file and the key."""


@dataclass(frozen=True)
class DatasetFile:
    """A parsed dataset file; paths are absolute."""

    path: Path
    name: str
    format: str
    splits: dict[str, Path]
    images: Path | dict[str, Path] | None
    classes: list[str] | None
    val_fraction: float = DEFAULT_VAL_FRACTION
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def image_root(self, split: str) -> Path | None:
        """The image root of ``split`` (None: the format's default)."""
        if isinstance(self.images, dict):
            return self.images.get(split)
        return self.images

    def dataset_name(self, split: str) -> str:
        """The registered name of ``split``: ``<name>_<split>``."""
        return f"{self.name}_{split}"


def _fail(path: Path, key: str | None, message: str) -> DatasetFileError:
    return DatasetFileError(f"{path}: {f'key {key!r}: ' if key else ''}{message}")


def _path(spec_path: Path, key: str, value: Any, kind: str | None) -> Path:
    """``value`` resolved against the dataset file's folder; it must exist (as ``kind``)."""
    if not isinstance(value, str) or not value:
        raise _fail(spec_path, key, f"expected a path, got {value!r}")
    path = Path(os.path.abspath(spec_path.parent / os.path.expanduser(value)))
    if not path.exists():
        raise _fail(spec_path, key, f"{path} does not exist")
    if kind == "file" and not path.is_file():
        raise _fail(spec_path, key, f"{path} is a folder; this format needs a json file")
    if kind == "folder" and not path.is_dir():
        raise _fail(spec_path, key, f"{path} is a file; this format needs a folder")
    return path


def _check_keys(path: Path, data: dict, fmt: str) -> None:
    for key in data:
        if not isinstance(key, str) or key not in ALL_KEYS:
            close = difflib.get_close_matches(str(key), ALL_KEYS, n=1)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else f" (known keys: {', '.join(ALL_KEYS)})"
            )
            raise _fail(path, str(key), f"unknown key{hint}")
        owners = [f for f, keys in FORMAT_KEYS.items() if key in keys]
        if owners and fmt not in owners:
            raise _fail(path, key, f"applies to format {' or '.join(owners)}, not {fmt}")
    for key in ("name", "format", "train"):
        if key not in data:
            raise _fail(path, key, "missing (required: name, format, train)")


def _typed(path: Path, data: dict, key: str, kind: type | tuple, default: Any = None) -> Any:
    value = data.get(key, default)
    if value is default:
        return value
    if isinstance(value, bool) and kind is not bool:
        raise _fail(path, key, f"expected {getattr(kind, '__name__', kind)}, got {value!r}")
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise _fail(path, key, f"expected {names}, got {value!r}")
    return value


def read_dataset_file(path: str | os.PathLike) -> DatasetFile:
    """Parse and check a dataset file (module docstring); raises DatasetFileError."""
    import yaml

    path = Path(os.path.abspath(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetFileError(f"{path}: dataset file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DatasetFileError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise _fail(path, None, "expected a mapping of keys (name, format, train, ...)")
    fmt = data.get("format")
    if fmt is not None and fmt not in FORMATS:
        close = difflib.get_close_matches(str(fmt), FORMATS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise _fail(path, "format", f"unknown format {fmt!r} (one of {', '.join(FORMATS)}){hint}")
    _check_keys(path, data, fmt)
    name = _typed(path, data, "name", str)
    if not NAME_PATTERN.fullmatch(name):
        raise _fail(path, "name", f"{name!r} must use only letters, digits and _ . -")

    kind = "file" if fmt in JSON_FORMATS else "folder"
    splits = {s: _path(path, s, data[s], kind) for s in SPLITS if s in data}
    images: Path | dict[str, Path] | None = None
    if "images" in data:
        if fmt not in JSON_FORMATS:
            raise _fail(path, "images", f"not used by format {fmt} (images are found from 'train')")
        value = data["images"]
        if isinstance(value, dict):
            unknown = set(value) - set(splits)
            if unknown:
                raise _fail(path, "images", f"names splits {sorted(unknown)} that are not given")
            images = {s: _path(path, "images", v, "folder") for s, v in value.items()}
        else:
            images = _path(path, "images", value, "folder")

    classes = _typed(path, data, "classes", list)
    if classes is not None:
        if not classes or not all(isinstance(c, str) and c.strip() for c in classes):
            raise _fail(path, "classes", f"expected a list of class names, got {classes!r}")
        if len(set(classes)) != len(classes):
            raise _fail(path, "classes", "a class is listed twice")
    if "val_fraction" in data and "val" in data:
        raise _fail(path, "val_fraction", "has no effect when 'val' is given; remove one")
    if ("seed" in data) and "val" in data:
        raise _fail(path, "seed", "only seeds the split of train, which 'val' replaces; remove one")
    val_fraction = float(_typed(path, data, "val_fraction", (int, float), DEFAULT_VAL_FRACTION))
    if not 0 < val_fraction < 1:
        raise _fail(path, "val_fraction", f"must be between 0 and 1, got {val_fraction}")
    seed = _typed(path, data, "seed", int, 0)

    options: dict[str, Any] = {}
    if "outside_tolerance" in data:
        value = data["outside_tolerance"]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value < 0
        ):
            raise _fail(
                path, "outside_tolerance", f"expected a fraction >= 0 or null, got {value!r}"
            )
        options["outside_tolerance"] = value
    for key in ("class_attribute", "class_name", "images_dir", "masks_dir", "mask_suffix"):
        if key in data:
            options[key] = _typed(path, data, key, str)
    if "boxes_as_polygons" in data:
        options["boxes_as_polygons"] = _typed(path, data, "boxes_as_polygons", bool)
    for key in ("data_yaml", "class_map"):
        if key in data:
            options[key] = _path(path, key, data[key], "file")
    if fmt == "yolo" and "data_yaml" not in options and classes is None:
        raise _fail(
            path,
            "classes",
            "format yolo needs 'classes' or 'data_yaml' (YOLO labels hold only indices)",
        )
    return DatasetFile(path, name, fmt, splits, images, classes, val_fraction, seed, options)


def _single_class(spec: DatasetFile) -> str:
    if "class_name" in spec.options:
        return spec.options["class_name"]
    return spec.classes[0] if spec.classes and len(spec.classes) == 1 else "object"


def load_dataset_split(spec: DatasetFile, split: str) -> LoadedSplit:
    """Read one split with its format's reader (classes as that split's data has them)."""
    if split not in spec.splits:
        raise _fail(spec.path, split, f"no such split (given: {', '.join(spec.splits)})")
    source, options = spec.splits[split], spec.options
    tolerance = options.get("outside_tolerance", OUTSIDE_TOLERANCE)
    if spec.format == "coco":
        return load_coco(source, spec.image_root(split), outside_tolerance=tolerance)
    if spec.format == "labelme":
        return load_labelme(source, outside_tolerance=tolerance)
    if spec.format == "yolo":
        data_yaml = options.get("data_yaml")
        names = read_yolo_class_names(data_yaml) if data_yaml else list(spec.classes or [])
        return load_yolo(
            source,
            names,
            boxes_as_polygons=options.get("boxes_as_polygons", False),
            outside_tolerance=tolerance,
        )
    if spec.format == "via":
        return load_via(
            source,
            spec.image_root(split),
            options.get("class_attribute"),
            class_name=_single_class(spec),
            outside_tolerance=tolerance,
        )
    return load_mask_folder(
        source,
        images_dir=options.get("images_dir", "images"),
        masks_dir=options.get("masks_dir", "masks"),
        suffix=options.get("mask_suffix"),
        class_map=options.get("class_map"),
        class_name=_single_class(spec),
    )


def _merged_classes(loaded: dict[str, LoadedSplit]) -> list[str]:
    """The union of the splits' classes: sorted when every split sorts them, else in order of
    first appearance (train first), which keeps a declared order."""
    union = list(dict.fromkeys(c for split in loaded.values() for c in split.classes))
    if all(split.class_order == "sorted" for split in loaded.values()):
        return sorted(union)
    return union


def _merged_dataset_ids(loaded: dict[str, LoadedSplit], classes: list[str]) -> list[int]:
    """The source's ids of ``classes`` when it has ids (COCO categories, YOLO index + 1) and
    every split agrees on them and has them all, else ``1..K``."""
    if not all(split.has_source_ids for split in loaded.values()):
        return list(range(1, len(classes) + 1))
    ids: dict[str, int] = {}
    for split in loaded.values():
        for name, dataset_id in zip(split.classes, split.dataset_ids, strict=True):
            if ids.setdefault(name, dataset_id) != dataset_id:
                return list(range(1, len(classes) + 1))
    chosen = [ids.get(c) for c in classes]
    if None in chosen or len(set(chosen)) != len(chosen):
        return list(range(1, len(classes) + 1))
    return chosen  # type: ignore[return-value]


def _held_out(
    spec: DatasetFile, train: LoadedSplit, val_files: list[str] | None
) -> tuple[list, list]:
    if val_files is None:
        try:
            return stratified_split(train.dicts, spec.val_fraction, spec.seed)
        except ValueError as exc:
            raise DatasetFileError(f"{spec.path}: no 'val' given and {exc}") from None
    wanted = set(val_files)
    known = {d["file_name"] for d in train.dicts}
    missing = sorted(wanted - known)
    if missing:
        raise DatasetFileError(
            f"{spec.path}: the saved val split lists {len(missing)} image(s) that are not in "
            f"train any more, e.g. {missing[0]}; delete the saved split to make a new one"
        )
    return (
        [d for d in train.dicts if d["file_name"] not in wanted],
        [d for d in train.dicts if d["file_name"] in wanted],
    )


def load_dataset_file(
    spec: DatasetFile, val_files: list[str] | None = None
) -> tuple[dict[str, LoadedSplit], list[str], list[int]]:
    """Every split, remapped to one class list, with that list and its dataset ids.

    Classes are ``spec.classes``, else the union of the splits' (see :func:`_merged_classes`).
    Without a ``val`` split, val is held out of train: the images ``val_files`` (``file_name``
    values, e.g. saved with an earlier run) or else :func:`stratified_split` with the file's
    ``val_fraction`` and ``seed``. Raises DatasetError listing the problems of every split.
    """
    loaded: dict[str, LoadedSplit] = {}
    problems: list[Problem] = []
    for split in spec.splits:
        try:
            loaded[split] = load_dataset_split(spec, split)
        except DatasetError as exc:
            problems += exc.as_problems()
    if problems:
        raise DatasetError.from_problems(str(spec.path), problems)
    classes = list(spec.classes) if spec.classes else _merged_classes(loaded)
    if not classes:
        raise DatasetFileError(
            f"{spec.path}: no class found in the data; list them under 'classes'"
        )
    dataset_ids = _merged_dataset_ids(loaded, classes)
    for split, data in loaded.items():
        try:
            loaded[split] = remap_classes(data, classes, dataset_ids)
        except DatasetError as exc:
            problems += exc.as_problems()
    if problems:
        raise DatasetError.from_problems(str(spec.path), problems)
    if "val" not in loaded:
        train = loaded["train"]
        kept, held = _held_out(spec, train, val_files)
        loaded["train"] = replace(
            train, dicts=kept, num_negative_images=sum(not d["annotations"] for d in kept)
        )
        loaded["val"] = replace(
            train, dicts=held, notes=[], num_negative_images=sum(not d["annotations"] for d in held)
        )
        loaded = {s: loaded[s] for s in SPLITS if s in loaded}
    return loaded, classes, dataset_ids
