"""load_mask_folder on tiny instance-mask folders: class map, a folder per class, one class."""

from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from instseg_d2.data.errors import DatasetError
from instseg_d2.data.formats import load_mask_folder


def _id_mask():
    mask = np.zeros((6, 8), np.uint8)
    mask[0:2, 0:3] = 1
    mask[3:6, 4:8] = 2
    return mask


@pytest.fixture
def folder(tmp_path):
    """images/{a.jpg, b.png, c.jpg} (W 8, H 6) and masks/{a.png, b_mask.png} (ids 1, 2)."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name in ("a.jpg", "b.png", "c.jpg"):
        Image.new("RGB", (8, 6)).save(tmp_path / "images" / name)
    Image.fromarray(_id_mask()).save(tmp_path / "masks" / "a.png")
    Image.fromarray(_id_mask()).save(tmp_path / "masks" / "b_mask.png")
    return tmp_path


def test_flat_masks_with_a_class_map(folder):
    class_map = folder / "classes.json"
    class_map.write_text(json.dumps({"a": {"1": "dog", "2": "cat"}, "b": {"1": "cat", "2": "cat"}}))
    loaded = load_mask_folder(folder, class_map=class_map)
    assert loaded.classes == ["cat", "dog"] and loaded.mask_format == "bitmask"
    a, b, c = loaded.dicts
    assert [x["category_id"] for x in a["annotations"]] == [1, 0]
    assert [x["category_id"] for x in b["annotations"]] == [0, 0]
    assert c["annotations"] == [] and loaded.num_negative_images == 1
    dog = a["annotations"][0]
    np.testing.assert_array_equal(mask_util.decode(dog["segmentation"]), _id_mask() == 1)
    assert dog["bbox"] == [0.0, 0.0, 3.0, 2.0] and dog["instance_id"] == 1
    assert "1 image(s) without instances kept as negatives: c.jpg" in loaded.notes[0].message


def test_a_folder_per_class_and_one_class(folder, tmp_path):
    single = load_mask_folder(folder, class_name="person")
    assert single.classes == ["person"] and len(single.dicts[0]["annotations"]) == 2
    for name in ("a.png", "b_mask.png"):
        (folder / "masks" / name).unlink()
    for cls in ("zebra", "ant"):
        (folder / "masks" / cls).mkdir()
        Image.fromarray(_id_mask()).save(folder / "masks" / cls / "a.png")
    loaded = load_mask_folder(folder)
    assert loaded.classes == ["ant", "zebra"]
    a = loaded.dicts[0]
    assert [(x["category_id"], x["instance_id"]) for x in a["annotations"]] == [
        (0, 1),
        (0, 2),
        (1, 1),
        (1, 2),
    ]
    assert loaded.num_negative_images == 2


def test_gap_in_ids_is_noted(folder):
    mask = _id_mask()
    mask[mask == 2] = 5
    Image.fromarray(mask).save(folder / "masks" / "a.png")
    loaded = load_mask_folder(folder)
    assert [x["instance_id"] for x in loaded.dicts[0]["annotations"]] == [1, 5]
    assert any("instance ids [1, 5] are not 1..2" in n.message for n in loaded.notes)


def _problems(folder, **options):
    with pytest.raises(DatasetError) as info:
        load_mask_folder(folder, **options)
    return str(info.value)


def test_bad_inputs(folder):
    class_map = folder / "classes.yaml"
    class_map.write_text("a: {1: dog}\nb: {1: cat, 2: cat}\nd: {1: cat}\n")
    text = _problems(folder, class_map=class_map)
    assert "a.png: instance ids [1, 2] but the class map" in text and "lists [1] for 'a'" in text
    assert f"{class_map}: stems without an image in {folder / 'images'}: d" in text
    Image.fromarray(_id_mask()).save(folder / "masks" / "orphan.png")
    Image.new("RGB", (8, 6)).save(folder / "masks" / "c.png")  # a colour mask
    Image.fromarray(np.zeros((5, 8), np.uint8)).save(folder / "masks" / "b_mask.png")
    text = _problems(folder)
    assert "masks: mask(s) without an image in" in text and "orphan.png" in text
    (folder / "masks" / "orphan.png").unlink()
    text = _problems(folder)
    assert "c.png: a label image must have one channel, got PIL mode RGB" in text
    assert "b_mask.png: mask is 8x5 (WxH) but its image b.png is 8x6" in text
    Image.fromarray(_id_mask()).save(folder / "masks" / "c_mask.png")
    assert "two masks for image 'c': c.png, c_mask.png" in _problems(folder)
    (folder / "masks" / "dog").mkdir()
    assert "has both mask files and class sub-folders" in _problems(folder)
    assert "images_missing: folder not found" in _problems(folder, images_dir="images_missing")
    text = _problems(folder, stems=["zz"], masks_dir="masks/dog", require_masks=True)
    assert "zz.*: no image file for this stem" in text


def test_colliding_image_ids_are_an_error_naming_the_folder(tmp_path):
    """The readers' shared check: two images whose paths hash to one image_id (crc32 collision)
    are an error naming the folder and what the ids were made from; distinct ids are none."""
    from instseg_d2.data.formats.common import ProblemLog, check_unique_image_ids

    log = ProblemLog(tmp_path)
    check_unique_image_ids(log, [{"image_id": 1}, {"image_id": 2}], tmp_path, "image stems")
    assert log.errors == []
    check_unique_image_ids(log, [{"image_id": 7}, {"image_id": 7}], tmp_path, "image stems")
    assert len(log.errors) == 1
    assert log.errors[0].file == str(tmp_path)
    assert "two image stems hash to the same image_id" in log.errors[0].message
