"""Dataset dicts to a COCO instances json, through Detectron2's ``convert_to_coco_dict``.

Categories carry the class names and the dataset ids (``thing_dataset_id_to_contiguous_id``; a
registered dataset without that mapping gets ids ``1..K``, since COCO ids start at 1). Masks stay
as they are (polygons, or compressed RLE); boxes become ``XYWH`` (Detectron2 rounds them to 3
decimals); ``iscrowd`` is kept. ``file_name`` is the image path, or relative to ``image_root``
when one is given (the ``image_root`` to read the json back with).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from .errors import DatasetError


def dicts_to_coco(
    dicts: Sequence[dict],
    classes: Sequence[str],
    dataset_ids: Sequence[int] | None = None,
    image_root: str | os.PathLike | None = None,
) -> dict:
    """The COCO dict of ``dicts`` whose ``category_id`` index ``classes``."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets.coco import convert_to_coco_dict

    dataset_ids = list(range(1, len(classes) + 1)) if dataset_ids is None else list(dataset_ids)
    # convert_to_coco_dict reads a registered dataset: register these dicts under a throw-away
    # name for the call.
    name = f"__instseg_d2_export_{uuid.uuid4().hex}"
    DatasetCatalog.register(name, lambda: list(dicts))
    MetadataCatalog.get(name).set(
        thing_classes=list(classes),
        thing_dataset_id_to_contiguous_id={d: i for i, d in enumerate(dataset_ids)},
    )
    try:
        coco = convert_to_coco_dict(name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    coco.setdefault("annotations", [])  # Detectron2 leaves the key out when there are none
    if image_root is not None:
        root = Path(os.path.abspath(image_root))
        for image in coco["images"]:
            path = Path(os.path.abspath(image["file_name"]))
            if not path.is_relative_to(root):
                raise DatasetError(f"{path}: not under the image root {root}")
            image["file_name"] = path.relative_to(root).as_posix()
    return coco


def registered_to_coco(name: str, image_root: str | os.PathLike | None = None) -> dict:
    """The COCO dict of the registered dataset ``name`` (its ``thing_classes`` and ids)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    metadata = MetadataCatalog.get(name)
    classes = metadata.get("thing_classes")
    if not classes:
        raise DatasetError(f"{name}: the dataset's metadata has no thing_classes")
    mapping = metadata.get("thing_dataset_id_to_contiguous_id")
    dataset_ids = None
    if mapping:
        by_index = {index: dataset_id for dataset_id, index in mapping.items()}
        dataset_ids = [by_index[i] for i in range(len(classes))]
    return dicts_to_coco(DatasetCatalog.get(name), classes, dataset_ids, image_root)


def write_json(data: dict, output: str | os.PathLike) -> Path:
    """Write ``data`` to ``output`` through a temporary file, so a reader never sees half."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.{os.getpid()}.part")
    partial.write_text(json.dumps(data))
    os.replace(partial, output)
    return output
