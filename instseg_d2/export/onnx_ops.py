"""ONNX export details that PyTorch's (legacy, TorchScript-based) exporter gets wrong for us.

GroupNorm: the exporter writes ``Reshape(x, [0, groups, -1])`` + ``InstanceNormalization``. With a
dynamic batch of zero (the mask head when an image has no detection) ONNX Runtime refuses the
``-1`` (nothing to infer it from) and the whole run fails. :func:`group_norm_any_batch` spells the
same normalisation with an explicit target shape and ``ReduceMean``; it is used only where the
batch size is dynamic (the mask head), so the backbone keeps the exporter's fused form.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.onnx import symbolic_helper

__all__ = ["group_norm_any_batch", "zero_batch_safe_symbolics"]


@symbolic_helper.parse_args("v", "i", "v", "v", "f", "i")
def group_norm_any_batch(g, input, num_groups, weight, bias, eps, cudnn_enabled):
    """``aten::group_norm`` for inputs whose batch may be 0 (see the module docstring)."""
    from torch.onnx._internal.torchscript_exporter import symbolic_opset9 as opset9

    channels = symbolic_helper._get_tensor_dim_size(input, 1)
    rank = symbolic_helper._get_tensor_rank(input)
    batch = symbolic_helper._get_tensor_dim_size(input, 0)
    if batch is not None or channels is None or rank is None:
        return opset9.group_norm(g, input, num_groups, weight, bias, eps, cudnn_enabled)
    shape = g.op("Shape", input)
    grouped_shape = g.op(
        "Concat",
        symbolic_helper._slice_helper(g, shape, axes=[0], starts=[0], ends=[1]),
        g.op("Constant", value_t=torch.tensor([num_groups, channels // num_groups])),
        symbolic_helper._slice_helper(g, shape, axes=[0], starts=[2], ends=[rank]),
        axis_i=0,
    )
    grouped = g.op("Reshape", input, grouped_shape)
    axes = list(range(2, rank + 1))
    centered = g.op("Sub", grouped, g.op("ReduceMean", grouped, axes_i=axes, keepdims_i=1))
    variance = g.op("ReduceMean", g.op("Mul", centered, centered), axes_i=axes, keepdims_i=1)
    epsilon = g.op("Constant", value_t=torch.tensor(eps, dtype=torch.float32))
    normalized = g.op("Div", centered, g.op("Sqrt", g.op("Add", variance, epsilon)))
    out = g.op("Reshape", normalized, shape)
    per_channel = list(range(1, rank - 1))
    if not symbolic_helper._is_none(weight):
        out = g.op("Mul", out, symbolic_helper._unsqueeze_helper(g, weight, per_channel))
    if not symbolic_helper._is_none(bias):
        out = g.op("Add", out, symbolic_helper._unsqueeze_helper(g, bias, per_channel))
    return out


@contextlib.contextmanager
def zero_batch_safe_symbolics(opset: int) -> Iterator[None]:
    """Register :func:`group_norm_any_batch` for ``opset`` while exporting."""
    torch.onnx.register_custom_op_symbolic("::group_norm", group_norm_any_batch, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("::group_norm", opset)
