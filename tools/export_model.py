#!/usr/bin/env python
"""Export a trained Mask R-CNN to TorchScript or ONNX, checked against the eager model.

Examples::

    python tools/export_model.py --config-file output/pennfudan_cpu/config.yaml \
        --format onnx --output export/pennfudan_onnx
    python tools/export_model.py --config-file configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml \
        --weights output/pennfudan_cpu/model_final.pth --format torchscript --variant bf16 \
        --output export/pennfudan_ts_bf16

Writes into ``--output``: ``model.ts`` or ``model.onnx`` (image in: H x W x 3 uint8 BGR, any
size; boxes, classes, masks at the image's size and scores out: the resize, the network and the
mask pasting are inside), ``runtime.py`` (loads and runs it with torch or onnxruntime alone) and
``metadata.json`` (class names, input format, thresholds, the config, the checkpoint's sha256,
versions, parity figures). Before it finishes, the artifact is loaded back and run on
``--parity-images`` images of ``--parity-dataset``; it exits with status 1 when its detections
differ from the eager model's beyond the tolerances (box 0.5 px, score 1e-3, mask IoU 0.98).
"""

from __future__ import annotations

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
from detectron2.utils.logger import setup_logger  # noqa: E402

from instseg_d2.data.catalog import get_dataset_dicts  # noqa: E402
from instseg_d2.data.image_io import read_image  # noqa: E402
from instseg_d2.engine.defaults import setup_inference_config  # noqa: E402
from instseg_d2.export.exporter import (  # noqa: E402
    ARTIFACT_NAMES,
    DEFAULT_OPSET,
    VARIANTS,
    ExportError,
    export_model,
)
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402

logger = logging.getLogger("instseg_d2.export")


def get_parser() -> ToolArgumentParser:
    parser = ToolArgumentParser(__doc__.split("\n\n")[0], output="folder for the exported model")
    parser.add_argument("--format", required=True, choices=sorted(ARTIFACT_NAMES))
    parser.add_argument("--weights", help="checkpoint (default: MODEL.WEIGHTS, else the run's)")
    parser.add_argument("--variant", default="plain", choices=VARIANTS,
                        help="optimized and bf16: TorchScript only (default: plain)")  # fmt: skip
    parser.add_argument("--sample-image", metavar="IMG",
                        help="image to trace with (default: the first parity image)")  # fmt: skip
    parser.add_argument("--parity-dataset", help="registered split (default: DATASETS.TEST[0])")
    parser.add_argument("--parity-images", type=int, default=5, metavar="N",
                        help="first N images of it (default: 5)")  # fmt: skip
    parser.add_argument("--confidence-threshold", type=float, default=None,
                        help="score threshold built in (default: the config's)")  # fmt: skip
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="instseg_d2")
    if args.parity_images < 1:
        raise ExportError(f"--parity-images must be >= 1, got {args.parity_images}")
    cfg = setup_inference_config(
        args.config_file, args.opts, args.weights, args.confidence_threshold
    )
    dataset = args.parity_dataset or (cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else None)
    if dataset is None:
        raise ExportError("the config has no DATASETS.TEST: pass --parity-dataset NAME")
    dicts = get_dataset_dicts(dataset, num_images=args.parity_images)
    images = [read_image(d["file_name"], format="BGR") for d in dicts]
    sample = read_image(args.sample_image, format="BGR") if args.sample_image else None
    result = export_model(
        cfg, args.format, args.output, images, sample_image=sample, variant=args.variant,
        opset=args.opset,
    )  # fmt: skip
    logger.info("parity on %d image(s) of %s: %s", len(images), dataset, result.parity.summary())
    logger.info("wrote %s, %s and runtime.py", result.artifact, result.metadata_file)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
