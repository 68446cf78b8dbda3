"""Instance-mask PNG folders (as Penn-Fudan): :func:`load_mask_folder`.

Layout (folder names are options)::

    <folder>/images/<stem>.<jpg|png|...>
    <folder>/masks/<stem><suffix>.png                 flat: one mask per image, or
    <folder>/masks/<class>/<stem><suffix>.png         a folder per class

A mask is a single-channel PNG (8 or 16 bit) of instance ids: pixel value ``k`` is the ``k``-th
instance, 0 is background; ids need not be contiguous (a gap is noted, each id kept). Each id
becomes one annotation with a lossless COCO RLE (``INPUT.MASK_FORMAT bitmask``), the tight mask
box in ``XYWH_ABS`` and ``instance_id`` (the pixel value, for tracing it back).

Classes:

* folder per class: the class is the sub-folder's name; an image may have a mask in several;
  classes are the sub-folder names, sorted;
* flat with ``class_map``: a JSON or YAML file ``{stem: {instance_id: class}}`` naming the class
  of every instance (an id in a mask and not in the map, or the reverse, is an error); classes
  are the names it uses, sorted;
* flat without ``class_map``: every instance is ``class_name``.

``suffix`` None accepts ``<stem>.png`` or ``<stem>_mask.png`` (both for one image is an error).
An image without a mask is a negative (``require_masks`` makes it an error); a mask without an
image is an error (usually a naming mismatch).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...utils.parallel import parallel_map
from ..image_io import BadImageError, image_size, read_label_image
from ..masks import id_mask_to_annotations
from .common import (
    LoadedSplit,
    ProblemLog,
    check_unique_image_ids,
    list_images,
    sample,
    stable_image_id,
)

MASK_SUFFIXES = ("", "_mask")


def _read_class_map(path: Path, log: ProblemLog) -> dict[str, dict[int, str]]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except FileNotFoundError:
        log.error(path, "class map not found")
        return {}
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        log.error(path, f"class map is not valid JSON/YAML ({exc})")
        return {}
    if not isinstance(data, dict):
        log.error(path, "class map must be a mapping {image stem: {instance id: class}}")
        return {}
    result: dict[str, dict[int, str]] = {}
    for stem, instances in data.items():
        if not isinstance(instances, dict):
            log.error(path, f"{stem!r}: expected a mapping {{instance id: class}}")
            continue
        result[str(stem)] = {}
        for key, name in instances.items():
            try:
                instance_id = int(key)
            except (TypeError, ValueError):
                instance_id = 0
            if instance_id <= 0 or str(key).strip() != str(instance_id):
                log.error(path, f"{stem!r}: instance id {key!r} is not a positive integer")
            elif not isinstance(name, str) or not name:
                log.error(path, f"{stem!r}: instance {key}: class {name!r} is not a name")
            else:
                result[str(stem)][instance_id] = name
    return result


def _mask_file(folder: Path, stem: str, suffix: str | None, log: ProblemLog) -> Path | None:
    candidates = [
        folder / f"{stem}{s}.png" for s in (MASK_SUFFIXES if suffix is None else [suffix])
    ]
    found = [c for c in candidates if c.is_file()]
    if len(found) > 1:
        log.error(found[0], f"two masks for image {stem!r}: {', '.join(p.name for p in found)}")
    return found[0] if found else None


def _image_stems(mask: Path, suffix: str | None) -> set[str]:
    """The image stems ``mask`` can belong to (``a_mask.png``: ``a``, or ``a_mask`` when the
    suffix may be empty)."""
    suffixes = MASK_SUFFIXES if suffix is None else (suffix,)
    return {mask.stem[: len(mask.stem) - len(s)] for s in suffixes if mask.stem.endswith(s)}


def _read_masks(image: Path, masks: list[tuple[str, Path]]) -> Any:
    """(height, width) and the id masks, or the BadImageError (for parallel_map)."""
    try:
        height, width = image_size(image)
        return (height, width), [read_label_image(path) for _, path in masks]
    except BadImageError as exc:
        return exc


def load_mask_folder(
    folder: str | os.PathLike,
    *,
    images_dir: str = "images",
    masks_dir: str = "masks",
    suffix: str | None = None,
    class_map: str | os.PathLike | None = None,
    class_name: str = "object",
    stems: Sequence[str] | None = None,
    require_masks: bool = False,
    num_workers: int | None = None,
) -> LoadedSplit:
    """Dataset dicts of an instance-mask folder (layout in the module docstring).

    ``stems`` restricts (and orders) the images; by default every image of ``images_dir`` is
    used, sorted by stem. ``image_id`` is a stable hash of the image's stem. Raises DatasetError
    listing every problem: missing folders, masks of another size than their image, unreadable
    or colour masks, class-map mismatches.
    """
    folder = Path(folder)
    image_root, mask_root = folder / images_dir, folder / masks_dir
    log = ProblemLog(folder)
    for path in (image_root, mask_root):
        if not path.is_dir():
            log.error(path, "folder not found")
    log.raise_if_errors()

    by_stem: dict[str, Path] = {}
    for path in list_images(image_root, recursive=False):
        if path.stem in by_stem:
            log.error(path, f"two images with the stem {path.stem!r}: {by_stem[path.stem].name}")
        by_stem.setdefault(path.stem, path)
    if stems is None:
        stems = sorted(by_stem)
    else:
        for stem in stems:
            if stem not in by_stem:
                log.error(image_root / f"{stem}.*", "no image file for this stem")

    class_dirs = sorted(p for p in mask_root.iterdir() if p.is_dir())
    per_class = bool(class_dirs)
    if per_class and list(mask_root.glob("*.png")):
        log.error(mask_root, "has both mask files and class sub-folders; use one layout")
    if per_class and class_map is not None:
        log.error(
            mask_root, "a class map is for flat mask folders, but this one has a folder per class"
        )
    mapping = _read_class_map(Path(class_map), log) if class_map is not None else None
    log.raise_if_errors()
    if per_class:
        classes = [p.name for p in class_dirs]
        mask_folders = [(p.name, p) for p in class_dirs]
    else:
        classes = sorted({n for m in (mapping or {}).values() for n in m.values()}) or [class_name]
        mask_folders = [("", mask_root)]

    # Masks whose stem has no image: a naming mismatch that would otherwise drop them silently.
    for _, mask_folder in mask_folders:
        orphans = [
            p.name
            for p in sorted(mask_folder.glob("*.png"))
            if not _image_stems(p, suffix) & by_stem.keys()
        ]
        if orphans:
            log.error(mask_folder, f"mask(s) without an image in {image_root}: {sample(orphans)}")
    if mapping is not None:
        unmapped = sorted(set(mapping) - set(by_stem))
        if unmapped:
            log.error(class_map, f"stems without an image in {image_root}: {sample(unmapped)}")

    jobs = []
    for stem in stems:
        if stem not in by_stem:
            continue
        masks = []
        for name, mask_folder in mask_folders:
            path = _mask_file(mask_folder, stem, suffix, log)
            if path is not None:
                masks.append((name, path))
            elif require_masks and not per_class:
                log.error(mask_folder / f"{stem}{suffix or ''}.png", "file not found")
            elif mapping is not None and mapping.get(stem):
                log.error(class_map, f"{stem!r} has instances in the class map but no mask file")
        jobs.append((stem, by_stem[stem], masks))
    results = parallel_map(lambda job: _read_masks(job[1], job[2]), jobs, num_workers)

    dicts = []
    index = {name: i for i, name in enumerate(classes)}
    for (stem, image, masks), result in zip(jobs, results, strict=True):
        if isinstance(result, BadImageError):
            file, _, message = str(result).partition(": ")
            log.error(file, message)
            continue
        (height, width), id_masks = result
        annotations = []
        for (name, path), id_mask in zip(masks, id_masks, strict=True):
            if id_mask.shape != (height, width):
                log.error(
                    path,
                    f"mask is {id_mask.shape[1]}x{id_mask.shape[0]} (WxH) but its image "
                    f"{image.name} is {width}x{height}",
                )
                continue
            found = id_mask_to_annotations(np.asarray(id_mask))
            ids = [a["instance_id"] for a in found]
            if ids != list(range(1, len(ids) + 1)):
                log.note(
                    path,
                    f"instance ids {ids} are not 1..{len(ids)}; each id present is kept as one "
                    "instance",
                )
            if mapping is not None:
                declared = mapping.get(stem, {})
                if set(declared) != set(ids):
                    log.error(
                        path,
                        f"instance ids {ids} but the class map {class_map} lists "
                        f"{sorted(declared)} for {stem!r}",
                    )
                    continue
            for ann in found:
                if mapping is not None:
                    ann["category_id"] = index[mapping[stem][ann["instance_id"]]]
                else:
                    ann["category_id"] = index[name or class_name]
            annotations += found
        dicts.append(
            {
                "file_name": str(image),
                "height": height,
                "width": width,
                "image_id": stable_image_id(stem),
                "annotations": annotations,
            }
        )
    negatives = [Path(d["file_name"]).name for d in dicts if not d["annotations"]]
    if negatives and not require_masks:
        log.note(
            mask_root,
            f"{len(negatives)} image(s) without instances kept as negatives: {sample(negatives)}",
        )
    check_unique_image_ids(log, dicts, image_root, "image stems")
    log.raise_if_errors()
    return LoadedSplit(
        dicts=dicts,
        classes=classes,
        dataset_ids=list(range(1, len(classes) + 1)),
        notes=log.notes,
        num_negative_images=len(negatives),
        source=str(folder),
        class_order="sorted",
    )
