"""The model of this project: Detectron2's Mask R-CNN built from components with CPU speed-ups.

Holds the components that configs select by name (``configs/Base-InstSegRCNN.yaml``):
``MODEL.META_ARCHITECTURE "InstSegRCNN"`` (:mod:`.meta_arch`), ``MODEL.ROI_HEADS.NAME
"InstSegROIHeads"`` (:mod:`.roi_heads`), ``MODEL.PROPOSAL_GENERATOR.NAME "InstSegRPN"`` with
``MODEL.RPN.HEAD_NAME "InstSegRPNHead"`` (:mod:`.rpn`), and ``MODEL.ROI_MASK_HEAD.NAME
"InstSegMaskHead"`` (:mod:`.mask_head`); the layers they build (:mod:`.frozen_bn`,
:mod:`.group_norm`, :mod:`.roi_align`); the rules that turn the ``INSTSEG.*`` speed-up keys into
on/off (:mod:`.speedups`); autocast helpers (:mod:`.precision`); and the inference-only build step
run after the weights are loaded (:mod:`.inference_step`). Importing this package registers the
components in Detectron2's registries, so that ``build_model(cfg)`` finds them.

Every speed-up keeps the parameters, buffers and state-dict keys of Detectron2's own modules, so
checkpoints load both ways, and a run's ``config.yaml`` rebuilds the model that ran.

May import: torch, torchvision, detectron2. It is the lowest layer of the package: nothing else
of ``instseg_d2`` is imported here.
"""

from . import mask_head, meta_arch, roi_heads, rpn  # noqa: F401  (register the components)
