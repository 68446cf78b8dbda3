"""95% intervals of COCO AP for one evaluation, by resampling its test images (bootstrap).

The test images are drawn with replacement ``samples`` times (seeded); on each sample AP, AP50
and AP75 are recomputed from the per-image matching (:mod:`.coco_ap`), and the interval is the
2.5th to 97.5th percentile of the samples (percentile bootstrap). It says how much the number
would move on another test set of the same size from the same source; it does not cover the
training run's own randomness (seeds, folds: see :mod:`.cross_validation`).

A paired bootstrap (:func:`paired_bootstrap_ap`) draws the same images for two models evaluated
on one test set and gives the interval of the difference, which is much narrower than the two
intervals side by side when the models err on the same images.

Inputs are the files COCOEvaluator leaves: ``OUTPUT_DIR/inference/<dataset>/
coco_instances_results.json`` and the dataset's COCO json (its ``json_file``, or converted from the
registered dataset as COCOEvaluator converts it).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_json
from pycocotools.coco import COCO

from ..engine.evaluation import forget_stale_coco_json
from ..utils.errors import UserError
from .coco_ap import AP_METRICS, ImageMatching, match_images
from .intervals import CONFIDENCE, percentile_interval

logger = logging.getLogger(__name__)

__all__ = [
    "RESULTS_FILE",
    "BootstrapError",
    "bootstrap_ap",
    "bootstrap_test_sets",
    "describe_method",
    "load_matchings",
    "paired_bootstrap_ap",
    "resample_counts",
    "run_evaluation_files",
]

RESULTS_FILE = "coco_instances_results.json"


class BootstrapError(UserError, ValueError):
    """Evaluation files that cannot be resampled (missing, not COCO); the message names them."""


def describe_method(samples: int, seed: int) -> dict:
    """What an interval in final_metrics.json / a comparison is, for the reader of the file."""
    return {
        "method": "percentile bootstrap over test images",
        "confidence": CONFIDENCE,
        "samples": int(samples),
        "seed": int(seed),
    }


def resample_counts(num_images: int, num_samples: int, seed: int) -> np.ndarray:
    """``(num_samples, num_images)``: how often each image is in each sample drawn with
    replacement (each row sums to ``num_images``)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_images, np.full(num_images, 1 / num_images), size=num_samples)


def _read_json(path: Path, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise BootstrapError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BootstrapError(f"{path}: {what} is not valid JSON ({exc})") from None


def load_matchings(
    ground_truth_json: str | os.PathLike,
    results_json: str | os.PathLike,
    tasks: Sequence[str] = ("bbox", "segm"),
) -> dict[str, ImageMatching]:
    """The per-image matching of each task with predictions (``{}`` if there are none)."""
    gt_path, results_path = Path(ground_truth_json), Path(results_json)
    predictions = _read_json(results_path, "COCO results")
    if not isinstance(predictions, list):
        raise BootstrapError(f"{results_path}: expected a list of COCO results")
    if not predictions:
        logger.warning("%s: no predictions, so no interval (AP is NaN)", results_path)
        return {}
    _read_json(gt_path, "COCO ground truth")  # a clear error before pycocotools asserts
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
    matchings = {}
    for task in tasks:
        if task == "segm" and "segmentation" not in predictions[0]:
            continue  # a box-only model
        try:
            matchings[task] = match_images(coco_gt, predictions, task)
        except (KeyError, AssertionError, TypeError) as exc:
            raise BootstrapError(
                f"{results_path} does not fit {gt_path} for {task} ({type(exc).__name__}: {exc})"
            ) from None
    return matchings


def bootstrap_ap(
    matchings: Mapping[str, ImageMatching], samples: int = 1000, seed: int = 0
) -> dict[str, dict[str, tuple[float, float] | None]]:
    """``{task: {metric: (low, high)}}``: the 95% interval of AP, AP50, AP75 of each task."""
    intervals = {}
    for task, matching in matchings.items():
        counts = resample_counts(len(matching.image_ids), samples, seed)
        values = matching.average_precision(counts)
        intervals[task] = {m: percentile_interval(values[m]) for m in AP_METRICS}
    return intervals


def paired_bootstrap_ap(
    matchings_a: Mapping[str, ImageMatching],
    matchings_b: Mapping[str, ImageMatching],
    samples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, dict]]:
    """``{task: {metric: {"a", "b", "difference", "ci95"}}}`` of B - A on the same resampled
    images; both must be evaluations of the same test images."""
    out: dict[str, dict[str, dict]] = {}
    for task in matchings_a.keys() & matchings_b.keys():
        a, b = matchings_a[task], matchings_b[task]
        if a.image_ids != b.image_ids:
            raise BootstrapError(
                f"{task}: the two evaluations are not on the same test images "
                f"({len(a.image_ids)} and {len(b.image_ids)} images), so they cannot be paired"
            )
        counts = resample_counts(len(a.image_ids), samples, seed)
        identity = np.ones((1, len(a.image_ids)), dtype=np.int64)
        point_a, point_b = a.average_precision(identity), b.average_precision(identity)
        values_a, values_b = a.average_precision(counts), b.average_precision(counts)
        out[task] = {
            m: {
                "a": float(point_a[m][0]),
                "b": float(point_b[m][0]),
                "difference": float(point_b[m][0] - point_a[m][0]),
                "ci95": percentile_interval(values_b[m] - values_a[m]),
            }
            for m in AP_METRICS
        }
    return out


def _ground_truth_json(dataset_name: str, cache_dir: Path) -> Path:
    """The COCO json COCOEvaluator evaluates against: the dataset's own ``json_file``, else its
    conversion cached in ``cache_dir`` (where COCOEvaluator caches it), else converted now."""
    registered = dataset_name in DatasetCatalog.list()
    if registered:
        forget_stale_coco_json(dataset_name)
        json_file = MetadataCatalog.get(dataset_name).get("json_file")
        if json_file:
            return Path(json_file)
    cache = cache_dir / f"{dataset_name}_coco_format.json"
    if cache.is_file():
        return cache
    if not registered:
        raise BootstrapError(
            f"{cache_dir}: no {cache.name} and {dataset_name} is not a registered dataset here, "
            "so its ground truth is unknown"
        )
    convert_to_coco_json(dataset_name, str(cache))
    return cache


def run_evaluation_files(output_dir: str | os.PathLike, dataset_name: str) -> tuple[Path, Path]:
    """``(ground truth json, results json)`` of a run's last evaluation of ``dataset_name``."""
    folder = Path(output_dir) / "inference" / dataset_name
    results = folder / RESULTS_FILE
    if not results.is_file():
        raise BootstrapError(
            f"{results}: not found (COCOEvaluator writes it when the run evaluates {dataset_name})"
        )
    return _ground_truth_json(dataset_name, folder), results


def bootstrap_test_sets(
    output_dir: str | os.PathLike,
    test_sets: Sequence[str],
    tasks: Sequence[str],
    samples: int,
    seed: int,
) -> dict[str, dict[str, dict[str, tuple[float, float] | None]]]:
    """``{dataset: {task: {metric: (low, high)}}}`` for a run's last evaluation of each test set
    (a test set without predictions has no entry)."""
    out = {}
    for name in test_sets:
        gt_json, results_json = run_evaluation_files(output_dir, name)
        matchings = load_matchings(gt_json, results_json, tasks)
        if matchings:
            out[name] = bootstrap_ap(matchings, samples, seed)
    return out
