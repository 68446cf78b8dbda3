"""``metadata.json`` next to an exported model: what it takes, returns and came from.

Everything a deployment needs to use the artifact without the training code: class names, the
input's dtype, layout and channel order, the resize rule (inside the artifact), the thresholds
baked in, the full config it came from, the checkpoint's sha256, the library versions and the
parity figures measured at export time.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import detectron2
import PIL
import torch
import torchvision
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog

from ..modeling.meta_arch import mask_threshold_of
from ..utils.atomic import atomic_write
from .deployable import OUTPUT_NAMES
from .runtime import METADATA_FILE

__all__ = ["build_metadata", "category_ids", "class_names", "sha256_of", "write_metadata"]

_OUTPUTS = {
    "boxes": ("N x 4", "float32", "XYXY, in pixels of the input image"),
    "classes": ("N", "int64", "index into class_names"),
    "masks": ("N x H x W", "bool", "instance masks at the input image's size"),
    "scores": ("N", "float32", "confidence, >= score_threshold"),
}


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _dataset_metadata(cfg: CfgNode):
    """Metadata of the config's first test (else training) dataset that names its classes."""
    for name in list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
        metadata = MetadataCatalog.get(name)
        if metadata.get("thing_classes", None):
            return metadata
    return None


def class_names(cfg: CfgNode) -> list[str]:
    """``thing_classes`` of the config's first test (else training) dataset, if registered."""
    metadata = _dataset_metadata(cfg)
    if metadata is not None:
        return list(metadata.thing_classes)
    return [f"class_{i}" for i in range(cfg.MODEL.ROI_HEADS.NUM_CLASSES)]


def category_ids(cfg: CfgNode) -> list[int] | None:
    """The dataset's category id of each class index (COCO ``category_id`` in predictions.json,
    as ``tools/infer.py`` writes it), or None when the dataset has no such mapping."""
    metadata = _dataset_metadata(cfg)
    mapping = metadata.get("thing_dataset_id_to_contiguous_id", None) if metadata else None
    if not mapping:
        return None
    by_index = {index: int(dataset_id) for dataset_id, index in mapping.items()}
    return [by_index[i] for i in range(len(by_index))]


def _versions(fmt: str) -> dict[str, str]:
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "detectron2": detectron2.__version__,
        # The resize inside the artifact follows this Pillow's pass order (see export/resize.py).
        "pillow": PIL.__version__,
    }
    if fmt == "onnx":
        import onnx
        import onnxruntime

        versions["onnx"] = onnx.__version__
        versions["onnxruntime"] = onnxruntime.__version__
    return versions


def build_metadata(
    cfg: CfgNode,
    *,
    fmt: str,
    artifact: str,
    variant: str,
    weights: str | os.PathLike,
    opset: int | None = None,
) -> dict:
    """The metadata of an artifact exported from ``cfg`` (parity is added after the check)."""
    runtime = (
        ["torch", "torchvision", "numpy"] if fmt == "torchscript" else ["onnxruntime", "numpy"]
    )
    return {
        "format": fmt,
        "artifact": artifact,
        "variant": variant,
        "runtime_requirements": runtime,
        "class_names": class_names(cfg),
        "category_ids": category_ids(cfg),
        "input": {
            "name": "image",
            "dtype": "uint8",
            "shape": "H x W x 3 (any size, one image)",
            "channel_order": "BGR",
            "model_input_format": cfg.INPUT.FORMAT,
        },
        "resize": {
            "rule": "ResizeShortestEdge inside the artifact: short side to min_size unless the "
            "long side would exceed max_size; Pillow bilinear",
            "min_size": cfg.INPUT.MIN_SIZE_TEST,
            "max_size": cfg.INPUT.MAX_SIZE_TEST,
        },
        "outputs": [
            {
                "name": name,
                "shape": _OUTPUTS[name][0],
                "dtype": _OUTPUTS[name][1],
                "meaning": _OUTPUTS[name][2],
            }
            for name in OUTPUT_NAMES
        ],  # fmt: skip
        "score_threshold": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
        "nms_threshold": cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
        "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        "mask_threshold": mask_threshold_of(cfg),
        "onnx_opset": opset,
        "weights": {"file": Path(weights).name, "sha256": sha256_of(weights)},
        "versions": _versions(fmt),
        "config_yaml": cfg.dump(),
    }


def write_metadata(export_dir: str | os.PathLike, metadata: dict) -> Path:
    """Write ``metadata.json`` into ``export_dir`` (atomically); returns its path."""
    path = Path(export_dir) / METADATA_FILE
    atomic_write(path, json.dumps(metadata, indent=1) + "\n")
    return path
