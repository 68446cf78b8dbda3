"""One image reader everywhere: training mapper, validation-loss loader, evaluation loader and
the inference runner decode a 16-bit, an EXIF-rotated and an RGBA image to the same pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as d2_utils
from detectron2.structures import BoxMode
from PIL import Image
from viz_tiny_model import FAST_TEST_OPTS, make_tiny_run

from instseg_d2.data.dataset_mapper import build_dataset_mapper
from instseg_d2.data.image_io import EXIF_ORIENTATION_TAG, read_image
from instseg_d2.engine.defaults import setup_inference_config
from instseg_d2.engine.inference import run_on_images
from instseg_d2.engine.predictor import BatchPredictor
from instseg_d2.engine.trainer import Trainer

DATASET = "test_mapper_quirks"
HEIGHT, WIDTH = 48, 64  # every image as displayed: the resize to a 48-px short side is identity


def _quirky_images(folder) -> list[str]:
    rng = np.random.default_rng(0)
    sixteen = folder / "gray16.png"
    # Values over the whole 16-bit range: Detectron2's reader clips them to an almost white image.
    ramp = np.linspace(0, 65535, HEIGHT * WIDTH).reshape(HEIGHT, WIDTH).astype(np.uint16)
    Image.fromarray(ramp).save(sixteen)
    rotated = folder / "exif6.jpg"  # stored 64 high x 48 wide, displayed 48 x 64
    stored = Image.fromarray(rng.integers(0, 256, (WIDTH, HEIGHT, 3), dtype=np.uint8))
    exif = stored.getexif()
    exif[EXIF_ORIENTATION_TAG] = 6
    stored.save(rotated, exif=exif.tobytes(), quality=95)
    rgba = folder / "rgba.png"
    pixels = rng.integers(0, 256, (HEIGHT, WIDTH, 4), dtype=np.uint8)
    pixels[..., 3] = rng.integers(0, 256, (HEIGHT, WIDTH))  # partly transparent
    Image.fromarray(pixels, mode="RGBA").save(rgba)
    return [str(sixteen), str(rotated), str(rgba)]


@pytest.fixture(scope="module")
def quirky_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quirks")
    files = _quirky_images(folder)
    annotation = {
        "bbox": [8.0, 8.0, 40.0, 30.0],
        "bbox_mode": BoxMode.XYXY_ABS,
        "segmentation": [[8.0, 8.0, 40.0, 8.0, 40.0, 30.0, 8.0, 30.0]],
        "category_id": 0,
        "iscrowd": 0,
    }
    dicts = [
        {
            "file_name": f,
            "height": HEIGHT,
            "width": WIDTH,
            "image_id": i,
            "annotations": [annotation],
        }
        for i, f in enumerate(files)
    ]
    DatasetCatalog.register(DATASET, lambda: dicts)
    MetadataCatalog.get(DATASET).set(thing_classes=["thing"])
    yield files
    DatasetCatalog.remove(DATASET)
    MetadataCatalog.remove(DATASET)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory, quirky_dataset):
    run = make_tiny_run(tmp_path_factory.mktemp("mapper_run"))
    opts = [
        *FAST_TEST_OPTS,
        "DATASETS.TRAIN",
        f"('{DATASET}',)",
        "DATASETS.TEST",
        f"('{DATASET}',)",
    ]
    opts += ["INPUT.MIN_SIZE_TRAIN", f"({HEIGHT},)", "INPUT.MIN_SIZE_TEST", str(HEIGHT)]
    opts += ["INPUT.MAX_SIZE_TRAIN", "1000", "INPUT.MAX_SIZE_TEST", "1000"]
    opts += ["INPUT.RANDOM_FLIP", "none", "INPUT.MASK_FORMAT", "polygon"]
    opts += ["DATALOADER.NUM_WORKERS", "0"]
    return setup_inference_config(run / "config.yaml", opts, run / "model_final.pth")


def _expected(files, fmt) -> list[np.ndarray]:
    return [read_image(f, format=fmt).transpose(2, 0, 1) for f in files]


def test_the_quirky_images_are_quirky(quirky_dataset):
    """Detectron2's own reader clips the 16-bit image: the check below would catch a mapper
    that fell back to it."""
    ours = read_image(quirky_dataset[0], format="BGR")
    theirs = d2_utils.read_image(quirky_dataset[0], format="BGR")
    assert ours.shape == theirs.shape == (HEIGHT, WIDTH, 3)
    assert abs(ours.mean() - 127.5) < 2 and theirs.mean() > 250


def test_training_validation_and_evaluation_loaders_read_the_same_pixels(cfg, quirky_dataset):
    expected = _expected(quirky_dataset, cfg.INPUT.FORMAT)
    train_mapper = build_dataset_mapper(cfg, is_train=True)
    dicts = DatasetCatalog.get(DATASET)
    trained = [train_mapper(d)["image"].numpy() for d in dicts]
    val_loss = [
        x["image"].numpy() for batch in Trainer.build_val_loss_loader(cfg, DATASET) for x in batch
    ]
    evaluated = [
        x["image"].numpy() for batch in Trainer.build_test_loader(cfg, DATASET) for x in batch
    ]
    for name, images in (("train", trained), ("val loss", val_loss), ("eval", evaluated)):
        assert len(images) == 3, name
        for got, want, file in zip(images, expected, quirky_dataset, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=f"{name}: {file}")


def test_inference_runner_feeds_the_model_the_same_pixels(cfg, quirky_dataset, tmp_path):
    expected = _expected(quirky_dataset, cfg.INPUT.FORMAT)
    predictor = BatchPredictor(cfg)
    seen: list[torch.Tensor] = []
    predictor.model.register_forward_pre_hook(
        lambda _m, args: seen.extend(x["image"] for x in args[0])
    )
    paths = [type(tmp_path)(f) for f in quirky_dataset]
    run_on_images(predictor, paths, tmp_path / "out", lambda image, _inst: image, batch_size=1)
    assert len(seen) == 3
    for got, want, file in zip(seen, expected, quirky_dataset, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.astype(np.float32), err_msg=file)


_READ_ONLY_MASK_SCRIPT = """
import sys, warnings
if sys.argv[1] == "with_instseg_d2":
    import instseg_d2
import numpy as np
from detectron2.data import detection_utils
mask = np.zeros((8, 8), dtype=np.uint8)
mask[2:5, 2:5] = 1
mask.setflags(write=False)  # what Detectron2's PIL resize of a bitmask returns
annotation = {"bbox": [2, 2, 5, 5], "bbox_mode": 0, "category_id": 0, "segmentation": mask}
with warnings.catch_warnings(record=True) as caught:  # keeps the filters in place
    detection_utils.annotations_to_instances([annotation], (8, 8), mask_format="bitmask")
print(sum("not writable" in str(w.message) for w in caught))
"""


@pytest.mark.parametrize(
    "importer, expected", [("with_instseg_d2", "0"), ("detectron2_alone", "1")]
)
def test_read_only_masks_do_not_warn_once_the_package_is_imported(tmp_path, importer, expected):
    """make demo printed PyTorch's "NumPy array is not writable" warning at the first training
    batch; the package's filter silences it for Detectron2's call only (subprocess: PyTorch warns
    once per process)."""
    import subprocess
    import sys

    script = tmp_path / "read_only_mask.py"
    script.write_text(_READ_ONLY_MASK_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), importer], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == expected
