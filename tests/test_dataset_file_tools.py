"""export_coco.py and dataset_summary.py with a dataset file, and multi-class COCO exports."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from format_writers import rasterise

import instseg_d2.data  # noqa: F401  (registers the datasets)
from instseg_d2.data.dataset_file import load_dataset_file, read_dataset_file
from instseg_d2.data.errors import DatasetError
from instseg_d2.data.export import dicts_to_coco, write_json
from instseg_d2.data.formats import load_coco
from instseg_d2.data.writers import (
    write_labelme,
    write_mask_folder,
    write_ultralytics_yaml,
    write_via,
    write_yolo,
)
from instseg_d2.utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["pedestrian", "balloon"]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mixed(shared_data) -> list[dict]:
    """3 Penn-Fudan images (class 0, RLE) and 3 balloon images (class 1, polygons)."""
    balloons = [
        {**r, "annotations": [{**a, "category_id": 1} for a in r["annotations"]]}
        for r in DatasetCatalog.get("balloon_val_mini")[:3]
    ]
    return DatasetCatalog.get("pennfudan_val_mini")[:3] + balloons


def _dataset_files(tmp_path, mixed) -> dict[str, Path]:
    write_json(dicts_to_coco(mixed, CLASSES), tmp_path / "coco.json")
    write_labelme(mixed, CLASSES, tmp_path / "labelme")
    write_yolo(mixed, CLASSES, tmp_path / "yolo")
    write_ultralytics_yaml(tmp_path / "yolo", CLASSES, ["train"])
    write_via(mixed, CLASSES, tmp_path / "via")
    write_mask_folder(mixed, CLASSES, tmp_path / "masks_map", "map")
    write_mask_folder(mixed, CLASSES, tmp_path / "masks_classes", "per_class")
    bodies = {
        "coco": "format: coco\ntrain: coco.json\n",
        "labelme": "format: labelme\ntrain: labelme\n",
        "yolo": "format: yolo\ntrain: yolo/images/train\ndata_yaml: yolo/ultralytics.yaml\n",
        "via": "format: via\ntrain: via/via_region_data.json\nclass_attribute: name\n",
        "masks_map": "format: masks\ntrain: masks_map\nclass_map: masks_map/class_map.json\n",
        "masks_classes": "format: masks\ntrain: masks_classes\n",
    }
    files = {}
    for name, body in bodies.items():
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(
            f"name: {name}\n{body}classes: [pedestrian, balloon]\nval_fraction: 0.5\n"
        )
    return files


def test_each_format_converts_to_coco_that_reads_back_the_same(tmp_path, mixed, capsys):
    for fmt, dataset_file in _dataset_files(tmp_path, mixed).items():
        output = tmp_path / "out" / f"{fmt}.json"
        assert (
            _tool("export_coco").main(
                ["--dataset-file", str(dataset_file), "--split", "val", "--output", str(output)]
            )
            == 0
        )
        assert f"wrote {output}: 3 images" in capsys.readouterr().out
        coco = json.loads(output.read_text())
        assert [(c["id"], c["name"]) for c in coco["categories"]] == [
            (1, "pedestrian"),
            (2, "balloon"),
        ]
        splits, classes, _ = load_dataset_file(read_dataset_file(dataset_file))
        back = {r["image_id"]: r for r in load_coco(output).dicts}
        assert len(back) == len(splits["val"].dicts) == 3
        for record in splits["val"].dicts:
            got = back[record["image_id"]]
            assert got["file_name"] == record["file_name"], fmt
            h, w = record["height"], record["width"]
            assert [a["category_id"] for a in got["annotations"]] == [
                a["category_id"] for a in record["annotations"]
            ]
            for a, b in zip(record["annotations"], got["annotations"], strict=True):
                assert b["segmentation"] == a["segmentation"], fmt  # RLE or polygons, unchanged
                np.testing.assert_array_equal(rasterise(b, h, w), rasterise(a, h, w))
                expected = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
                np.testing.assert_allclose(
                    BoxMode.convert(b["bbox"], b["bbox_mode"], BoxMode.XYXY_ABS),
                    expected,
                    atol=1e-3,
                )


def test_export_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nformat: labelme\ntrain: nowhere\n")
    with pytest.raises(DatasetError, match=r"bad\.yaml: key 'train': .*does not exist"):
        _tool("export_coco").main(
            ["--dataset-file", str(bad), "--output", str(tmp_path / "o.json")]
        )
    bad.write_text(f"name: x\nformat: labelme\ntrain: {tmp_path}\nval: {tmp_path}\n")
    with pytest.raises(UserError, match="has no split 'test'"):
        _tool("export_coco").main(
            ["--dataset-file", str(bad), "--split", "test", "--output", str(tmp_path / "o.json")]
        )


def test_registered_multiclass_export_keeps_names_and_ids(tmp_path, mixed):
    name = "test_export_two_classes"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: mixed)
        MetadataCatalog.get(name).set(
            thing_classes=CLASSES, thing_dataset_id_to_contiguous_id={5: 0, 9: 1}
        )
    output = tmp_path / "two.json"
    counts = _tool("export_coco").export_coco(
        name, output, image_root=Path(mixed[0]["file_name"]).parents[2]
    )
    assert counts["categories"] == 2 and counts["images"] == 6
    coco = json.loads(output.read_text())
    assert coco["categories"] == [{"id": 5, "name": "pedestrian"}, {"id": 9, "name": "balloon"}]
    assert (
        coco["images"][0]["file_name"]
        == "PennFudanPed/PNGImages/" + Path(mixed[0]["file_name"]).name
    )
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], set()).add(ann["category_id"])
    assert by_image[mixed[0]["image_id"]] == {5} and by_image[mixed[-1]["image_id"]] == {9}


def test_summary_per_class_from_a_dataset_file(tmp_path, mixed, capsys):
    dataset_file = _dataset_files(tmp_path, mixed)["labelme"]
    output = tmp_path / "summary.json"
    assert (
        _tool("dataset_summary").main(
            ["--dataset-file", str(dataset_file), "--output", str(output)]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "| labelme_train " in table and "| labelme_val " in table
    summary = json.loads(output.read_text())
    total = {c: sum(s["classes"][c]["instances"] for s in summary.values()) for c in CLASSES}
    expected = {
        c: sum(a["category_id"] == i for r in mixed for a in r["annotations"])
        for i, c in enumerate(CLASSES)
    }
    assert total == expected
    assert sum(s["classes"]["balloon"]["images"] for s in summary.values()) == 3
    assert list(summary["labelme_train"]["classes"]) == CLASSES  # the model's order
