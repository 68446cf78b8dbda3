"""The model components' speed-ups keep results: each is checked against Detectron2's own model.

Tolerances (the existing equality tests'): fp32 speed-ups give the same detections, box corners
within 0.01 px, scores within 1e-3, mask IoU > 0.99; layers exact to 1e-4.
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d, ROIAlign
from detectron2.modeling import GeneralizedRCNN, build_backbone, build_model
from torch import nn

from benchmarks.detection_match import Detections, compare_detections
from benchmarks.models import (
    benchmark_cfg,
    build_torchvision,
    copy_torchvision_weights,
    set_torchvision_normalization,
)
from instseg_d2.config import get_instseg_cfg
from instseg_d2.modeling.frozen_bn import (
    FrozenBNConv2d,
    build_frozen_bn_convs,
    fold_frozen_batchnorm,
)
from instseg_d2.modeling.inference_step import (
    cast_weights_for_autocast,
    compile_backbone,
    prepare_for_inference,
)
from instseg_d2.modeling.meta_arch import InstSegRCNN
from instseg_d2.modeling.precision import autocast_context
from instseg_d2.modeling.roi_align import CPUROIAlign
from instseg_d2.modeling.roi_heads import EmbeddingBagROIPooler
from instseg_d2.modeling.speedups import (
    SpeedupConfigError,
    override_all,
    resolve_auto,
    speedup_enabled,
)

# Detectron2's own classes for what configs/Base-InstSegRCNN.yaml selects.
PLAIN_COMPONENTS = [
    "MODEL.META_ARCHITECTURE", "GeneralizedRCNN",
    "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
    "MODEL.PROPOSAL_GENERATOR.NAME", "RPN",
    "MODEL.RPN.HEAD_NAME", "StandardRPNHead",
    "MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead",
]  # fmt: skip


def _randomize_frozen_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-identity statistics, so that a wrong fold or fused conv changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                n = m.weight.numel()
                m.weight.copy_(torch.rand(n, generator=g) * 0.4 + 0.8)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.4 + 0.8)


class _D2Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = Conv2d(3, 8, 3, padding=1, bias=False, norm=FrozenBatchNorm2d(8))
        self.conv2 = Conv2d(8, 8, 3, padding=1, bias=True, norm=FrozenBatchNorm2d(8))
        self.convs = [self.conv1, self.conv2]  # a plain list, as Detectron2's FPN keeps

    def forward(self, x):
        return self.convs[1](torch.relu(self.convs[0](x)))


@torch.no_grad()
def test_fold_frozen_batchnorm_is_exact():
    torch.manual_seed(0)
    model = _D2Block().eval()
    _randomize_frozen_bn(model)
    x = torch.randn(2, 3, 17, 19)
    expected = model(x)
    assert fold_frozen_batchnorm(model) == 2
    assert model.conv1.norm is None and model.conv2.norm is None
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


def test_frozen_bn_convs_train_like_the_original():
    torch.manual_seed(0)
    original = _D2Block().train()
    _randomize_frozen_bn(original)
    fused = copy.deepcopy(original)
    assert build_frozen_bn_convs(fused) == 2
    # The list the forward pass reads holds the new convs too, not the replaced ones.
    assert all(isinstance(c, FrozenBNConv2d) for c in (fused.conv1, *fused.convs))
    assert fused.state_dict().keys() == original.state_dict().keys()
    x = torch.randn(2, 3, 12, 10, requires_grad=True)
    out_a, out_b = original(x), fused(x)
    torch.testing.assert_close(out_b, out_a, rtol=1e-4, atol=1e-4)
    grad = torch.randn_like(out_a)
    out_a.backward(grad)
    out_b.backward(grad)
    for name in ("conv1.weight", "conv2.weight", "conv2.bias"):
        a = dict(original.named_parameters())[name].grad
        b = dict(fused.named_parameters())[name].grad
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_frozen_bn_convs_in_an_fpn_with_frozen_bn():
    # FPN keeps its convs in plain lists that its forward iterates: they must be replaced too.
    cfg = get_instseg_cfg()
    cfg.merge_from_list(["MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
                         "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
                         "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']",
                         "MODEL.FPN.IN_FEATURES", "['res2', 'res3', 'res4', 'res5']",
                         "MODEL.FPN.NORM", "FrozenBN", "MODEL.FPN.OUT_CHANNELS", "32"])  # fmt: skip
    torch.manual_seed(0)
    fpn = build_backbone(cfg).eval()
    _randomize_frozen_bn(fpn)
    x = torch.randn(1, 3, 64, 96)
    expected = fpn(x)
    assert build_frozen_bn_convs(fpn) == 20 + 8  # ResNet-18 convs + 4 lateral, 4 output
    assert all(isinstance(c, FrozenBNConv2d) for c in fpn.lateral_convs + fpn.output_convs)
    for name, value in fpn(x).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-4, atol=1e-4)


def test_fold_leaves_trainable_norms_alone():
    model = nn.Sequential(
        Conv2d(3, 4, 3, norm=nn.BatchNorm2d(4)), Conv2d(4, 4, 3, norm=nn.GroupNorm(2, 4))
    )
    assert fold_frozen_batchnorm(model) == 0 and build_frozen_bn_convs(model) == 0
    assert isinstance(model[0].norm, nn.BatchNorm2d) and isinstance(model[1].norm, nn.GroupNorm)


def test_speedup_keys():
    cfg = get_instseg_cfg()
    cfg.MODEL.DEVICE = "cpu"
    assert speedup_enabled(cfg, "INSTSEG.CHANNELS_LAST")  # auto: on CPU
    cfg.MODEL.DEVICE = "cuda"
    assert not speedup_enabled(cfg, "INSTSEG.CHANNELS_LAST")  # auto: off on a GPU
    # The Trainer's rule: "auto" follows INSTSEG.OPTIMIZE_TRAINING, explicit values stay.
    cfg.INSTSEG.CPU_ROI_ALIGN = "never"
    trained = resolve_auto(cfg, True)
    assert speedup_enabled(trained, "INSTSEG.CHANNELS_LAST")
    assert not speedup_enabled(trained, "INSTSEG.CPU_ROI_ALIGN")
    assert cfg.INSTSEG.CHANNELS_LAST == "auto"  # a copy
    assert not speedup_enabled(resolve_auto(cfg, False), "INSTSEG.FROZEN_BN_ON_WEIGHTS")
    # BatchPredictor(optimize=...): every key.
    assert speedup_enabled(override_all(cfg, True), "INSTSEG.CPU_ROI_ALIGN")
    assert not speedup_enabled(override_all(cfg, False), "INSTSEG.INFERENCE.FOLD_FROZEN_BN")
    cfg.INSTSEG.CHANNELS_LAST = "yes"
    with pytest.raises(SpeedupConfigError, match="INSTSEG.CHANNELS_LAST must be one of auto"):
        speedup_enabled(cfg, "INSTSEG.CHANNELS_LAST")


@pytest.fixture(scope="module")
def tiny_models():
    """Detectron2's R18-FPN Mask R-CNN and ours with every speed-up on, with the same weights
    (torchvision's random ones, so that the RPN keeps many proposals, and non-trivial frozen
    BatchNorms), 128 px, few RoIs."""
    torch.manual_seed(0)
    cfg = benchmark_cfg(
        min_size=128,
        max_size=160,
        opts=[
            "MODEL.RESNETS.DEPTH", "18",
            "MODEL.RPN.POST_NMS_TOPK_TEST", "64",
            "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64",
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
            "TEST.DETECTIONS_PER_IMAGE", "8",
        ],
    )  # fmt: skip
    tv = build_torchvision(cfg).eval()
    set_torchvision_normalization(cfg, tv)
    ours_cfg = override_all(cfg, True)
    plain_cfg = cfg.clone()
    plain_cfg.merge_from_list(PLAIN_COMPONENTS)
    plain = build_model(plain_cfg).eval()
    copy_torchvision_weights(tv, plain)
    _randomize_frozen_bn(plain)
    ours = build_model(ours_cfg).eval()
    ours.load_state_dict(plain.state_dict())
    image = torch.randint(0, 256, (3, 128, 160), dtype=torch.uint8).float()
    return ours_cfg, plain, ours, image


def _infer(model, image, height=128, width=160) -> Detections:
    with torch.inference_mode():
        out = model([{"image": image, "height": height, "width": width}])
    return Detections.from_instances(out[0]["instances"])


def _assert_same_detections(reference: Detections, candidate: Detections) -> None:
    agreement = compare_detections([reference], [candidate])
    assert len(reference.boxes) > 0
    assert agreement.matched_fraction == 1.0
    assert agreement.max_box_abs_diff < 1e-2
    assert agreement.max_score_abs_diff < 1e-3
    assert agreement.mean_mask_iou > 0.99


def test_components_are_built_as_the_keys_say(tiny_models):
    ours_cfg, plain, ours, _ = tiny_models
    assert type(plain) is GeneralizedRCNN and isinstance(ours, InstSegRCNN)
    assert isinstance(ours.backbone.bottom_up.stem.conv1, FrozenBNConv2d)
    assert ours.backbone.bottom_up.stem.conv1.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    for pooler in (ours.roi_heads.box_pooler, ours.roi_heads.mask_pooler):
        assert isinstance(pooler, EmbeddingBagROIPooler)
        assert all(isinstance(p, CPUROIAlign) for p in pooler.level_poolers)
    off = build_model(override_all(ours_cfg, False))
    assert type(off.backbone.bottom_up.stem.conv1) is Conv2d
    assert not off.backbone.bottom_up.stem.conv1.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    assert all(isinstance(p, ROIAlign) for p in off.roi_heads.box_pooler.level_poolers)


def test_components_keep_state_dict_and_initial_weights(tiny_models):
    ours_cfg, plain, ours, _ = tiny_models
    plain_cfg = ours_cfg.clone()
    plain_cfg.merge_from_list(PLAIN_COMPONENTS)
    torch.manual_seed(1)
    fresh_plain = build_model(plain_cfg).state_dict()
    torch.manual_seed(1)
    fresh_ours = build_model(ours_cfg).state_dict()
    # Same keys and the same random initial weights from the same seed...
    assert list(fresh_ours) == list(fresh_plain)
    assert all(torch.equal(fresh_ours[k], fresh_plain[k]) for k in fresh_plain)
    # ...so checkpoints load both ways.
    copy.deepcopy(plain).load_state_dict(ours.state_dict())
    copy.deepcopy(ours).load_state_dict(plain.state_dict())


def test_speedups_keep_predictions(tiny_models):
    ours_cfg, plain, ours, image = tiny_models
    reference = _infer(plain, image)
    _assert_same_detections(reference, _infer(ours, image))
    # The inference build step: frozen BN folded into the weights.
    prepared = prepare_for_inference(copy.deepcopy(ours), ours_cfg)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in prepared.modules())
    _assert_same_detections(reference, _infer(prepared, image))


def _training_batch() -> list[dict]:
    from detectron2.structures import BitMasks, Boxes, Instances

    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 128, 160), dtype=torch.uint8, generator=g).float()
    boxes = torch.tensor([[10.0, 20.0, 60.0, 110.0], [80.0, 5.0, 150.0, 90.0]])
    masks = torch.zeros(2, 128, 160, dtype=torch.bool)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist(), strict=True):
        mask[y1:y2, x1:x2] = True
    instances = Instances((128, 160), gt_boxes=Boxes(boxes), gt_classes=torch.zeros(2).long())
    instances.gt_masks = BitMasks(masks)
    return [{"image": image, "instances": instances}]


def _losses_and_grads(model: nn.Module) -> tuple[dict, dict]:
    from detectron2.utils.events import EventStorage

    model = copy.deepcopy(model).train()
    torch.manual_seed(0)  # RPN and RoI sampling draw the same random numbers in both models
    with EventStorage():
        losses = model(_training_batch())
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


def test_speedups_keep_training_losses_and_gradients(tiny_models):
    _, plain, ours, _ = tiny_models
    losses_a, grads_a = _losses_and_grads(plain)
    losses_b, grads_b = _losses_and_grads(ours)
    assert losses_b.keys() == losses_a.keys()
    for name, value in losses_a.items():
        torch.testing.assert_close(losses_b[name], value, rtol=1e-4, atol=1e-4)
    assert grads_b.keys() == grads_a.keys() and len(grads_a) > 50
    for name, grad in grads_a.items():
        # Float rounding, amplified through the network (ReLUs at ~0 switch): multiplying the
        # plain model's weights by 1 + 1e-7 noise moves its mask-head gradients by 0.15% of
        # their largest entry; the speed-ups by 0.24%. 1% of the largest entry, per tensor.
        scale = grad.abs().max().item()
        torch.testing.assert_close(grads_b[name], grad, rtol=0, atol=1e-2 * scale)


@pytest.mark.slow
def test_compiled_backbone_keeps_predictions(tiny_models):
    # Inductor compiles for ~20-60 s on 2 cores: slow-marked.
    ours_cfg, plain, ours, image = tiny_models
    model = compile_backbone(prepare_for_inference(copy.deepcopy(ours), ours_cfg))
    _assert_same_detections(_infer(plain, image), _infer(model, image))


def _autocast_model(ours_cfg, ours, heads: list[str] = ()) -> InstSegRCNN:
    cfg = ours_cfg.clone()
    cfg.INSTSEG.INFERENCE.BF16 = True
    cfg.merge_from_list(list(heads))
    model = build_model(cfg).eval()
    model.load_state_dict(ours.state_dict())
    return model


@pytest.mark.parametrize("heads", ["ours", "Detectron2's"])
def test_autocast_inference_returns_fp32_full_size_outputs(tiny_models, heads):
    # With Detectron2's heads the network's outputs are bf16: InstSegRCNN casts them.
    ours_cfg, _, ours, image = tiny_models
    model = _autocast_model(ours_cfg, ours, PLAIN_COMPONENTS[2:] if heads != "ours" else [])
    assert model.inference_autocast
    seen: set[torch.dtype] = set()
    model.backbone.bottom_up.stem.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    with torch.inference_mode():
        out = model([{"image": image, "height": 64, "width": 80}])[0]["instances"]
    assert seen == {torch.bfloat16}  # the network ran under autocast
    assert out.image_size == (64, 80)
    assert out.scores.dtype == torch.float32
    assert out.pred_boxes.tensor.dtype == torch.float32
    assert out.pred_masks.shape[1:] == (64, 80)


def test_output_layers_stay_fp32_under_autocast(tiny_models):
    _, plain, ours, _ = tiny_models
    features = torch.randn(5, 1024).bfloat16()
    maps = [torch.randn(1, 256, 8, 10).bfloat16()]
    rois = torch.randn(3, 256, 14, 14).bfloat16()
    with autocast_context("cpu"):
        scores, deltas = ours.roi_heads.box_predictor(features)
        logits, anchor_deltas = ours.proposal_generator.rpn_head(maps)
        masks = ours.roi_heads.mask_head.layers(rois)
        plain_scores, _ = plain.roi_heads.box_predictor(features)
        plain_masks = plain.roi_heads.mask_head.layers(rois)
    assert {t.dtype for t in (scores, deltas, logits[0], anchor_deltas[0], masks)} == {
        torch.float32
    }
    assert plain_scores.dtype == plain_masks.dtype == torch.bfloat16  # Detectron2's classes
    expected_scores, _ = plain.roi_heads.box_predictor(features.float())
    torch.testing.assert_close(scores, expected_scores)


@pytest.mark.parametrize("fold", [True, False])
def test_weights_cast_once_give_the_same_autocast_outputs(tiny_models, fold):
    """Storing the weights in bf16 is what autocast does per call: bit-identical detections,
    with the frozen BatchNorms folded or applied to the weights on every call."""
    ours_cfg, _, ours, image = tiny_models
    per_call = _autocast_model(ours_cfg, ours)
    if fold:
        fold_frozen_batchnorm(per_call)
    cast_once = copy.deepcopy(per_call)
    assert cast_weights_for_autocast(cast_once) > 0
    weights = dict(cast_once.named_parameters())
    # Unfolded FrozenBNConv2d scale their fp32 weight first; autocast casts the product.
    stem = torch.bfloat16 if fold else torch.float32
    assert weights["backbone.bottom_up.stem.conv1.weight"].dtype == stem
    assert weights["roi_heads.box_head.fc1.weight"].dtype == torch.bfloat16
    # The output layers keep their fp32 weights.
    for name in (
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.mask_head.predictor.weight",
        "proposal_generator.rpn_head.objectness_logits.weight",
    ):
        assert weights[name].dtype == torch.float32, name
    expected = _infer(per_call, image)
    got = _infer(cast_once, image)
    assert len(got.boxes) == len(expected.boxes) > 0
    assert torch.equal(got.boxes, expected.boxes)
    assert torch.equal(got.scores, expected.scores)
    assert torch.equal(got.masks, expected.masks)


def test_inference_step_leaves_a_plain_model_as_built(tiny_models, caplog):
    ours_cfg, plain, _, image = tiny_models
    cfg = ours_cfg.clone()
    cfg.INSTSEG.INFERENCE.BF16 = True
    model = copy.deepcopy(plain)
    with caplog.at_level(logging.WARNING, logger="instseg_d2.modeling.inference_step"):
        prepare_for_inference(model, cfg)
    assert "needs MODEL.META_ARCHITECTURE InstSegRCNN" in caplog.text
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in model.parameters())
    _assert_same_detections(_infer(plain, image), _infer(model, image))
