"""The training-step speed-ups of the GroupNorm CPU recipe keep the training dynamics.

Each component is checked on its own against what it replaces, then the whole model of the CPU
recipe (``configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml``, ResNet-18 with GroupNorm
everywhere, 128 px) against the same model built without them: the same losses and gradients up
to float rounding.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import CPU_CONFIG
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage
from torch import nn

from instseg_d2.config import load_config
from instseg_d2.modeling.group_norm import NCHWGroupNorm, build_nchw_group_norms

CL = torch.channels_last


def _channels_last(*shape: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * 3 + 1
    return x.to(dtype).contiguous(memory_format=CL).requires_grad_()


def _norm_pair(channels: int, groups: int = 4) -> tuple[nn.GroupNorm, NCHWGroupNorm]:
    torch.manual_seed(0)
    plain = nn.GroupNorm(groups, channels)
    with torch.no_grad():  # not the identity affine of a fresh GroupNorm
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-0.5, 0.5)
    return plain, NCHWGroupNorm.from_group_norm(copy.deepcopy(plain))


def _outputs_and_grads(norm: nn.Module, x: torch.Tensor, autocast: bool = False):
    x = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    norm.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = norm(x)
    g = torch.Generator().manual_seed(1)
    y.backward(torch.randn(y.shape, generator=g).to(y.dtype))
    return y, [x.grad, norm.weight.grad, norm.bias.grad]


def test_nchw_group_norm_equals_group_norm_on_channels_last_maps():
    plain, ours = _norm_pair(16)
    x = _channels_last(3, 16, 9, 11)
    y_plain, grads_plain = _outputs_and_grads(plain, x)
    y_ours, grads_ours = _outputs_and_grads(ours, x)
    assert y_ours.is_contiguous(memory_format=CL)  # the next conv gets the layout it runs fast on
    torch.testing.assert_close(y_ours, y_plain, rtol=1e-5, atol=1e-5)
    for got, expected in zip(grads_ours, grads_plain, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert grads_ours[0].is_contiguous(memory_format=CL)


def test_nchw_group_norm_under_bf16_autocast_is_as_close_to_fp64_as_group_norm():
    plain, ours = _norm_pair(32, groups=8)
    x = _channels_last(2, 32, 12, 10, dtype=torch.bfloat16)
    y_plain, grads_plain = _outputs_and_grads(plain, x, autocast=True)
    y_ours, grads_ours = _outputs_and_grads(ours, x, autocast=True)
    assert y_ours.dtype == y_plain.dtype == torch.bfloat16
    reference = copy.deepcopy(plain).double()
    y_ref, grads_ref = _outputs_and_grads(reference, x.double().contiguous(memory_format=CL))
    for got, expected, ref in zip(
        [y_ours, *grads_ours], [y_plain, *grads_plain], [y_ref, *grads_ref], strict=True
    ):
        error = (got.double() - ref).abs().max()
        # bf16 rounding of the outputs (8 bits of mantissa); the other kernel is no worse.
        assert error <= max(1.5 * (expected.double() - ref).abs().max(), 1e-6), error
        torch.testing.assert_close(got.double(), ref, rtol=2e-2, atol=5e-2)


def test_nchw_group_norm_leaves_nchw_input_to_group_norm():
    plain, ours = _norm_pair(8, groups=2)
    x = torch.randn(2, 8, 5, 7)
    assert torch.equal(ours(x), plain(x))
    assert ours(x).is_contiguous()


def test_build_nchw_group_norms_shares_parameters_and_keeps_other_norms():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.BatchNorm2d(8), nn.GroupNorm(2, 16)
    )
    weight = model[1].weight
    keys = model.state_dict().keys()
    assert build_nchw_group_norms(model) == 1
    assert type(model[1]) is NCHWGroupNorm and model[1].weight is weight
    assert type(model[2]) is nn.BatchNorm2d
    # 8 channels per group: the channels-last kernel is as fast as the copies (module docstring).
    assert type(model[3]) is nn.GroupNorm
    assert model.state_dict().keys() == keys
    assert build_nchw_group_norms(model) == 0  # already replaced


# ---- the CPU recipe's model --------------------------------------------------------------------

TINY_MODEL_OPTS = [
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "160",
]  # fmt: skip
STEP_KEYS = ("INSTSEG.NCHW_GROUP_NORM", "INSTSEG.PARALLEL_PROPOSALS", "INSTSEG.FUSED_RPN_OUTPUTS")
ALL_ON = ["INSTSEG.CHANNELS_LAST", "always", *(x for k in STEP_KEYS for x in (k, "always"))]
# The speed-ups of this file off; channels-last convs stay on in both models.
NONE_OF_THEM = ["INSTSEG.CHANNELS_LAST", "always", *(x for k in STEP_KEYS for x in (k, "never"))]


@pytest.fixture
def two_threads():
    """The RPN's threads need more than one torch thread (CI machines may have one core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def _recipe_cfg(*opts: str):
    return load_config(CPU_CONFIG, [*TINY_MODEL_OPTS, *opts])


@pytest.fixture(scope="module")
def recipe_models():
    """The CPU recipe's model with this file's speed-ups off and on, the same random weights."""
    torch.manual_seed(0)
    plain = build_model(_recipe_cfg(*NONE_OF_THEM))
    torch.manual_seed(0)
    ours = build_model(_recipe_cfg(*ALL_ON))
    return plain, ours


def test_keys_build_the_components(recipe_models):
    plain, ours = recipe_models
    norms = [m for m in ours.modules() if isinstance(m, nn.GroupNorm)]
    # ResNet-18: 17 convs and 3 shortcuts; FPN: 4 lateral and 4 output convs; mask head: 4.
    assert len(norms) == 32
    # In NCHW: the 64- and 128-channel norms of 32 groups (stem, res2, res3; the recipe's
    # 128-channel FPN and mask head).
    nchw = [m.num_channels for m in norms if type(m) is NCHWGroupNorm]
    assert sorted(nchw) == [64] * 5 + [128] * (5 + 8 + 4)
    assert not any(isinstance(m, NCHWGroupNorm) for m in plain.modules())
    assert "NCHWGroupNorm" in repr(ours)  # what Detectron2 logs as the run's model
    assert ours.proposal_generator.parallel_proposals
    assert not plain.proposal_generator.parallel_proposals
    assert ours.proposal_generator.rpn_head.fused_outputs
    assert not plain.proposal_generator.rpn_head.fused_outputs


def test_speedups_keep_state_dict_and_initial_weights(recipe_models):
    plain, ours = recipe_models
    a, b = plain.state_dict(), ours.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, same initial weights


def _training_image(seed: int, height: int = 128, width: int = 160) -> dict:
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g).float()
    boxes = torch.tensor([[10.0, 20.0, 60.0, 110.0], [80.0, 5.0, 150.0, 90.0]])
    masks = torch.zeros(2, height, width, dtype=torch.bool)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist(), strict=True):
        mask[y1:y2, x1:x2] = True
    instances = Instances((height, width), gt_boxes=Boxes(boxes), gt_classes=torch.zeros(2).long())
    instances.gt_masks = BitMasks(masks)
    return {"image": image, "instances": instances}


def _training_batch() -> list[dict]:
    """Two images of different sizes: the RPN's per-image threads have work to share."""
    return [_training_image(0), _training_image(1, height=112, width=144)]


def _losses_and_grads(model: nn.Module, bf16: bool = False) -> tuple[dict, dict]:
    model = copy.deepcopy(model).train()
    torch.manual_seed(0)  # RPN and RoI sampling draw the same random numbers in both models
    with EventStorage(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        losses = model(_training_batch())
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


def test_speedups_keep_training_losses_and_gradients(recipe_models, two_threads):
    plain, ours = recipe_models
    losses_a, grads_a = _losses_and_grads(plain)
    losses_b, grads_b = _losses_and_grads(ours)
    assert losses_b.keys() == losses_a.keys()
    for name, value in losses_a.items():
        torch.testing.assert_close(losses_b[name], value, rtol=1e-4, atol=1e-4)
    assert grads_b.keys() == grads_a.keys() and len(grads_a) > 100
    for name, grad in grads_a.items():
        # Float rounding amplified through the network, as in test_model_speedups.py: 1% of the
        # largest entry, per tensor.
        scale = grad.abs().max().item()
        torch.testing.assert_close(grads_b[name], grad, rtol=0, atol=1e-2 * scale)


def test_speedups_keep_bf16_training_losses(recipe_models):
    # Under bf16 autocast both models round to bf16 at different places (the norms sum in
    # another order): the losses agree to bf16 precision.
    plain, ours = recipe_models
    losses_a, _ = _losses_and_grads(plain, bf16=True)
    losses_b, _ = _losses_and_grads(ours, bf16=True)
    for name, value in losses_a.items():
        torch.testing.assert_close(losses_b[name], value, rtol=3e-2, atol=3e-2)


def test_group_norm_input_layout_is_what_the_norm_expects(recipe_models):
    # The norm after a channels-last conv sees channels-last maps (else it would be a no-op).
    _, ours = recipe_models
    seen = []
    norm = ours.backbone.bottom_up.res2[0].conv1.norm
    handle = norm.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].is_contiguous(memory_format=CL))
    )
    try:
        with torch.no_grad():
            ours.eval()([{"image": _training_image(0)["image"], "height": 128, "width": 160}])
    finally:
        handle.remove()
    assert seen == [True]


def _rpn_outputs(rpn, num_images: int, seed: int = 0):
    """Random objectness logits and anchor deltas for the RPN's anchors on 128x160 images."""
    g = torch.Generator().manual_seed(seed)
    strides = [4, 8, 16, 32, 64]
    features = [torch.zeros(num_images, 1, 128 // s, 160 // s) for s in strides]
    anchors = rpn.anchor_generator(features)
    # Outputs of the RPN head: they require grad, the proposals chosen from them must not.
    logits = [torch.randn(num_images, len(a), generator=g).requires_grad_() for a in anchors]
    # Small deltas: proposals near their anchors, which overlap, so that NMS removes many.
    deltas = [torch.randn(num_images, len(a), 4, generator=g) * 0.2 for a in anchors]
    sizes = [(128, 160), (100, 150), (128, 90)][:num_images]
    return anchors, logits, deltas, sizes


@pytest.mark.parametrize("training", [True, False])
def test_parallel_proposals_are_those_of_detectron2s_rpn(recipe_models, two_threads, training):
    from detectron2.modeling.proposal_generator.rpn import RPN

    _, ours = recipe_models
    rpn = copy.deepcopy(ours.proposal_generator).train(training)
    args = _rpn_outputs(rpn, num_images=3)
    expected = RPN.predict_proposals(rpn, *args)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as in a bf16 training step
        got = rpn.predict_proposals(*args)
    assert len(got) == 3
    for a, b in zip(got, expected, strict=True):
        assert a.image_size == b.image_size
        assert 0 < len(b) < sum(len(x) for x in args[0])  # NMS removed some
        assert torch.equal(a.proposal_boxes.tensor, b.proposal_boxes.tensor)
        assert torch.equal(a.objectness_logits, b.objectness_logits)
        assert not a.objectness_logits.requires_grad


def test_parallel_proposals_keep_the_divergence_error(recipe_models, two_threads):
    _, ours = recipe_models
    rpn = copy.deepcopy(ours.proposal_generator).train()
    anchors, logits, deltas, sizes = _rpn_outputs(rpn, num_images=2)
    with torch.no_grad():
        logits[0][1, 5] = float("nan")
    with pytest.raises(FloatingPointError, match="Training has diverged"):
        rpn.predict_proposals(anchors, logits, deltas, sizes)


@pytest.mark.parametrize("bf16", [False, True])
def test_fused_rpn_outputs_equal_the_two_convs(recipe_models, bf16):
    plain, ours = recipe_models
    fused = copy.deepcopy(ours.proposal_generator.rpn_head)
    separate = copy.deepcopy(plain.proposal_generator.rpn_head)
    g = torch.Generator().manual_seed(0)
    channels = ours.backbone.output_shape()["p2"].channels
    maps = [torch.randn(2, channels, h, w, generator=g) for h, w in ((16, 20), (8, 10))]
    results = []
    for head in (separate, fused):
        inputs = [m.to(torch.bfloat16 if bf16 else torch.float32) for m in maps]
        inputs = [m.contiguous(memory_format=CL).requires_grad_() for m in inputs]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            objectness, deltas = head(inputs)
        loss = sum((o * o.detach().sign()).sum() for o in objectness) + sum(
            (d * d.detach().cos()).sum() for d in deltas
        )
        loss.backward()
        grads = [m.grad for m in inputs] + [p.grad for p in head.parameters()]
        results.append((objectness + deltas, grads))
    (out_a, grads_a), (out_b, grads_b) = results
    for a, b in zip(out_a, out_b, strict=True):
        assert a.shape == b.shape and b.dtype == torch.float32  # fp32 outputs under autocast
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_a, grads_b, strict=True):
        # The fused conv adds the two gradients of the map in fp32, then rounds once.
        tol = 1e-2 * a.abs().max().item() if bf16 else 1e-4 * a.abs().max().item()
        torch.testing.assert_close(b.float(), a.float(), rtol=0, atol=tol)


@pytest.mark.parametrize("key", STEP_KEYS)
def test_step_speedup_keys_refuse_other_values(key):
    from instseg_d2.modeling.speedups import SpeedupConfigError

    with pytest.raises(SpeedupConfigError, match=f"{key} must be one of auto, always, never"):
        build_model(_recipe_cfg(key, "yes"))
