"""COCO evaluation that survives Detectron2's process-wide cache of the converted json."""

from __future__ import annotations

from collections.abc import Sequence

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.file_io import PathManager


def forget_stale_coco_json(dataset_name: str) -> None:
    """Drop a ``json_file`` in the dataset's metadata that points at a file that is gone.

    The first ``COCOEvaluator`` of a dataset without a json converts it into its output folder
    and records that path in the global ``MetadataCatalog``; every later evaluator in the process
    opens that path. When the folder was temporary (a benchmark, a test, an earlier run's
    OUTPUT_DIR deleted since), the later evaluator fails with FileNotFoundError. ``Metadata``
    refuses to overwrite a key, so the entry is rebuilt without it and the json is converted anew.
    """
    metadata = MetadataCatalog.get(dataset_name)
    json_file = getattr(metadata, "json_file", None)
    if json_file is None or PathManager.exists(json_file):
        return
    fields = {k: v for k, v in metadata.as_dict().items() if k not in ("name", "json_file")}
    MetadataCatalog.remove(dataset_name)
    MetadataCatalog.get(dataset_name).set(**fields)


def build_coco_evaluator(
    dataset_name: str, output_dir: str, tasks: Sequence[str], distributed: bool = True
) -> COCOEvaluator:
    forget_stale_coco_json(dataset_name)
    return COCOEvaluator(
        dataset_name, tasks=tuple(tasks), distributed=distributed, output_dir=output_dir
    )
