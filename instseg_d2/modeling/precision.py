"""Reduced precision: which dtype autocast uses where, and running a layer in fp32 under it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

__all__ = ["autocast_context", "autocast_dtype", "cpu_supports_bf16", "run_in_fp32"]


def cpu_supports_bf16() -> bool:
    """True when oneDNN can run bf16 natively here (AVX512-BF16 / AMX), where bf16 pays off."""
    try:
        return bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: str | torch.device) -> torch.dtype:
    """The reduced precision used for ``device``: bf16 on CPU, fp16 on CUDA."""
    return torch.bfloat16 if torch.device(device).type == "cpu" else torch.float16


@contextlib.contextmanager
def autocast_context(device: str | torch.device, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast on CPU, fp16 autocast on CUDA; a no-op when ``enabled`` is False.

    Wrap the forward pass (and loss) only; the backward and the optimizer step run outside it, as
    PyTorch recommends.
    """
    if not enabled:
        yield
        return
    device_type = torch.device(device).type
    with torch.autocast(device_type=device_type, dtype=autocast_dtype(device_type)):
        yield


def run_in_fp32(fn: Callable[[torch.Tensor], object], x: torch.Tensor):
    """``fn(x)`` with autocast off and ``x`` in fp32.

    For the small layers whose outputs are scores and box/mask logits: their rounding would go
    straight into what NMS and the score threshold compare, while they cost well under 1% of a
    forward pass. Outside autocast (fp32 models) it is ``fn(x)``.
    """
    with torch.autocast(x.device.type, enabled=False):
        return fn(x.float())
