"""Frozen BatchNorm on the convolution weights: on the fly (any phase) or folded (inference).

A Detectron2 ``Conv2d(norm=FrozenBatchNorm2d)`` computes ``conv(x, W) * s + b`` with fixed
per-channel ``s`` and ``b``. ``conv(x, W * s) + b`` is the same function, but scales the (small)
weight instead of the (large) output: two elementwise passes over every activation fewer in the
forward pass and one in the backward.

- :class:`FrozenBNConv2d` does it on every call, so ``W`` stays the trainable parameter and its
  gradient is exactly the original's; :func:`build_frozen_bn_convs` puts it in place of each such
  conv when a model is built (``INSTSEG.FROZEN_BN_ON_WEIGHTS``).
- :func:`fold_frozen_batchnorm` writes ``W * s`` and ``b`` into the conv once, after the weights are
  loaded (``INSTSEG.INFERENCE.FOLD_FROZEN_BN``): for inference only, since training the folded
  weights would change the training dynamics.

Both are exact up to float rounding and keep the BatchNorm's buffers (on the fly) or drop nothing
that a checkpoint needs to load (folding happens after loading).
"""

from __future__ import annotations

import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import nn
from torch.nn import functional as F

__all__ = ["FrozenBNConv2d", "build_frozen_bn_convs", "fold_frozen_batchnorm"]


def _frozen_bn_scale_shift(bn: FrozenBatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` with ``bn(x) == x * scale + shift``."""
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
    shift = bn.bias - bn.running_mean * scale
    return scale, shift


class FrozenBNConv2d(Conv2d):
    """Detectron2 ``Conv2d`` + ``FrozenBatchNorm2d`` that applies the BatchNorm to the weights.

    Same parameters, buffers and state-dict keys as the ``Conv2d`` it replaces (the BatchNorm stays
    its ``norm`` child). After :func:`fold_frozen_batchnorm` (``norm`` is None) it is a plain
    ``Conv2d``.
    """

    @classmethod
    def from_conv(cls, conv: Conv2d) -> FrozenBNConv2d:
        """A ``FrozenBNConv2d`` that shares ``conv``'s parameters and its BatchNorm."""
        # Built on the meta device: no memory and no draws from the random generator for
        # weights that are replaced at once.
        fused = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            norm=conv.norm,
            activation=conv.activation,
            device="meta",
        )
        fused.weight = conv.weight
        fused.bias = conv.bias
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is None:
            return super().forward(x)
        scale, shift = _frozen_bn_scale_shift(self.norm)
        weight = self.weight * scale.reshape(-1, 1, 1, 1)
        bias = shift if self.bias is None else self.bias * scale + shift
        x = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        if self.activation is not None:
            x = self.activation(x)
        return x


def build_frozen_bn_convs(model: nn.Module) -> int:
    """Put a :class:`FrozenBNConv2d` in place of every ``Conv2d`` with a frozen BatchNorm.

    For a model being built. Detectron2 modules also keep plain lists of their convs
    (``FPN.lateral_convs``/``output_convs`` are what its forward iterates), so references in
    list attributes are replaced as well as the child modules. Returns how many were replaced.
    """
    replaced: dict[int, FrozenBNConv2d] = {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is Conv2d and isinstance(child.norm, FrozenBatchNorm2d):
                if id(child) not in replaced:
                    replaced[id(child)] = FrozenBNConv2d.from_conv(child)
                setattr(parent, name, replaced[id(child)])
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, list) and any(id(item) in replaced for item in value):
                value[:] = [replaced.get(id(item), item) for item in value]
    return len(replaced)


@torch.no_grad()
def fold_frozen_batchnorm(model: nn.Module) -> int:
    """Fold every frozen BatchNorm that belongs to a Detectron2 ``Conv2d`` into its weights.

    The conv then runs one op instead of two (``norm`` becomes None). In place, after the
    weights are loaded; returns the number of folded convs. For inference only (the caller puts
    the model in eval mode and freezes its parameters). Trainable ``BatchNorm2d`` and GroupNorm
    are left alone.
    """
    folded = 0
    for module in model.modules():
        if isinstance(module, Conv2d) and isinstance(module.norm, FrozenBatchNorm2d):
            scale, shift = _frozen_bn_scale_shift(module.norm)
            module.weight.mul_(scale.reshape(-1, 1, 1, 1).to(module.weight.dtype))
            bias = shift if module.bias is None else module.bias * scale + shift
            module.bias = nn.Parameter(bias.to(module.weight.dtype), requires_grad=False)
            module.norm = None
            folded += 1
    return folded
