"""COCO export round trip through pycocotools, dataset summary and visualize_data tools."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import instseg_d2.data  # noqa: F401  (registers the datasets)
from instseg_d2.data.errors import UnknownDatasetError

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "dataset, images, annotations", [("pennfudan_val", 50, 131), ("balloon_val", 13, 50)]
)
def test_coco_export_round_trips(tmp_path, shared_data, dataset, images, annotations):
    output = tmp_path / f"{dataset}.json"
    counts = _tool("export_coco").export_coco(dataset, output)
    assert counts == {"images": images, "annotations": annotations, "categories": 1}
    assert not Path(f"{output}.lock").exists()
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(output))
    assert [c["id"] for c in coco.loadCats(coco.getCatIds())] == [1]  # COCO ids start at 1
    dicts = {d["image_id"]: d for d in DatasetCatalog.get(dataset)}
    assert set(coco.getImgIds()) == set(dicts)
    # Masks survive the trip: every exported mask equals the dataset's own rasterisation.
    for image_id, record in list(dicts.items())[:5]:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert len(anns) == len(record["annotations"])
        for ann, source in zip(anns, record["annotations"], strict=True):
            h, w = record["height"], record["width"]
            segm = source["segmentation"]
            expected = (
                mask_util.decode(segm)
                if isinstance(segm, dict)
                else mask_util.decode(mask_util.merge(mask_util.frPyObjects(segm, h, w)))
            )
            np.testing.assert_array_equal(coco.annToMask(ann), expected)
    # The ground truth fed back as results (loadRes) scores AP 1.0 on boxes and masks.
    results = [
        {**{k: a[k] for k in ("image_id", "category_id", "bbox", "segmentation")}, "score": 1.0}
        for a in coco.loadAnns(coco.getAnnIds())
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        detections = coco.loadRes(results)
        for iou_type in ("bbox", "segm"):
            evaluator = COCOeval(coco, detections, iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            assert evaluator.stats[0] == pytest.approx(1.0), iou_type
    assert len(detections.anns) == annotations


def test_export_unknown_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(UnknownDatasetError, match="dataset 'nope' is not registered"):
        _tool("export_coco").main(["--dataset", "nope", "--output", str(tmp_path / "x.json")])


def test_dataset_summary_table_and_json(tmp_path, shared_data, capsys):
    output = tmp_path / "summary.json"
    assert (
        _tool("dataset_summary").main(
            ["--dataset", "pennfudan_val", "balloon_val_mini", "--output", str(output)]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "| pennfudan_val " in table and "| balloon_val_mini " in table
    summary = json.loads(output.read_text())
    pf = summary["pennfudan_val"]
    assert (pf["images"], pf["instances"], pf["images_without_instances"]) == (50, 131, 0)
    assert pf["instances_per_image"]["max"] == 7
    area = pf["mask_area"]
    assert area["small"] + area["medium"] + area["large"] == 131
    expected_areas = [
        int(mask_util.area(a["segmentation"]))
        for d in DatasetCatalog.get("pennfudan_val")
        for a in d["annotations"]
    ]
    assert area["max"] == max(expected_areas) and area["min"] == min(expected_areas)
    assert summary["balloon_val_mini"]["images"] == 5


TINY_CONFIG = """\
_BASE_: "model_zoo://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
DATASETS:
  TRAIN: ("pennfudan_train_mini",)
  TEST: ("pennfudan_val_mini",)
INPUT:
  MASK_FORMAT: bitmask
  MIN_SIZE_TRAIN: (96,)
  MAX_SIZE_TRAIN: 160
MODEL:
  DEVICE: cpu
SOLVER:
  IMS_PER_BATCH: 2
"""


@pytest.mark.parametrize("source", ["annotation", "dataloader"])
def test_visualize_data(tmp_path, shared_data, source):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    out = tmp_path / source
    args = [
        "--config-file",
        str(config),
        "--source",
        source,
        "--output",
        str(out),
        "--num-images",
        "2",
    ]
    written = _tool("visualize_data").main(args)
    assert len(written) == 2 and all(p.is_file() for p in written)
    records = {Path(d["file_name"]).stem: d for d in DatasetCatalog.get("pennfudan_train_mini")}
    for path in written:
        stem = path.stem.split("_", 1)[-1]
        record = records[stem]
        drawn = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
        if source == "annotation":  # original size, and something was drawn on it
            assert drawn.shape[:2] == (record["height"], record["width"])
            original = np.asarray(Image.open(record["file_name"]).convert("RGB"), dtype=np.int16)
            assert np.abs(drawn - original).mean() > 5
        else:  # resized by the config's augmentation: short side 96
            assert min(drawn.shape[:2]) == 96
