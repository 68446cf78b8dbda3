"""The writers of instseg_d2.data.writers read back through the readers, on tiny fixtures made
here: what each format holds comes back exactly, and what it cannot hold is counted."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.structures import BoxMode
from format_writers import rasterise
from PIL import Image

from instseg_d2.data.formats import (
    load_labelme,
    load_mask_folder,
    load_via,
    load_yolo,
    read_yolo_class_names,
    remap_classes,
)
from instseg_d2.data.formats.common import polygon_annotation
from instseg_d2.data.mask_polygons import annotation_polygon, join_polygons, mask_polygon
from instseg_d2.data.masks import encode_binary_mask
from instseg_d2.data.writers import (
    DatasetWriteError,
    image_names,
    write_labelme,
    write_mask_folder,
    write_ultralytics_yaml,
    write_via,
    write_yolo,
)

CLASSES = ["cat", "dog"]
H, W = 30, 40
CAT_BOX = [2.0, 2.0, 12.0, 2.0, 12.0, 10.0, 2.0, 10.0]
DOG_PARTS = [[20.0, 2.0, 26.0, 2.0, 26.0, 8.0, 20.0, 8.0], [30.0, 2.0, 36.0, 2.0, 36.0, 8.0]]


def _rle_annotation(mask: np.ndarray, category_id: int) -> dict:
    rle = encode_binary_mask(mask)
    return {
        "bbox": mask_util.toBbox(rle).tolist(),
        "bbox_mode": BoxMode.XYWH_ABS,
        "segmentation": rle,
        "category_id": category_id,
        "iscrowd": 0,
    }


def _ring_and_piece() -> np.ndarray:
    """A square with a hole, and a separate bar: two outer contours and one hole."""
    mask = np.zeros((H, W), bool)
    mask[15:27, 2:14] = True
    mask[19:23, 6:10] = False
    mask[24:28, 20:32] = True
    return mask


def _box(x0, y0, x1, y1) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


@pytest.fixture
def records(tmp_path) -> list[dict]:
    """Two images both named img.png (in a/ and b/) and a negative neg.jpg. a: a cat polygon, a
    dog of two polygons, a cat RLE with a hole and two pieces, a crowd dog. b: cat A, cat C
    inside cat B (written after C, so C keeps no pixel), a dog triangle."""
    files = [
        tmp_path / "src" / "a" / "img.png",
        tmp_path / "src" / "b" / "img.png",
        tmp_path / "src" / "neg.jpg",
    ]
    for i, path in enumerate(files):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 60 * i, np.uint8)).save(path)
    crowd = {**polygon_annotation([_box(1, 20, 5, 25)], 1), "iscrowd": 1}
    a = [
        polygon_annotation([CAT_BOX], 0),
        polygon_annotation(DOG_PARTS, 1),
        _rle_annotation(_ring_and_piece(), 0),
        crowd,
    ]
    b = [
        polygon_annotation([_box(2, 2, 20, 20)], 0),
        polygon_annotation([_box(12, 12, 16, 16)], 0),
        polygon_annotation([_box(10, 10, 30, 25)], 0),
        polygon_annotation([[25.0, 2.0, 38.0, 2.0, 38.0, 8.0]], 1),
    ]
    return [
        {"file_name": str(f), "height": H, "width": W, "image_id": i, "annotations": anns}
        for i, (f, anns) in enumerate(zip(files, [a, b, []], strict=True))
    ]


def _by_source(loaded: list[dict], written_names: list[str]) -> list[dict]:
    """Read-back records in the order of the source records (matched by written name)."""
    by_name = {Path(r["file_name"]).name: r for r in loaded}
    return [by_name[name] for name in written_names]


def test_image_names_keep_names_and_tell_clashing_stems_apart(records, tmp_path):
    names = image_names(records)
    assert names[2] == "neg.jpg"
    assert names[0] != names[1] and all(
        n.startswith("img_") and n.endswith(".png") for n in names[:2]
    )
    assert image_names(records) == names  # stable
    with pytest.raises(DatasetWriteError, match=r"img\.png: listed twice in one split"):
        image_names([records[0], records[0]])


def test_labelme_is_lossless_but_for_crowd(records, tmp_path):
    written = write_labelme(records, CLASSES, tmp_path / "labelme")
    assert written.lossy == {"crowd regions (iscrowd 1) dropped: the format cannot mark them": 1}
    assert dict(written.instances) == {0: 5, 1: 2} and written.images == 3
    loaded = remap_classes(load_labelme(written.path), CLASSES)
    back = _by_source(loaded.dicts, image_names(records))
    for record, got in zip(records, back, strict=True):
        expected = [a for a in record["annotations"] if not a["iscrowd"]]
        assert [a["category_id"] for a in got["annotations"]] == [
            a["category_id"] for a in expected
        ]
        for ann, again in zip(expected, got["annotations"], strict=True):
            if isinstance(ann["segmentation"], list):
                assert again["segmentation"] == ann["segmentation"]  # both dog parts, exactly
            np.testing.assert_array_equal(rasterise(again, H, W), rasterise(ann, H, W))
    assert back[2]["annotations"] == [] and loaded.num_negative_images == 1
    assert os.path.islink(tmp_path / "labelme" / "neg.jpg")


def test_yolo_joins_parts_and_writes_masks_as_polygons_of_the_same_pixels(records, tmp_path):
    written = write_yolo(records, CLASSES, tmp_path / "yolo", "val", copy_images=True)
    assert written.path == tmp_path / "yolo" / "images" / "val"
    assert written.lossy == {
        "crowd regions (iscrowd 1) dropped: the format cannot mark them": 1,
        "masks (RLE) written as one polygon each (holes as bridged parts)": 1,
        "instances of several polygons joined by zero-width bridges": 1,
    }
    names = read_yolo_class_names(write_ultralytics_yaml(tmp_path / "yolo", CLASSES, ["val"]))
    assert names == CLASSES
    loaded = load_yolo(written.path, names)
    back = _by_source(loaded.dicts, image_names(records))
    cat, dog, ring = back[0]["annotations"]
    np.testing.assert_allclose(cat["segmentation"][0], CAT_BOX, atol=0.5e-6 * W)
    # The joined dog covers exactly the pixels of its two parts; the ring, with its hole and
    # its separate bar, comes back pixel for pixel after YOLO's rounding.
    dog_original = rasterise(records[0]["annotations"][1], H, W)
    np.testing.assert_array_equal(rasterise(dog, H, W), dog_original)
    np.testing.assert_array_equal(rasterise(ring, H, W), _ring_and_piece())
    assert written.mask_ious == [1.0, 1.0]
    assert [len(a["segmentation"]) for a in back[0]["annotations"]] == [1, 1, 1]
    assert not (tmp_path / "yolo" / "images" / "val" / "neg.jpg").is_symlink()
    assert (tmp_path / "yolo" / "labels" / "val" / "neg.txt").read_text() == ""
    assert loaded.num_negative_images == 1


def test_yolo_writes_an_identical_instance_once(records, tmp_path):
    record = {**records[0], "annotations": [records[0]["annotations"][0]] * 2}
    written = write_yolo([record], CLASSES, tmp_path / "yolo")
    assert written.lossy == {"identical instances of one image written once": 1}
    assert sum(written.instances.values()) == 1


@pytest.mark.parametrize("class_attribute", ["name", None])
def test_via_polygons_come_back_exactly(records, tmp_path, class_attribute):
    if class_attribute is None:  # only one class can go without an attribute
        with pytest.raises(DatasetWriteError, match="instances of 2 classes need a class attr"):
            write_via(records, CLASSES, tmp_path / "via", None)
        records = [
            {**r, "annotations": [a for a in r["annotations"] if a["category_id"] == 1]}
            for r in records
        ]
    written = write_via(records, CLASSES, tmp_path / "via", class_attribute)
    loaded = load_via(written.path, class_attribute=class_attribute, class_name="dog")
    back = _by_source(remap_classes(loaded, CLASSES).dicts, image_names(records))
    for record, got in zip(records, back, strict=True):
        expected = [a for a in record["annotations"] if not a["iscrowd"]]
        assert [a["category_id"] for a in got["annotations"]] == [
            a["category_id"] for a in expected
        ]
        for ann, again in zip(expected, got["annotations"], strict=True):
            if isinstance(ann["segmentation"], list) and len(ann["segmentation"]) == 1:
                np.testing.assert_allclose(again["segmentation"], ann["segmentation"], atol=1e-9)
            # Joined parts and the mask's polygon: the same pixels.
            np.testing.assert_array_equal(rasterise(again, H, W), rasterise(ann, H, W))
    assert sum(written.instances.values()) == sum(len(r["annotations"]) for r in back)


@pytest.mark.parametrize("layout", ["per_class", "map"])
def test_mask_folder_counts_pixels_lost_to_overlaps(records, tmp_path, layout):
    written = write_mask_folder(records, CLASSES, tmp_path / "masks", layout)
    class_map = written.path / "class_map.json" if layout == "map" else None
    loaded = remap_classes(load_mask_folder(written.path, class_map=class_map), CLASSES)
    back = _by_source(loaded.dicts, image_names(records))
    assert written.lossy["instances without a pixel of their own dropped"] == 1  # cat C
    assert written.lossy["masks that lost pixels to a later overlapping instance"] == 1  # cat A
    assert written.lossy["crowd regions (iscrowd 1) dropped: the format cannot mark them"] == 1
    a_original = rasterise(records[1]["annotations"][0], H, W)
    b_mask = rasterise(records[1]["annotations"][2], H, W)
    assert written.mask_ious == [pytest.approx((a_original & ~b_mask).sum() / a_original.sum())]
    cats = [a for a in back[1]["annotations"] if a["category_id"] == 0]
    assert len(cats) == 2
    np.testing.assert_array_equal(rasterise(cats[0], H, W), a_original & ~b_mask)
    np.testing.assert_array_equal(rasterise(cats[1], H, W), b_mask)
    # Image a loses nothing: the ring's hole stays a hole, the dog's two parts one instance.
    ring = [a for a in back[0]["annotations"] if a["category_id"] == 0]
    assert any(np.array_equal(rasterise(r, H, W), _ring_and_piece()) for r in ring)
    assert sum(written.instances.values()) == sum(len(r["annotations"]) for r in back) == 6


def test_mask_folder_rejects_a_class_that_cannot_be_a_folder(records, tmp_path):
    with pytest.raises(DatasetWriteError, match=r"class 'a/b' cannot be a folder name"):
        write_mask_folder(records, ["a/b", "dog"], tmp_path / "masks")


def test_an_annotation_without_a_mask_is_an_error_naming_the_image(records, tmp_path):
    records[0]["annotations"][0] = {**records[0]["annotations"][0], "segmentation": []}
    with pytest.raises(DatasetWriteError, match=r"a/img\.png: annotation 0 has no segmentation"):
        write_labelme(records, CLASSES, tmp_path / "labelme")


def test_join_polygons_and_mask_polygon_cover_the_same_pixels():
    parts = [CAT_BOX, *DOG_PARTS, [5.0, 20.0, 9.0, 28.0, 1.0, 26.0]]
    joined = join_polygons(parts)
    separate = rasterise({"segmentation": parts}, H, W)
    np.testing.assert_array_equal(rasterise({"segmentation": [joined]}, H, W), separate)
    # Noise: many pieces, holes, 1-pixel bars and single pixels, diagonal neighbours.
    rng = np.random.default_rng(0)
    for _ in range(20):
        noise = rng.random((H, W)) < rng.uniform(0.2, 0.8)
        polygon = mask_polygon(noise)
        np.testing.assert_array_equal(rasterise({"segmentation": [polygon]}, H, W), noise)
    assert mask_polygon(np.zeros((H, W), bool)) is None
    assert annotation_polygon(_rle_annotation(np.zeros((H, W), bool), 0), H, W) == (None, 0.0)


@pytest.mark.parametrize("copy_images", [False, True])
def test_a_missing_image_is_an_error_naming_it(records, tmp_path, copy_images):
    records[1] = {**records[1], "file_name": str(tmp_path / "gone.png")}
    with pytest.raises(DatasetWriteError, match=r"gone\.png: image not found"):
        write_yolo(records, CLASSES, tmp_path / "yolo", copy_images=copy_images)
