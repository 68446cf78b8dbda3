"""Export a trained model to TorchScript or ONNX, then prove it predicts what the eager model does.

:func:`export_model` builds the eager model with ``BatchPredictor`` (the same weights, speed-ups
and precision that ``tools/infer.py`` runs), traces :class:`~.deployable.ImageToDetections`
through Detectron2's ``TracingAdapter``, writes the artifact with ``runtime.py`` and
``metadata.json`` beside it, loads it back from disk through that runtime and compares its
detections with the eager model's on real images (:mod:`.parity`). A failed comparison raises
:class:`~.parity.ParityError`; the metadata then says ``"passed": false``.

Variants (``variant``):

- ``plain``: the model as trained, fp32. TorchScript and ONNX.
- ``optimized``: ``BatchPredictor(optimize=True)`` (frozen BN folded, channels-last), traced and
  ``torch.jit.freeze``-d, compared with that eager model. TorchScript only: ONNX has no memory
  layouts and ONNX Runtime folds BatchNorm itself. The embedding-bag CPU RoIAlign of the eager
  model is not in the artifact: it groups RoIs in Python inside an ``autograd.Function``, which
  a trace would freeze to the sample image's groups and TorchScript cannot save; the artifact
  runs the torchvision RoIAlign it wraps (equal up to float rounding).
- ``bf16``: the plain model with the network under CPU bf16 autocast
  (``BatchPredictor(optimize=False, bf16=True)``), outputs and post-processing in fp32; compared
  with that eager bf16 model. Not the optimized one: in bf16 the torchvision RoIAlign of the
  artifact and the CPU RoIAlign of the eager model round differently, and a mask of 224 fell to
  IoU 0.83 (benchmarks/export_speed.py at 320 px). TorchScript only: ONNX Runtime's
  CPU provider has no bf16 convolutions.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from torch import nn

from ..checkpoint import resolve_weights
from ..engine.predictor import BatchPredictor
from ..modeling.roi_align import CPUROIAlign
from ..utils.atomic import atomic_write_with
from ..utils.errors import UserError
from . import runtime
from .deployable import OUTPUT_NAMES, build_tracing_adapter
from .metadata import build_metadata, write_metadata
from .onnx_ops import zero_batch_safe_symbolics
from .parity import Detections, ParityError, ParityReport, compare_detections

__all__ = [
    "ARTIFACT_NAMES",
    "DEFAULT_OPSET",
    "ExportError",
    "ExportResult",
    "VARIANTS",
    "export_model",
    "run_parity",
    "traceable_model",
    "write_artifact",
]

logger = logging.getLogger(__name__)

ARTIFACT_NAMES = {"torchscript": "model.ts", "onnx": "model.onnx"}
VARIANTS = ("plain", "optimized", "bf16")
# Opset 17: RoiAlign with half-pixel coordinates (aligned=True) needs 16; ONNX Runtime 1.14+
# runs 17. Higher opsets gain nothing for this graph.
DEFAULT_OPSET = 17
# Which variants each format can hold (see the module docstring for why).
SUPPORTED = {"torchscript": VARIANTS, "onnx": ("plain",)}


class ExportError(UserError, ValueError):
    """An export that cannot be made as asked (format/variant, input images, device)."""


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and measured."""

    export_dir: Path
    artifact: Path
    metadata_file: Path
    parity: ParityReport


def _check_request(cfg: CfgNode, fmt: str, variant: str) -> None:
    if fmt not in SUPPORTED:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(SUPPORTED)}")
    if variant not in SUPPORTED[fmt]:
        raise ExportError(
            f"format {fmt} supports the variant(s) {', '.join(SUPPORTED[fmt])}, not {variant!r}: "
            "ONNX has no memory layouts (ONNX Runtime folds BatchNorm and picks layouts itself) "
            "and ONNX Runtime's CPU provider has no bf16 convolutions"
        )
    if cfg.MODEL.DEVICE != "cpu":
        raise ExportError(f"export runs on the CPU; got MODEL.DEVICE {cfg.MODEL.DEVICE}")
    meta_arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    if not cfg.MODEL.MASK_ON or not issubclass(meta_arch, GeneralizedRCNN):
        raise ExportError(
            "export supports Mask R-CNN (a GeneralizedRCNN such as InstSegRCNN, with "
            f"MODEL.MASK_ON True); got {cfg.MODEL.META_ARCHITECTURE}, MASK_ON {cfg.MODEL.MASK_ON}"
        )


def write_artifact(
    adapter, sample: torch.Tensor, fmt: str, path: Path, variant: str, opset: int = DEFAULT_OPSET
) -> None:
    """Trace ``adapter`` on ``sample`` and write the ``fmt`` artifact of ``variant`` to ``path``."""
    with warnings.catch_warnings():
        # Detectron2's graph converts a few sizes and checks to Python while tracing (documented
        # by TracingAdapter); the parity check on other images is what proves the trace general.
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            module = torch.jit.trace(adapter, (sample,), check_trace=False)
            if variant == "optimized":
                module = torch.jit.freeze(module.eval())
            atomic_write_with(path, lambda f: torch.jit.save(module, f))
        else:
            dynamic = {"image": {0: "height", 1: "width"}}
            dynamic.update({name: {0: "detections"} for name in OUTPUT_NAMES})
            dynamic["masks"] = {0: "detections", 1: "height", 2: "width"}
            with zero_batch_safe_symbolics(opset):
                atomic_write_with(path, lambda f: torch.onnx.export(
                    adapter, (sample,), f, dynamo=False, opset_version=opset,
                    input_names=["image"], output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic,
                ))  # fmt: skip


def _eager_predictor(cfg: CfgNode, variant: str) -> BatchPredictor:
    """The eager model of ``variant``, the reference of the parity check: ``BatchPredictor`` as
    ``tools/infer.py --no-optimize`` (plain), its default (optimized) and ``--no-optimize --bf16``
    (bf16)."""
    return BatchPredictor(cfg, optimize=variant == "optimized", bf16=variant == "bf16")


def traceable_model(cfg: CfgNode, variant: str) -> nn.Module:
    """The eager model of ``variant`` (built by ``BatchPredictor``) in a form that traces: the CPU
    RoIAlign of the optimized model replaced by the torchvision RoIAlign it wraps."""
    model = _eager_predictor(cfg, variant).model
    for module in model.modules():
        for name, child in list(module.named_children()):
            if isinstance(child, CPUROIAlign):
                module._modules[name] = child.roi_align
    return model


def run_parity(
    predictor: BatchPredictor,
    exported: runtime.ExportedModel,
    images: Sequence[np.ndarray],
    score_threshold: float,
) -> ParityReport:
    """Both models on each BGR image (the eager one at batch 1); their detections compared."""
    eager = [Detections.from_instances(predictor([image])[0]["instances"]) for image in images]
    candidate = [Detections.from_outputs(exported(image)) for image in images]
    return compare_detections(
        eager, candidate, score_threshold, max_detections=predictor.cfg.TEST.DETECTIONS_PER_IMAGE
    )


def export_model(
    cfg: CfgNode,
    fmt: str,
    export_dir: str | os.PathLike,
    parity_images: Sequence[np.ndarray],
    *,
    sample_image: np.ndarray | None = None,
    variant: str = "plain",
    opset: int = DEFAULT_OPSET,
) -> ExportResult:
    """Export the model of ``cfg`` (its ``MODEL.WEIGHTS``) to ``export_dir`` and check parity.

    ``parity_images``: BGR uint8 images (real validation images) on which the exported model
    must match the eager one. ``sample_image``: the image to trace with (default: the first
    parity image); it should give detections, so that the traced graph runs the mask head.
    Raises :class:`ParityError` when the detections differ beyond the tolerances.
    """
    _check_request(cfg, fmt, variant)
    if not parity_images:
        raise ExportError("parity needs at least one image")
    weights = resolve_weights(cfg.MODEL.WEIGHTS)
    if not weights:
        raise ExportError("MODEL.WEIGHTS is empty: export a trained model (--weights)")
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    predictor = _eager_predictor(cfg, variant)
    sample = parity_images[0] if sample_image is None else sample_image
    adapter = build_tracing_adapter(
        traceable_model(cfg, variant), cfg, torch.from_numpy(np.ascontiguousarray(sample)),
        bf16=variant == "bf16",
    )  # fmt: skip
    artifact = export_dir / ARTIFACT_NAMES[fmt]
    logger.info("tracing the %s model to %s", variant, artifact)
    write_artifact(adapter, adapter.flattened_inputs[0], fmt, artifact, variant, opset)
    shutil.copyfile(runtime.__file__, export_dir / "runtime.py")
    metadata = build_metadata(
        cfg, fmt=fmt, artifact=artifact.name, variant=variant, weights=weights,
        opset=opset if fmt == "onnx" else None,
    )  # fmt: skip
    metadata_file = write_metadata(export_dir, metadata)

    logger.info("parity: the artifact (loaded from disk) against the eager model")
    exported = runtime.load(export_dir)
    report = run_parity(predictor, exported, parity_images, cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST)
    metadata["parity"] = report.as_dict()
    write_metadata(export_dir, metadata)
    if not report.passed:
        raise ParityError(
            f"{artifact}: the exported model's detections differ from the eager model's: "
            f"{'; '.join(report.failures)} ({report.summary()}); see {metadata_file}"
        )
    return ExportResult(export_dir, artifact, metadata_file, report)
