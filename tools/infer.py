#!/usr/bin/env python
"""Run a trained Mask R-CNN on images or a video; write drawings and COCO-format predictions.

Examples::

    python tools/infer.py --config-file output/pennfudan_cpu/config.yaml \
        --input ../shared/data/PennFudanPed/PNGImages --output output/infer
    python tools/infer.py --config-file configs/Balloon/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml \
        --weights output/balloon_cpu/model_final.pth --input "photos/*.jpg" --output out --splash

Writes into ``--output``: one PNG per input image (same size as the input: the Visualizer
drawing, or with ``--splash`` the color splash), ``predictions.json`` (a COCO results list:
image_id, category_id, bbox XYWH, score, RLE segmentation) and ``image_index.json`` (which file
each image_id is, and the files that were skipped and why). Files that cannot be read are
reported and skipped; the exit status is 1 only when nothing at all could be processed.
"""

from __future__ import annotations

import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
from detectron2.data import MetadataCatalog  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from instseg_d2.data.catalog import get_dataset_dicts  # noqa: E402
from instseg_d2.engine.defaults import setup_inference_config  # noqa: E402
from instseg_d2.engine.inference import (  # noqa: E402
    NoInputError,
    dataset_image_ids,
    image_inputs,
    log_summary,
    run_on_images,
    run_on_video,
)
from instseg_d2.engine.predictor import BatchPredictor  # noqa: E402
from instseg_d2.engine.tta import TTAPredictor  # noqa: E402
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402
from instseg_d2.visualization.panels import prediction_picture  # noqa: E402


def get_parser() -> ToolArgumentParser:
    parser = ToolArgumentParser(
        __doc__.split("\n\n")[0], output="folder for pictures and predictions"
    )
    parser.add_argument("--input", nargs="+", default=[], help="image files, folders or globs")
    parser.add_argument("--video-input", metavar="FILE", help="a video file instead of images")
    parser.add_argument("--weights", help="checkpoint (default: MODEL.WEIGHTS, else the run's)")
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--splash", action="store_true", help="gray outside the predicted masks")
    # Not given (None): INSTSEG.INFERENCE.BF16 of the config decides.
    parser.add_argument("--bf16", action="store_true", default=None,
                        help="bf16 autocast (CPU: ~2x faster)")  # fmt: skip
    parser.add_argument("--no-optimize", action="store_true", help="skip the fp32 CPU speed-ups")
    parser.add_argument(
        "--tta", action="store_true", help="test-time augmentation: TEST.AUG.MIN_SIZES, FLIP"
    )
    parser.add_argument(
        "--dataset",
        help="registered dataset of the inputs: write its image ids (default 0, 1, ...)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="instseg_d2")
    # The config first (its errors name the file), then the inputs, before the model is built.
    cfg = setup_inference_config(
        args.config_file, args.opts, args.weights, args.confidence_threshold
    )
    paths = image_inputs(args.input, args.video_input)
    if args.batch_size < 1:
        raise NoInputError(f"--batch-size must be >= 1, got {args.batch_size}")
    image_ids = dataset_image_ids(get_dataset_dicts(args.dataset)) if args.dataset else None
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0]) if len(cfg.DATASETS.TEST) else None
    draw = functools.partial(prediction_picture, metadata=metadata, splash=args.splash)
    optimize = False if args.no_optimize else None
    predictor_class = TTAPredictor if args.tta else BatchPredictor
    predictor = predictor_class(cfg, optimize=optimize, bf16=args.bf16)
    if args.video_input:
        summary = run_on_video(predictor, args.video_input, args.output, draw, metadata,
                               args.batch_size)  # fmt: skip
    else:
        summary = run_on_images(predictor, paths, args.output, draw, metadata, args.batch_size,
                                image_ids)  # fmt: skip
    log_summary(summary, args.output, len(paths))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
