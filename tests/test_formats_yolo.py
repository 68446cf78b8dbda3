"""load_yolo and read_yolo_class_names on tiny Ultralytics layouts made here."""

from __future__ import annotations

import pytest
from PIL import Image

from instseg_d2.data.errors import DatasetError
from instseg_d2.data.formats import load_yolo, read_yolo_class_names, yolo_label_path


@pytest.fixture
def layout(tmp_path):
    """data/images/train/{a.jpg, sub/b.png, c.jpg} (W 100, H 50); labels for a and b only."""
    images = tmp_path / "data" / "images" / "train"
    (images / "sub").mkdir(parents=True)
    for name in ("a.jpg", "sub/b.png", "c.jpg"):
        Image.new("RGB", (100, 50)).save(images / name)
    labels = tmp_path / "data" / "labels" / "train"
    (labels / "sub").mkdir(parents=True)
    (labels / "a.txt").write_text("1 0.1 0.2 0.5 0.2 0.5 0.8\n\n0 0 0 1 0 1 1 0 1\n")
    (labels / "sub" / "b.txt").write_text("0 0.2 0.2 0.4 0.2 0.3 0.6\n")
    return images


def test_labels_are_found_as_ultralytics_does(tmp_path):
    image = tmp_path / "images" / "x" / "images" / "train" / "a.jpg"
    assert yolo_label_path(image) == tmp_path / "images" / "x" / "labels" / "train" / "a.txt"
    assert yolo_label_path(tmp_path / "pictures" / "a.jpg") is None


def test_polygons_classes_and_negatives(layout):
    loaded = load_yolo(layout, ["cat", "dog"])
    assert loaded.classes == ["cat", "dog"] and loaded.dataset_ids == [1, 2]
    a, c, b = loaded.dicts  # sorted by path: a.jpg, c.jpg, sub/b.png
    assert a["file_name"].endswith("train/a.jpg") and b["file_name"].endswith("sub/b.png")
    dog, cat = a["annotations"]
    assert dog["category_id"] == 1
    assert dog["segmentation"] == [pytest.approx([10, 10, 50, 10, 50, 40])]  # x * 100, y * 50
    assert cat["segmentation"] == [[0.0, 0.0, 100.0, 0.0, 100.0, 50.0, 0.0, 50.0]]
    assert c["annotations"] == [] and loaded.num_negative_images == 1
    assert "1 image(s) without a label file kept as negatives: c.jpg" in loaded.notes[0].message
    assert b["image_id"] != a["image_id"] and loaded.mask_format == "polygon"


def test_box_lines_are_an_error_or_box_shaped_masks(layout):
    label = layout.parent.parent / "labels" / "train" / "c.txt"
    label.write_text("0 0.5 0.5 0.2 0.4\n")
    with pytest.raises(
        DatasetError, match=r"c\.txt: line 1: 4 numbers after the class: a detection box"
    ):
        load_yolo(layout, ["cat", "dog"])
    loaded = load_yolo(layout, ["cat", "dog"], boxes_as_polygons=True)
    (box,) = loaded.dicts[1]["annotations"]
    assert box["segmentation"] == [pytest.approx([40, 15, 60, 15, 60, 35, 40, 35])]


def test_repeated_lines_and_orphan_labels_are_noted(layout):
    labels = layout.parent.parent / "labels" / "train"
    (labels / "c.txt").write_text("0 0.1 0.1 0.2 0.1 0.2 0.2\n0 0.1 0.1 0.2 0.1 0.2 0.2\n")
    (labels / "zz.txt").write_text("0 0.1 0.1 0.2 0.1 0.2 0.2\n")
    loaded = load_yolo(layout, ["cat", "dog"])
    assert len(loaded.dicts[1]["annotations"]) == 1
    messages = [n.message for n in loaded.notes]
    assert "line 2: repeats an earlier line; dropped" in messages
    assert "1 label file(s) without an image are not used: zz.txt" in messages


@pytest.mark.parametrize(
    "line, message",
    [
        ("2 0.1 0.1 0.2 0.1 0.2 0.2", "line 1: class 2 is not an index 0..1 of the class names"),
        ("0.5 0.1 0.1 0.2 0.1 0.2 0.2", "class 0.5 is not an index"),
        ("0 0.1 0.1 0.2 0.1 0.2", "5 coordinates; a polygon needs an even number, at least 6"),
        ("0 0.1 0.1 0.2 0.1", "4 numbers after the class"),
        ("0 0.1 0.1 x 0.1 0.2 0.2", "line 1: not a list of numbers"),
        ("0 0.1 0.1 nan 0.1 0.2 0.2", "line 1: non-finite number"),
        ("0 0.1 0.1 1.5 0.1 0.2 0.2", "line 1: points up to 50.0 px outside the 100x50 image"),
    ],
)
def test_bad_lines_name_the_label_file_and_line(layout, line, message):
    label = layout.parent.parent / "labels" / "train" / "c.txt"
    label.write_text(line + "\n")
    with pytest.raises(DatasetError) as info:
        load_yolo(layout, ["cat", "dog"])
    assert str(info.value).startswith(str(label)) and message in str(info.value), str(info.value)


def test_slightly_outside_is_clipped(layout):
    (layout.parent.parent / "labels" / "train" / "c.txt").write_text("0 -0.01 0 1.01 0 0.5 1\n")
    loaded = load_yolo(layout, ["cat", "dog"])
    assert loaded.dicts[1]["annotations"][0]["segmentation"] == [[0.0, 0.0, 100.0, 0.0, 50.0, 50.0]]
    assert any("2 coordinate(s) up to 1.00 px outside" in n.message for n in loaded.notes)


def test_wrong_layouts(tmp_path, layout):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    Image.new("RGB", (4, 4)).save(pictures / "a.jpg")
    with pytest.raises(DatasetError, match="this path has no 'images' folder"):
        load_yolo(pictures, ["cat"])
    for label in (layout.parent.parent / "labels").rglob("*.txt"):
        label.unlink()
    with pytest.raises(DatasetError, match="no label file for any of the 3 images"):
        load_yolo(layout, ["cat"])
    with pytest.raises(DatasetError, match="folder not found"):
        load_yolo(tmp_path / "nope" / "images", ["cat"])


def test_data_yaml_names(tmp_path):
    as_list = tmp_path / "list.yaml"
    as_list.write_text("path: .\ntrain: images/train\nnames: [cat, dog]\n")
    as_dict = tmp_path / "dict.yaml"
    as_dict.write_text("names:\n  1: dog\n  0: cat\nnc: 2\n")
    assert read_yolo_class_names(as_list) == read_yolo_class_names(as_dict) == ["cat", "dog"]
    bad = {
        "names: {0: cat, 2: dog}\n": "'names' keys must be 0..1, got [0, 2]",
        "names: [cat, cat]\n": "'names' must be distinct non-empty strings",
        "names: [cat]\nnc: 2\n": "nc is 2 but 'names' has 1 entries",
        "train: x\n": "no 'names' list or {index: name} mapping",
        "names: [a\n": "not valid YAML",
    }
    for text, message in bad.items():
        as_list.write_text(text)
        with pytest.raises(DatasetError, match=rf"^{as_list}: ") as info:
            read_yolo_class_names(as_list)
        assert message in str(info.value)
