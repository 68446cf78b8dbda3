"""Balloon registration from VIA json: real data, and each VIA variant on tiny fixtures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode, PolygonMasks
from PIL import Image

import instseg_d2.data  # noqa: F401  (registers the datasets)
from instseg_d2.data.datasets.register_balloon import load_balloon_dicts
from instseg_d2.data.errors import DatasetError
from instseg_d2.data.formats.via import (
    ELLIPSE_POINTS,
    PIXEL_CENTER_SHIFT,
    ViaFormatError,
    load_via_file,
    parse_via,
    via_image_id,
)


def test_split_counts_and_metadata(shared_data):
    expected = {"balloon_train": (61, 255), "balloon_val": (13, 50)}
    for name, (images, instances) in expected.items():
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == images
        assert sum(len(d["annotations"]) for d in dicts) == instances
        assert MetadataCatalog.get(name).thing_classes == ["balloon"]
        assert MetadataCatalog.get(name).evaluator_type == "coco"
    assert len(DatasetCatalog.get("balloon_train_mini")) == 10
    assert len(DatasetCatalog.get("balloon_val_mini")) == 5
    ids = [d["image_id"] for n in expected for d in DatasetCatalog.get(n)]
    assert len(set(ids)) == len(ids) == 74


@pytest.mark.parametrize("split", ["train", "val"])
def test_every_polygon_box_matches_its_extent(shared_data, split):
    raw = json.loads((shared_data / "balloon" / split / "via_region_data.json").read_text())
    raw_by_file = {entry["filename"]: list(entry["regions"].values()) for entry in raw.values()}
    for record in DatasetCatalog.get(f"balloon_{split}"):
        height, width = record["height"], record["width"]
        with Image.open(record["file_name"]) as image:
            assert image.size == (width, height)
        regions = raw_by_file[record["file_name"].rsplit("/", 1)[1]]
        assert len(regions) == len(record["annotations"])
        for ann, region in zip(record["annotations"], regions, strict=True):
            assert ann["bbox_mode"] == BoxMode.XYXY_ABS
            (poly,) = ann["segmentation"]
            xs, ys = poly[0::2], poly[1::2]
            assert ann["bbox"] == [min(xs), min(ys), max(xs), max(ys)]
            assert 0 <= min(xs) and max(xs) <= width and 0 <= min(ys) and max(ys) <= height
            # VIA pixel indices shifted to Detectron2 pixel centres (then clipped to the image).
            attrs = region["shape_attributes"]
            assert xs[0] == min(attrs["all_points_x"][0] + PIXEL_CENTER_SHIFT, width)
            assert ys[0] == min(attrs["all_points_y"][0] + PIXEL_CENTER_SHIFT, height)
            assert PolygonMasks([ann["segmentation"]]).area()[0] > 0


def _images(folder, names, size=(10, 8)):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", size).save(folder / name)
    return folder


POLY = {"name": "polygon", "all_points_x": [1, 5, 5, 1], "all_points_y": [1, 1, 4, 4]}


def _write(folder, data):
    (folder / "via_region_data.json").write_text(json.dumps(data))
    return load_balloon_dicts(folder)


def test_via1_regions_as_dict_and_empty_image(tmp_path):
    folder = _images(tmp_path / "train", ["a.jpg", "b.jpg"])
    data = {
        "a.jpg123": {
            "filename": "a.jpg",
            "size": 123,
            "regions": {"0": {"shape_attributes": POLY}},
        },
        "b.jpg9": {"filename": "b.jpg", "size": 9, "regions": {}},  # no regions: stays, no anns
    }
    a, b = _write(folder, data)
    assert (a["height"], a["width"]) == (8, 10)
    assert a["annotations"][0]["segmentation"] == [[1.5, 1.5, 5.5, 1.5, 5.5, 4.5, 1.5, 4.5]]
    assert a["annotations"][0]["bbox"] == [1.5, 1.5, 5.5, 4.5]
    assert b["annotations"] == [] and b["file_name"].endswith("b.jpg")
    assert a["image_id"] == via_image_id("train/a.jpg")


def test_via2_export_with_region_list_and_project_file(tmp_path):
    folder = _images(tmp_path / "val", ["a.jpg"])
    exported = {
        "a.jpg1": {
            "filename": "a.jpg",
            "size": 1,
            "regions": [{"shape_attributes": POLY, "region_attributes": {}}],
        }
    }
    project = {
        "_via_settings": {"ui": {}},
        "_via_attributes": {"region": {}},
        "_via_img_metadata": exported,
        "_via_data_format_version": "2.0.10",
    }
    from_export = _write(folder, exported)
    from_project = _write(folder, project)
    assert from_export == from_project
    assert len(from_project[0]["annotations"]) == 1


def test_rect_circle_ellipse_polyline_become_polygons(tmp_path):
    folder = _images(tmp_path / "train", ["a.jpg"], size=(100, 80))
    shapes = [
        {"name": "rect", "x": 10, "y": 20, "width": 30, "height": 10},
        {"name": "circle", "cx": 50, "cy": 40, "r": 10},
        {"name": "ellipse", "cx": 50, "cy": 40, "rx": 20, "ry": 5, "theta": 0},
        {"name": "polyline", "all_points_x": [1, 9, 9], "all_points_y": [1, 1, 9]},
    ]
    data = {"a": {"filename": "a.jpg", "regions": [{"shape_attributes": s} for s in shapes]}}
    rect, circle, ellipse, polyline = _write(folder, data)[0]["annotations"]
    assert rect["bbox"] == [10.5, 20.5, 40.5, 30.5]
    assert len(circle["segmentation"][0]) == 2 * ELLIPSE_POINTS
    assert circle["bbox"] == pytest.approx([40.5, 30.5, 60.5, 50.5], abs=0.2)
    assert ellipse["bbox"] == pytest.approx([30.5, 35.5, 70.5, 45.5], abs=0.2)
    assert len(polyline["segmentation"][0]) == 6  # closed into a triangle
    area = PolygonMasks([circle["segmentation"]]).area()[0].item()
    assert area == pytest.approx(np.pi * 100, rel=0.02)


@pytest.mark.parametrize(
    "region, message",
    [
        ({"shape_attributes": {"name": "point", "cx": 1, "cy": 2}}, "'point' regions have no area"),
        ({"shape_attributes": {"name": "freehand"}}, "unsupported shape 'freehand'"),
        (
            {
                "shape_attributes": {
                    "name": "polygon",
                    "all_points_x": [1, 2],
                    "all_points_y": [1, 2],
                }
            },
            "at least 3 points, got 2",
        ),
        (
            {
                "shape_attributes": {
                    "name": "polygon",
                    "all_points_x": [1, 2, 3],
                    "all_points_y": [1, 2],
                }
            },
            "3 x coordinates but 2 y",
        ),
        (
            {
                "shape_attributes": {
                    "name": "polygon",
                    "all_points_x": [1, "2", 3],
                    "all_points_y": [1, 2, 3],
                }
            },
            "must be a finite number, got '2'",
        ),
        (
            {"shape_attributes": {"name": "rect", "x": 1, "y": 1, "width": 0, "height": 3}},
            "rect with non-positive size",
        ),
        (
            {"shape_attributes": {"name": "circle", "cx": 1, "cy": 1}},
            "'r' must be a finite number, got None",
        ),
        ({"no_shape": 1}, "'shape_attributes' must be an object"),
    ],
)
def test_bad_regions_are_rejected_with_the_file_image_and_region(tmp_path, region, message):
    folder = _images(tmp_path / "train", ["a.jpg"])
    data = {"a": {"filename": "a.jpg", "regions": [{"shape_attributes": POLY}, region]}}
    with pytest.raises(ViaFormatError, match="via_region_data.json: a.jpg region 1: ") as info:
        _write(folder, data)
    assert message in str(info.value)


def test_via3_and_broken_json_are_rejected(tmp_path):
    via3 = {"project": {}, "config": {}, "attribute": {}, "file": {}, "view": {}, "metadata": {}}
    with pytest.raises(ViaFormatError, match="VIA 3 project, which is not supported"):
        parse_via(via3, "p.json")
    broken = tmp_path / "via_region_data.json"
    broken.write_text('{"a": ')
    with pytest.raises(ViaFormatError, match=rf"^{broken}: not valid JSON"):
        load_via_file(broken)
    with pytest.raises(ViaFormatError, match="expected a JSON object of images, got list"):
        parse_via([], "x.json")
    with pytest.raises(ViaFormatError, match="entry 'k' has no 'filename'"):
        parse_via({"k": {"regions": {}}}, "x.json")


def test_missing_image_and_missing_json(tmp_path):
    folder = _images(tmp_path / "train", [])
    with pytest.raises(
        DatasetError, match=r"train/via_region_data\.json: balloon annotations not found"
    ):
        load_balloon_dicts(folder)
    with pytest.raises(
        DatasetError, match=r"train/gone\.jpg: image listed in via_region_data\.json not found"
    ):
        _write(folder, {"g": {"filename": "gone.jpg", "regions": {}}})


def test_points_outside_the_image_are_clipped(tmp_path):
    folder = _images(tmp_path / "train", ["a.jpg"], size=(10, 8))
    shape = {"name": "polygon", "all_points_x": [-3, 10, 10, 2], "all_points_y": [0, 0, 8, 12]}
    (record,) = _write(
        folder, {"a": {"filename": "a.jpg", "regions": [{"shape_attributes": shape}]}}
    )
    assert record["annotations"][0]["bbox"] == [0.0, 0.5, 10.0, 8.0]
