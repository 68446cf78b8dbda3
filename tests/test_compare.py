"""Mask-IoU matching and tools/compare.py panels (image | predictions | ground truth)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image
from viz_tiny_model import FAST_TEST_OPTS, run_dir

from instseg_d2.visualization.matching import encode_masks, match_by_mask_iou
from instseg_d2.visualization.panels import annotation_rles, labelled_row

REPO_ROOT = Path(__file__).resolve().parents[1]


def _box_mask(x0, y0, x1, y1, shape=(40, 60)) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def test_greedy_matching_by_score_and_mask_iou():
    gt = encode_masks(np.stack([_box_mask(0, 0, 10, 10), _box_mask(30, 0, 40, 10)]))
    preds = np.stack(
        [
            _box_mask(0, 0, 10, 8),  # IoU 0.8 with gt 0, low score
            _box_mask(0, 0, 10, 6),  # IoU 0.6 with gt 0, highest score: takes gt 0 first
            _box_mask(30, 0, 34, 10),  # IoU 0.4 with gt 1: below 0.5
            _box_mask(50, 30, 60, 40),  # nothing
        ]
    )
    result = match_by_mask_iou(encode_masks(preds), np.array([0.5, 0.9, 0.8, 0.7]), gt)
    assert result.pairs == [(1, 0, pytest.approx(0.6))]
    assert (result.true_positives, result.false_positives, result.false_negatives) == (1, 3, 1)
    # At a lower threshold prediction 2 matches gt 1 as well.
    low = match_by_mask_iou(encode_masks(preds), np.array([0.5, 0.9, 0.8, 0.7]), gt, 0.3)
    assert low.as_dict() == {"tp": 2, "fp": 2, "fn": 0}


def test_matching_without_predictions_or_ground_truth():
    gt = encode_masks(_box_mask(0, 0, 10, 10)[None])
    assert match_by_mask_iou([], np.zeros(0), gt).as_dict() == {"tp": 0, "fp": 0, "fn": 1}
    assert match_by_mask_iou(gt, np.ones(1), []).as_dict() == {"tp": 0, "fp": 1, "fn": 0}
    with pytest.raises(ValueError, match="scores"):
        match_by_mask_iou(gt, np.ones(2), gt)


def test_annotation_rles_accept_polygons_rle_and_skip_crowd():
    square = [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]]
    rle = mask_util.encode(np.asfortranarray(_box_mask(10, 10, 30, 30)))
    rle["counts"] = rle["counts"].decode("ascii")  # as stored in JSON
    annos = [
        {"segmentation": square},
        {"segmentation": rle},
        {"segmentation": square, "iscrowd": 1},
    ]
    rles = annotation_rles(annos, 40, 60)
    assert len(rles) == 2
    iou = mask_util.iou([rles[0]], [rles[1]], [0])[0][0]
    assert iou > 0.85  # the same square, as polygon (pixel-center rule) and as bitmap


def test_labelled_row_is_exactly_as_wide_as_its_images():
    images = [np.zeros((20, w, 3), dtype=np.uint8) for w in (30, 30, 30)]
    row = labelled_row(images, ["a", "b", "c"], caption="TP 1")
    assert row.shape[1] == 90 and row.shape[0] > 20
    np.testing.assert_array_equal(row[-20:], np.zeros((20, 90, 3)))
    with pytest.raises(ValueError, match="height"):
        labelled_row([images[0], np.zeros((5, 5, 3), np.uint8)], ["a", "b"])


def _compare_tool():
    spec = importlib.util.spec_from_file_location("compare_tool", REPO_ROOT / "tools/compare.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_save_panel_shrinks_and_reduces_colors(tmp_path):
    rng = np.random.default_rng(0)
    panel = rng.integers(0, 256, size=(40, 300, 3), dtype=np.uint8)
    _compare_tool().save_panel(panel, tmp_path / "p.png", max_width=150, colors=16)
    with Image.open(tmp_path / "p.png") as image:
        assert image.size == (150, 20) and image.mode == "P"
        assert len(image.getcolors()) <= 16
    _compare_tool().save_panel(panel, tmp_path / "full.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "full.png")), panel)


@pytest.fixture(scope="module")
def tiny_run(request, tmp_path_factory) -> Path:
    return run_dir(request, tmp_path_factory)


def test_compare_tool_writes_panels_three_images_wide(tiny_run, pennfudan_data, tmp_path):
    from detectron2.data import DatasetCatalog

    import instseg_d2.data  # noqa: F401

    tool = _compare_tool()
    out = tmp_path / "panels"
    argv = [
        "--config-file",
        str(tiny_run / "config.yaml"),
        "--weights",
        str(tiny_run / "model_final.pth"),
        "--dataset",
        "pennfudan_val_mini",
        "--num-images",
        "2",
        "--confidence-threshold",
        "0.0",
        "--output",
        str(out),
        "--opts",
        *FAST_TEST_OPTS,
    ]
    assert tool.main(argv) == 0
    dicts = DatasetCatalog.get("pennfudan_val_mini")[:2]
    summary = json.loads((out / "matches.json").read_text())
    assert summary["dataset"] == "pennfudan_val_mini" and len(summary["images"]) == 2
    totals = dict.fromkeys(("tp", "fp", "fn"), 0)
    for d, counts in zip(dicts, summary["images"], strict=True):
        panel = cv2.imread(str(out / f"{Path(d['file_name']).stem}_panel.png"))
        assert panel.shape[1] == 3 * d["width"]
        assert panel.shape[0] > d["height"]  # plus the label header
        # Left third is the unchanged image (below the header).
        image = cv2.imread(d["file_name"])
        np.testing.assert_array_equal(panel[-d["height"] :, : d["width"]], image)
        # Every ground-truth instance is either matched or missed.
        assert counts["tp"] + counts["fn"] == len(d["annotations"])
        assert counts["tp"] + counts["fp"] == counts["num_predictions"]
        assert 0 < counts["num_predictions"] <= 4  # TEST.DETECTIONS_PER_IMAGE, threshold 0
        for key in totals:
            totals[key] += counts[key]
    assert summary["total"] == totals
