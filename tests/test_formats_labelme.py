"""load_labelme on tiny LabelMe folders made here: each shape type, groups, paths, imageData."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.structures import BoxMode, PolygonMasks
from PIL import Image

from instseg_d2.data.errors import DatasetError
from instseg_d2.data.formats import load_labelme
from instseg_d2.data.formats.common import ELLIPSE_POINTS


def _shape(label, points, shape_type="polygon", group_id=None, **extra):
    return {
        "label": label,
        "points": points,
        "group_id": group_id,
        "shape_type": shape_type,
        "flags": {},
        **extra,
    }


def _doc(shapes, image_path, size=(40, 30), image_data=None):
    return {
        "version": "5.4.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": image_data,
        "imageHeight": size[1],
        "imageWidth": size[0],
    }


def _png_b64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def folder(tmp_path):
    """labelme/images/a.jpg with labelme/ann/a.json (imagePath ../images/a.jpg, back-slashes)."""
    root = tmp_path / "labelme"
    (root / "images").mkdir(parents=True)
    (root / "ann").mkdir()
    Image.new("RGB", (40, 30)).save(root / "images" / "a.jpg")
    return root


def _write(folder, name, doc):
    (folder / "ann" / f"{name}.json").write_text(json.dumps(doc))


def test_polygon_rectangle_circle_and_groups(folder):
    shapes = [
        _shape("dog", [[1, 1], [10, 1], [10, 8]]),
        _shape("cat", [[30, 20], [20, 12]], "rectangle"),
        _shape("cat", [[20, 15], [25, 15]], "circle"),
        _shape("dog", [[12, 12], [16, 12], [16, 16]], group_id=4),  # one instance of 2 parts
        _shape("dog", [[1, 20], [5, 20], [5, 25]], group_id=4),
        _shape("cat", [[30, 1], [35, 1], [35, 5]], group_id=4),  # same group, other label
    ]
    _write(folder, "a", _doc(shapes, "..\\images\\a.jpg"))
    loaded = load_labelme(folder)
    assert loaded.classes == ["cat", "dog"] and loaded.dataset_ids == [1, 2]
    (record,) = loaded.dicts
    assert record["file_name"] == str(folder / "ann" / ".." / "images" / "a.jpg")
    assert (record["height"], record["width"]) == (30, 40)
    poly, rect, circle, group, other = record["annotations"]
    assert poly["segmentation"] == [[1.0, 1.0, 10.0, 1.0, 10.0, 8.0]] and poly["category_id"] == 1
    assert rect["segmentation"] == [[20.0, 12.0, 30.0, 12.0, 30.0, 20.0, 20.0, 20.0]]
    assert rect["bbox"] == [20.0, 12.0, 30.0, 20.0] and rect["bbox_mode"] == BoxMode.XYXY_ABS
    assert len(circle["segmentation"][0]) == 2 * ELLIPSE_POINTS
    assert circle["bbox"] == pytest.approx([15, 10, 25, 20], abs=0.1)
    assert PolygonMasks([circle["segmentation"]]).area()[0] == pytest.approx(np.pi * 25, rel=0.02)
    assert len(group["segmentation"]) == 2 and group["bbox"] == [1.0, 12.0, 16.0, 25.0]
    assert other["category_id"] == 0  # labelme2coco's rule: (label, group_id) is the instance
    assert loaded.mask_format == "polygon"


def test_mask_shape_merges_with_polygons_of_its_group(folder):
    crop = np.zeros((4, 6), np.uint8)
    crop[1:3, 2:5] = 1
    shapes = [
        _shape("dog", [[10, 5], [15, 8]], "mask", group_id=1, mask=_png_b64(crop)),
        _shape("dog", [[0, 0], [2, 0], [2, 2], [0, 2]], group_id=1),
    ]
    _write(folder, "a", _doc(shapes, "../images/a.jpg"))
    (ann,) = load_labelme(folder).dicts[0]["annotations"]
    mask = mask_util.decode(ann["segmentation"])
    expected = np.zeros((30, 40), np.uint8)
    expected[6:8, 12:15] = 1  # the crop placed at (10, 5)
    expected[0:2, 0:2] = 1  # the square rasterised by pycocotools
    np.testing.assert_array_equal(mask, expected)
    assert ann["bbox_mode"] == BoxMode.XYWH_ABS and ann["bbox"] == [0.0, 0.0, 15.0, 8.0]


def test_embedded_image_data_when_the_file_is_absent(folder, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (30, 40, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    _write(
        folder, "gone", _doc([_shape("dog", [[1, 1], [5, 1], [5, 5]])], "gone.png", image_data=data)
    )
    _write(folder, "a", _doc([], "../images/a.jpg"))
    loaded = load_labelme(folder, embedded_image_dir=tmp_path / "embedded")
    a, gone = loaded.dicts  # sorted by json path
    assert a["annotations"] == [] and loaded.num_negative_images == 1
    written = gone["file_name"]
    assert written.startswith(str(tmp_path / "embedded")) and written.endswith(".png")
    np.testing.assert_array_equal(np.asarray(Image.open(written)), pixels)
    assert any("using the image the json embeds" in n.message for n in loaded.notes)
    # Same content, same file: a second read writes nothing new.
    assert (
        load_labelme(folder, embedded_image_dir=tmp_path / "embedded").dicts[1]["file_name"]
        == written
    )


def test_images_without_json_are_noted(folder):
    Image.new("RGB", (40, 30)).save(folder / "images" / "unlabelled.jpg")
    _write(folder, "a", _doc([_shape("dog", [[1, 1], [5, 1], [5, 5]])], "../images/a.jpg"))
    (note,) = load_labelme(folder).notes
    assert note.message == "1 image(s) have no LabelMe json and are not used: images/unlabelled.jpg"


@pytest.mark.parametrize(
    "shape, message",
    [
        (_shape("dog", [[1, 1], [5, 5]], "line"), "shape 0 ('dog'): 'line' shapes have no area and cannot be instance masks"),
        (_shape("dog", [[1, 1]], "point"), "'point' shapes have no area"),
        (_shape("dog", [[1, 1], [5, 1]]), "shape 0 ('dog'): a polygon needs at least 3 points, got 2"),
        (_shape("dog", [[1, 1], [5, 1], [5, 5]], "rectangle"), "a rectangle needs 2 points (opposite corners), got 3"),
        (_shape("dog", [[1, 1], ["a", 1], [5, 5]]), "'points' must be a list of [x, y] pairs of finite numbers"),
        (_shape("", [[1, 1], [5, 1], [5, 5]]), "shape 0: needs a non-empty 'label'"),
        (_shape("dog", [[1, 1], [5, 1], [5, 5]], "cuboid"), "unsupported shape_type 'cuboid'"),
        (_shape("dog", [[1, 1], [90, 1], [5, 5]]), "shape 0 ('dog'): points up to 50.0 px outside the 40x30 image"),
        (_shape("dog", [[1, 1], [3, 3]], "mask", mask=_png_b64(np.ones((2, 2), np.uint8))), "mask is 2x2 but its box is 3x3"),
    ],
)  # fmt: skip
def test_bad_shapes_name_the_file_and_the_shape(folder, shape, message):
    _write(folder, "a", _doc([shape], "../images/a.jpg"))
    with pytest.raises(DatasetError) as info:
        load_labelme(folder)
    assert str(info.value).startswith(str(folder / "ann" / "a.json")), str(info.value)
    assert message in str(info.value)


def test_bad_files(folder):
    _write(folder, "a", _doc([], "../images/missing.jpg"))
    (folder / "ann" / "other.json").write_text(json.dumps({"images": []}))
    (folder / "ann" / "broken.json").write_text("{")
    _write(folder, "twice", _doc([], "../images/a.jpg"))
    _write(folder, "bad_data", _doc([], "nope.jpg", image_data="not base64!"))
    with pytest.raises(DatasetError) as info:
        load_labelme(folder)
    text = str(info.value)
    assert (
        "a.json: image '../images/missing.jpg' not found (relative to the json) and no 'imageData'"
        in text
    )
    assert "other.json: not a LabelMe file (no 'shapes' list)" in text
    assert "broken.json: not valid JSON" in text
    assert "bad_data.json: 'imageData' is not a base64 image" in text
    assert len(info.value.problems) == 4
    (folder / "ann" / "a.json").unlink()
    for name in ("other", "broken", "bad_data"):
        (folder / "ann" / f"{name}.json").unlink()
    _write(folder, "again", _doc([], "../images/a.jpg"))
    with pytest.raises(
        DatasetError, match=r"twice\.json: image .*a\.jpg is also annotated by .*again\.json"
    ):
        load_labelme(folder)
    with pytest.raises(DatasetError, match="no LabelMe .json files in this folder"):
        load_labelme(folder / "images")
