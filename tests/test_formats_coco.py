"""load_coco on tiny COCO jsons made here: every feature the format has, and each bad input."""

from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.structures import BoxMode
from PIL import Image

from instseg_d2.data.errors import DatasetError
from instseg_d2.data.formats import load_coco
from instseg_d2.data.masks import encode_binary_mask

POLY = [[2.0, 2.0, 12.0, 2.0, 12.0, 8.0, 2.0, 8.0]]


def _mask(h=20, w=30):
    mask = np.zeros((h, w), np.uint8)
    mask[5:10, 3:9] = 1
    return mask


def _uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (column-major run lengths, starting with zeros)."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def _coco(tmp_path, **changes) -> dict:
    data = {
        "images": [
            {"id": 10, "file_name": "sub/dir/a.jpg", "height": 20, "width": 30},
            {"id": 11, "file_name": "b.jpg", "height": 20, "width": 30},
            {"id": 12, "file_name": "empty.jpg", "height": 20, "width": 30},
        ],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [2, 2, 10, 6], "segmentation": POLY, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [3, 5, 6, 5], "segmentation": encode_binary_mask(_mask()), "iscrowd": 0},
            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [3, 5, 6, 5], "segmentation": _uncompressed(_mask()), "iscrowd": 1},
        ],
    }  # fmt: skip
    data.update(changes)
    return data


def _write(tmp_path, data, name="instances.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_polygons_rle_crowd_noncontiguous_ids_negatives_and_subfolders(tmp_path):
    # No image exists: load_coco opens none when the json records the sizes.
    loaded = load_coco(_write(tmp_path, _coco(tmp_path)), tmp_path / "imgs")
    assert loaded.classes == ["cat", "dog"] and loaded.dataset_ids == [3, 7]  # ordered by id
    assert loaded.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1}
    a, b, empty = loaded.dicts
    assert a["file_name"] == str(tmp_path / "imgs" / "sub" / "dir" / "a.jpg")
    assert (a["image_id"], a["height"], a["width"]) == (10, 20, 30)
    poly, rle = a["annotations"]
    assert poly["segmentation"] == POLY and poly["category_id"] == 1
    assert poly["bbox"] == [2, 2, 10, 6] and poly["bbox_mode"] == BoxMode.XYWH_ABS
    assert rle["category_id"] == 0 and isinstance(rle["segmentation"]["counts"], str)
    np.testing.assert_array_equal(mask_util.decode(rle["segmentation"]), _mask())
    (crowd,) = b["annotations"]
    assert crowd["iscrowd"] == 1  # uncompressed RLE became compressed, pixel for pixel
    assert isinstance(crowd["segmentation"]["counts"], str)
    np.testing.assert_array_equal(mask_util.decode(crowd["segmentation"]), _mask())
    assert empty["annotations"] == [] and loaded.num_negative_images == 1
    assert loaded.mask_format == "bitmask" and loaded.notes == []


def test_missing_sizes_are_read_from_the_image_and_noted(tmp_path):
    Image.new("RGB", (30, 20)).save(tmp_path / "b.jpg")
    data = _coco(tmp_path)
    data["images"] = [{"id": 11, "file_name": "b.jpg"}]
    data["annotations"] = data["annotations"][2:]
    loaded = load_coco(_write(tmp_path, data))
    assert (loaded.dicts[0]["height"], loaded.dicts[0]["width"]) == (20, 30)
    assert "height/width read from the image for b.jpg" in loaded.notes[0].message


def test_points_slightly_outside_are_clipped_with_a_note(tmp_path):
    data = _coco(tmp_path)
    data["annotations"] = [
        {**data["annotations"][0], "segmentation": [[-0.4, 1, 30.5, 1, 30.5, 20.9, 1, 20.9]], "bbox": [-0.4, 1, 30.9, 19.9]}
    ]  # fmt: skip
    loaded = load_coco(_write(tmp_path, data))
    ann = loaded.dicts[0]["annotations"][0]
    assert ann["segmentation"] == [[0.0, 1.0, 30.0, 1.0, 30.0, 20.0, 1.0, 20.0]]
    assert ann["bbox"] == [0.0, 1.0, 30.0, 19.0]
    messages = [n.message for n in loaded.notes]
    assert any(
        "annotation id 1 (image sub/dir/a.jpg): 5 coordinate(s) up to 0.90 px" in m
        for m in messages
    )


def _bad(tmp_path, data):
    with pytest.raises(DatasetError) as info:
        load_coco(_write(tmp_path, data))
    return str(info.value)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["categories"].append({"id": 7, "name": "bird"}), "category id 7 is used twice ('dog' and 'bird')"),
        (lambda d: d["categories"].append({"id": 9, "name": "cat"}), "category name 'cat' is used by ids [3, 9]"),
        (lambda d: d["annotations"][0].update(category_id=5), "annotation id 1 (image sub/dir/a.jpg): category_id 5 is not in 'categories' (ids [3, 7])"),
        (lambda d: d["images"].append({"id": 10, "file_name": "c.jpg", "height": 2, "width": 2}), "image id 10 is used twice ('sub/dir/a.jpg' and 'c.jpg')"),
        (lambda d: d["images"].append({"id": 13, "file_name": "b.jpg", "height": 20, "width": 30}), "file_name 'b.jpg' is listed twice (ids 11 and 13)"),
        (lambda d: d["annotations"][1].update(id=1), "annotation id 1: the id is used twice"),
        (lambda d: d["annotations"][0].update(image_id=99), "annotation id 1: image_id 99 is not in 'images'"),
        (lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 1]]), "polygon 0 has 4 numbers; a polygon needs at least 3 (x, y) points"),
        (lambda d: d["annotations"][0].update(segmentation=[1, 1, 5, 1, 5, 5]), "polygon 0 must be a list of finite numbers (COCO nests each polygon in a list)"),
        (lambda d: d["annotations"][0].update(segmentation=[]), "no segmentation (Mask R-CNN needs a mask per instance)"),
        (lambda d: d["annotations"][0].update(segmentation=[[1, 1, 50, 1, 50, 5]]), "points up to 20.0 px outside the 30x20 image, more than the tolerance"),
        (lambda d: d["annotations"][1].update(segmentation=encode_binary_mask(_mask(20, 31))), "RLE size [20, 31] differs from the image's [height, width] [20, 30]"),
        (lambda d: d["annotations"][2]["segmentation"].update(counts=[5, 5]), "uncompressed RLE counts must be non-negative integers summing to 20x30"),
        (lambda d: d["annotations"][0].update(bbox=[1, 1, -2, 3]), "bbox must be [x, y, width, height] with width, height >= 0"),
        (lambda d: d["annotations"][0].update(iscrowd=2), "iscrowd must be 0 or 1, got 2"),
        (lambda d: d["images"][0].update(height=0), "image id 10: height and width must be positive integers"),
        (lambda d: d.update(categories=[]), "'categories' is empty"),
    ],
)  # fmt: skip
def test_each_bad_input_names_the_file_and_the_annotation(tmp_path, change, message):
    data = _coco(tmp_path)
    change(data)
    text = _bad(tmp_path, data)
    assert text.startswith(str(tmp_path / "instances.json")), text
    assert message in text, text


def test_all_problems_are_listed_at_once(tmp_path):
    data = _coco(tmp_path)
    data["annotations"][0]["category_id"] = 5
    data["annotations"][1]["image_id"] = 99
    with pytest.raises(DatasetError) as info:
        load_coco(_write(tmp_path, data))
    assert len(info.value.problems) == 2
    assert str(info.value).splitlines()[0] == f"{tmp_path / 'instances.json'}: 2 problems"


def test_ignore_becomes_crowd_with_a_note(tmp_path):
    data = _coco(tmp_path)
    data["annotations"][0]["ignore"] = 1
    loaded = load_coco(_write(tmp_path, data))
    assert loaded.dicts[0]["annotations"][0]["iscrowd"] == 1
    assert "'ignore: 1' read as iscrowd 1" in loaded.notes[0].message


def test_not_a_coco_file(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(DatasetError, match=rf"^{broken}: not valid JSON"):
        load_coco(broken)
    with pytest.raises(DatasetError, match="no 'images' list; is this a COCO instances json"):
        load_coco(_write(tmp_path, {"shapes": []}))
    with pytest.raises(DatasetError, match=r"missing\.json: file not found"):
        load_coco(tmp_path / "missing.json")
