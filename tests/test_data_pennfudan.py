"""Penn-Fudan registration: real data pixel-exact, splits, and tiny broken fixtures."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

import instseg_d2.data  # noqa: F401  (registers the datasets)
from instseg_d2.data.datasets.pennfudan_split import (
    SPLIT_FILE,
    all_pennfudan_stems,
    make_pennfudan_kfold,
    make_pennfudan_split,
)
from instseg_d2.data.datasets.register_pennfudan import (
    load_pennfudan_dicts,
    pennfudan_annotation_disagreements,
    pennfudan_image_id,
)
from instseg_d2.data.errors import DatasetError


@pytest.fixture(scope="module")
def pennfudan_all(shared_data):
    started = time.perf_counter()
    dicts = DatasetCatalog.get("pennfudan_train") + DatasetCatalog.get("pennfudan_val")
    return dicts, time.perf_counter() - started


def test_split_counts_and_metadata(shared_data):
    expected = {
        "pennfudan_train": 120,
        "pennfudan_val": 50,
        "pennfudan_train_mini": 10,
        "pennfudan_val_mini": 5,
    }
    for name, count in expected.items():
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == count, name
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == ["pedestrian"] and meta.evaluator_type == "coco"
        assert len(meta.thing_colors) == 1
    train = DatasetCatalog.get("pennfudan_train")
    assert [d["image_id"] for d in DatasetCatalog.get("pennfudan_train_mini")] == [
        d["image_id"] for d in train[:10]
    ]


def test_every_mask_decodes_to_its_source_pixels(pennfudan_all, shared_data):
    dicts, seconds = pennfudan_all
    assert len(dicts) == 170
    assert sum(len(d["annotations"]) for d in dicts) == 423
    assert len({d["image_id"] for d in dicts}) == 170
    assert seconds < 30, f"loading 170 masks took {seconds:.1f}s"
    for record in dicts:
        stem = os.path.basename(record["file_name"])[: -len(".png")]
        source = np.asarray(Image.open(shared_data / "PennFudanPed/PedMasks" / f"{stem}_mask.png"))
        assert source.shape == (record["height"], record["width"])
        ids = sorted(int(v) for v in np.unique(source) if v)
        assert [a["instance_id"] for a in record["annotations"]] == ids
        rebuilt = np.zeros_like(source)
        for ann in record["annotations"]:
            decoded = mask_util.decode(ann["segmentation"])
            np.testing.assert_array_equal(decoded.astype(bool), source == ann["instance_id"])
            rebuilt[decoded.astype(bool)] = ann["instance_id"]
            ys, xs = np.nonzero(decoded)
            x, y, w, h = ann["bbox"]
            assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        np.testing.assert_array_equal(rebuilt, source)  # nothing lost, nothing invented


def test_txt_annotations_agree_with_masks_on_real_data(pennfudan_all, shared_data):
    dicts, _ = pennfudan_all
    assert pennfudan_annotation_disagreements(shared_data / "PennFudanPed", dicts) == []
    # A strict tolerance does flag the few boxes that are off by pixels (e.g. PennPed00027).
    strict = pennfudan_annotation_disagreements(shared_data / "PennFudanPed", dicts, min_iou=0.95)
    assert any("PennPed00027.txt: object 1 box" in line for line in strict)


def test_committed_split_is_the_seeded_stratified_split():
    committed = json.loads(SPLIT_FILE.read_text())
    regenerated = make_pennfudan_split()
    assert committed["train"] == regenerated["train"] and committed["val"] == regenerated["val"]
    assert len(committed["train"]) == 120 and len(committed["val"]) == 50
    assert set(committed["train"]).isdisjoint(committed["val"])
    assert set(committed["train"]) | set(committed["val"]) == set(all_pennfudan_stems())
    fudan_val = sum(s.startswith("FudanPed") for s in committed["val"])
    assert fudan_val == round(50 * 74 / 170)  # 22 Fudan, 28 Penn: in proportion
    assert make_pennfudan_split(seed=1)["val"] != committed["val"]


def test_kfold_partitions_all_images():
    folds = [make_pennfudan_kfold(i, 5) for i in range(5)]
    vals = [set(f["val"]) for f in folds]
    assert sum(len(v) for v in vals) == 170 and set().union(*vals) == set(all_pennfudan_stems())
    for fold in folds:
        assert (
            set(fold["train"]).isdisjoint(fold["val"])
            and len(fold["train"]) + len(fold["val"]) == 170
        )
        assert 13 <= sum(s.startswith("FudanPed") for s in fold["val"]) <= 16  # 74/5 in each
    assert len(DatasetCatalog.get("pennfudan_fold2of5_val")) == len(folds[2]["val"])
    with pytest.raises(ValueError, match="fold must be in 0..4"):
        make_pennfudan_kfold(5, 5)


def test_image_ids_are_stable():
    assert pennfudan_image_id("FudanPed00012") == 100012
    assert pennfudan_image_id("PennPed00007") == 200007
    with pytest.raises(DatasetError, match="not a Penn-Fudan image name"):
        pennfudan_image_id("Other00001")


def _make_dataset(root, masks: dict[str, np.ndarray], txt_objects: dict[str, int] | None = None):
    """A tiny Penn-Fudan folder: one RGB image per mask (same size), optional .txt files."""
    for sub in ("PNGImages", "PedMasks", "Annotation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for stem, mask in masks.items():
        Image.fromarray(np.full((*mask.shape, 3), 90, np.uint8)).save(
            root / "PNGImages" / f"{stem}.png"
        )
        Image.fromarray(mask.astype(np.uint8), mode="L").save(
            root / "PedMasks" / f"{stem}_mask.png"
        )
        count = (txt_objects or {}).get(stem)
        if count is not None:
            h, w = mask.shape
            (root / "Annotation" / f"{stem}.txt").write_text(
                f"Image size (X x Y x C) : {w} x {h} x 3\r\n"
                f"Objects with ground truth : {count} {{ }}\r\n"
            )
    return root


def test_gap_in_instance_ids_keeps_each_id(tmp_path, caplog):
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 1:3] = 1
    mask[3:6, 5:8] = 3  # id 2 is missing
    root = _make_dataset(tmp_path / "PennFudanPed", {"FudanPed00001": mask})
    with caplog.at_level(logging.WARNING):
        (record,) = load_pennfudan_dicts(root, ["FudanPed00001"])
    assert [a["instance_id"] for a in record["annotations"]] == [1, 3]
    assert record["annotations"][1]["bbox"] == [5.0, 3.0, 3.0, 3.0]
    assert "instance ids [1, 3] are not 1..2" in caplog.text


def test_missing_mask_names_the_file(tmp_path):
    root = _make_dataset(tmp_path / "PennFudanPed", {"FudanPed00001": np.ones((4, 4), np.uint8)})
    (root / "PedMasks" / "FudanPed00001_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"PedMasks/FudanPed00001_mask\.png: file not found"):
        load_pennfudan_dicts(root, ["FudanPed00001"])


def test_corrupt_image_names_the_file(tmp_path):
    root = _make_dataset(tmp_path / "PennFudanPed", {"PennPed00001": np.ones((4, 4), np.uint8)})
    (root / "PNGImages" / "PennPed00001.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match=r"PNGImages/PennPed00001\.png: not a readable image"):
        load_pennfudan_dicts(root, ["PennPed00001"])


def test_mask_size_mismatch(tmp_path):
    root = _make_dataset(tmp_path / "PennFudanPed", {"PennPed00001": np.ones((4, 4), np.uint8)})
    Image.new("RGB", (5, 4)).save(root / "PNGImages" / "PennPed00001.png")
    with pytest.raises(
        DatasetError, match=r"PennPed00001_mask\.png: mask is 4x4 \(WxH\) but its image"
    ):
        load_pennfudan_dicts(root, ["PennPed00001"])


def test_txt_count_mismatch_is_reported_with_crlf_files(tmp_path):
    mask = np.zeros((4, 6), np.uint8)
    mask[0:2, 0:2], mask[2:4, 3:5] = 1, 2
    root = _make_dataset(tmp_path / "PennFudanPed", {"FudanPed00001": mask}, {"FudanPed00001": 3})
    dicts = load_pennfudan_dicts(root, ["FudanPed00001"])
    (problem,) = pennfudan_annotation_disagreements(root, dicts)
    assert problem.endswith("FudanPed00001.txt: 3 objects (0 boxes) but the mask has 2 instances")


def test_missing_dataset_folder_registers_and_fails_clearly(tmp_path):
    code = (
        "import instseg_d2.data\n"
        "from detectron2.data import DatasetCatalog\n"
        "assert 'pennfudan_train' in DatasetCatalog.list() and 'balloon_val_mini' in DatasetCatalog.list()\n"
        "DatasetCatalog.get('pennfudan_train')\n"
    )
    env = {**os.environ, "DETECTRON2_DATASETS": str(tmp_path / "empty")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("instseg_d2.data.errors.DatasetError:")
    assert "Penn-Fudan not found (missing PNGImages, PedMasks)" in last
    assert "datasets/prepare_pennfudan.py" in last
