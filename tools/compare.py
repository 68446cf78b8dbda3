#!/usr/bin/env python
"""Side-by-side panels, image | predictions | ground truth, for the images of a registered split.

Example::

    python tools/compare.py --config-file output/pennfudan/config.yaml \
        --dataset pennfudan_val --num-images 5 --output output/panels

Writes one ``<file>_panel.png`` per image (three times the image's width, a header with the
column titles and the image's TP/FP/FN) and ``matches.json`` with the per-image and total counts.
Predictions are matched to ground truth greedily by score at mask IoU >= ``--iou-threshold``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
import numpy as np  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from instseg_d2.data.catalog import get_dataset_dicts  # noqa: E402
from instseg_d2.data.errors import DatasetError  # noqa: E402
from instseg_d2.engine.defaults import setup_inference_config  # noqa: E402
from instseg_d2.engine.predictor import BatchPredictor  # noqa: E402
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402
from instseg_d2.visualization.split_panels import compare_split  # noqa: E402

logger = logging.getLogger("instseg_d2.compare")


def get_parser() -> ToolArgumentParser:
    parser = ToolArgumentParser(__doc__.split("\n\n")[0], output="folder for the panels")
    parser.add_argument("--dataset", help="registered split (default: DATASETS.TEST[0])")
    parser.add_argument("--num-images", type=int, default=None, help="first N images (all)")
    parser.add_argument("--weights", help="checkpoint (default: MODEL.WEIGHTS, else the run's)")
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument("--iou-threshold", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-width", type=int, default=0, help="shrink wider panels (0: keep)")
    parser.add_argument("--png-colors", type=int, default=0, help="palette PNG colors (0: RGB)")
    return parser


def save_panel(panel_rgb: np.ndarray, path: Path, max_width: int = 0, colors: int = 0) -> None:
    """Write a panel as PNG, scaled down to ``max_width`` and reduced to ``colors`` palette
    colors when those are > 0 (small files for a README; 256 colors keep photos readable)."""
    image = Image.fromarray(panel_rgb)
    if 0 < max_width < image.width:
        height = round(image.height * max_width / image.width)
        image = image.resize((max_width, height), Image.Resampling.LANCZOS)
    if colors > 0:
        image = image.quantize(
            colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    image.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="instseg_d2")
    cfg = setup_inference_config(
        args.config_file, args.opts, args.weights, args.confidence_threshold
    )
    dataset_name = args.dataset or (cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else None)
    if not dataset_name:
        raise DatasetError("no --dataset given and the config has no DATASETS.TEST")
    dicts = get_dataset_dicts(dataset_name, args.num_images)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    predictor = BatchPredictor(cfg)
    per_image = []
    totals = {"tp": 0, "fp": 0, "fn": 0}
    items = compare_split(predictor, dataset_name, dicts, args.batch_size, args.iou_threshold)
    for item in tqdm(items, total=len(dicts), desc="compare", unit="img"):
        name = Path(item.dataset_dict["file_name"]).stem
        save_panel(item.panel, output / f"{name}_panel.png", args.max_width, args.png_colors)
        counts = item.match.as_dict()
        per_image.append(
            {
                "file_name": item.dataset_dict["file_name"],
                "num_predictions": item.match.true_positives + item.match.false_positives,
                "num_ground_truth": item.match.true_positives + item.match.false_negatives,
                **counts,
            }
        )
        for key, value in counts.items():
            totals[key] += value
    if not per_image:
        raise DatasetError(f"no image of {dataset_name} could be read")
    with open(output / "matches.json", "w", encoding="utf-8") as f:
        json.dump(
            {
                "dataset": dataset_name,
                "iou_threshold": args.iou_threshold,
                "score_threshold": args.confidence_threshold,
                "total": totals,
                "images": per_image,
            },
            f,
            indent=1,
        )
    logger.info(
        "%d panel(s) in %s: TP %d, FP %d, FN %d",
        len(per_image),
        output,
        totals["tp"],
        totals["fp"],
        totals["fn"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
