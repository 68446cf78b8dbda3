"""Copy-paste: pasted pixels are the source's, covered pixels leave the masks below, boxes are
mask extents, fully covered objects are dropped; polygons and RLE; deterministic under a seed."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.structures import BoxMode, polygons_to_bitmask
from detectron2.utils.env import seed_all_rng
from PIL import Image

from instseg_d2.config import get_instseg_cfg
from instseg_d2.data.augmentation.copy_paste import CopyPaste, Placement, paste_objects
from instseg_d2.data.dataset_mapper import build_dataset_mapper
from instseg_d2.data.errors import DatasetError
from instseg_d2.utils.errors import ConfigError

H, W = 48, 64
# (x0, y0, x1, y1, category): A is partly under S1, B entirely under S2, C under nothing.
TARGET = {"A": (4, 4, 20, 30, 0), "B": (42, 12, 58, 38, 1), "C": (22, 36, 30, 46, 0)}
SOURCE = {"S1": (12, 0, 28, 20, 2), "S2": (38, 6, 62, 44, 2)}


def _annotation(box, mask_format: str) -> dict:
    x0, y0, x1, y1, category = box
    if mask_format == "polygon":
        segmentation = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    else:
        mask = np.zeros((H, W), dtype=np.uint8)
        mask[y0:y1, x0:x1] = 1
        segmentation = mask_util.encode(np.asfortranarray(mask))
    return {"bbox": [x0, y0, x1, y1], "bbox_mode": BoxMode.XYXY_ABS, "category_id": category,
            "segmentation": segmentation, "iscrowd": 0}  # fmt: skip


def _expected_mask(annotation: dict) -> np.ndarray:
    """The annotation's mask, decoded by Detectron2/pycocotools (not by the code under test)."""
    segm = annotation["segmentation"]
    if isinstance(segm, list):
        return polygons_to_bitmask(segm, H, W)
    return mask_util.decode(segm).astype(bool)


def _image(path, seed: int) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels[:, :, ::-1]  # BGR, as the mapper reads it


@pytest.fixture
def images(tmp_path):
    return {"target": (tmp_path / "target.png", _image(tmp_path / "target.png", 1)),
            "source": (tmp_path / "source.png", _image(tmp_path / "source.png", 2))}  # fmt: skip


def _dicts(images, mask_format: str) -> tuple[dict, dict]:
    def record(name, boxes, image_id):
        annotations = [_annotation(b, mask_format) for b in boxes.values()]
        return {"file_name": str(images[name][0]), "height": H, "width": W, "image_id": image_id,
                "annotations": annotations}  # fmt: skip

    return record("target", TARGET, 0), record("source", SOURCE, 1)


def _cfg(mask_format: str, *extra):
    cfg = get_instseg_cfg()
    cfg.merge_from_list([
        "MODEL.MASK_ON", "True", "INPUT.MASK_FORMAT", mask_format,
        # A 48-px short side is the image's own: the resize is the identity, and no flip.
        "INPUT.MIN_SIZE_TRAIN", f"({H},)", "INPUT.MAX_SIZE_TRAIN", "1000",
        "INPUT.RANDOM_FLIP", "none",
        "INSTSEG.COPY_PASTE.ENABLED", "True", "INSTSEG.COPY_PASTE.PROB", "1.0",
        "INSTSEG.COPY_PASTE.MAX_INSTANCES", "2", "INSTSEG.COPY_PASTE.FLIP", "False",
        # Same size as the target at scale 1: the source lands where it was.
        "INSTSEG.COPY_PASTE.MIN_SCALE", "1.0", "INSTSEG.COPY_PASTE.MAX_SCALE", "1.0",
        *extra,
    ])  # fmt: skip
    return cfg


@pytest.mark.parametrize("mask_format", ["polygon", "bitmask"])
def test_pasted_pixels_come_from_the_source_and_cover_the_masks_below(images, mask_format):
    target, source = _dicts(images, mask_format)
    mapper = build_dataset_mapper(_cfg(mask_format), is_train=True, paste_pool=[source])
    source_masks = [_expected_mask(a) for a in source["annotations"]]
    pasted_counts = set()
    for seed in range(6):
        seed_all_rng(seed)
        out = mapper(target)
        image = out["image"].permute(1, 2, 0).numpy()
        instances = out["instances"]
        masks = instances.gt_masks.tensor.numpy()
        classes = instances.gt_classes.tolist()
        pasted = [m for m, c in zip(masks, classes, strict=True) if c == 2]
        assert pasted, "PROB 1: something is pasted every time"
        pasted_counts.add(len(pasted))
        for mask in pasted:  # each pasted mask is one of the source's, where it was
            assert any(np.array_equal(mask, s) for s in source_masks)
        covered = np.logical_or.reduce(pasted)
        assert np.array_equal(image[covered], images["source"][1][covered])
        assert np.array_equal(image[~covered], images["target"][1][~covered])
        # The target's objects lose the covered pixels; B (entirely under S2) is dropped.
        expected = {}
        for name, annotation in zip(TARGET, target["annotations"], strict=True):
            visible = _expected_mask(annotation) & ~covered
            if visible.any():
                expected.setdefault(TARGET[name][4], []).append(visible)
        got = sorted((c, m.tobytes()) for m, c in zip(masks, classes, strict=True) if c != 2)
        want = sorted((c, m.tobytes()) for c, ms in expected.items() for m in ms)
        assert got == want, f"seed {seed}"
        # Every box is the extent of its mask.
        assert torch.equal(
            instances.gt_boxes.tensor, instances.gt_masks.get_bounding_boxes().tensor
        )
    assert pasted_counts == {1, 2}, "1..MAX_INSTANCES objects are pasted"


def test_copy_paste_is_deterministic_under_a_seed(images):
    target, source = _dicts(images, "polygon")
    cfg = _cfg("polygon", "INSTSEG.COPY_PASTE.PROB", "0.5", "INSTSEG.COPY_PASTE.FLIP", "True",
               "INSTSEG.COPY_PASTE.MIN_SCALE", "0.5", "INSTSEG.COPY_PASTE.MAX_SCALE", "1.5",
               "INSTSEG.AUG.LSJ.ENABLED", "True", "INSTSEG.AUG.PHOTOMETRIC.ENABLED", "True")  # fmt: skip
    mapper = build_dataset_mapper(cfg, is_train=True, paste_pool=[source, target])

    def run(seed: int) -> list[tuple]:
        seed_all_rng(seed)
        outs = [mapper(target) for _ in range(4)]
        return [(o["image"].numpy().tobytes(), o["instances"].gt_masks.tensor.numpy().tobytes(),
                 o["instances"].gt_boxes.tensor.numpy().tobytes()) for o in outs]  # fmt: skip

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_placement_flips_scales_and_moves_image_and_masks_together():
    source = np.zeros((20, 10, 3), dtype=np.uint8)
    source[2:6, 1:4] = 200  # the object, top left
    mask = source[:, :, 0] > 0
    placement = Placement(height=40, width=20, flip=True, top=-4, left=30)  # scale 2, mirrored
    image = placement.apply(source, (36, 48), is_mask=False)
    moved = placement.apply(mask, (36, 48), is_mask=True)
    # Scaled 2x: rows 4..12 -> 0..8 after the shift of -4; mirrored in a 20-wide frame: columns
    # 2..8 -> 12..18, then +30.
    assert moved.shape == (36, 48) and moved.dtype == bool
    assert np.argwhere(moved).min(0).tolist() == [0, 42] and np.argwhere(moved).max(0).tolist() == [
        7,
        47,
    ]
    assert image[3, 44].tolist() == [200, 200, 200]  # inside the object
    assert not image[:, :30].any()  # left of where the source landed
    box = placement.box(np.array([1.0, 2.0, 4.0, 6.0]), (20, 10))
    assert box.tolist() == [42.0, 0.0, 48.0, 8.0]


def test_paste_objects_drops_objects_with_too_little_left():
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    source = np.full((10, 10, 3), 9, dtype=np.uint8)
    under = np.zeros((10, 10), dtype=bool)
    under[0:10, 0:2] = True  # 20 pixels
    paste = np.zeros((10, 10), dtype=bool)
    paste[0:9, 0:2] = True  # covers 18 of them: 10% left
    result, visible = paste_objects(image, [under, under], source, [paste], min_visible=0.1)
    assert visible[0] is not None and visible[0].sum() == 2
    _, visible = paste_objects(image, [under], source, [paste], min_visible=0.11)
    assert visible == [None]
    assert (result[paste] == 9).all() and (result[~paste] == 0).all()


def test_target_without_masks_is_a_clear_error(images):
    target, source = _dicts(images, "polygon")
    del target["annotations"][0]["segmentation"]
    mapper = build_dataset_mapper(_cfg("polygon"), is_train=True, paste_pool=[source])
    seed_all_rng(0)
    with pytest.raises(DatasetError, match=r"target\.png: annotation 0 has no segmentation"):
        mapper(target)


def test_bad_settings_and_pools_are_clear_errors(images):
    target, source = _dicts(images, "polygon")
    with pytest.raises(ConfigError, match="needs MODEL.MASK_ON"):
        build_dataset_mapper(_cfg("polygon", "MODEL.MASK_ON", "False"), True, paste_pool=[source])
    with pytest.raises(ConfigError, match="MAX_INSTANCES must be >= 1"):
        CopyPaste([source], prob=1, max_instances=0, min_scale=1, max_scale=1)
    no_masks = dict(source, annotations=[{k: v for k, v in a.items() if k != "segmentation"}
                                         for a in source["annotations"]])  # fmt: skip
    with pytest.raises(DatasetError, match="none of the 1 training images has an instance"):
        CopyPaste([no_masks], prob=1, max_instances=1, min_scale=1, max_scale=1)


def test_validation_loss_mapper_does_not_paste(images):
    target, source = _dicts(images, "polygon")
    mapper = build_dataset_mapper(_cfg("polygon"), is_train=True, augmentations=[],
                                  paste_pool=[source])  # fmt: skip
    assert mapper.copy_paste is None
    assert mapper(target)["instances"].gt_classes.tolist() == [0, 1, 0]
