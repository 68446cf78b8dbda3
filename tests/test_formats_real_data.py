"""The real Penn-Fudan and balloon data written in each format (tmp_path) and read back.

A 2-class dataset mixes pedestrians (Penn-Fudan: RLE masks) and balloons (VIA polygons). What
must come back:

* COCO and LabelMe hold both kinds losslessly: RLE pixel for pixel, polygon coordinates exactly;
* mask folders hold rasterised masks: pixel for pixel what was written (an id mask keeps the
  later of two overlapping instances);
* YOLO keeps 6 decimals of the normalised coordinates: within ``0.5e-6 x side`` (+ float
  round-off) of the original polygon (rasterised: see assert_flips_at_most_the_outline);
* Penn-Fudan's RLE masks written as YOLO/VIA polygons (one polygon per mask,
  instseg_d2.data.mask_polygons) rasterise to the original mask pixel for pixel, after YOLO's
  rounding too;
* class ids map as declared, whatever order the format finds the classes in.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode
from format_writers import rasterise

import instseg_d2.data  # noqa: F401  (registers the datasets)
from instseg_d2.data.dataset_file import load_dataset_file, read_dataset_file
from instseg_d2.data.export import dicts_to_coco, write_json
from instseg_d2.data.formats import (
    load_coco,
    load_labelme,
    load_mask_folder,
    load_via,
    load_yolo,
    read_yolo_class_names,
    remap_classes,
)
from instseg_d2.data.writers import (
    write_labelme,
    write_mask_folder,
    write_ultralytics_yaml,
    write_via,
    write_yolo,
)

CLASSES = ["pedestrian", "balloon"]


def _mixed(pennfudan: str, balloon: str) -> list[dict]:
    """Penn-Fudan records as class 0 and balloon records as class 1."""
    balloons = [
        {**r, "annotations": [{**a, "category_id": 1} for a in r["annotations"]]}
        for r in DatasetCatalog.get(balloon)
    ]
    return DatasetCatalog.get(pennfudan) + balloons


@pytest.fixture(scope="module")
def mixed(shared_data) -> list[dict]:
    return _mixed("pennfudan_train_mini", "balloon_train_mini")


def assert_flips_at_most_the_outline(got: np.ndarray, expected: np.ndarray) -> None:
    """Balloon vertices sit exactly on pycocotools' sampling lattice (VIA integers + 0.5), so a
    1e-4 px move of a vertex decides every pixel whose centre lies on an edge: at most one pixel
    per outline pixel can change (measured on all 305 balloons: 0.47 of the outline at worst;
    IoU is no measure here, a 10-pixel balloon loses 16% to one flipped pixel row)."""
    outline = expected & ~cv2.erode(expected.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(
        bool
    )
    assert (got ^ expected).sum() <= outline.sum()


def _by_name(dicts: list[dict]) -> dict[str, dict]:
    return {r["file_name"].rsplit("/", 1)[-1]: r for r in dicts}


def _xyxy(ann: dict) -> list[float]:
    return BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYXY_ABS)


def _assert_same(original: list[dict], loaded: list[dict], polygon_atol: float = 0.0) -> None:
    """Same images, sizes, classes; RLE masks pixel for pixel; polygons within ``polygon_atol``."""
    loaded_by_name = _by_name(loaded)
    assert set(loaded_by_name) == set(_by_name(original))
    for name, record in _by_name(original).items():
        back = loaded_by_name[name]
        h, w = record["height"], record["width"]
        assert (back["height"], back["width"]) == (h, w), name
        assert [a["category_id"] for a in back["annotations"]] == [
            a["category_id"] for a in record["annotations"]
        ], name
        for ann, got in zip(record["annotations"], back["annotations"], strict=True):
            if isinstance(ann["segmentation"], dict):
                np.testing.assert_array_equal(rasterise(got, h, w), rasterise(ann, h, w))
            else:
                for p, q in zip(ann["segmentation"], got["segmentation"], strict=True):
                    np.testing.assert_allclose(q, p, rtol=0, atol=polygon_atol)
            np.testing.assert_allclose(_xyxy(got), _xyxy(ann), rtol=0, atol=max(polygon_atol, 1e-3))


def test_coco_round_trip_of_all_real_images(tmp_path, shared_data):
    dicts = _mixed("pennfudan_train", "balloon_train") + _mixed("pennfudan_val", "balloon_val")
    assert len(dicts) == 170 + 74
    json_file = write_json(dicts_to_coco(dicts, CLASSES, [1, 2]), tmp_path / "mixed.json")
    loaded = load_coco(json_file)
    assert loaded.classes == CLASSES and loaded.dataset_ids == [1, 2]
    assert loaded.mask_format == "bitmask" and loaded.num_negative_images == 0
    _assert_same(dicts, loaded.dicts)
    # Relative file names with an image root read back to the same files.
    coco = dicts_to_coco(dicts[:3], CLASSES, image_root=shared_data)
    assert not coco["images"][0]["file_name"].startswith("/")
    again = load_coco(write_json(coco, tmp_path / "relative.json"), shared_data)
    assert {r["file_name"] for r in again.dicts} == {r["file_name"] for r in dicts[:3]}


def test_labelme_round_trip_is_lossless(tmp_path, mixed):
    loaded = load_labelme(write_labelme(mixed, CLASSES, tmp_path / "labelme").path)
    assert loaded.classes == ["balloon", "pedestrian"]  # LabelMe: the labels found, sorted
    assert loaded.mask_format == "bitmask"  # pedestrians come back as LabelMe mask shapes
    _assert_same(mixed, remap_classes(loaded, CLASSES).dicts)


def test_yolo_round_trip(tmp_path, mixed):
    images = write_yolo(mixed, CLASSES, tmp_path / "yolo").path
    names = read_yolo_class_names(write_ultralytics_yaml(tmp_path / "yolo", CLASSES, ["train"]))
    assert names == CLASSES
    loaded = load_yolo(images, names)
    assert loaded.mask_format == "polygon"
    back = _by_name(loaded.dicts)
    for name, record in _by_name(mixed).items():
        h, w = record["height"], record["width"]
        for ann, got in zip(record["annotations"], back[name]["annotations"], strict=True):
            assert got["category_id"] == ann["category_id"]
            if isinstance(ann["segmentation"], list):  # balloon: the same polygon, 6 decimals
                np.testing.assert_allclose(
                    got["segmentation"][0],
                    ann["segmentation"][0],
                    rtol=0,
                    atol=0.5e-6 * max(h, w) + 1e-9,
                )
                assert_flips_at_most_the_outline(rasterise(got, h, w), rasterise(ann, h, w))
            else:  # pedestrian: a polygon of the mask's pixels
                np.testing.assert_array_equal(rasterise(got, h, w), rasterise(ann, h, w))


@pytest.mark.parametrize("class_attribute", ["name", None])
def test_via_round_trip(tmp_path, mixed, class_attribute):
    data = (
        mixed
        if class_attribute
        else [
            r for r in mixed if "FudanPed" not in r["file_name"] and "PennPed" not in r["file_name"]
        ]
    )
    json_file = write_via(data, CLASSES, tmp_path / "via", class_attribute).path
    loaded = load_via(json_file, class_attribute=class_attribute, class_name="balloon")
    if class_attribute is None:  # one class, named by the caller
        assert loaded.classes == ["balloon"]
        loaded = remap_classes(loaded, CLASSES)
    back = _by_name(remap_classes(loaded, CLASSES).dicts)
    for name, record in _by_name(data).items():
        h, w = record["height"], record["width"]
        for ann, got in zip(record["annotations"], back[name]["annotations"], strict=True):
            assert got["category_id"] == ann["category_id"]
            if isinstance(ann["segmentation"], list):
                np.testing.assert_allclose(
                    got["segmentation"], ann["segmentation"], rtol=0, atol=1e-9
                )
            else:
                np.testing.assert_array_equal(rasterise(got, h, w), rasterise(ann, h, w))


@pytest.mark.parametrize("layout", ["map", "per_class"])
def test_mask_folder_round_trip_is_pixel_exact(tmp_path, mixed, layout):
    folder = write_mask_folder(mixed, CLASSES, tmp_path / layout, layout).path
    class_map = folder / "class_map.json" if layout == "map" else None
    loaded = remap_classes(load_mask_folder(folder, class_map=class_map), CLASSES)
    assert loaded.mask_format == "bitmask"
    back = _by_name(loaded.dicts)
    for name, record in _by_name(mixed).items():
        h, w = record["height"], record["width"]
        # What an id mask holds: each instance minus the pixels of later ones (per class folder).
        expected = []
        for k, ann in enumerate(record["annotations"]):
            mask = rasterise(ann, h, w)
            for later in record["annotations"][k + 1 :]:
                if layout == "map" or later["category_id"] == ann["category_id"]:
                    mask &= ~rasterise(later, h, w)
            expected.append((ann["category_id"], mask))
        if layout == "per_class":  # read back class folder by class folder (sorted names)
            expected.sort(key=lambda e: sorted(CLASSES).index(CLASSES[e[0]]))
        got = back[name]["annotations"]
        assert [a["category_id"] for a in got] == [c for c, _ in expected]
        for ann, (_, mask) in zip(got, expected, strict=True):
            np.testing.assert_array_equal(rasterise(ann, h, w), mask)


def test_two_class_dataset_file_maps_classes_as_declared(tmp_path, mixed):
    """The same mixed data through a dataset file, in COCO, LabelMe and YOLO: the model's class
    order is the file's ``classes``, whatever the format's own order."""
    write_json(dicts_to_coco(mixed, CLASSES, [7, 3]), tmp_path / "coco.json")
    write_labelme(mixed, CLASSES, tmp_path / "labelme")
    write_yolo(mixed, CLASSES, tmp_path / "yolo")
    write_ultralytics_yaml(tmp_path / "yolo", CLASSES, ["train"])
    specs = {
        "coco": "format: coco\ntrain: coco.json\n",
        "labelme": "format: labelme\ntrain: labelme\n",
        "yolo": "format: yolo\ntrain: yolo/images/train\ndata_yaml: yolo/ultralytics.yaml\n",
    }
    for fmt, body in specs.items():
        path = tmp_path / f"{fmt}.yaml"
        path.write_text(
            f"name: mixed_{fmt}\n{body}classes: [balloon, pedestrian]\nval_fraction: 0.3\n"
        )
        splits, classes, ids = load_dataset_file(read_dataset_file(path))
        assert classes == ["balloon", "pedestrian"], fmt
        # The source's ids of the classes: COCO's categories, YOLO's index + 1; LabelMe has
        # none, so 1..K in the file's order.
        assert ids == {"coco": [3, 7], "yolo": [2, 1], "labelme": [1, 2]}[fmt]
        records = splits["train"].dicts + splits["val"].dicts
        assert len(records) == len(mixed) and len(splits["val"].dicts) == 6
        for record in records:
            expected = (
                1 if ("FudanPed" in record["file_name"] or "PennPed" in record["file_name"]) else 0
            )
            assert {a["category_id"] for a in record["annotations"]} == {expected}, fmt
        # Both classes are in val (stratified) and in train.
        for part in ("train", "val"):
            assert {a["category_id"] for r in splits[part].dicts for a in r["annotations"]} == {
                0,
                1,
            }
