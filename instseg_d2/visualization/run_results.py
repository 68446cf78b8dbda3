"""What a run leaves at its end: the final COCO table with its bootstrap intervals, the error
analysis, the HTML report and the MLflow record, in that order (each step reads the files of the
ones before). ``tools/train_net.py`` calls :func:`write_run_results` after training and after
``--eval-only``.

It lives in the top layer because the report and the analysis pictures are drawn here; the
numbers come from :mod:`instseg_d2.engine` and :mod:`instseg_d2.evaluation`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping

from detectron2.config import CfgNode
from detectron2.utils import comm

from ..engine.final_metrics import write_final_metrics
from ..engine.mlflow_writer import log_final_results
from ..engine.tta import with_tta_results
from ..evaluation.bootstrap import BootstrapError, bootstrap_test_sets, describe_method
from .error_analysis_files import analyze_test_sets
from .metrics import load_series
from .plots import eval_metrics_figure, learning_curve_figure, save_figure
from .report import write_report

__all__ = ["write_run_results"]

logger = logging.getLogger(__name__)


def _bootstrap_intervals(cfg: CfgNode) -> dict:
    """95% intervals of the last evaluation's AP by resampling the test images (none if off)."""
    samples, seed = cfg.INSTSEG.BOOTSTRAP.SAMPLES, cfg.INSTSEG.BOOTSTRAP.SEED
    if samples <= 0:
        return {}
    tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
    try:
        return bootstrap_test_sets(cfg.OUTPUT_DIR, cfg.DATASETS.TEST, tasks, samples, seed)
    except BootstrapError as exc:  # the metrics stand without their interval
        logger.warning(f"No bootstrap interval: {exc}")
        return {}


def _log_to_mlflow(cfg: CfgNode, summary: dict) -> None:
    """Final metrics, result files and the metric plots into the run's MLflow run."""
    files = [os.path.join(cfg.OUTPUT_DIR, f) for f in ("final_metrics.json", "final_metrics.md",
             "report.html", "metrics.json", "config.yaml")]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        plots = []
        if os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "metrics.json")):
            runs = {os.path.basename(os.path.abspath(cfg.OUTPUT_DIR)): load_series(cfg.OUTPUT_DIR)}
            plots = [save_figure(learning_curve_figure(runs), f"{tmp}/learning_curve.png"),
                     save_figure(eval_metrics_figure(runs), f"{tmp}/eval_metrics.png")]  # fmt: skip
        log_final_results(cfg, summary, files, plots)


def write_run_results(
    cfg: CfgNode,
    results: Mapping | None,
    weights: str,
    iteration: int | None,
    seed: int | None,
    tta_results: Mapping | None = None,
) -> None:
    """Write the end-of-run files into ``cfg.OUTPUT_DIR`` (main process only; nothing without
    ``results``). ``seed``: the training's SEED (None for ``--eval-only``, where the weights' own
    seed is unknown); ``tta_results``: the evaluation with test-time augmentation, written as
    ``<dataset>_TTA`` rows."""
    if not comm.is_main_process() or not results:
        return
    intervals = _bootstrap_intervals(cfg)
    method = describe_method(cfg.INSTSEG.BOOTSTRAP.SAMPLES, cfg.INSTSEG.BOOTSTRAP.SEED)
    test_sets = cfg.DATASETS.TEST
    if tta_results:
        results, test_sets = with_tta_results(results, tta_results, test_sets)
    summary = write_final_metrics(results, cfg.OUTPUT_DIR, test_sets, weights=weights,
                                  iteration=iteration, seed=seed, intervals=intervals,
                                  interval_method=method)  # fmt: skip
    for path in analyze_test_sets(cfg):
        logger.info(f"Error analysis: {path.parent}")
    if cfg.INSTSEG.REPORT:
        logger.info(f"Report: {write_report(cfg.OUTPUT_DIR)}")
    if cfg.INSTSEG.MLFLOW.ENABLED:
        _log_to_mlflow(cfg, summary)
