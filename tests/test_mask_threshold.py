"""INSTSEG.MASK_THRESHOLD: the mask probability at which every path pastes masks (plain
inference, TTA), checked when the model is built."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances, ROIMasks
from viz_tiny_model import FAST_TEST_OPTS, run_dir

from instseg_d2.config import get_instseg_cfg
from instseg_d2.data.image_io import read_image
from instseg_d2.engine.defaults import setup_inference_config
from instseg_d2.engine.predictor import BatchPredictor
from instseg_d2.engine.tta import TTAPredictor, _ROIMasksAt
from instseg_d2.modeling.meta_arch import mask_threshold_of
from instseg_d2.utils.errors import ConfigError, UserError

ONE_SCALE = ("TEST.AUG.MIN_SIZES", "(128,)", "TEST.AUG.MAX_SIZE", "192", "TEST.AUG.FLIP", "False")


@pytest.fixture(scope="module")
def tiny_run(request, tmp_path_factory) -> Path:
    return run_dir(request, tmp_path_factory)


@pytest.fixture(scope="module")
def image(pennfudan_data) -> np.ndarray:
    from detectron2.data import DatasetCatalog

    import instseg_d2.data  # noqa: F401  (registers the datasets)

    return read_image(DatasetCatalog.get("pennfudan_val_mini")[0]["file_name"], format="BGR")


def _cfg(tiny_run: Path, threshold: float, *opts: str):
    return setup_inference_config(
        tiny_run / "config.yaml",
        [*FAST_TEST_OPTS, "INSTSEG.MASK_THRESHOLD", str(threshold), *opts],
        tiny_run / "model_final.pth",
        0.0,
    )


def _by_score(instances: Instances) -> Instances:
    return instances[torch.argsort(instances.scores, descending=True, stable=True)]


@pytest.mark.parametrize("tta", [False, True], ids=["plain", "tta"])
def test_lower_threshold_pastes_larger_masks_of_the_same_detections(tiny_run, image, tta):
    def predict(threshold: float) -> Instances:
        cfg = _cfg(tiny_run, threshold, *ONE_SCALE)
        predictor = TTAPredictor(cfg) if tta else BatchPredictor(cfg)
        return _by_score(predictor([image])[0]["instances"])

    high, low = predict(0.5), predict(0.2)
    assert len(high) == len(low) > 0
    np.testing.assert_allclose(low.scores, high.scores, atol=1e-6)
    # Pasted from the same probabilities, a lower threshold only adds pixels.
    assert not (high.pred_masks & ~low.pred_masks).any()
    assert low.pred_masks.sum() > high.pred_masks.sum()


def test_model_pastes_as_detector_postprocess_at_the_threshold(tiny_run, image):
    predictor = BatchPredictor(_cfg(tiny_run, 0.3))
    model = predictor.model
    resized = predictor.aug.get_transform(image).apply_image(image)
    inputs = [{"image": torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))),
               "height": image.shape[0], "width": image.shape[1]}]  # fmt: skip
    with torch.inference_mode():
        raw = model.inference(inputs, do_postprocess=False)[0]
        pasted = model.inference(inputs)[0]["instances"]
        expected = detector_postprocess(raw, image.shape[0], image.shape[1], mask_threshold=0.3)
    assert len(pasted) > 0 and torch.equal(pasted.pred_masks, expected.pred_masks)


def test_tta_masks_keep_their_threshold_through_indexing():
    probs = torch.linspace(0, 1, 2 * 8 * 8).reshape(2, 8, 8)
    boxes = Boxes(torch.tensor([[0.0, 0.0, 16.0, 16.0], [4.0, 4.0, 20.0, 20.0]]))
    kept = _ROIMasksAt(probs, 0.3)[torch.tensor([True, True])]
    assert isinstance(kept, _ROIMasksAt) and kept.threshold == 0.3
    at_03 = kept.to_bitmasks(boxes, 24, 24).tensor
    assert torch.equal(at_03, ROIMasks(probs).to_bitmasks(boxes, 24, 24, 0.3).tensor)
    assert not torch.equal(at_03, ROIMasks(probs).to_bitmasks(boxes, 24, 24, 0.5).tensor)


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.2])
def test_threshold_outside_zero_one_is_a_config_error(value):
    cfg = get_instseg_cfg()
    cfg.INSTSEG.MASK_THRESHOLD = value
    with pytest.raises(ConfigError, match="INSTSEG.MASK_THRESHOLD must lie strictly between"):
        mask_threshold_of(cfg)


def test_threshold_sweep_pastes_and_scores_as_the_model_at_that_threshold(tiny_run, tmp_path):
    """benchmarks/mask_threshold_sweep.py: one inference, pasted at each threshold, gives the
    masks and the AP of the model built with that INSTSEG.MASK_THRESHOLD."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.evaluation import inference_on_dataset

    from benchmarks.mask_threshold_sweep import paste_at, raw_predictions, run_dirs, sweep_run
    from instseg_d2.engine.trainer import Trainer

    # A cross-validation folder is its r*_fold* runs; anything else is an error that says so.
    (tmp_path / "cv" / "r0_fold0").mkdir(parents=True)
    (tmp_path / "cv" / "r0_fold0" / "config.yaml").write_text("")
    assert run_dirs([str(tmp_path / "cv")]) == [tmp_path / "cv" / "r0_fold0"]
    with pytest.raises(UserError, match="neither a run folder"):
        run_dirs([str(tmp_path)])

    swept = sweep_run(tiny_run, [0.5, 0.2], FAST_TEST_OPTS)
    for threshold in (0.5, 0.2):
        cfg = _cfg(tiny_run, threshold)
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model).load(str(tiny_run / "model_final.pth"))
        model.eval()
        name = cfg.DATASETS.TEST[0]
        loader = Trainer.build_test_loader(cfg, name)
        pasted = paste_at(raw_predictions(model, loader), threshold)
        with torch.inference_mode():
            direct = [model(inputs) for inputs, _ in pasted]
        assert sum(len(o["instances"]) for _, outs in pasted for o in outs) > 0
        for (_, ours), theirs in zip(pasted, direct, strict=True):
            for a, b in zip(ours, theirs, strict=True):
                assert torch.equal(a["instances"].pred_masks, b["instances"].pred_masks)
        evaluator = Trainer.build_evaluator(cfg, name, output_folder=str(tmp_path / "eval"))
        metrics = inference_on_dataset(model, loader, evaluator)
        assert swept[threshold]["segm AP"] == pytest.approx(metrics["segm"]["AP"], abs=1e-6)
        assert swept[threshold]["bbox AP"] == pytest.approx(metrics["bbox"]["AP"], abs=1e-6)
