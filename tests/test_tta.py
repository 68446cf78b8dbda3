"""Test-time augmentation with the project's models (GroupNorm CPU config, bitmask masks):
one scale without flip is plain inference; scales and flips change the predictions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from viz_tiny_model import FAST_TEST_OPTS, run_dir

from instseg_d2.data.image_io import read_image
from instseg_d2.engine.defaults import setup_inference_config
from instseg_d2.engine.predictor import BatchPredictor
from instseg_d2.engine.tta import RCNNWithTTA, TTAPredictor, build_tta_model, with_tta_results
from instseg_d2.utils.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
# FAST_TEST_OPTS test at a 128-px short side, at most 192 px.
ONE_SCALE = ("TEST.AUG.MIN_SIZES", "(128,)", "TEST.AUG.MAX_SIZE", "192", "TEST.AUG.FLIP", "False")
SCALES_AND_FLIP = ("TEST.AUG.MIN_SIZES", "(112, 144)", "TEST.AUG.MAX_SIZE", "224",
                   "TEST.AUG.FLIP", "True")  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(request, tmp_path_factory) -> Path:
    return run_dir(request, tmp_path_factory)


@pytest.fixture(scope="module")
def images(pennfudan_data) -> list[np.ndarray]:
    from detectron2.data import DatasetCatalog

    import instseg_d2.data  # noqa: F401  (registers the datasets)

    return [
        read_image(d["file_name"], format="BGR")
        for d in DatasetCatalog.get("pennfudan_val_mini")[:2]
    ]


def _cfg(tiny_run: Path, *opts: str):
    return setup_inference_config(tiny_run / "config.yaml", [*FAST_TEST_OPTS, *opts],
                                  tiny_run / "model_final.pth", 0.0)  # fmt: skip


def _by_score(instances):
    order = torch.argsort(instances.scores, descending=True, stable=True)
    return instances[order]


def test_tta_with_one_scale_and_no_flip_is_plain_inference(tiny_run, images):
    cfg = _cfg(tiny_run, *ONE_SCALE)
    # One image per call: with GroupNorm, the padding of a batch of unequal images changes the
    # features, and TTA runs each image on its own.
    predictor = BatchPredictor(cfg)
    plain = [predictor([image])[0] for image in images]
    tta = TTAPredictor(cfg)(images)
    for p, t, image in zip(plain, tta, images, strict=True):
        p, t = _by_score(p["instances"]), _by_score(t["instances"])
        assert t.image_size == image.shape[:2]
        assert len(p) == len(t) > 0
        np.testing.assert_allclose(t.scores, p.scores, atol=1e-5)
        assert torch.equal(t.pred_classes, p.pred_classes)
        np.testing.assert_allclose(t.pred_boxes.tensor, p.pred_boxes.tensor, atol=1e-2)
        assert t.pred_masks.shape == p.pred_masks.shape
        assert (t.pred_masks != p.pred_masks).float().mean() < 1e-3


def test_tta_with_scales_and_flip_changes_the_predictions(tiny_run, images):
    plain = BatchPredictor(_cfg(tiny_run))(images[:1])[0]["instances"]
    tta = TTAPredictor(_cfg(tiny_run, *SCALES_AND_FLIP))(images[:1])[0]["instances"]
    assert len(tta) > 0 and tta.pred_masks.shape[1:] == images[0].shape[:2]
    plain, tta = _by_score(plain), _by_score(tta)
    n = min(len(plain), len(tta))
    assert not np.allclose(tta.scores[:n], plain.scores[:n], atol=1e-3)


@pytest.mark.slow  # bf16 is emulated, slowly, on CPUs without AVX512-BF16
def test_tta_under_bf16_returns_fp32_predictions(tiny_run, images, monkeypatch):
    cfg = _cfg(tiny_run, *ONE_SCALE)
    out = TTAPredictor(cfg, bf16=True)(images[:1])[0]["instances"]
    assert len(out) > 0 and out.scores.dtype == torch.float32
    # A model whose output layers were not kept in fp32 (BatchPredictor does that for bf16)
    # gives bf16 mask probabilities under autocast: they are averaged and pasted in fp32.
    model = BatchPredictor(cfg, optimize=False).model
    averaged = []
    reduce_pred_masks = RCNNWithTTA._reduce_pred_masks

    def spy(self, outputs, tfms):
        averaged.extend(o.pred_masks.dtype for o in outputs)
        return reduce_pred_masks(self, outputs, tfms)

    monkeypatch.setattr(RCNNWithTTA, "_reduce_pred_masks", spy)
    image = images[0]
    inputs = [{"image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
               "height": image.shape[0], "width": image.shape[1]}]  # fmt: skip
    with torch.inference_mode():
        out = build_tta_model(cfg, model, autocast=True)(inputs)[0]["instances"]
    assert len(out) > 0 and out.pred_masks.shape[1:] == image.shape[:2]
    assert out.scores.dtype == out.pred_boxes.tensor.dtype == torch.float32
    assert averaged and set(averaged) == {torch.float32}


def test_tta_sizes_are_checked(tiny_run):
    with pytest.raises(ConfigError, match="TEST.AUG.MAX_SIZE 100 is smaller than"):
        TTAPredictor(_cfg(tiny_run, "TEST.AUG.MIN_SIZES", "(128,)", "TEST.AUG.MAX_SIZE", "100"))


def test_infer_tool_with_tta_writes_predictions(tiny_run, images, tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), images[0])
    spec = importlib.util.spec_from_file_location("tool_infer", REPO_ROOT / "tools" / "infer.py")
    infer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(infer)
    argv = ["--config-file", str(tiny_run / "config.yaml"), "--weights",
            str(tiny_run / "model_final.pth"), "--input", str(tmp_path / "a.png"), "--output",
            str(tmp_path / "out"), "--confidence-threshold", "0.0", "--tta",
            "--opts", *FAST_TEST_OPTS, *SCALES_AND_FLIP]  # fmt: skip
    assert infer.main(argv) == 0
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert predictions and all(p["image_id"] == 0 for p in predictions)


def test_tta_results_become_extra_rows_of_the_final_table():
    ap = {"AP": 1.0}
    merged, names = with_tta_results({"bbox": ap}, {"bbox_TTA": {"AP": 2.0}}, ["val"])
    assert names == ["val", "val_TTA"]
    assert merged == {"val": {"bbox": ap}, "val_TTA": {"bbox": {"AP": 2.0}}}
    several = {"a": {"bbox": ap}, "b": {"bbox": ap}}
    merged, names = with_tta_results(several, {"b_TTA": {"bbox": {"AP": 3.0}}}, ["a", "b"])
    assert names == ["a", "b", "b_TTA"] and merged["b_TTA"] == {"bbox": {"AP": 3.0}}


@pytest.mark.slow  # two COCO evaluations of 5 images
def test_evaluation_with_one_scale_tta_gives_the_plain_predictions(tiny_run, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    from instseg_d2.engine.trainer import Trainer

    cfg = _cfg(tiny_run, *ONE_SCALE).clone()
    cfg.defrost()
    cfg.DATASETS.TEST = ("pennfudan_val_mini",)
    cfg.OUTPUT_DIR = str(tmp_path)
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    plain = Trainer.test(cfg, model)
    tta = Trainer.test_with_TTA(cfg, model)
    assert set(tta) == {"bbox_TTA", "segm_TTA"}  # Detectron2's names for one test set
    assert tta["bbox_TTA"]["AP"] == pytest.approx(plain["bbox"]["AP"], abs=1e-6)

    def detections(folder: str) -> list[dict]:
        path = tmp_path / folder / "pennfudan_val_mini" / "coco_instances_results.json"
        return sorted(json.loads(path.read_text()), key=lambda r: (r["image_id"], -r["score"]))

    plain, tta = detections("inference"), detections("inference_TTA")
    assert len(plain) == len(tta) > 0
    for p, t in zip(plain, tta, strict=True):
        assert p["image_id"] == t["image_id"] and p["score"] == pytest.approx(t["score"], abs=1e-5)
        np.testing.assert_allclose(p["bbox"], t["bbox"], atol=1e-2)
