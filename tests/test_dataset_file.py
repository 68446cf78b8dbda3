"""The dataset file: schema errors (file and key named), loading, class merging, held-out val."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from instseg_d2.data.dataset_file import (
    DatasetFileError,
    load_dataset_file,
    load_dataset_split,
    read_dataset_file,
)
from instseg_d2.data.errors import DatasetError
from instseg_d2.data.formats import LoadedSplit, remap_classes


def _labelme(folder, labels_per_image: dict[str, list[str]]):
    """A LabelMe folder: one 20x10 image and json per entry, one triangle per label."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, labels in labels_per_image.items():
        Image.new("RGB", (20, 10)).save(folder / f"{stem}.jpg")
        shapes = [
            {"label": label, "points": [[1, 1], [8, 1], [8, 6]], "shape_type": "polygon"}
            for label in labels
        ]
        doc = {"shapes": shapes, "imagePath": f"{stem}.jpg", "imageHeight": 10, "imageWidth": 20}
        (folder / f"{stem}.json").write_text(json.dumps(doc))
    return folder


@pytest.fixture
def dataset(tmp_path):
    _labelme(tmp_path / "train", {f"t{i}": ["dog"] if i % 2 else ["cat", "dog"] for i in range(10)})
    _labelme(tmp_path / "val", {"v0": ["cat"], "v1": ["bird"]})
    return tmp_path


def _spec(tmp_path, text: str, name: str = "data.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_resolves_paths_and_defaults(dataset):
    spec = read_dataset_file(
        _spec(dataset, "name: pets\nformat: labelme\ntrain: train\nval: ./val\n")
    )
    assert spec.name == "pets" and spec.format == "labelme"
    assert spec.splits == {"train": dataset / "train", "val": dataset / "val"}
    assert (spec.classes, spec.val_fraction, spec.seed, spec.images) == (None, 0.2, 0, None)
    assert spec.dataset_name("val") == "pets_val"


def test_classes_from_the_data_are_the_sorted_union(dataset):
    spec = read_dataset_file(
        _spec(dataset, "name: pets\nformat: labelme\ntrain: train\nval: val\n")
    )
    splits, classes, ids = load_dataset_file(spec)
    assert classes == ["bird", "cat", "dog"] and ids == [1, 2, 3]
    assert splits["val"].dicts[1]["annotations"][0]["category_id"] == 0  # bird
    assert {a["category_id"] for r in splits["train"].dicts for a in r["annotations"]} == {1, 2}
    assert splits["train"].classes == classes == splits["val"].classes


def test_declared_classes_reorder_and_an_undeclared_class_is_an_error(dataset):
    path = _spec(
        dataset, "name: pets\nformat: labelme\ntrain: train\nval: val\nclasses: [dog, cat]\n"
    )
    with pytest.raises(DatasetError) as info:
        load_dataset_file(read_dataset_file(path))
    text = str(info.value)
    assert "class 'bird' is not in the classes ['dog', 'cat']; it occurs in" in text
    assert str(dataset / "val" / "v1.jpg") in text  # the image where it occurs
    path.write_text("name: pets\nformat: labelme\ntrain: train\nclasses: [dog, cat]\n")
    splits, classes, _ = load_dataset_file(read_dataset_file(path))
    assert classes == ["dog", "cat"]
    first = splits["train"].dicts[0]["annotations"] + splits["val"].dicts[0]["annotations"]
    assert all(a["category_id"] in (0, 1) for a in first)


def test_without_val_a_stratified_seeded_split_or_the_saved_one(dataset):
    text = "name: pets\nformat: labelme\ntrain: train\nval_fraction: 0.3\nseed: 5\n"
    spec = read_dataset_file(_spec(dataset, text))
    splits, _, _ = load_dataset_file(spec)
    val = [r["file_name"] for r in splits["val"].dicts]
    assert len(val) == 3 and len(splits["train"].dicts) == 7
    assert [r["file_name"] for r in load_dataset_file(spec)[0]["val"].dicts] == val  # deterministic
    # Both classes keep images in train; the "cat" images (rarer) are split in proportion.
    assert {a["category_id"] for r in splits["train"].dicts for a in r["annotations"]} == {0, 1}
    saved = [str(dataset / "train" / "t0.jpg")]
    again, _, _ = load_dataset_file(spec, val_files=saved)
    assert [r["file_name"] for r in again["val"].dicts] == saved
    with pytest.raises(DatasetFileError, match="the saved val split lists 1 image"):
        load_dataset_file(spec, val_files=[str(dataset / "gone.jpg")])
    _labelme(dataset / "one", {"x": ["dog"]})
    one = read_dataset_file(_spec(dataset, "name: one\nformat: labelme\ntrain: one\n", "one.yaml"))
    with pytest.raises(DatasetFileError, match="no 'val' given and cannot split 1 image"):
        load_dataset_file(one)


def test_every_split_reports_its_problems_at_once(dataset):
    (dataset / "train" / "t1.json").write_text("{")
    (dataset / "val" / "v0.json").write_text(json.dumps({"shapes": 1}))
    spec = read_dataset_file(
        _spec(dataset, "name: pets\nformat: labelme\ntrain: train\nval: val\n")
    )
    with pytest.raises(DatasetError) as info:
        load_dataset_file(spec)
    assert len(info.value.problems) == 2
    assert str(info.value).splitlines()[0] == f"{dataset / 'data.yaml'}: 2 problems"


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: a\nformat: labelme\ntrain: train\nval_fracton: 0.1\n", "key 'val_fracton': unknown key; did you mean 'val_fraction'?"),
        ("format: labelme\ntrain: train\n", "key 'name': missing (required: name, format, train)"),
        ("name: a\ntrain: train\n", "key 'format': missing"),
        ("name: a\nformat: labelme\n", "key 'train': missing"),
        ("name: a\nformat: lableme\ntrain: train\n", "key 'format': unknown format 'lableme' (one of coco, labelme, yolo, via, masks); did you mean 'labelme'?"),
        ("name: a\nformat: labelme\ntrain: nowhere\n", "key 'train': "),
        ("name: a b\nformat: labelme\ntrain: train\n", "key 'name': 'a b' must use only letters, digits and _ . -"),
        ("name: 3\nformat: labelme\ntrain: train\n", "key 'name': expected str, got 3"),
        ("name: a\nformat: labelme\ntrain: train\nclasses: dog\n", "key 'classes': expected list, got 'dog'"),
        ("name: a\nformat: labelme\ntrain: train\nclasses: [dog, dog]\n", "key 'classes': a class is listed twice"),
        ("name: a\nformat: labelme\ntrain: train\nval_fraction: 1.5\n", "key 'val_fraction': must be between 0 and 1"),
        ("name: a\nformat: labelme\ntrain: train\nseed: x\n", "key 'seed': expected int, got 'x'"),
        ("name: a\nformat: labelme\ntrain: train\nval: val\nval_fraction: 0.1\n", "key 'val_fraction': has no effect when 'val' is given"),
        ("name: a\nformat: labelme\ntrain: train\nimages: train\n", "key 'images': not used by format labelme"),
        ("name: a\nformat: labelme\ntrain: train\nclass_attribute: name\n", "key 'class_attribute': applies to format via, not labelme"),
        ("name: a\nformat: coco\ntrain: train\n", "key 'train': "),
        ("name: a\nformat: yolo\ntrain: train\n", "key 'classes': format yolo needs 'classes' or 'data_yaml'"),
        ("name: a\nformat: labelme\ntrain: train\noutside_tolerance: -1\n", "key 'outside_tolerance': expected a fraction >= 0 or null"),
        ("- a\n- b\n", "expected a mapping of keys"),
        ("name: [a\n", "not valid YAML"),
    ],
)  # fmt: skip
def test_schema_errors_name_the_file_and_the_key(dataset, text, message):
    path = _spec(dataset, text)
    with pytest.raises(DatasetFileError) as info:
        read_dataset_file(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value), str(info.value)


def test_path_errors_say_what_was_expected(dataset):
    (dataset / "a.json").write_text("{}")
    with pytest.raises(DatasetFileError, match=r"key 'train': .*nowhere does not exist"):
        read_dataset_file(_spec(dataset, "name: a\nformat: labelme\ntrain: nowhere\n"))
    with pytest.raises(
        DatasetFileError, match=r"key 'train': .*train is a folder; this format needs a json file"
    ):
        read_dataset_file(_spec(dataset, "name: a\nformat: coco\ntrain: train\n"))
    with pytest.raises(
        DatasetFileError, match=r"key 'train': .*a\.json is a file; this format needs a folder"
    ):
        read_dataset_file(_spec(dataset, "name: a\nformat: labelme\ntrain: a.json\n"))
    with pytest.raises(DatasetFileError, match=r"dataset file not found"):
        read_dataset_file(dataset / "none.yaml")
    with pytest.raises(
        DatasetFileError, match=r"key 'images': names splits \['test'\] that are not given"
    ):
        read_dataset_file(
            _spec(dataset, "name: a\nformat: coco\ntrain: a.json\nimages: {test: train}\n")
        )


def test_each_format_is_dispatched_with_its_options(tmp_path):
    """A COCO file with per-split image roots and a single-class VIA file named by ``classes``."""
    (tmp_path / "imgs_train").mkdir()
    coco = {
        "images": [{"id": 1, "file_name": "x.jpg", "height": 4, "width": 4}],
        "categories": [{"id": 1, "name": "a"}],
    }
    (tmp_path / "train.json").write_text(json.dumps(coco))
    spec = read_dataset_file(
        _spec(tmp_path, "name: c\nformat: coco\ntrain: train.json\nimages: {train: imgs_train}\n")
    )
    assert load_dataset_split(spec, "train").dicts[0]["file_name"] == str(
        tmp_path / "imgs_train" / "x.jpg"
    )
    Image.new("RGB", (20, 10)).save(tmp_path / "v.jpg")
    region = {"shape_attributes": {"name": "rect", "x": 1, "y": 1, "width": 4, "height": 4}}
    (tmp_path / "via.json").write_text(
        json.dumps({"v": {"filename": "v.jpg", "regions": [region]}})
    )
    spec = read_dataset_file(
        _spec(tmp_path, "name: v\nformat: via\ntrain: via.json\nclasses: [kite]\n")
    )
    loaded = load_dataset_split(spec, "train")
    assert loaded.classes == ["kite"] and loaded.dicts[0]["annotations"][0]["category_id"] == 0


def test_remap_classes_keeps_the_source_ids_when_it_can():
    split = LoadedSplit(
        dicts=[{"file_name": "x.jpg", "annotations": [{"category_id": 0}, {"category_id": 1}]}],
        classes=["cat", "dog"],
        dataset_ids=[3, 7],
        source="s.json",
        has_source_ids=True,
    )
    remapped = remap_classes(split, ["dog", "cat"])
    assert remapped.dataset_ids == [7, 3]
    assert [a["category_id"] for a in remapped.dicts[0]["annotations"]] == [1, 0]
    assert split.dicts[0]["annotations"][0]["category_id"] == 0  # the input is not changed
    assert remap_classes(split, ["dog", "cat", "bird"]).dataset_ids == [1, 2, 3]
    with pytest.raises(DatasetError, match="s.json: class 'cat' is not in the classes"):
        remap_classes(split, ["dog"])
