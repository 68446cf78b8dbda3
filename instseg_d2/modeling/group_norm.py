"""GroupNorm of channels-last maps computed on an NCHW copy (``INSTSEG.NCHW_GROUP_NORM``).

PyTorch's CPU GroupNorm kernels for channels-last (NHWC) input are slow when a group holds few
channels, in bf16 above all: with 64 channels in 32 groups (ResNet's stem and first stage in
the GroupNorm recipe, ``configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml``), a bf16
GroupNorm forward + backward on a ``4x64x160x256`` map took ~17 times as long channels-last as
NCHW (PyTorch 2.14), and it was the largest cost of a bf16 training step after the convolutions
(BENCHMARKS.md). The convolutions, on the other hand, run faster channels-last. So
:class:`NCHWGroupNorm` copies a channels-last input to NCHW, runs the NCHW kernel and copies the
result back to channels-last: two copies forward and two backward cost far less than the
channels-last kernel there. With 8 or more channels per group the channels-last kernel costs
about as much as those copies (and less on large maps), so :func:`build_nchw_group_norms` only
replaces the norms with fewer channels per group (:data:`NCHW_BELOW_CHANNELS_PER_GROUP`).

The same kernels compute the same function (equal up to float rounding: the kernels sum in a
different order), with the same parameters and state-dict keys as ``nn.GroupNorm``. Inputs that
are not channels-last (a model without ``INSTSEG.CHANNELS_LAST``, or on a GPU) go straight to
``F.group_norm``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["NCHW_BELOW_CHANNELS_PER_GROUP", "NCHWGroupNorm", "build_nchw_group_norms"]

# GroupNorms with fewer channels per group than this run in NCHW (measured on 2 cores: module
# docstring and BENCHMARKS.md).
NCHW_BELOW_CHANNELS_PER_GROUP = 8


def _is_channels_last_only(x: torch.Tensor) -> bool:
    """True for a 4-D tensor laid out channels-last and not also NCHW-contiguous (C or H*W of 1)."""
    return (
        x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()
    )


class NCHWGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that normalizes channels-last CPU maps in NCHW layout and returns them
    channels-last (module docstring)."""

    @classmethod
    def from_group_norm(cls, norm: nn.GroupNorm) -> NCHWGroupNorm:
        """An ``NCHWGroupNorm`` with the settings of ``norm`` that shares its parameters."""
        # On the meta device: no memory and no draws from the random generator for parameters
        # that are replaced at once.
        new = cls(norm.num_groups, norm.num_channels, norm.eps, norm.affine, device="meta")
        new.weight = norm.weight
        new.bias = norm.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not _is_channels_last_only(x):
            return super().forward(x)
        y = F.group_norm(x.contiguous(), self.num_groups, self.weight, self.bias, self.eps)
        return y.contiguous(memory_format=torch.channels_last)


def _few_channels_per_group(norm: nn.GroupNorm) -> bool:
    return norm.num_channels // norm.num_groups < NCHW_BELOW_CHANNELS_PER_GROUP


def build_nchw_group_norms(model: nn.Module) -> int:
    """Put an :class:`NCHWGroupNorm` in place of every ``nn.GroupNorm`` child of ``model`` with
    fewer than :data:`NCHW_BELOW_CHANNELS_PER_GROUP` channels per group.

    For a model being built (Detectron2 keeps each norm as the ``norm`` child of its ``Conv2d``,
    never in plain lists). Subclasses of ``nn.GroupNorm`` are left alone. Returns how many were
    replaced.
    """
    replaced: dict[int, NCHWGroupNorm] = {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.GroupNorm and _few_channels_per_group(child):
                if id(child) not in replaced:
                    replaced[id(child)] = NCHWGroupNorm.from_group_norm(child)
                setattr(parent, name, replaced[id(child)])
    return len(replaced)
