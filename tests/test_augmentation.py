"""Large-scale jitter and photometric jitter in the training mapper."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, BoxMode, polygons_to_bitmask
from detectron2.utils.env import seed_all_rng
from PIL import Image

from instseg_d2.config import get_instseg_cfg
from instseg_d2.data.augmentation import build_train_augmentations
from instseg_d2.data.augmentation.photometric import InRGBOrder
from instseg_d2.data.dataset_mapper import build_dataset_mapper
from instseg_d2.utils.errors import ConfigError

H, W = 48, 64
BOXES = [(2, 2, 30, 40), (36, 10, 62, 46)]  # x0, y0, x1, y1


@pytest.fixture
def record(tmp_path):
    def make(mask_format: str, shape: str = "rectangle") -> dict:
        """Two objects in BOXES, rectangles or right triangles (whose box shrinks in a crop)."""
        path = tmp_path / "image.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (H, W, 3), np.uint8)).save(path)
        annotations = []
        for x0, y0, x1, y1 in BOXES:
            corners = [x0, y0, x1, y0, x1, y1, x0, y1]
            polygon = corners if shape == "rectangle" else corners[:6]
            if mask_format == "polygon":
                segmentation = [polygon]
            else:
                mask = polygons_to_bitmask([polygon], H, W).astype(np.uint8)
                segmentation = mask_util.encode(np.asfortranarray(mask))
            annotations.append({"bbox": [x0, y0, x1, y1], "bbox_mode": BoxMode.XYXY_ABS,
                                "category_id": 0, "segmentation": segmentation, "iscrowd": 0})  # fmt: skip
        return {"file_name": str(path), "height": H, "width": W, "image_id": 0,
                "annotations": annotations}  # fmt: skip

    return make


def _masks(instances) -> torch.Tensor:
    """The instance masks as an (N, H, W) bool tensor, polygons rasterized."""
    masks = instances.gt_masks
    if not isinstance(masks, BitMasks):
        masks = BitMasks.from_polygon_masks(masks, *instances.image_size)
    return masks.tensor


def _cfg(*opts):
    cfg = get_instseg_cfg()
    cfg.merge_from_list(["MODEL.MASK_ON", "True", "INPUT.MIN_SIZE_TRAIN", f"({H},)",
                         "INPUT.MAX_SIZE_TRAIN", "1000", "INPUT.RANDOM_FLIP", "none", *opts])  # fmt: skip
    return cfg


def _lsj(scale: float, mask_format: str):
    return _cfg("INPUT.MASK_FORMAT", mask_format, "INSTSEG.AUG.LSJ.ENABLED", "True",
                "INSTSEG.AUG.LSJ.SIZE", "64", "INSTSEG.AUG.LSJ.MIN_SCALE", str(scale),
                "INSTSEG.AUG.LSJ.MAX_SCALE", str(scale))  # fmt: skip


@pytest.mark.parametrize("mask_format", ["bitmask", "polygon"])
def test_lsj_scaled_down_pads_without_growing_the_masks(record, mask_format):
    # 0.5 of 64 x 64: the 48 x 64 image becomes 24 x 32, padded at the right and bottom.
    out = build_dataset_mapper(_lsj(0.5, mask_format), is_train=True)(record(mask_format))
    assert tuple(out["image"].shape) == (3, 64, 64)
    assert (out["image"][:, 24:, :] == 128).all() and (out["image"][:, :, 32:] == 128).all()
    masks = _masks(out["instances"])
    assert masks.shape == (2, 64, 64)
    assert not masks[:, 24:, :].any() and not masks[:, :, 32:].any(), "padding became foreground"
    boxes = out["instances"].gt_boxes.tensor
    assert torch.equal(boxes, out["instances"].gt_masks.get_bounding_boxes().tensor)
    assert boxes.tolist() == [[1, 1, 15, 20], [18, 5, 31, 23]]


@pytest.mark.parametrize("mask_format", ["bitmask", "polygon"])
def test_lsj_scaled_up_crops_and_boxes_follow_the_masks(record, mask_format):
    # 2 x 64: the image becomes 96 x 128, and a random 64 x 64 window of it is kept.
    mapper = build_dataset_mapper(_lsj(2.0, mask_format), is_train=True)
    seen_cut = False
    for seed in range(8):
        seed_all_rng(seed)
        out = mapper(record(mask_format, shape="triangle"))
        assert tuple(out["image"].shape) == (3, 64, 64)
        instances = out["instances"]
        # The extent of what is left of each mask (polygons: of their corners), not the clipped
        # box, which a crop leaves too large for a triangle.
        boxes = instances.gt_masks.get_bounding_boxes().tensor
        assert torch.equal(instances.gt_boxes.tensor, boxes)
        assert _masks(instances).flatten(1).any(1).all(), "empty instances are dropped"
        # A box that touches the window's edge while its object went on is cut by the crop.
        seen_cut |= bool((instances.gt_boxes.tensor[:, 2:] == 64).any())
    assert seen_cut


def test_lsj_size_defaults_to_the_largest_training_size():
    augs = build_train_augmentations(_cfg("INPUT.MIN_SIZE_TRAIN", "(96, 128)",
                                          "INSTSEG.AUG.LSJ.ENABLED", "True"))  # fmt: skip
    assert isinstance(augs[0], T.ResizeScale) and augs[0].target_height == 128
    assert isinstance(augs[1], T.FixedSizeCrop) and augs[1].crop_size == (128, 128)
    with pytest.raises(ConfigError, match="both crop"):
        build_train_augmentations(
            _cfg("INSTSEG.AUG.LSJ.ENABLED", "True", "INPUT.CROP.ENABLED", "True")
        )


def test_photometric_jitter_comes_after_the_geometric_augmentations():
    augs = build_train_augmentations(_cfg("INPUT.RANDOM_FLIP", "horizontal",
                                          "INSTSEG.AUG.PHOTOMETRIC.ENABLED", "True"))  # fmt: skip
    names = [type(a).__name__ for a in augs]
    assert names == ["ResizeShortestEdge", "RandomFlip", "RandomBrightness", "RandomContrast",
                     "InRGBOrder", "InRGBOrder"]  # fmt: skip
    # AlexNet's 0.1 is for [0, 1] colours: 25.5 on Detectron2's 0..255 pixels.
    assert augs[-1].augmentation.scale == pytest.approx(25.5)
    plain = build_train_augmentations(_cfg())
    assert [type(a).__name__ for a in plain] == ["ResizeShortestEdge"]


@pytest.mark.parametrize(
    "augmentation",
    [T.RandomSaturation(0.2, 0.2), T.RandomLighting(60.0)],
    ids=lambda a: type(a).__name__,
)
def test_rgb_augmentations_weigh_each_colour_right_on_bgr_images(augmentation):
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 250  # strongly red: a channel mix-up shows
    np.random.seed(3)
    expected = augmentation.get_transform(rgb).apply_image(rgb)
    np.random.seed(3)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    result = InRGBOrder(augmentation).get_transform(bgr).apply_image(bgr)
    assert np.array_equal(result, expected[:, :, ::-1])
    assert not np.array_equal(result, augmentation.get_transform(bgr).apply_image(bgr))


def test_validation_loss_mapper_keeps_only_its_resize(record):
    cfg = _lsj(0.5, "bitmask")
    cfg.INSTSEG.AUG.PHOTOMETRIC.ENABLED = True
    resize = T.ResizeShortestEdge(H, 1000)
    mapper = build_dataset_mapper(cfg, is_train=True, augmentations=[resize])
    assert [type(a).__name__ for a in mapper.augmentations.augs] == ["ResizeShortestEdge"]
    out = mapper(record("bitmask"))
    assert tuple(out["image"].shape) == (3, H, W)
