#!/usr/bin/env python
"""Find what is wrong: per-image errors, possible annotation mistakes, PR curves, confusion matrix.

    python tools/analyze_errors.py --config-file output/pennfudan/config.yaml \
        --dataset pennfudan_val --output output/pennfudan/analysis/pennfudan_val
    python tools/analyze_errors.py --config-file output/pennfudan/config.yaml \
        --predictions output/pennfudan/inference/pennfudan_val/coco_instances_results.json \
        --dataset pennfudan_val --output output/analysis

Without --predictions the model (--weights, else MODEL.WEIGHTS, else the run's model_final.pth)
runs over the dataset and its predictions are kept as predictions.json. Writes
error_analysis.json, annotation_candidates.md/.json with pictures in candidates/, pr_curves.json/
.png and confusion_matrix.json/.png (see instseg_d2/visualization/error_analysis_files.py).
An --output of RUN/analysis/<dataset> puts the analysis into that run's report.
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
from detectron2.utils.logger import setup_logger  # noqa: E402

from instseg_d2.data.catalog import get_dataset_dicts  # noqa: E402
from instseg_d2.data.errors import DatasetError  # noqa: E402
from instseg_d2.engine.defaults import setup_config, setup_inference_config  # noqa: E402
from instseg_d2.utils.atomic import atomic_write  # noqa: E402
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402
from instseg_d2.visualization.error_analysis_files import (  # noqa: E402
    PREDICTIONS_FILE,
    predict_dataset,
    write_error_analysis,
)

logger = logging.getLogger("instseg_d2.analyze_errors")

# COCOEvaluator's default SCORE_THRESH_TEST: low scores make the PR curves and AP complete.
DETECTION_THRESHOLD = 0.05


def get_parser() -> ToolArgumentParser:
    parser = ToolArgumentParser(__doc__.split("\n\n")[0], output="folder for the analysis files")
    parser.add_argument("--dataset", help="registered split (default: DATASETS.TEST[0])")
    parser.add_argument("--predictions", metavar="JSON",
                        help="COCO results to analyse instead of running the model")  # fmt: skip
    parser.add_argument("--weights", help="checkpoint (default: MODEL.WEIGHTS, else the run's)")
    parser.add_argument("--score-threshold", type=float, default=0.5,
                        help="detections counted as the model's answer (default 0.5)")  # fmt: skip
    parser.add_argument("--num-pictures", type=int, default=20,
                        help="candidate pictures to draw (default 20)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=2)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="instseg_d2")
    if args.predictions:
        cfg, _ = setup_config(args.config_file, args.opts, check_datasets=False)
    else:
        cfg = setup_inference_config(args.config_file, args.opts, args.weights,
                                     min(DETECTION_THRESHOLD, args.score_threshold))  # fmt: skip
    dataset_name = args.dataset or (cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else None)
    if not dataset_name:
        raise DatasetError("no --dataset given and the config has no DATASETS.TEST")
    dicts = get_dataset_dicts(dataset_name)
    output = Path(args.output)
    predictions = args.predictions
    if predictions is None:
        results = predict_dataset(cfg, dicts, dataset_name, args.batch_size)
        predictions = output / PREDICTIONS_FILE
        output.mkdir(parents=True, exist_ok=True)
        atomic_write(predictions, json.dumps(results))
    path = write_error_analysis(dataset_name, predictions, output,
                                score_threshold=args.score_threshold,
                                num_pictures=args.num_pictures)  # fmt: skip
    print(f"{path.parent}: error_analysis.json, annotation_candidates.md, pr_curves.png, "
          "confusion_matrix.png")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
