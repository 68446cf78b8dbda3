"""``InstSegRCNN``: Detectron2's ``GeneralizedRCNN`` with its speed-ups chosen by the config.

Why a meta-architecture: the speed-ups that concern the whole network (the memory layout of
every conv, the frozen-BN convs wherever the backbone or heads put them, the precision of the
whole inference pass) belong to the module that builds and runs all of it. Detectron2 projects
that change how a model runs do the same (a registered class whose ``from_config`` reads the
project's keys). The per-head parts live in the registered heads (:mod:`.roi_heads`,
:mod:`.rpn`, :mod:`.mask_head`).

What differs from ``GeneralizedRCNN`` (same parameters, buffers and state-dict keys):

- ``INSTSEG.FROZEN_BN_ON_WEIGHTS``: each ``Conv2d`` + ``FrozenBatchNorm2d`` is built as a
  :class:`~.frozen_bn.FrozenBNConv2d` (same gradients, up to float rounding).
- ``INSTSEG.CHANNELS_LAST``: conv weights and the input batch in channels-last (NHWC) layout,
  which oneDNN runs faster on CPU. The feature maps then stay channels-last through the FPN and
  the RPN head (exact up to float rounding).
- ``INSTSEG.NCHW_GROUP_NORM``: each ``nn.GroupNorm`` with few channels per group is built as a
  :class:`~.group_norm.NCHWGroupNorm`, which normalizes channels-last CPU maps in NCHW layout
  (PyTorch's channels-last GroupNorm kernels are much slower there; exact up to float
  rounding).
- ``INSTSEG.INFERENCE.BF16``: :meth:`inference` runs the network under bf16 autocast (fp16 on
  CUDA) and casts its outputs to fp32 before post-processing, so that mask pasting
  (``grid_sample`` coordinates) and box rescaling keep full precision: in bf16 the paste
  coordinates alone would move mask edges by pixels. The output layers of the heads run in fp32
  (:func:`~.precision.run_in_fp32`). The weights are stored in bf16 by the inference build step
  (:mod:`.inference_step`), or cast by autocast on every call without it.
- ``INSTSEG.MASK_THRESHOLD``: the mask probability at which :meth:`_postprocess` pastes masks
  (Detectron2 fixes 0.5).
"""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import ImageList, Instances
from torch import nn

from ..utils.errors import ConfigError
from .frozen_bn import build_frozen_bn_convs
from .group_norm import build_nchw_group_norms
from .precision import autocast_context
from .speedups import speedup_enabled

__all__ = ["InstSegRCNN", "mask_threshold_of"]


def mask_threshold_of(cfg) -> float:
    """``cfg.INSTSEG.MASK_THRESHOLD``, checked to lie strictly between 0 and 1."""
    threshold = float(cfg.INSTSEG.MASK_THRESHOLD)
    if not 0.0 < threshold < 1.0:
        raise ConfigError(
            f"INSTSEG.MASK_THRESHOLD must lie strictly between 0 and 1 (a mask probability), "
            f"got {threshold}"
        )
    return threshold


def _channels_last_conv_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)


def _to_fp32(instances: Instances) -> Instances:
    for name in ("scores", "pred_masks"):
        if instances.has(name):
            instances.set(name, instances.get(name).float())
    if instances.has("pred_boxes"):
        instances.pred_boxes.tensor = instances.pred_boxes.tensor.float()
    return instances


@META_ARCH_REGISTRY.register()
class InstSegRCNN(GeneralizedRCNN):
    """``GeneralizedRCNN`` with channels-last convs, frozen BN on the weights, NCHW GroupNorm and
    reduced-precision inference with fp32 post-processing, each as its config key says (module
    docstring)."""

    @configurable
    def __init__(
        self,
        *,
        channels_last: bool = False,
        frozen_bn_on_weights: bool = False,
        nchw_group_norm: bool = False,
        inference_autocast: bool = False,
        mask_threshold: float = 0.5,
        **kwargs,
    ):
        """
        Args:
            channels_last: conv weights and input batches in channels-last layout.
            frozen_bn_on_weights: build each ``Conv2d`` + ``FrozenBatchNorm2d`` as a
                ``FrozenBNConv2d``.
            nchw_group_norm: build each ``nn.GroupNorm`` with few channels per group as an
                ``NCHWGroupNorm``.
            inference_autocast: run inference under bf16 (CPU) / fp16 (CUDA) autocast.
            mask_threshold: pasted mask probabilities at or above it are inside the instance.
            kwargs: the arguments of ``GeneralizedRCNN``.
        """
        super().__init__(**kwargs)
        self.channels_last = channels_last
        self.inference_autocast = inference_autocast
        self.mask_threshold = mask_threshold
        if frozen_bn_on_weights:
            build_frozen_bn_convs(self)
        if nchw_group_norm:
            build_nchw_group_norms(self)
        if channels_last:
            # Kept by build_model's .to(device) and by load_state_dict (copy_ into the layout).
            _channels_last_conv_weights(self)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret.update(
            channels_last=speedup_enabled(cfg, "INSTSEG.CHANNELS_LAST"),
            frozen_bn_on_weights=speedup_enabled(cfg, "INSTSEG.FROZEN_BN_ON_WEIGHTS"),
            nchw_group_norm=speedup_enabled(cfg, "INSTSEG.NCHW_GROUP_NORM"),
            inference_autocast=bool(cfg.INSTSEG.INFERENCE.BF16),
            mask_threshold=mask_threshold_of(cfg),
        )
        return ret

    def preprocess_image(self, batched_inputs: list[dict[str, torch.Tensor]]) -> ImageList:
        images = super().preprocess_image(batched_inputs)
        if self.channels_last:
            images.tensor = images.tensor.contiguous(memory_format=torch.channels_last)
        return images

    def inference(
        self,
        batched_inputs: list[dict[str, torch.Tensor]],
        detected_instances: list[Instances] | None = None,
        do_postprocess: bool = True,
    ):
        """``GeneralizedRCNN.inference``, under autocast when ``inference_autocast`` (fp32
        outputs), with masks pasted at ``mask_threshold``."""
        with autocast_context(self.device, enabled=self.inference_autocast):
            results = super().inference(batched_inputs, detected_instances, do_postprocess=False)
        if self.inference_autocast:
            results = [_to_fp32(r) for r in results]
        if not do_postprocess:
            return results
        return self._postprocess(results, batched_inputs, [r.image_size for r in results])

    def _postprocess(self, instances, batched_inputs, image_sizes):  # Detectron2's is static
        results = []
        for r, x, size in zip(instances, batched_inputs, image_sizes, strict=True):
            height, width = x.get("height", size[0]), x.get("width", size[1])
            results.append(
                {"instances": detector_postprocess(r, height, width, self.mask_threshold)}
            )
        return results
