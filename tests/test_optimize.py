"""The inference/training speed-ups keep results: each is checked against the unmodified model."""

from __future__ import annotations

import copy

import pytest
import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d, ROIAlign
from torch import nn
from torchvision.models.resnet import Bottleneck
from torchvision.ops.misc import FrozenBatchNorm2d as TVFrozenBatchNorm2d

from benchmarks.detection_match import Detections, compare_detections
from benchmarks.models import (
    benchmark_cfg,
    build_ours,
    build_torchvision,
    copy_torchvision_weights,
)
from instseg_d2.modeling.optimize import (
    FrozenBNConv2d,
    autocast_context,
    cast_weights_for_autocast,
    compile_backbone,
    fold_frozen_batchnorm,
    fuse_frozen_batchnorm_for_training,
    keep_output_layers_fp32,
    optimize_for_inference,
    rcnn_inference,
    to_channels_last,
    use_cpu_roi_align,
)
from instseg_d2.modeling.roi_align import CPUROIAlign


def _randomize_frozen_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-identity statistics, so that a wrong fold changes the output."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (FrozenBatchNorm2d, TVFrozenBatchNorm2d)):
            n = m.weight.numel()
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.randn(n, generator=g))
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


class _D2Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = Conv2d(3, 8, 3, padding=1, bias=False, norm=FrozenBatchNorm2d(8))
        self.conv2 = Conv2d(8, 8, 3, padding=1, bias=True, norm=FrozenBatchNorm2d(8))

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)))


@torch.no_grad()
def test_fold_frozen_batchnorm_detectron2_conv_is_exact():
    torch.manual_seed(0)
    model = _D2Block().eval()
    _randomize_frozen_bn(model)
    x = torch.randn(2, 3, 17, 19)
    expected = model(x)
    assert fold_frozen_batchnorm(model) == 2
    assert model.conv1.norm is None and model.conv2.norm is None
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_fold_frozen_batchnorm_torchvision_bottleneck_is_exact():
    torch.manual_seed(0)
    downsample = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), TVFrozenBatchNorm2d(32))
    block = Bottleneck(16, 8, downsample=downsample, norm_layer=TVFrozenBatchNorm2d).eval()
    _randomize_frozen_bn(block)
    x = torch.randn(2, 16, 9, 11)
    expected = block(x)
    assert fold_frozen_batchnorm(block) == 4  # bn1, bn2, bn3 and the downsample's
    assert not any(isinstance(m, TVFrozenBatchNorm2d) for m in block.modules())
    torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-4)


def test_fused_frozen_bn_conv_trains_like_the_original():
    torch.manual_seed(0)
    original = _D2Block().train()
    with torch.no_grad():
        _randomize_frozen_bn(original)
    fused = copy.deepcopy(original)
    assert fuse_frozen_batchnorm_for_training(fused) == 2
    assert isinstance(fused.conv1, FrozenBNConv2d)
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


def test_fold_leaves_trainable_batchnorm_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert fold_frozen_batchnorm(model) == 0
    assert isinstance(model[1], nn.BatchNorm2d)


@pytest.fixture(scope="module")
def tiny_pair():
    """Our R18-FPN Mask R-CNN and torchvision's, same random weights, 128 px, few RoIs."""
    torch.manual_seed(0)
    cfg = benchmark_cfg(
        min_size=128,
        max_size=160,
        opts=[
            "MODEL.RESNETS.DEPTH", "18",
            "MODEL.RPN.POST_NMS_TOPK_TEST", "64",
            "TEST.DETECTIONS_PER_IMAGE", "8",
        ],
    )  # fmt: skip
    tv = build_torchvision(cfg).eval()
    ours = build_ours(cfg).eval()
    copy_torchvision_weights(tv, ours)
    image = torch.randint(0, 256, (3, 128, 160), dtype=torch.uint8)
    return cfg, ours, tv, image


def _infer(model, image, autocast=False):
    with torch.inference_mode():
        out = rcnn_inference(
            model, [{"image": image, "height": 128, "width": 160}], autocast=autocast
        )
    return Detections.from_instances(out[0]["instances"])


def test_copied_weights_give_torchvision_backbone_features(tiny_pair):
    _, ours, tv, image = tiny_pair
    rgb = image.flip(0).float() / 255.0
    with torch.inference_mode():
        normalized = tv.transform.normalize(rgb)
        theirs = tv.backbone(normalized[None])
        bgr = image.float()[None]
        mine = ours.backbone((bgr - ours.pixel_mean) / ours.pixel_std)
    assert [v.shape for v in mine.values()] == [v.shape for v in theirs.values()]
    for a, b in zip(mine.values(), theirs.values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * b.abs().max().item())


def test_optimize_for_inference_keeps_predictions(tiny_pair):
    _, ours, _, image = tiny_pair
    reference = _infer(ours, image)
    optimized = optimize_for_inference(copy.deepcopy(ours))
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in optimized.modules())
    conv = optimized.backbone.bottom_up.stem.conv1
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    candidate = _infer(optimized, image)
    agreement = compare_detections([reference], [candidate])
    assert len(reference.boxes) > 0
    assert agreement.matched_fraction == 1.0
    assert agreement.max_box_abs_diff < 1e-2
    assert agreement.max_score_abs_diff < 1e-3
    assert agreement.mean_mask_iou > 0.99


@pytest.mark.slow
def test_compiled_backbone_keeps_predictions(tiny_pair):
    # Inductor compiles for ~20-60 s on 2 cores: slow-marked.
    _, ours, _, image = tiny_pair
    reference = _infer(ours, image)
    model = compile_backbone(optimize_for_inference(copy.deepcopy(ours)))
    agreement = compare_detections([reference], [_infer(model, image)])
    assert agreement.matched_fraction == 1.0
    assert agreement.max_box_abs_diff < 1e-2


def test_autocast_inference_returns_fp32_full_size_outputs(tiny_pair):
    _, ours, _, image = tiny_pair
    with torch.inference_mode():
        out = rcnn_inference(
            optimize_for_inference(copy.deepcopy(ours)),
            [{"image": image, "height": 64, "width": 80}],
            autocast=True,
        )[0]["instances"]
    assert out.image_size == (64, 80)
    assert out.scores.dtype == torch.float32
    assert out.pred_boxes.tensor.dtype == torch.float32
    assert out.pred_masks.shape[1:] == (64, 80)


def test_output_layers_stay_fp32_under_autocast(tiny_pair):
    _, ours, _, _ = tiny_pair
    model = copy.deepcopy(ours)
    features = torch.randn(5, 1024)
    with autocast_context("cpu"):
        assert model.roi_heads.box_head.fc1(torch.randn(2, 256 * 49)).dtype == torch.bfloat16
        assert keep_output_layers_fp32(model) == 4
        scores, deltas = model.roi_heads.box_predictor(features.bfloat16())
    assert scores.dtype == torch.float32 and deltas.dtype == torch.float32
    expected_scores, _ = ours.roi_heads.box_predictor(features.bfloat16().float())
    torch.testing.assert_close(scores, expected_scores)


def test_weights_cast_once_give_the_same_autocast_outputs(tiny_pair):
    """Storing the weights in bf16 is what autocast does per call: bit-identical detections."""
    _, ours, _, image = tiny_pair
    per_call = optimize_for_inference(copy.deepcopy(ours))
    keep_output_layers_fp32(per_call)
    cast_once = copy.deepcopy(per_call)
    assert cast_weights_for_autocast(cast_once) > 0
    weights = dict(cast_once.named_parameters())
    assert weights["backbone.bottom_up.stem.conv1.weight"].dtype == torch.bfloat16
    assert weights["roi_heads.box_head.fc1.weight"].dtype == torch.bfloat16
    # The output layers keep their fp32 weights.
    assert weights["roi_heads.box_predictor.cls_score.weight"].dtype == torch.float32
    assert weights["roi_heads.mask_head.predictor.weight"].dtype == torch.float32
    expected = _infer(per_call, image, autocast=True)
    got = _infer(cast_once, image, autocast=True)
    assert len(got.boxes) == len(expected.boxes) > 0
    assert torch.equal(got.boxes, expected.boxes)
    assert torch.equal(got.scores, expected.scores)
    assert torch.equal(got.masks, expected.masks)


def test_channels_last_model_keeps_outputs():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))

        def forward(self, x):
            return self.backbone(x)

    net = Net().eval()
    x = torch.randn(1, 3, 20, 24)
    expected = net(x)
    to_channels_last(net)
    assert net.backbone[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-4)


def test_use_cpu_roi_align_wraps_every_level(tiny_pair):
    _, ours, _, _ = tiny_pair
    model = copy.deepcopy(ours)
    assert use_cpu_roi_align(model) == 8  # 4 FPN levels x (box, mask) poolers
    assert use_cpu_roi_align(model) == 8  # idempotent: no double wrapping
    assert all(
        isinstance(p, CPUROIAlign) and isinstance(p.roi_align, ROIAlign)
        for p in model.roi_heads.box_pooler.level_poolers
    )
    assert len(model.roi_heads._forward_pre_hooks) == 1  # the fp32 cast, registered once


def test_autocast_context_switches_dtype():
    a = torch.randn(4, 4)
    with autocast_context("cpu", enabled=True):
        assert (a @ a).dtype == torch.bfloat16
    with autocast_context("cpu", enabled=False):
        assert (a @ a).dtype == torch.float32
