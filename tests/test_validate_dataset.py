"""validate_dataset_dicts and tools/validate_dataset.py: every problem reported with its file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

import instseg_d2.data  # noqa: F401  (registers the datasets)
from instseg_d2.data.errors import UnknownDatasetError
from instseg_d2.data.masks import encode_binary_mask
from instseg_d2.data.validation import (
    DatasetValidationError,
    Problem,
    validate_dataset_dicts,
)

REPO = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location(
        "validate_tool", REPO / "tools/validate_dataset.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _poly(points):
    return {
        "bbox": [0, 0, 4, 4],
        "bbox_mode": BoxMode.XYXY_ABS,
        "category_id": 0,
        "segmentation": [points],
    }


@pytest.fixture
def good_image(tmp_path):
    path = tmp_path / "good.png"
    Image.new("RGB", (10, 8)).save(path)  # W 10, H 8
    return path


def _record(path, annotations, image_id=1, height=8, width=10):
    return {
        "file_name": str(path),
        "height": height,
        "width": width,
        "image_id": image_id,
        "annotations": annotations,
    }


def test_real_mini_datasets_are_clean(shared_data):
    for name in ("pennfudan_val_mini", "balloon_val_mini"):
        assert validate_dataset_dicts(DatasetCatalog.get(name)) == []


def test_clean_synthetic_record(good_image):
    rle = encode_binary_mask(np.pad(np.ones((2, 3), np.uint8), ((1, 5), (1, 6))))
    anns = [
        _poly([1, 1, 5, 1, 5, 4]),
        {
            "bbox": [1, 1, 3, 2],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 0,
            "segmentation": rle,
        },
        _poly([0, 0, 10, 0, 10, 8]),  # touching the border is fine
    ]
    assert validate_dataset_dicts([_record(good_image, anns)]) == []


@pytest.mark.parametrize(
    "annotation, message",
    [
        (_poly([1, 1, 5, 1]), "polygon 0: needs at least 3 (x, y) points, got 4 numbers"),
        (
            _poly([1, 1, 5, 1, float("nan"), 3]),
            "polygon 0: coordinates must be a flat list of finite numbers",
        ),
        (_poly([1, 1, 15, 1, 5, 4]), "polygon 0: points outside the 10x8 image"),
        (_poly([1, 1, 2, 2, 3, 3]), "polygon 0: zero area"),
        ({**_poly([1, 1, 5, 1, 5, 4]), "bbox": [3, 3, 3, 5]}, "has no area"),
        ({**_poly([1, 1, 5, 1, 5, 4]), "bbox": [0, 0, 11, 5]}, "outside the 10x8 image"),
        (
            {**_poly([1, 1, 5, 1, 5, 4]), "category_id": -1},
            "category_id must be a non-negative int",
        ),
        (
            {"bbox": [0, 0, 2, 2], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0},
            "no segmentation",
        ),
        (
            {
                **_poly([1, 1, 5, 1, 5, 4]),
                "segmentation": encode_binary_mask(np.ones((8, 9), np.uint8)),
            },
            "RLE size [8, 9] differs from the image's [height, width] [8, 10]",
        ),
        (
            {
                **_poly([1, 1, 5, 1, 5, 4]),
                "segmentation": encode_binary_mask(np.zeros((8, 10), np.uint8)),
            },
            "empty mask (0 pixels)",
        ),
    ],
)
def test_each_annotation_problem_is_reported(good_image, annotation, message):
    problems = validate_dataset_dicts(
        [_record(good_image, [_poly([1, 1, 5, 1, 5, 4]), annotation])]
    )
    assert len(problems) == 1, problems
    assert problems[0].file == str(good_image) and problems[0].severity == "error"
    assert problems[0].message.startswith("annotation 1")
    assert message in problems[0].message


def test_file_level_problems_all_reported_at_once(tmp_path, good_image):
    truncated = tmp_path / "cut.png"
    buffer = tmp_path / "full.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(buffer)
    truncated.write_bytes(buffer.read_bytes()[:200])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    records = [
        _record(good_image, [], image_id=1),
        _record(good_image, [], image_id=2),  # same file twice
        _record(tmp_path / "missing.png", [], image_id=3),
        _record(truncated, [], image_id=4, height=32, width=32),
        _record(empty, [], image_id=5),
        _record(buffer, [], image_id=1, height=30, width=32),  # id reused, wrong size
        "not a record",
    ]
    problems = validate_dataset_dicts(records)
    text = "\n".join(str(p) for p in problems)
    assert f"ERROR {good_image}: listed twice (records 0 and 1)" in text
    assert f"ERROR {tmp_path / 'missing.png'}: file not found" in text
    assert f"ERROR {truncated}: image data is corrupt or truncated" in text
    assert f"ERROR {empty}: empty file (0 bytes)" in text
    assert f"ERROR {buffer}: image_id 1 also used by {good_image}" in text
    assert f"ERROR {buffer}: recorded size 32x30 (WxH) but the image is 32x32" in text
    assert "ERROR <record 6>: not a dict with a 'file_name'" in text
    # Header-only mode is fast but cannot see the truncation.
    quick = validate_dataset_dicts(records, decode_images=False)
    assert not any("truncated" in p.message for p in quick)


def test_validation_error_lists_problems():
    error = DatasetValidationError(
        [Problem("a.png", "bad"), Problem("b.txt", "odd", "warning")], "ds"
    )
    assert str(error).splitlines() == [
        "ds: 1 error(s), 1 warning(s)",
        "  ERROR a.png: bad",
        "  WARNING b.txt: odd",
    ]


def test_cli_exit_codes_and_json(tmp_path, good_image, capsys, shared_data):
    tool = _tool()
    bad_name = "test_validate_bad_dataset"
    if bad_name not in DatasetCatalog.list():
        DatasetCatalog.register(bad_name, lambda: [_record(good_image, [_poly([1, 1, 2, 1])])])
        MetadataCatalog.get(bad_name).set(thing_classes=["x"])
    report = tmp_path / "report.json"
    assert tool.main(["--dataset", "balloon_val_mini", bad_name, "--output", str(report)]) == 1
    out = capsys.readouterr().out
    assert "balloon_val_mini: 0 error(s), 0 warning(s)" in out
    assert f"ERROR {good_image}: annotation 0 polygon 0: needs at least 3" in out
    saved = json.loads(report.read_text())
    assert saved["balloon_val_mini"] == [] and saved[bad_name][0]["file"] == str(good_image)
    assert tool.main(["--dataset", "pennfudan_val_mini", "--no-decode"]) == 0
    with pytest.raises(UnknownDatasetError, match="dataset 'no_such_dataset' is not registered"):
        tool.main(["--dataset", "no_such_dataset"])


def test_loader_failure_becomes_a_problem(tmp_path):
    from instseg_d2.data.errors import DatasetError
    from instseg_d2.data.validation import validate_registered_dataset

    name = "test_validate_failing_loader"
    if name not in DatasetCatalog.list():

        def fail():
            raise DatasetError(f"{tmp_path}/x.json: broken")

        DatasetCatalog.register(name, fail)
    (problem,) = validate_registered_dataset(name)
    assert (problem.file, problem.message) == (f"{tmp_path}/x.json", "broken")


def test_check_registered_datasets_raises_on_errors_only(good_image):
    from instseg_d2.data.validation import check_registered_datasets

    name = "test_validate_check_bad"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [_record(good_image, [_poly([1, 1, 2, 2, 3, 3])])])
    check_registered_datasets(["balloon_val_mini", "balloon_val_mini"], decode_images=False)
    with pytest.raises(
        DatasetValidationError, match=r"(?s)test_validate_check_bad: 1 error\(s\).*zero area"
    ) as info:
        check_registered_datasets(["balloon_val_mini", name])
    assert info.value.problems[0].file == str(good_image)


def test_category_beyond_the_class_list(good_image):
    record = _record(good_image, [{**_poly([1, 1, 5, 1, 5, 4]), "category_id": 1}])
    assert validate_dataset_dicts([record]) == []  # without metadata any class id is accepted
    (problem,) = validate_dataset_dicts([record], num_classes=1)
    assert problem.message == "annotation 0: category_id 1 but the dataset has 1 class(es)"
