#!/usr/bin/env python
"""Run an exported model (tools/export_model.py) on images or a video, as tools/infer.py does.

Examples::

    python tools/predict_exported.py --model export/pennfudan_onnx \
        --input ../shared/data/PennFudanPed/PNGImages --output output/predict
    python tools/predict_exported.py --model export/pennfudan_ts --input "photos/*.jpg" \
        --output out --splash --threads 2

Writes into ``--output`` what ``tools/infer.py`` writes: one PNG per image (the Visualizer
drawing, or with ``--splash`` the color splash), ``predictions.json`` (COCO results) and
``image_index.json``. Only the export folder is needed, not the config or the checkpoint; the
artifact runs with torch (TorchScript) or onnxruntime (ONNX), see the folder's runtime.py.
"""

from __future__ import annotations

import functools
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
from detectron2.data import MetadataCatalog  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from instseg_d2.data.catalog import get_dataset_dicts  # noqa: E402
from instseg_d2.engine.inference import (  # noqa: E402
    NoInputError,
    dataset_image_ids,
    image_inputs,
    log_summary,
    run_on_images,
    run_on_video,
)
from instseg_d2.export.predictor import ExportedPredictor  # noqa: E402
from instseg_d2.export.runtime import METADATA_FILE  # noqa: E402
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402
from instseg_d2.visualization.panels import prediction_picture  # noqa: E402

logger = logging.getLogger("instseg_d2.predict_exported")


def get_parser() -> ToolArgumentParser:
    parser = ToolArgumentParser(
        __doc__.split("\n\n")[0], config_file=False, output="folder for pictures and predictions"
    )
    parser.add_argument("--model", required=True, metavar="DIR", help="an export folder")
    parser.add_argument("--input", nargs="+", default=[], help="image files, folders or globs")
    parser.add_argument("--video-input", metavar="FILE", help="a video file instead of images")
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument("--splash", action="store_true", help="gray outside the predicted masks")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads")
    parser.add_argument(
        "--dataset",
        help="registered dataset of the inputs: write its image and category ids",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="instseg_d2")
    paths = image_inputs(args.input, args.video_input)
    if not os.path.isfile(os.path.join(args.model, METADATA_FILE)):
        raise NoInputError(f"{args.model}: no {METADATA_FILE}; pass a tools/export_model.py folder")
    image_ids = dataset_image_ids(get_dataset_dicts(args.dataset)) if args.dataset else None
    predictor = ExportedPredictor(
        args.model, min_score=args.confidence_threshold, threads=args.threads
    )
    built_in = predictor.model.metadata["score_threshold"]
    if args.confidence_threshold < built_in:
        logger.warning(
            "--confidence-threshold %s is below the %s built into the model: it keeps no more",
            args.confidence_threshold,
            built_in,
        )
    metadata = MetadataCatalog.get(args.dataset) if args.dataset else predictor.metadata
    draw = functools.partial(prediction_picture, metadata=metadata, splash=args.splash)
    if args.video_input:
        summary = run_on_video(predictor, args.video_input, args.output, draw, metadata)
    else:
        summary = run_on_images(predictor, paths, args.output, draw, metadata, 1, image_ids)
    log_summary(summary, args.output, len(paths))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
