"""Run an exported instseg_d2 model with torch or onnxruntime alone (no Detectron2, no instseg_d2).

``tools/export_model.py`` copies this file next to each artifact, so a deployment needs only
the export folder and::

    TorchScript (model.ts):  pip install torch torchvision numpy
    ONNX (model.onnx):       pip install onnxruntime numpy

Usage from Python::

    import cv2, runtime                        # this file, from the export folder
    model = runtime.load("path/to/export")     # reads metadata.json, loads the artifact
    out = model(cv2.imread("image.jpg"))       # H x W x 3 uint8, BGR
    out["boxes"], out["scores"], out["classes"], out["masks"]

or from a shell (prints one JSON line per image; needs OpenCV to read the files)::

    python runtime.py path/to/export image1.jpg image2.png

The artifact takes one image, any size, as an ``H x W x 3`` uint8 array in BGR order, and does the
resize, the network and the mask pasting itself. Outputs: ``boxes`` (N x 4 float32, XYXY pixels
of the input image), ``scores`` (N float32), ``classes`` (N int64, indices into
``metadata["class_names"]``), ``masks`` (N x H x W bool). The score threshold used at export
(``metadata["score_threshold"]``) is inside the artifact; ``min_score`` keeps fewer detections.

TorchScript artifacts call torchvision's registered ops (``torchvision::nms``, ``roi_align``),
so torchvision is imported before loading. This module imports only the standard library and
numpy at import time.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

__all__ = ["ExportedModel", "load", "METADATA_FILE"]

METADATA_FILE = "metadata.json"
OUTPUT_NAMES = ("boxes", "classes", "masks", "scores")  # the artifact's output order


class ExportedModel:
    """A loaded artifact: call it on a BGR uint8 image to get its detections as numpy arrays."""

    def __init__(self, export_dir: str | os.PathLike, *, threads: int | None = None):
        """Load ``export_dir``/metadata.json and the artifact it names. ``threads``: intra-op
        threads (default: the runtime's own default)."""
        self.export_dir = Path(export_dir)
        metadata_path = self.export_dir / METADATA_FILE
        if not metadata_path.is_file():
            raise FileNotFoundError(f"{metadata_path}: no such file (is this an export folder?)")
        with open(metadata_path, encoding="utf-8") as f:
            self.metadata = json.load(f)
        self.format = self.metadata["format"]
        artifact = self.export_dir / self.metadata["artifact"]
        if self.format == "torchscript":
            self._run = _load_torchscript(artifact, threads)
        elif self.format == "onnx":
            self._run = _load_onnx(artifact, threads)
        else:
            raise ValueError(f"{metadata_path}: unknown format {self.format!r}")

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata.get("class_names", []))

    def __call__(self, image_bgr: np.ndarray, min_score: float | None = None) -> dict:
        """Detections of one ``H x W x 3`` uint8 BGR image: ``boxes``, ``scores``, ``classes``,
        ``masks`` (numpy), highest score first per class; ``min_score`` drops lower scores."""
        image = np.asarray(image_bgr)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"expected an H x W x 3 uint8 BGR image, got shape {image.shape} {image.dtype}"
            )
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"empty image of shape {image.shape}")
        outputs = dict(zip(OUTPUT_NAMES, self._run(np.ascontiguousarray(image)), strict=True))
        if min_score is not None:
            keep = outputs["scores"] >= min_score
            outputs = {name: value[keep] for name, value in outputs.items()}
        return outputs


def _load_torchscript(path: Path, threads: int | None):
    import torch
    import torchvision  # noqa: F401  (registers torchvision::nms / roi_align for the artifact)

    if threads:
        torch.set_num_threads(threads)
    module = torch.jit.load(str(path), map_location="cpu")
    module.eval()

    def run(image: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            outputs = module(torch.from_numpy(image))
        return [t.numpy() for t in outputs]

    return run


def _load_onnx(path: Path, threads: int | None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(image: np.ndarray) -> list[np.ndarray]:
        return session.run(list(OUTPUT_NAMES), {"image": image})

    return run


def load(export_dir: str | os.PathLike, *, threads: int | None = None) -> ExportedModel:
    """Load the exported model in ``export_dir`` (the folder with metadata.json)."""
    return ExportedModel(export_dir, threads=threads)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python runtime.py EXPORT_DIR IMAGE [IMAGE ...]", file=sys.stderr)
        return 2
    import cv2

    model = load(argv[0])
    for name in argv[1:]:
        image = cv2.imread(name, cv2.IMREAD_COLOR)
        if image is None:
            print(f"error: {name}: cannot be read as an image", file=sys.stderr)
            return 1
        out = model(image)
        print(
            json.dumps(
                {
                    "file": name,
                    "boxes": np.round(out["boxes"], 2).tolist(),
                    "scores": np.round(out["scores"], 4).tolist(),
                    "classes": [
                        model.class_names[c] if model.class_names else int(c)
                        for c in out["classes"]
                    ],  # fmt: skip
                    "mask_pixels": out["masks"].reshape(len(out["masks"]), -1).sum(1).tolist(),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
