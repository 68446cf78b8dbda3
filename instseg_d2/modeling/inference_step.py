"""The inference build step: what is done to a model once its weights are loaded, for inference.

``build_model(cfg)`` gives the model that trains; some speed-ups only make sense for a model that
will not train again and need its final weights, so they cannot be part of the build. They are
this one step, :func:`prepare_for_inference`, selected by ``cfg.INSTSEG.INFERENCE.*`` and run by
everything that predicts from a checkpoint: ``BatchPredictor`` (``tools/infer.py``, the report),
``tools/train_net.py --eval-only`` and the benchmark. In this order:

1. eval mode, parameters frozen (no gradients can reach folded or bf16 weights);
2. ``FOLD_FROZEN_BN``: frozen BatchNorms folded into the conv weights
   (:func:`~.frozen_bn.fold_frozen_batchnorm`; exact up to float rounding);
3. ``BF16`` (read at build by ``InstSegRCNN``, which then runs inference under autocast): conv and
   linear weights stored in bf16 (fp16 on CUDA) once, except the output layers the heads keep in
   fp32 (:func:`cast_weights_for_autocast`). Autocast would cast them to the same values on every
   call (it caches casts only for weights that require grad): bit-identical outputs, less copying;
4. ``COMPILE_BACKBONE``: ``torch.compile`` of the backbone (:func:`compile_backbone`).

Models of other meta-architectures (a model-zoo ``GeneralizedRCNN``) get step 1 only: the
speed-ups are properties of this project's components.
"""

from __future__ import annotations

import logging

from detectron2.config import CfgNode
from torch import nn

from .frozen_bn import FrozenBNConv2d, fold_frozen_batchnorm
from .meta_arch import InstSegRCNN
from .precision import autocast_dtype
from .speedups import speedup_enabled

__all__ = ["cast_weights_for_autocast", "compile_backbone", "prepare_for_inference"]

logger = logging.getLogger(__name__)


def _fp32_layers(model: nn.Module) -> set[nn.Module]:
    """The layers that components run in fp32 (their ``FP32_LAYERS``), with their submodules."""
    kept: set[nn.Module] = set()
    for module in model.modules():
        for name in getattr(type(module), "FP32_LAYERS", ()):
            kept.update(getattr(module, name).modules())
    return kept


def cast_weights_for_autocast(model: nn.Module) -> int:
    """Store conv, transposed-conv and linear weights in the autocast dtype of their device.

    The layers the components keep in fp32 keep their fp32 weights, and so do the
    :class:`~.frozen_bn.FrozenBNConv2d` whose BatchNorm is not folded: they scale their weight on
    every call, before autocast casts it. In place; returns the number of layers cast. The model must run under autocast afterwards (``InstSegRCNN`` with
    ``inference_autocast``).
    """
    dtype = autocast_dtype(next(model.parameters()).device)
    kept = _fp32_layers(model)
    cast = 0
    for module in model.modules():
        if module in kept or not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            continue
        if isinstance(module, FrozenBNConv2d) and module.norm is not None:
            continue
        module.weight.data = module.weight.data.to(dtype)
        if module.bias is not None:
            module.bias.data = module.bias.data.to(dtype)
        cast += 1
    return cast


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


def prepare_for_inference(model: nn.Module, cfg: CfgNode) -> nn.Module:
    """The inference build step (module docstring) for a model built from ``cfg`` whose weights
    are loaded. In place; returns ``model``."""
    model.eval()
    model.requires_grad_(False)
    if not isinstance(model, InstSegRCNN):
        requested = [
            key
            for key, on in (
                ("BF16", cfg.INSTSEG.INFERENCE.BF16),
                ("FOLD_FROZEN_BN", cfg.INSTSEG.INFERENCE.FOLD_FROZEN_BN == "always"),
                ("COMPILE_BACKBONE", cfg.INSTSEG.INFERENCE.COMPILE_BACKBONE),
            )
            if on
        ]
        if requested:
            logger.warning(
                "INSTSEG.INFERENCE.%s: needs MODEL.META_ARCHITECTURE InstSegRCNN "
                "(configs/Base-InstSegRCNN.yaml selects it), not %s; running without it",
                "/".join(requested),
                type(model).__name__,
            )
        return model
    if speedup_enabled(cfg, "INSTSEG.INFERENCE.FOLD_FROZEN_BN"):
        fold_frozen_batchnorm(model)
    if model.inference_autocast:
        cast_weights_for_autocast(model)
    if cfg.INSTSEG.INFERENCE.COMPILE_BACKBONE:
        compile_backbone(model)
    return model
