"""BatchPredictor gives every image the detections of batch size 1, whatever the batch size.

The CPU configs use GroupNorm: padded into a batch of larger images, an image's normalisation
statistics would include the padding and every feature would change. On a GN model and Penn-Fudan
images of several padded sizes, batch sizes 1, 2 and 3 must agree to the float rounding of running
the same-size images as one batched convolution: box corners within 0.01 px, scores within 1e-4
(the tolerances of the existing batch-vs-single test in test_infer.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from viz_tiny_model import FAST_TEST_OPTS, run_dir

from instseg_d2.config import load_config
from instseg_d2.data.image_io import read_image
from instseg_d2.engine.predictor import BatchPredictor

# pennfudan_val_mini at FAST_TEST_OPTS' 128-192 px: padded to (128, 160), (128, 160),
# (128, 192), (160, 128), (192, 128). The first two share a forward pass at batch sizes 2 and 3.
STEMS = ("FudanPed00009", "FudanPed00019", "FudanPed00007", "FudanPed00006", "FudanPed00017")


@pytest.fixture(scope="module")
def predictor_and_images(request, tmp_path_factory, shared_data):
    from detectron2.data import DatasetCatalog

    import instseg_d2.data  # noqa: F401  (registers the datasets)

    run = run_dir(request, tmp_path_factory)
    cfg = load_config(
        str(run / "config.yaml"),
        [*FAST_TEST_OPTS, "MODEL.WEIGHTS", str(run / "model_final.pth"),
         "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"],
    )  # fmt: skip
    assert cfg.MODEL.RESNETS.NORM == "GN" and cfg.MODEL.FPN.NORM == "GN"
    by_stem = {
        d["file_name"].rsplit("/", 1)[-1][:-4]: d for d in DatasetCatalog.get("pennfudan_val_mini")
    }
    images = [read_image(by_stem[s]["file_name"], format="BGR") for s in STEMS]
    return BatchPredictor(cfg), images


def test_images_have_several_padded_sizes(predictor_and_images):
    predictor, images = predictor_and_images
    sizes = [predictor.padded_size(predictor._to_model_input(im)["image"]) for im in images]
    assert sizes[0] == sizes[1] and len(set(sizes)) == 4


@pytest.mark.parametrize("batch_size", [2, 3])
def test_every_batch_size_gives_the_detections_of_batch_size_1(predictor_and_images, batch_size):
    predictor, images = predictor_and_images
    singles = [predictor([image])[0]["instances"] for image in images]
    batched = [p["instances"] for _, p in predictor.predict_batches(images, batch_size)]
    assert len(batched) == len(images)
    for one, many, image in zip(singles, batched, images, strict=True):
        assert many.image_size == image.shape[:2]  # input order kept
        assert len(many) == len(one) > 0
        torch.testing.assert_close(many.pred_boxes.tensor, one.pred_boxes.tensor, rtol=0, atol=1e-2)
        torch.testing.assert_close(many.scores, one.scores, rtol=0, atol=1e-4)
        assert torch.equal(many.pred_classes, one.pred_classes)
        mismatch = (many.pred_masks != one.pred_masks).float().mean().item()
        assert mismatch < 1e-3
    assert np.isfinite([s.scores.sum().item() for s in singles]).all()
