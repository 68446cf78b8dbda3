"""Split-level checks, validation of a whole dataset file, and the image-check cache."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import instseg_d2.data.image_checks as image_checks
from instseg_d2.data.dataset_validation import check_splits, validate_dataset_file
from instseg_d2.data.image_checks import ImageCheckCache, check_images
from instseg_d2.utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def _record(file_name, categories):
    return {"file_name": file_name, "annotations": [{"category_id": c} for c in categories]}


def test_check_splits():
    splits = {
        "train": [_record("a.jpg", [0]), _record("b.jpg", [0])],
        "val": [_record("c.jpg", [1]), _record("d.jpg", [1, 0]), _record("b.jpg", [])],
        "test": [_record("e.jpg", [1])],
    }
    problems = check_splits(splits, ["cat", "dog", "bird"], "data.yaml")
    text = [str(p) for p in problems]
    assert text == [
        "ERROR c.jpg: class 'dog' has instances in val (first here) but none in train: the model cannot learn it",
        "ERROR e.jpg: class 'dog' has instances in test (first here) but none in train: the model cannot learn it",
        "WARNING data.yaml: class 'bird' is declared but has no instance in any split (train, val, test)",
        "ERROR b.jpg: in both train and val",
    ]  # fmt: skip


def _coco_dataset(tmp_path):
    """A COCO dataset file: train (2 images), val with a class train lacks, a missing image, a
    collinear polygon, a point clipped onto the border, a declared class without instances."""
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (20, 10)).save(tmp_path / name)
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}]
    tri = [[1, 1, 8, 1, 8, 6]]
    train = {
        "images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 20}, {"id": 2, "file_name": "b.png", "height": 10, "width": 20}],
        "categories": cats,
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 7, 5], "segmentation": tri},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 7, 5], "segmentation": [[1, 1, 2, 2, 3, 3]]},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [1, 1, 7, 5], "segmentation": [[1, 1, 20.5, 1, 8, 6]]},
        ],
    }  # fmt: skip
    val = {
        "images": [{"id": 3, "file_name": "c.png", "height": 10, "width": 20}, {"id": 4, "file_name": "gone.png", "height": 10, "width": 20}],
        "categories": cats,
        "annotations": [{"id": 1, "image_id": 3, "category_id": 2, "bbox": [1, 1, 7, 5], "segmentation": tri}],
    }  # fmt: skip
    (tmp_path / "train.json").write_text(json.dumps(train))
    (tmp_path / "val.json").write_text(json.dumps(val))
    spec = tmp_path / "data.yaml"
    spec.write_text("name: pets\nformat: coco\ntrain: train.json\nval: val.json\n")
    return spec


def test_validate_dataset_file_lists_every_problem(tmp_path):
    spec = _coco_dataset(tmp_path)
    report = validate_dataset_file(spec, cache=ImageCheckCache(tmp_path / "cache.sqlite"))
    assert list(report) == ["pets_train", "pets_val", "pets"]
    train = [str(p) for p in report["pets_train"]]
    assert any(
        p.startswith(f"WARNING {tmp_path / 'train.json'}: annotation id 3")
        and "clipped onto it" in p
        for p in train
    )
    assert f"ERROR {tmp_path / 'b.png'}: annotation 0 polygon 0: zero area" in train
    assert [str(p) for p in report["pets_val"]] == [
        f"ERROR {tmp_path / 'gone.png'}: file not found"
    ]
    dataset = [str(p) for p in report["pets"]]
    assert dataset == [
        f"ERROR {tmp_path / 'c.png'}: class 'dog' has instances in val (first here) but none in train: the model cannot learn it",
        f"WARNING {spec}: class 'bird' is declared but has no instance in any split (train, val)",
    ]  # fmt: skip
    # A reader error (a schema or source problem) is the report of the dataset.
    spec.write_text("name: pets\nformat: coco\ntrain: train.json\nval: val.json\ncolor: red\n")
    ((name, problems),) = validate_dataset_file(spec).items()
    assert name == str(spec) and "key 'color': unknown key" in problems[0].message


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_validate_tool_with_a_dataset_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("INSTSEG_D2_CACHE_DIR", str(tmp_path / "cache"))
    spec = _coco_dataset(tmp_path)
    output = tmp_path / "problems.json"
    assert (
        _tool("validate_dataset").main(["--dataset-file", str(spec), "--output", str(output)]) == 1
    )
    out = capsys.readouterr().out
    assert "pets_val: 1 error(s), 0 warning(s)" in out and "gone.png: file not found" in out
    assert set(json.loads(output.read_text())) == {"pets_train", "pets_val", "pets"}
    assert (tmp_path / "cache" / "image_checks.sqlite").is_file()
    with pytest.raises(UserError, match="give --dataset, --dataset-file or --config-file"):
        _tool("validate_dataset").main([])


def _images(folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i}.png"
        Image.fromarray(np.full((6, 8, 3), i, np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_cache_skips_unchanged_files_and_rechecks_changed_ones(tmp_path, monkeypatch):
    paths = _images(tmp_path / "imgs", 4)
    cut = tmp_path / "imgs" / "cut.png"
    cut.write_bytes(Path(paths[0]).read_bytes()[:40])
    paths.append(str(cut))
    decoded = []
    original = image_checks._check
    monkeypatch.setattr(image_checks, "_check", lambda p, d: decoded.append(p) or original(p, d))
    cache = ImageCheckCache(tmp_path / "c" / "checks.sqlite")
    cold = check_images(paths, cache=cache, num_workers=2)
    assert len(decoded) == 5 and cold[paths[1]].height == 6 and cold[paths[1]].width == 8
    assert cold[str(cut)].error.startswith("not a readable image")
    decoded.clear()
    assert check_images(paths, cache=cache) == cold and decoded == []  # warm: nothing decoded
    # Another process (a new connection) sees the same results.
    assert check_images(paths, cache=ImageCheckCache(cache.path)) == cold and decoded == []
    Image.fromarray(np.zeros((6, 9, 3), np.uint8)).save(paths[2])  # changed: size and mtime
    warm = check_images(paths, cache=cache)
    assert decoded == [paths[2]] and warm[paths[2]].width == 9
    # A header-only result does not answer a full decode.
    decoded.clear()
    new = _images(tmp_path / "more", 1)
    check_images(new, decode=False, cache=cache)
    check_images(new, decode=True, cache=cache)
    assert decoded == new * 2
    assert (
        check_images([str(tmp_path / "none.png")], cache=cache)[str(tmp_path / "none.png")].error
        == "file not found"
    )


def _check_in_child(args):
    cache_path, paths = args
    return len(check_images(paths, cache=ImageCheckCache(cache_path), num_workers=1))


def test_two_processes_write_one_cache(tmp_path):
    paths = _images(tmp_path / "imgs", 40)
    cache_path = tmp_path / "shared.sqlite"
    with multiprocessing.get_context("fork").Pool(2) as pool:
        counts = pool.map(_check_in_child, [(cache_path, paths[:30]), (cache_path, paths[10:])])
    assert counts == [30, 30]
    stats = {p: os.stat(p) for p in paths}
    assert len(ImageCheckCache(cache_path).lookup(stats)) == 40
