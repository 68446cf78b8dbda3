"""The two models compared by the benchmark, built with matched settings and the same weights.

Ours is the model-zoo R50-FPN Mask R-CNN as this project builds it
(``configs/Base-InstSegRCNN.yaml``: Detectron2's ``mask_rcnn_R_50_FPN_3x.yaml`` with the project's
components); theirs is the torchvision fine-tuning tutorial's ``maskrcnn_resnet50_fpn`` built
from the same config values, so that both sides do the same work. The mapping of settings is in
:func:`torchvision_kwargs` and in BENCHMARKS.md. Our side runs from a checkpoint of torchvision's
random weights (:func:`save_shared_weights`), loaded the way users load theirs.
"""

from __future__ import annotations

import os
import re

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from torch import nn

from instseg_d2.config import load_config
from instseg_d2.modeling.speedups import override_all

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS_CONFIG = os.path.join(REPO_ROOT, "configs", "Base-InstSegRCNN.yaml")


def benchmark_cfg(
    config_file: str | None = None,
    *,
    min_size: int = 800,
    max_size: int = 1333,
    num_classes: int = 1,
    device: str = "cpu",
    opts: list[str] | None = None,
) -> CfgNode:
    """Config of our side: ``configs/Base-InstSegRCNN.yaml`` (or ``config_file``), no weights.

    ``RESNETS.STRIDE_IN_1X1`` is set to False so that our ResNet has the stride in the 3x3 conv like
    torchvision's: the same FLOPs on both sides (the MSRA default would give us a free ~5%).
    """
    cfg = load_config(config_file or OURS_CONFIG)
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.INPUT.MIN_SIZE_TRAIN = (min_size,)
    cfg.INPUT.MIN_SIZE_TEST = min_size
    cfg.INPUT.MAX_SIZE_TRAIN = max_size
    cfg.INPUT.MAX_SIZE_TEST = max_size
    # PennFudan masks are registered as RLE; no random flip, so both sides see the same pixels.
    cfg.INPUT.MASK_FORMAT = "bitmask"
    cfg.INPUT.RANDOM_FLIP = "none"
    # From random weights a FrozenBN model diverges at the model zoo's LR; a small LR and
    # per-parameter gradient-norm clipping (the same on both sides) keep a fixed number of steps
    # finite.
    cfg.SOLVER.BASE_LR = 0.002
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
    # Only Trainer.run_step is timed, without the hooks that step the LR schedule: no warm-up, so
    # that our steps run at BASE_LR like torchvision's (not at WARMUP_FACTOR times it).
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.merge_from_list(list(opts or []))
    if cfg.MODEL.RESNETS.DEPTH in (18, 34):
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64  # Detectron2 needs this for basic blocks
    if cfg.MODEL.RESNETS.NORM != "FrozenBN" or cfg.MODEL.FPN.NORM:
        raise ValueError(
            "the torchvision side mirrors a FrozenBN ResNet with a plain FPN; "
            f"got RESNETS.NORM={cfg.MODEL.RESNETS.NORM!r}, FPN.NORM={cfg.MODEL.FPN.NORM!r}"
        )
    return cfg


def torchvision_kwargs(cfg: CfgNode) -> dict:
    """``MaskRCNN(**kwargs)`` settings equal to ``cfg``'s (the benchmark's settings mapping)."""
    return {
        "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1,  # torchvision counts the background
        "min_size": cfg.INPUT.MIN_SIZE_TEST,
        "max_size": cfg.INPUT.MAX_SIZE_TEST,
        "rpn_pre_nms_top_n_train": cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN,
        "rpn_post_nms_top_n_train": cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN,
        "rpn_pre_nms_top_n_test": cfg.MODEL.RPN.PRE_NMS_TOPK_TEST,
        "rpn_post_nms_top_n_test": cfg.MODEL.RPN.POST_NMS_TOPK_TEST,
        "rpn_nms_thresh": cfg.MODEL.RPN.NMS_THRESH,
        "rpn_batch_size_per_image": cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE,
        "rpn_positive_fraction": cfg.MODEL.RPN.POSITIVE_FRACTION,
        "box_batch_size_per_image": cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE,
        "box_positive_fraction": cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION,
        "box_score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
        "box_nms_thresh": cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
        "box_detections_per_img": cfg.TEST.DETECTIONS_PER_IMAGE,
    }


def build_torchvision(cfg: CfgNode) -> nn.Module:
    """torchvision's ``maskrcnn_resnet50_fpn`` as the fine-tuning tutorial builds it, no weights.

    The tutorial starts from pretrained weights, which makes torchvision use FrozenBatchNorm2d and
    train the last 3 ResNet stages; with ``weights=None`` it would switch to trainable BatchNorm and
    all 5 stages. We keep the tutorial's structure (FrozenBN, 3 trainable stages, like our
    ``FREEZE_AT: 2``) and only leave out the download. RoIAlign sampling ratios follow ``cfg``.
    """
    from torchvision import models
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops.misc import FrozenBatchNorm2d

    trainable_layers = 5 - cfg.MODEL.BACKBONE.FREEZE_AT
    depth = cfg.MODEL.RESNETS.DEPTH
    if depth not in (18, 34, 50, 101, 152):
        raise ValueError(f"torchvision has no ResNet-{depth} (MODEL.RESNETS.DEPTH)")
    resnet = getattr(models, f"resnet{depth}")(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(resnet, trainable_layers)
    levels = ["0", "1", "2", "3"]
    box_pool = MultiScaleRoIAlign(
        levels,
        cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION,
        cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
    )
    mask_pool = MultiScaleRoIAlign(
        levels,
        cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION,
        cfg.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO,
    )
    model = MaskRCNN(
        backbone, box_roi_pool=box_pool, mask_roi_pool=mask_pool, **torchvision_kwargs(cfg)
    )
    return model.to(cfg.MODEL.DEVICE)


# torchvision name prefix -> Detectron2 name prefix, for the layers renamed one to one (ResNet
# blocks, FPN levels and mask-head convs are renumbered in _d2_name).
_TV_TO_D2_RULES: tuple[tuple[str, str], ...] = (
    (r"^backbone\.body\.conv1\.", "backbone.bottom_up.stem.conv1."),
    (r"^backbone\.body\.bn1\.", "backbone.bottom_up.stem.conv1.norm."),
    (r"^rpn\.head\.conv\.0\.0\.", "proposal_generator.rpn_head.conv."),
    (r"^rpn\.head\.cls_logits\.", "proposal_generator.rpn_head.objectness_logits."),
    (r"^rpn\.head\.bbox_pred\.", "proposal_generator.rpn_head.anchor_deltas."),
    (r"^roi_heads\.box_head\.fc6\.", "roi_heads.box_head.fc1."),
    (r"^roi_heads\.box_head\.fc7\.", "roi_heads.box_head.fc2."),
    (r"^roi_heads\.box_predictor\.", "roi_heads.box_predictor."),
    (r"^roi_heads\.mask_predictor\.conv5_mask\.", "roi_heads.mask_head.deconv."),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.", "roi_heads.mask_head.predictor."),
)


def _d2_name(tv_name: str) -> str:
    """Detectron2's name of a torchvision Mask R-CNN state-dict entry."""
    m = re.match(r"^backbone\.body\.layer(\d)\.(\d+)\.(conv|bn)(\d)\.(.*)$", tv_name)
    if m:
        stage, block, kind, idx, rest = m.groups()
        suffix = "" if kind == "conv" else "norm."
        return f"backbone.bottom_up.res{int(stage) + 1}.{block}.conv{idx}.{suffix}{rest}"
    m = re.match(r"^backbone\.body\.layer(\d)\.(\d+)\.downsample\.([01])\.(.*)$", tv_name)
    if m:
        stage, block, which, rest = m.groups()
        suffix = "" if which == "0" else "norm."
        return f"backbone.bottom_up.res{int(stage) + 1}.{block}.shortcut.{suffix}{rest}"
    m = re.match(r"^backbone\.fpn\.(inner|layer)_blocks\.(\d)\.0\.(.*)$", tv_name)
    if m:
        kind, level, rest = m.groups()
        prefix = "fpn_lateral" if kind == "inner" else "fpn_output"
        return f"backbone.{prefix}{int(level) + 2}.{rest}"
    m = re.match(r"^roi_heads\.mask_head\.(\d)\.0\.(.*)$", tv_name)
    if m:
        idx, rest = m.groups()
        return f"roi_heads.mask_head.mask_fcn{int(idx) + 1}.{rest}"
    for pattern, replacement in _TV_TO_D2_RULES:
        if re.match(pattern, tv_name):
            return re.sub(pattern, replacement, tv_name)
    raise KeyError(f"no Detectron2 name for torchvision parameter {tv_name!r}")


def set_torchvision_normalization(cfg: CfgNode, tv_model: nn.Module) -> None:
    """Our input normalisation (``MODEL.PIXEL_MEAN/STD``) set to torchvision's: RGB ImageNet
    mean/std in 0-1 units, as BGR 0-255 values."""
    transform = tv_model.transform
    cfg.MODEL.PIXEL_MEAN = [m * 255.0 for m in reversed(transform.image_mean)]
    cfg.MODEL.PIXEL_STD = [s * 255.0 for s in reversed(transform.image_std)]


def copy_torchvision_weights(tv_model: nn.Module, ours: nn.Module) -> None:
    """Give ``ours`` the (random) weights of ``tv_model`` so both compute the same function.

    Random initialisations differ between the libraries (Detectron2's un-normalised FrozenBN
    ResNet blows its features up to ~1e3 and the RPN then keeps a handful of proposals, while
    torchvision's keeps ~1000), which would make "the same work" a lie. With shared weights (and
    :func:`set_torchvision_normalization`) both sides propose, classify and paste the same number
    of instances. conv1's input channels are flipped to BGR. Class order differs: torchvision's
    class 0 is background, Detectron2's background is the last logit, and its box/mask outputs
    have no background row.
    """
    tv_state = tv_model.state_dict()
    d2_state = ours.state_dict()
    new_state = {}
    for tv_name, value in tv_state.items():
        name = _d2_name(tv_name)
        if name not in d2_state:
            raise KeyError(f"{tv_name!r} maps to {name!r}, which our model does not have")
        if name == "backbone.bottom_up.stem.conv1.weight":
            value = value.flip(1)  # RGB -> BGR input channels
        elif name.startswith("roi_heads.box_predictor.cls_score."):
            value = torch.cat([value[1:], value[:1]])  # background: first -> last
        elif name.startswith("roi_heads.box_predictor.bbox_pred."):
            value = value[4:]  # drop the background's box deltas
        elif name.startswith("roi_heads.mask_head.predictor."):
            value = value[1:]
        if value.shape != d2_state[name].shape:
            raise ValueError(
                f"{tv_name} {tuple(value.shape)} != {name} {tuple(d2_state[name].shape)}"
            )
        new_state[name] = value
    missing = [k for k in d2_state if k not in new_state and not k.endswith("num_batches_tracked")]
    if missing:
        raise KeyError(f"our parameters without a torchvision counterpart: {missing}")
    ours.load_state_dict(new_state, strict=False)


def save_shared_weights(cfg: CfgNode, tv_model: nn.Module, folder: str) -> str:
    """Write torchvision's weights as a checkpoint of our model; returns its path, for
    ``MODEL.WEIGHTS``. Also sets ``cfg``'s normalisation to torchvision's (not in checkpoints)."""
    set_torchvision_normalization(cfg, tv_model)
    ours = build_model(override_all(cfg, False))
    copy_torchvision_weights(tv_model, ours)
    DetectionCheckpointer(ours, save_dir=folder).save("shared_weights")
    return os.path.join(folder, "shared_weights.pth")
