#!/usr/bin/env python
"""Run a trained Mask R-CNN on images or a video; write drawings and COCO-format predictions.

Examples::

    python tools/infer.py --config-file output/pennfudan/config.yaml \
        --input ../shared/data/PennFudanPed/PNGImages --output /tmp/infer
    python tools/infer.py --config-file configs/Balloon/mask_rcnn_R18_FPN_cpu.yaml \
        --weights output/balloon/model_final.pth --input "photos/*.jpg" --output out --splash

Writes into ``--output``: one PNG per input image (same size as the input: the Visualizer
drawing, or with ``--splash`` the color splash), ``predictions.json`` (a COCO results list:
image_id, category_id, bbox XYWH, score, RLE segmentation) and ``image_index.json`` (which file
each image_id is, and the files that were skipped and why). Files that cannot be read are
reported and skipped; the exit status is 1 only when nothing at all could be processed.
"""

from __future__ import annotations

import argparse
import logging
import sys

from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger

import instseg_d2.data  # noqa: F401  (registers the builtin datasets, for their metadata)
from instseg_d2.engine.predictor import BatchPredictor
from instseg_d2.visualization.compare import load_split
from instseg_d2.visualization.inference import (
    NoInputError,
    collect_image_paths,
    dataset_image_ids,
    run_on_images,
    run_on_video,
    setup_inference_cfg,
)

logger = logging.getLogger("instseg_d2.infer")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", default=[], help="image files, folders or globs")
    parser.add_argument("--video-input", metavar="FILE", help="a video file instead of images")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--weights", help="checkpoint (default: MODEL.WEIGHTS of the config)")
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument(
        "--splash", action="store_true", help="color splash: gray outside the predicted masks"
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        default=None,  # not given: INSTSEG.INFERENCE.BF16 of the config decides
        help="bf16 autocast for the network (CPU: about 2x faster; see BENCHMARKS.md)",
    )
    parser.add_argument(
        "--no-optimize",
        action="store_true",
        help="skip the fp32-exact CPU speed-ups (BN folding, channels-last, fast CPU RoIAlign); "
        "they are applied on CPU only",
    )
    parser.add_argument(
        "--dataset",
        help="registered dataset the inputs belong to: its image ids are written (so the "
        "predictions load against its COCO export); default ids are 0, 1, 2, ...",
    )
    parser.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="instseg_d2")
    if bool(args.input) == bool(args.video_input):
        raise SystemExit("error: give either --input (images) or --video-input (a video)")
    if args.batch_size < 1:
        raise SystemExit(f"error: --batch-size must be >= 1, got {args.batch_size}")
    cfg = setup_inference_cfg(args.config_file, args.opts, args.weights, args.confidence_threshold)
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0]) if len(cfg.DATASETS.TEST) else None

    if args.video_input:
        predictor = BatchPredictor(
            cfg, optimize=False if args.no_optimize else None, bf16=args.bf16
        )
        try:
            summary = run_on_video(
                predictor, args.video_input, args.output, metadata, args.batch_size, args.splash
            )
        except NoInputError as exc:
            raise SystemExit(f"error: {exc}") from None
        logger.info("wrote %s and %s", summary.written[0], summary.predictions_file)
        return 0

    paths, problems = collect_image_paths(args.input)
    for item, reason in problems:
        logger.warning("input %s: %s", item, reason)
    if not paths:
        raise SystemExit("error: no input image found (see the warnings above)")
    image_ids = None
    if args.dataset:
        try:
            image_ids = dataset_image_ids(load_split(args.dataset))
        except (KeyError, ValueError) as exc:  # not registered / dataset files missing or bad
            raise SystemExit(f"error: {exc.args[0]}") from None
    predictor = BatchPredictor(cfg, optimize=False if args.no_optimize else None, bf16=args.bf16)
    try:
        summary = run_on_images(
            predictor, paths, args.output, metadata, args.batch_size, args.splash, image_ids
        )
    except NoInputError as exc:
        raise SystemExit(f"error: {exc}") from None
    for path, reason in summary.skipped:
        logger.warning("skipped %s: %s", path, reason)
    logger.info(
        "%d image(s) written to %s (%d instances), %d skipped; predictions: %s",
        len(summary.written),
        args.output,
        summary.num_instances,
        len(summary.skipped),
        summary.predictions_file,
    )
    if not summary.written:
        print(f"error: none of the {len(paths)} input image(s) could be read", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
