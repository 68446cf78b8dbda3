"""K-fold cross-validation: the folds of a config, the state of their run folders, the summary.

Running the folds is tools/cross_validate.py's job (one tools/train_net.py process per fold);
this module says what each fold trains and tests on, what a fold folder still needs, and
summarises the folds' own ``final_metrics.json`` into ``cv_summary.json/.md``.

Folds: the images of the config's ``DATASETS.TRAIN`` + ``DATASETS.TEST`` are the pool. Repeat 0
uses the dataset's built-in folds when it has them for this k and pool (Penn-Fudan's 5 folds),
every other case a seeded split of the pool stratified by class (:mod:`instseg_d2.data.folds`);
repeat r uses the assignment seed ``seed + r`` and the training seed ``seed + r``, so repeats
differ in both.

Intervals over folds: Student's t on the fold values (``ci95``), and Nadeau and Bengio's
corrected one (``ci95_corrected``), which accounts for the folds sharing most of their training
images; the plain interval is too narrow for that reason (Bengio and Grandvalet 2004: no
unbiased estimate of a cross-validation's variance exists).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from detectron2.config import CfgNode
from tabulate import tabulate

from ..data.folds import builtin_folds, pooled_fold_names
from ..utils.atomic import atomic_write
from ..utils.errors import UserError
from .intervals import t_interval

logger = logging.getLogger(__name__)

__all__ = [
    "SUMMARY_FILE",
    "CrossValidationError",
    "Fold",
    "fold_state",
    "plan_folds",
    "read_fold_metrics",
    "summarize_folds",
    "write_summary",
]

SUMMARY_FILE = "cv_summary.json"
TASKS = ("bbox", "segm")
METRICS = ("AP", "AP50", "AP75")
# A fold folder holds what tools/train_net.py leaves; these decide what a fold still needs.
_FINAL, _WEIGHTS, _LAST = "final_metrics.json", "model_final.pth", "last_checkpoint"


class CrossValidationError(UserError, RuntimeError):
    """A cross-validation that cannot go on (a failed fold, a folder of other settings)."""


@dataclass(frozen=True)
class Fold:
    """One training run of the cross-validation and the config overrides that make it."""

    repeat: int
    fold: int
    seed: int  # SEED of the run
    train: str  # registered dataset names
    test: str
    source: str  # "built-in" or "pooled"
    opts: tuple[str, ...]  # KEY VALUE overrides for tools/train_net.py

    @property
    def name(self) -> str:
        """Its folder's name under the cross-validation's output."""
        return f"r{self.repeat}_fold{self.fold}"


def pool_of(cfg: CfgNode) -> tuple[str, ...]:
    """The config's training and test sets, each once, in order."""
    return tuple(dict.fromkeys([*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]))


def plan_folds(cfg: CfgNode, num_folds: int, repeats: int = 1, seed: int = 0) -> list[Fold]:
    """Every fold of every repeat (see the module docstring), in running order."""
    if num_folds < 2:
        raise CrossValidationError(f"--folds must be at least 2, got {num_folds}")
    if repeats < 1:
        raise CrossValidationError(f"--repeats must be at least 1, got {repeats}")
    pool = pool_of(cfg)
    if not pool:
        raise CrossValidationError("the config has no DATASETS.TRAIN or DATASETS.TEST to pool")
    plan = []
    for repeat in range(repeats):
        run_seed = seed + repeat
        builtin = builtin_folds(pool, num_folds) if repeat == 0 else None
        for fold in range(num_folds):
            if builtin:
                train, test = builtin[fold]
                opts = ("DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{test}',)")
                source = "built-in"
            else:
                train, test = pooled_fold_names(pool, num_folds, fold, run_seed)
                prefix = "INSTSEG.CROSS_VALIDATION."
                opts = (f"{prefix}POOL", repr(pool), f"{prefix}NUM_FOLDS", str(num_folds),
                        f"{prefix}FOLD", str(fold), f"{prefix}SEED", str(run_seed))  # fmt: skip
                source = "pooled"
            opts = (*opts, "SEED", str(run_seed))
            plan.append(Fold(repeat, fold, run_seed, train, test, source, opts))
    return plan


def fold_state(fold_dir: str | os.PathLike) -> str:
    """What a fold folder needs: ``done`` (has final_metrics.json), ``evaluate`` (trained, the
    evaluation was cut off), ``resume`` (has a checkpoint) or ``train`` (nothing yet)."""
    fold_dir = Path(fold_dir)
    if (fold_dir / _FINAL).is_file():
        return "done"
    if (fold_dir / _WEIGHTS).is_file():
        return "evaluate"
    if (fold_dir / _LAST).is_file():
        return "resume"
    return "train"


def read_fold_metrics(fold_dir: str | os.PathLike, test_set: str) -> dict[str, dict]:
    """``{task: {metric: value}}`` of a fold's final_metrics.json for its test set."""
    path = Path(fold_dir) / _FINAL
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CrossValidationError(f"{path}: cannot read the fold's results ({exc})") from None
    metrics = (data.get("datasets") or {}).get(test_set)
    if not isinstance(metrics, dict):
        raise CrossValidationError(f"{path}: no results for the fold's test set {test_set}")
    return {task: dict(metrics[task]) for task in TASKS if isinstance(metrics.get(task), dict)}


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def summarize_folds(
    folds: Sequence[Fold], metrics: Sequence[Mapping[str, Mapping]], *, num_folds: int
) -> dict:
    """``{"folds": [...], "summary": {task: {metric: {n, mean, std, low, high, values,
    ci95, ci95_corrected}}}}`` over the folds' metrics (a metric missing in a fold is left out
    of that metric's summary, and ``n`` says how many folds it has)."""
    rows = [
        {**asdict(f), "name": f.name, "metrics": dict(m)}
        for f, m in zip(folds, metrics, strict=True)
    ]
    summary: dict[str, dict] = {}
    for task in TASKS:
        for metric in METRICS:
            values = [m[task][metric] for m in metrics if _finite(m.get(task, {}).get(metric))]
            if not values:
                continue
            plain = t_interval(values)
            corrected = t_interval(values, test_train_ratio=1 / (num_folds - 1))
            summary.setdefault(task, {})[metric] = {
                **plain.to_json(),
                "values": values,
                "ci95": [plain.low, plain.high] if plain.low is not None else None,
                "ci95_corrected": (
                    [corrected.low, corrected.high] if corrected.low is not None else None
                ),
            }
    return {"folds": rows, "summary": summary}


def _interval_text(interval) -> str:
    return "-" if interval is None else f"{interval[0]:.2f} to {interval[1]:.2f}"


def summary_markdown(result: Mapping, title: str) -> str:
    """The per-metric table (mean, std, both intervals) and the per-fold values."""
    rows = [
        [task, metric, s["n"], f"{s['mean']:.2f}", "-" if s["std"] is None else f"{s['std']:.2f}",
         _interval_text(s["ci95"]), _interval_text(s["ci95_corrected"])]
        for task, metrics in result["summary"].items()
        for metric, s in metrics.items()
    ]  # fmt: skip
    headers = ["task", "metric", "folds", "mean", "std", "95% t-interval", "95% corrected"]
    fold_rows = [
        [f["name"], f["train"], f["test"], f["seed"],
         *(f["metrics"].get(t, {}).get(m) for t in TASKS for m in METRICS)]
        for f in result["folds"]
    ]  # fmt: skip
    fold_headers = ["fold", "train", "test", "seed", *(f"{t} {m}" for t in TASKS for m in METRICS)]
    return (
        f"# {title}\n\n"
        + tabulate(rows, headers=headers, tablefmt="github")
        + "\n\n95% t-interval: Student's t over the fold values. Corrected: Nadeau and Bengio's "
        "variance s^2 (1/n + n_test/n_train), which allows for the folds sharing training "
        "images; the plain interval is too narrow for that reason.\n\n"
        + tabulate(
            fold_rows, headers=fold_headers, tablefmt="github", floatfmt=".2f", missingval="-"
        )  # fmt: skip
        + "\n"
    )


def write_summary(output_dir: str | os.PathLike, result: Mapping, info: Mapping) -> Path:
    """Write ``cv_summary.json`` (``info`` + ``result``) and ``cv_summary.md``; returns the json."""
    output_dir = Path(output_dir)
    document = {**info, **result}
    path = output_dir / SUMMARY_FILE
    atomic_write(path, json.dumps(document, indent=2, allow_nan=False) + "\n")
    k, r = info.get("num_folds"), info.get("repeats")
    title = f"Cross-validation, {k} folds x {r} repeat(s): {info.get('config_file')}"
    atomic_write(output_dir / "cv_summary.md", summary_markdown(result, title))
    return path
