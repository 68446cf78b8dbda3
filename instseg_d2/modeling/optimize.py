"""Speed-ups for CPU (and GPU) inference and training that keep a model's results.

Each function changes one thing and says what it costs in exactness:

- :func:`fold_frozen_batchnorm`: exact up to float rounding (inference only; the folded model must
  not be trained, since gradients w.r.t. the folded weights differ).
- :func:`fuse_frozen_batchnorm_for_training`: exact up to float rounding, gradients included
  (the BN scale is applied to the weight on the fly; for training).
- :func:`to_channels_last`: exact up to float rounding (a memory layout, not a different math).
- :func:`use_cpu_roi_align`: :class:`~instseg_d2.modeling.roi_align.CPUROIAlign`, exact up to
  float rounding, gradients included (torchvision's taps and weights, summed by ``embedding_bag``).
- :func:`autocast_context`, :func:`rcnn_inference`: bf16 autocast on CPU / fp16 AMP on CUDA;
  changes the numbers, so it is checked by AP instead of a tolerance (see BENCHMARKS.md).
  :func:`keep_output_layers_fp32` keeps the score/box/mask output layers in fp32 under it, and
  :func:`cast_weights_for_autocast` stores the other weights in the autocast dtype once (the
  same values autocast would cast them to on every call); :func:`prepare_for_autocast_inference`
  does both.
- :func:`optimize_for_inference`: the fp32-exact set above, in one call.
- :func:`compile_backbone`: ``torch.compile`` (Inductor, frozen weights) of the backbone, as an
  option: a one-off compile time for a faster steady state, same outputs.

These are used by ``tools/benchmark.py``; the predictor and trainer call them through one line
each (see BENCHMARKS.md, "Using the speed-ups").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from detectron2.layers import Conv2d
from detectron2.layers import FrozenBatchNorm2d as D2FrozenBatchNorm2d
from torch import nn
from torch.nn import functional as F
from torchvision.ops.misc import FrozenBatchNorm2d as TVFrozenBatchNorm2d

from .roi_align import CPUROIAlign

__all__ = [
    "autocast_context",
    "autocast_dtype",
    "cast_weights_for_autocast",
    "compile_backbone",
    "cpu_supports_bf16",
    "FrozenBNConv2d",
    "fold_frozen_batchnorm",
    "fuse_frozen_batchnorm_for_training",
    "keep_output_layers_fp32",
    "optimize_for_inference",
    "optimize_for_training",
    "prepare_for_autocast_inference",
    "rcnn_inference",
    "to_channels_last",
    "use_cpu_roi_align",
]

_FROZEN_BN_TYPES = (D2FrozenBatchNorm2d, TVFrozenBatchNorm2d)


def _frozen_bn_scale_shift(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` with ``bn(x) == x * scale + shift``."""
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
    shift = bn.bias - bn.running_mean * scale
    return scale, shift


@torch.no_grad()
def _fold_into_conv(conv: nn.Conv2d, bn: nn.Module) -> None:
    scale, shift = _frozen_bn_scale_shift(bn)
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype))
    bias = shift if conv.bias is None else conv.bias * scale + shift
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)


@torch.no_grad()
def fold_frozen_batchnorm(model: nn.Module) -> int:
    """Fold every frozen BatchNorm that directly follows a convolution into that convolution.

    Handles Detectron2's ``Conv2d(norm=FrozenBatchNorm2d)`` (the norm is an attribute of the conv)
    and torchvision's ResNet blocks (``convN`` followed by ``bnN``, ``downsample = Sequential(conv,
    bn)``). The BatchNorm is replaced by nothing / ``nn.Identity`` so that inference runs one op
    instead of two. In place; returns the number of folded layers.

    Only for inference: the model is put in eval mode by the caller, and training the folded model
    would change its dynamics. Trainable ``nn.BatchNorm2d`` is left alone (it is not frozen).
    """
    folded = 0
    for module in model.modules():
        # Detectron2: the norm lives inside the conv and is applied right after it.
        if isinstance(module, Conv2d) and isinstance(module.norm, _FROZEN_BN_TYPES):
            _fold_into_conv(module, module.norm)
            module.norm = None
            folded += 1
            continue
        # torchvision: conv/bn pairs are sibling attributes (conv1/bn1, ...) or a Sequential.
        children = dict(module.named_children())
        if isinstance(module, nn.Sequential):
            keys = list(children)
            for first, second in zip(keys, keys[1:], strict=False):
                conv, bn = children[first], children[second]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, _FROZEN_BN_TYPES):
                    _fold_into_conv(conv, bn)
                    setattr(module, second, nn.Identity())
                    folded += 1
            continue
        for name, child in children.items():
            if not (name.startswith("conv") and isinstance(child, nn.Conv2d)):
                continue
            bn_name = "bn" + name[len("conv") :]
            bn = children.get(bn_name)
            if isinstance(bn, _FROZEN_BN_TYPES):
                _fold_into_conv(child, bn)
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded


class FrozenBNConv2d(Conv2d):
    """Detectron2 ``Conv2d`` + ``FrozenBatchNorm2d`` that applies the BatchNorm to the weights.

    ``conv(x, W) * s + b == conv(x, W * s) + b``: scaling the (small) weight instead of the (large)
    output saves two elementwise passes over every activation in the forward pass and one in the
    backward, and autograd through ``W * s`` gives exactly the gradient the original has for the
    trainable ``W``. So training dynamics are unchanged, unlike a permanent fold. The BN buffers
    stay in place: checkpoints load and save exactly as before.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = _frozen_bn_scale_shift(self.norm)
        weight = self.weight * scale.reshape(-1, 1, 1, 1)
        bias = shift if self.bias is None else self.bias * scale + shift
        x = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        if self.activation is not None:
            x = self.activation(x)
        return x


def fuse_frozen_batchnorm_for_training(model: nn.Module) -> int:
    """Turn each Detectron2 ``Conv2d`` with a frozen BatchNorm into a :class:`FrozenBNConv2d`.

    For training (and inference without a permanent fold); same parameters, buffers and state-dict
    keys. In place; returns the number of converted convolutions.
    """
    converted = 0
    for module in model.modules():
        if type(module) is Conv2d and isinstance(module.norm, D2FrozenBatchNorm2d):
            module.__class__ = FrozenBNConv2d
            converted += 1
    return converted


def _input_to_channels_last(_module: nn.Module, args: tuple) -> tuple:
    x = args[0]
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return args


def _channels_last_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Run the convolutions in channels-last (NHWC) layout, which oneDNN runs faster on CPU.

    Converts every conv weight of ``model`` and, for a Detectron2/torchvision R-CNN, feeds the
    backbone and the mask head channels-last input. The backbone's feature maps come out
    channels-last, which is what the RPN head's convs and :class:`~instseg_d2.modeling.roi_align.CPUROIAlign` reads in
    inference (torchvision's RoIAlign makes them NCHW itself). In place; exact up to float
    rounding. Measured effect: BENCHMARKS.md.
    """
    _channels_last_weights(model)
    backbone = getattr(model, "backbone", None)
    if backbone is not None:
        backbone.register_forward_pre_hook(_input_to_channels_last)
    mask_head = getattr(getattr(model, "roi_heads", None), "mask_head", None)
    if isinstance(mask_head, nn.Module):
        mask_head.register_forward_pre_hook(_input_to_channels_last)
    return model


def _roi_features_to_fp32(_module: nn.Module, args: tuple) -> tuple:
    # The box and the mask pooler both read every FPN map as an fp32 channels-last table (see
    # CPUROIAlign): convert each map once here, not once per pooler. A no-op for the fp32
    # channels-last maps of an optimized model. Detectron2 calls
    # ROIHeads.forward(images, features, proposals, targets) with positional arguments.
    if len(args) > 1:
        return (args[0], _features_for_roi_align(args[1]), *args[2:])
    return args


def _features_for_roi_align(features):
    if not isinstance(features, dict):
        return features
    return {
        k: v.to(torch.float32, memory_format=torch.channels_last)
        if isinstance(v, torch.Tensor) and v.device.type == "cpu" and v.dim() == 4
        else v
        for k, v in features.items()
    }


def use_cpu_roi_align(model: nn.Module) -> int:
    """Wrap the level poolers of a Detectron2 model's box and mask ``ROIPooler`` in
    :class:`~instseg_d2.modeling.roi_align.CPUROIAlign`, and have its RoI heads make the FPN maps
    fp32 channels-last once for both poolers. In place; returns the number of wrapped RoIAlign
    modules."""
    from detectron2.modeling.poolers import ROIPooler

    wrapped = 0
    for module in model.modules():
        if isinstance(module, ROIPooler):
            module.level_poolers = nn.ModuleList(
                p if isinstance(p, CPUROIAlign) else CPUROIAlign(p) for p in module.level_poolers
            )
            wrapped += len(module.level_poolers)
    roi_heads = getattr(model, "roi_heads", None)
    if wrapped and isinstance(roi_heads, nn.Module) and not getattr(roi_heads, "_instseg_fp32", 0):
        roi_heads.register_forward_pre_hook(_roi_features_to_fp32)
        roi_heads._instseg_fp32 = True
    return wrapped


def cpu_supports_bf16() -> bool:
    """True when oneDNN can run bf16 natively here (AVX512-BF16 / AMX), where bf16 pays off."""
    try:
        return bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):
        return False


@contextlib.contextmanager
def autocast_context(device: str | torch.device, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast on CPU, fp16 autocast on CUDA; a no-op when ``enabled`` is False.

    Wrap the forward pass (and loss) only; the backward and the optimizer step run outside it, as
    PyTorch recommends.
    """
    device_type = torch.device(device).type
    if not enabled:
        yield
        return
    with torch.autocast(device_type=device_type, dtype=autocast_dtype(device_type)):
        yield


def autocast_dtype(device: str | torch.device) -> torch.dtype:
    """The reduced precision used for ``device``: bf16 on CPU, fp16 on CUDA."""
    return torch.bfloat16 if torch.device(device).type == "cpu" else torch.float16


def _forward_in_fp32(module: nn.Module) -> None:
    forward = module.forward

    def fp32_forward(*args, **kwargs):
        device_type = (
            "cuda" if any(isinstance(a, torch.Tensor) and a.is_cuda for a in args) else "cpu"
        )
        args = tuple(
            a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args
        )
        with torch.autocast(device_type, enabled=False):
            return forward(*args, **kwargs)

    module.forward = fp32_forward
    module._instseg_keep_fp32 = True


def keep_output_layers_fp32(model: nn.Module) -> int:
    """Run the small layers that produce scores and box/mask logits in fp32 under autocast.

    The RPN's objectness/delta convs, the box predictor (class scores, box deltas) and the mask
    predictor cost well under 1% of the time, but their rounding goes straight into the scores that
    NMS and the score threshold compare, and into the boxes. In place; returns how many layers.
    """
    names = (
        "proposal_generator.rpn_head.objectness_logits",
        "proposal_generator.rpn_head.anchor_deltas",
        "roi_heads.box_predictor",
        "roi_heads.mask_head.predictor",
    )
    modules = dict(model.named_modules())
    found = [modules[n] for n in names if n in modules]
    for module in found:
        _forward_in_fp32(module)
    return len(found)


def cast_weights_for_autocast(model: nn.Module) -> int:
    """Store conv, transposed-conv and linear weights in the autocast dtype, for inference.

    Under autocast every such layer casts its fp32 weight and bias again on every call (autocast
    caches the cast only for weights that require grad, and inference weights do not). On 2 CPU
    cores casting once saved ~9 ms of copying in a ~520 ms bf16 forward pass at 800 px (profile
    in BENCHMARKS.md). It gives the values autocast would compute, so outputs are unchanged.
    Layers kept in fp32 by :func:`keep_output_layers_fp32` (call it first) keep their fp32
    weights. In place; returns the number of layers cast. Use the model only under autocast
    afterwards.
    """
    dtype = autocast_dtype(next(model.parameters()).device)
    kept = {
        m for k in model.modules() if getattr(k, "_instseg_keep_fp32", False) for m in k.modules()
    }
    cast = 0
    for module in model.modules():
        if module in kept or not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            continue
        module.weight.data = module.weight.data.to(dtype)
        if module.bias is not None:
            module.bias.data = module.bias.data.to(dtype)
        cast += 1
    return cast


def prepare_for_autocast_inference(model: nn.Module) -> nn.Module:
    """:func:`keep_output_layers_fp32`, then :func:`cast_weights_for_autocast`, in that order
    (the cast skips the layers kept in fp32). For a model that will run only under autocast.
    In place; returns ``model``."""
    keep_output_layers_fp32(model)
    cast_weights_for_autocast(model)
    return model


def rcnn_inference(model: nn.Module, batched_inputs: list[dict], *, autocast: bool = False) -> list:
    """``GeneralizedRCNN`` inference, optionally with the network under bf16/fp16 autocast.

    Under autocast the network runs in reduced precision but the outputs are cast back to fp32
    before post-processing, so that mask pasting (``grid_sample`` coordinates) and box rescaling
    keep full precision; in bf16 the paste coordinates alone would shift mask edges by pixels.
    Returns Detectron2's usual ``[{"instances": Instances}, ...]`` at the input's height/width.
    """
    from detectron2.modeling import GeneralizedRCNN

    if not autocast:
        return model(batched_inputs)
    with autocast_context(model.device, enabled=True):
        results = model.inference(batched_inputs, do_postprocess=False)
    for instances in results:
        for name in ("scores", "pred_masks"):
            if instances.has(name):
                instances.set(name, instances.get(name).float())
        instances.pred_boxes.tensor = instances.pred_boxes.tensor.float()
    return GeneralizedRCNN._postprocess(
        results, batched_inputs, [instances.image_size for instances in results]
    )


def compile_backbone(model: nn.Module, *, dynamic: bool = True) -> nn.Module:
    """``torch.compile`` the backbone of an inference model (Inductor, weights frozen).

    Inductor's freezing turns the (no longer trainable) weights into constants and prepacks them
    for oneDNN, fusing conv + ReLU/add; ``dynamic=True`` compiles once for all image sizes. The
    first call compiles (tens of seconds on 2 cores); after that the backbone runs faster with
    the same outputs. Sets ``torch._inductor.config.freezing`` for the process. Inference only
    (run under ``torch.inference_mode()``). In place; returns ``model``.
    """
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    model.backbone.compile(dynamic=dynamic)
    return model


def optimize_for_training(
    model: nn.Module,
    *,
    channels_last: bool = True,
    fuse_frozen_bn: bool = True,
    cpu_roi_align: bool = True,
) -> nn.Module:
    """Channels-last convolutions, frozen BatchNorms applied to the conv weights, the
    embedding-bag RoIAlign (forward and backward).

    The training speed-ups that keep the training dynamics (same parameters, same gradients up to
    float rounding, same state-dict keys). In place; returns ``model``. Combine with bf16 autocast
    (``INSTSEG.CPU_BF16``) for the largest gain on CPUs with AVX512-BF16/AMX.
    """
    if fuse_frozen_bn:
        fuse_frozen_batchnorm_for_training(model)
    if channels_last:
        to_channels_last(model)
    if cpu_roi_align:
        use_cpu_roi_align(model)
    return model


def optimize_for_inference(
    model: nn.Module,
    *,
    fold_bn: bool = True,
    channels_last: bool = True,
    cpu_roi_align: bool = True,
) -> nn.Module:
    """Eval mode, frozen BN folded, channels-last convs, the embedding-bag RoIAlign.

    The fp32-exact inference speed-ups (equal outputs up to float rounding).

    In place; returns ``model``. Use the result under ``torch.inference_mode()``.
    """
    model.eval()
    if fold_bn:
        fold_frozen_batchnorm(model)
    if channels_last:
        to_channels_last(model)
    if cpu_roi_align:
        use_cpu_roi_align(model)
    for p in model.parameters():
        p.requires_grad_(False)
    return model
