"""The final COCO table of a run: printed, and saved as ``final_metrics.json`` / ``.md``."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping

from tabulate import tabulate

from ..utils.atomic import atomic_write

logger = logging.getLogger(__name__)

TASKS = ("bbox", "segm")
COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# The metrics that get an interval, and the suffix of their entries (``segm_ci95``).
INTERVAL_COLUMNS = ("AP", "AP50", "AP75")
CI_SUFFIX = "_ci95"


def per_dataset(results: Mapping, test_sets: list[str] | tuple[str, ...]) -> dict[str, dict]:
    """``{dataset: {task: {metric: value}}}`` from ``DefaultTrainer.test``'s return value.

    ``test`` returns the evaluator's dict itself when there is one test set and a dict keyed by
    dataset name otherwise.
    """
    if len(test_sets) == 1 and test_sets[0] not in results:
        results = {test_sets[0]: results}
    return {
        name: {task: dict(results[name][task]) for task in TASKS if task in results[name]}
        for name in test_sets
        if name in results
    }


def _finite_or_none(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def format_table(datasets: Mapping[str, Mapping], fmt: str = "github") -> str:
    rows = []
    for name, tasks in datasets.items():
        for task, metrics in tasks.items():
            rows.append([name, task, *(_finite_or_none(metrics.get(c)) for c in COLUMNS)])
    # "-" where COCO has no value (NaN: no object of that size in the test set).
    return tabulate(rows, headers=["dataset", "task", *COLUMNS], tablefmt=fmt, floatfmt=".2f",
                    missingval="-")  # fmt: skip


PER_CLASS_PREFIX = "AP-"


def per_class_ap(datasets: Mapping[str, Mapping]) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{dataset: {class: {task: AP}}}`` from COCOEvaluator's ``AP-<class>`` entries (it adds one
    per class of the dataset's ``thing_classes``)."""
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    for name, tasks in datasets.items():
        for task, metrics in tasks.items():
            for key, value in metrics.items():
                if key.startswith(PER_CLASS_PREFIX):
                    cls = key[len(PER_CLASS_PREFIX) :]
                    table.setdefault(name, {}).setdefault(cls, {})[task] = _finite_or_none(value)
    return table


def format_per_class_table(per_class: Mapping[str, Mapping], fmt: str = "github") -> str:
    """Rows ``dataset, class``, a column of AP per task; empty string for one-class data."""
    rows = []
    tasks = list(
        dict.fromkeys(t for classes in per_class.values() for c in classes.values() for t in c)
    )
    for name, classes in per_class.items():
        if len(classes) < 2:
            continue
        for cls, aps in classes.items():
            rows.append([name, cls, *(aps.get(t) for t in tasks)])
    if not rows:
        return ""
    return tabulate(rows, headers=["dataset", "class", *(f"{t} AP" for t in tasks)],
                    tablefmt=fmt, floatfmt=".2f", missingval="-")  # fmt: skip


def format_interval_table(
    intervals: Mapping[str, Mapping[str, Mapping]], method: Mapping | None = None
) -> str:
    """``intervals`` as a markdown table of ``low-high`` cells, with a line saying what they are
    (empty string without intervals)."""
    rows = [
        [name, task, *(_interval_text(metrics.get(c)) for c in INTERVAL_COLUMNS)]
        for name, tasks in intervals.items()
        for task, metrics in tasks.items()
    ]
    if not rows:
        return ""
    how = ""
    if method:
        how = (
            f" ({method.get('method')}, {method.get('samples')} samples, seed {method.get('seed')})"
        )
    headers = ["dataset", "task", *INTERVAL_COLUMNS]
    table = tabulate(rows, headers=headers, tablefmt="github", missingval="-")
    return f"\n95% intervals{how}:\n\n{table}\n"


def _interval_text(interval) -> str | None:
    return None if interval is None else f"{interval[0]:.2f}-{interval[1]:.2f}"


def write_final_metrics(
    results: Mapping,
    output_dir: str,
    test_sets: list[str] | tuple[str, ...],
    *,
    weights: str = "",
    iteration: int | None = None,
    seed: int | None = None,
    intervals: Mapping[str, Mapping[str, Mapping]] | None = None,
    interval_method: Mapping | None = None,
) -> dict:
    """Print the table and write ``final_metrics.json`` and ``final_metrics.md``; returns the JSON.

    JSON layout: ``{"weights", "iteration", "seed", "datasets": {name: {"bbox": {...},
    "segm": {...}, "bbox_ci95": {...}, "segm_ci95": {...}}}, "bbox": {...}, "segm": {...},
    "bbox_ci95": ..., "bootstrap": {...}}`` where the top-level ``bbox``/``segm`` (and their
    intervals) are those of the first test set (the common single-test-set case); NaN values (no
    object of that size) are null. ``intervals`` (``{dataset: {task: {metric: (low, high)}}}``,
    see :mod:`instseg_d2.evaluation.bootstrap`) become the ``<task>_ci95`` entries and
    ``interval_method`` says how they were made (``bootstrap``). ``per_class``
    (``{name: {class: {"bbox": AP, "segm": AP}}}``) holds COCOEvaluator's AP per class; the
    markdown adds a table of it when a test set has several classes.
    """
    datasets = per_dataset(results, test_sets)
    intervals = intervals or {}
    table = format_table(datasets)
    # COCO gives NaN where a size range has no object (APs on PennFudan): null in strict JSON.
    datasets = {
        name: {task: {k: _finite_or_none(v) for k, v in m.items()} for task, m in tasks.items()}
        for name, tasks in datasets.items()
    }
    for name, tasks in intervals.items():
        for task, metrics in tasks.items():
            if name in datasets:
                datasets[name][f"{task}{CI_SUFFIX}"] = {
                    k: None if v is None else [float(v[0]), float(v[1])] for k, v in metrics.items()
                }
    first = datasets[test_sets[0]] if test_sets and test_sets[0] in datasets else {}
    per_class = per_class_ap(datasets)
    summary = {"weights": weights, "iteration": iteration, "seed": seed, "datasets": datasets,
               "per_class": per_class, **first}  # fmt: skip
    if intervals and interval_method:
        summary["bootstrap"] = dict(interval_method)
    table += format_interval_table(intervals, interval_method)
    class_table = format_per_class_table(per_class)
    if class_table:
        table += "\n\nAP per class:\n\n" + class_table
    logger.info("Final COCO metrics:\n" + table)
    print(table, flush=True)
    os.makedirs(output_dir, exist_ok=True)
    atomic_write(
        os.path.join(output_dir, "final_metrics.json"),
        json.dumps(summary, indent=2, sort_keys=True, allow_nan=False) + "\n",
    )
    where = f"`{weights}`" + (f", iteration {iteration}" if iteration is not None else "")
    seed_line = f"\n\nSeed: {seed}" if seed is not None else ""
    markdown = f"# Final COCO metrics\n\nWeights: {where}{seed_line}\n\n{table}\n"
    atomic_write(os.path.join(output_dir, "final_metrics.md"), markdown)
    return summary
