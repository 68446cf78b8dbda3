"""load_via with a class attribute (VIA 1 and VIA 2 project) and without (one class).

The VIA layouts and shapes themselves are covered by test_data_balloon.py.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from instseg_d2.data.errors import DatasetError
from instseg_d2.data.formats import load_via

TRIANGLE = {"name": "polygon", "all_points_x": [1, 8, 8], "all_points_y": [1, 1, 6]}


def _region(attributes, shape=TRIANGLE):
    return {"shape_attributes": shape, "region_attributes": attributes}


@pytest.fixture
def folder(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (20, 10)).save(tmp_path / name)
    return tmp_path


def _write(folder, entries, project_options=None):
    data = {
        name: {"filename": name, "size": -1, "regions": regions}
        for name, regions in entries.items()
    }
    if project_options is not None:
        data = {
            "_via_img_metadata": data,
            "_via_attributes": {
                "region": {"name": {"type": "dropdown", "options": project_options}}
            },
        }
    path = folder / "via.json"
    path.write_text(json.dumps(data))
    return path


def test_class_attribute_in_via1_sorted_names(folder):
    path = _write(
        folder,
        {
            "a.jpg": [_region({"name": "kite"}), _region({"name": " balloon\n"})],
            "b.jpg": [_region({"name": {"kite": False, "balloon": True}})],  # a checkbox
        },
    )
    loaded = load_via(path, class_attribute="name")
    assert loaded.classes == ["balloon", "kite"] and loaded.class_order == "sorted"
    a, b = loaded.dicts
    assert [x["category_id"] for x in a["annotations"]] == [1, 0]
    assert [x["category_id"] for x in b["annotations"]] == [0]
    # VIA's pixel indices moved to pixel centres (+0.5).
    assert a["annotations"][0]["segmentation"] == [[1.5, 1.5, 8.5, 1.5, 8.5, 6.5]]
    # The file sizes differ from the recorded -1: noted, not an error.
    assert all("VIA recorded -1" in n.message for n in loaded.notes) and len(loaded.notes) == 2


def test_class_order_from_a_via2_project_and_no_attribute(folder):
    options = {"kite": "", "balloon": "", "bird": ""}
    path = _write(folder, {"a.jpg": [_region({"name": "balloon"})], "b.jpg": []}, options)
    loaded = load_via(path, class_attribute="name")
    assert loaded.classes == ["kite", "balloon", "bird"] and loaded.class_order == "declared"
    assert loaded.dicts[0]["annotations"][0]["category_id"] == 1
    assert loaded.num_negative_images == 1
    single = load_via(path, class_name="thing")
    assert single.classes == ["thing"] and single.dicts[0]["annotations"][0]["category_id"] == 0


@pytest.mark.parametrize(
    "attributes, message",
    [
        ({"type": "kite"}, "a.jpg region 0: no region attribute 'name' (has ['type'])"),
        ({"name": ""}, "region attribute 'name' is '', not a class name"),
        ({"name": {"kite": True, "balloon": True}}, "has 2 options ticked ['kite', 'balloon']"),
        ("kite", "'region_attributes' must be an object, got 'kite'"),
    ],
)
def test_bad_class_attributes(folder, attributes, message):
    path = _write(folder, {"a.jpg": [_region(attributes)]})
    with pytest.raises(DatasetError) as info:
        load_via(path, class_attribute="name")
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_class_not_among_the_project_options(folder):
    path = _write(folder, {"a.jpg": [_region({"name": "plane"})]}, {"kite": "", "balloon": ""})
    with pytest.raises(DatasetError, match="class 'plane' is not among the options"):
        load_via(path, class_attribute="name")


def test_far_outside_is_an_error_unless_the_tolerance_is_off(folder):
    shape = {"name": "polygon", "all_points_x": [1, 40, 8], "all_points_y": [1, 1, 6]}
    path = _write(folder, {"a.jpg": [_region({}, shape)]})
    with pytest.raises(
        DatasetError, match="a.jpg region 0: points up to 20.5 px outside the 20x10"
    ):
        load_via(path)
    clipped = load_via(path, outside_tolerance=None)
    assert clipped.dicts[0]["annotations"][0]["bbox"][2] == 20.0
