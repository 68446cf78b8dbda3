"""Two sets of runs compared pair by pair: the interval of the difference and a plain verdict.

A set is a cross-validation output (``cv_summary.json``: runs paired by fold), a folder of run
folders (paired by sub-folder name, e.g. ``seed1``, ``seed2``), or one run folder. For each
metric the differences B - A of the pairs give a mean and a 95% Student's t interval; for two
cross-validations the verdict uses Nadeau and Bengio's corrected interval, as the folds share
training images. One pair evaluated on the same images gets a paired bootstrap over those images
instead (:func:`instseg_d2.evaluation.bootstrap.paired_bootstrap_ap`), which covers the test
set's sampling but not the training's randomness: say so when reading it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from ..utils.errors import UserError
from .bootstrap import describe_method, load_matchings, paired_bootstrap_ap, run_evaluation_files
from .cross_validation import SUMMARY_FILE
from .intervals import t_interval

__all__ = ["ComparisonError", "RunSet", "compare_run_sets", "comparison_markdown", "load_run_set",
           "verdict"]  # fmt: skip

FINAL_METRICS = "final_metrics.json"
DEFAULT_METRICS = ("segm/AP", "segm/AP50", "segm/AP75", "bbox/AP", "bbox/AP50", "bbox/AP75")


class ComparisonError(UserError, ValueError):
    """Run sets that cannot be compared; the message names the folder and why."""


@dataclass
class Run:
    folder: Path
    test_set: str
    metrics: dict[str, dict]  # {task: {metric: value}}


@dataclass
class RunSet:
    """Runs keyed by what pairs them (fold name, sub-folder name, or ``run``)."""

    path: Path
    kind: str  # "cross-validation", "runs" or "run"
    runs: dict[str, Run]
    num_folds: int | None = None
    notes: list[str] = field(default_factory=list)


def _read_final_metrics(folder: Path) -> Run:
    path = folder / FINAL_METRICS
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ComparisonError(f"{path}: cannot read ({exc})") from None
    datasets = data.get("datasets") or {}
    if not datasets:
        raise ComparisonError(f"{path}: no evaluation results in it")
    test_set = next(iter(datasets))
    metrics = {t: m for t, m in datasets[test_set].items() if t in ("bbox", "segm")}
    return Run(folder, test_set, metrics)


def load_run_set(path: str | os.PathLike) -> RunSet:
    """The runs of a cross-validation output, a folder of run folders, or a run folder."""
    path = Path(path)
    if not path.is_dir():
        raise ComparisonError(f"{path}: folder not found")
    summary = path / SUMMARY_FILE
    if summary.is_file():
        data = json.loads(summary.read_text(encoding="utf-8"))
        runs = {f["name"]: Run(path / f["name"], f["test"], f["metrics"]) for f in data["folds"]}
        return RunSet(path, "cross-validation", runs, num_folds=data.get("num_folds"))
    if (path / FINAL_METRICS).is_file():
        return RunSet(path, "run", {"run": _read_final_metrics(path)})
    runs = {
        sub.name: _read_final_metrics(sub)
        for sub in sorted(path.iterdir())
        if sub.is_dir() and (sub / FINAL_METRICS).is_file()
    }
    if not runs:
        raise ComparisonError(
            f"{path}: neither a cross-validation output ({SUMMARY_FILE}), a run folder "
            f"({FINAL_METRICS}) nor a folder of run folders"
        )
    return RunSet(path, "runs", runs)


def _value(run: Run, metric: str) -> float | None:
    task, name = metric.split("/", 1)
    value = run.metrics.get(task, {}).get(name)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def verdict(interval: Sequence[float] | None, unit: str = "AP") -> str:
    """Plain words for the 95% interval of B - A."""
    if interval is None:
        return "cannot tell: one pair of runs and no per-image results to resample"
    low, high = interval
    if low > 0:
        return f"B is better by {low:.1f} to {high:.1f} {unit}"
    if high < 0:
        return f"A is better by {-high:.1f} to {-low:.1f} {unit}"
    return f"no difference this data can resolve ({low:+.1f} to {high:+.1f} {unit})"


def _paired_pairs(a: RunSet, b: RunSet) -> list[str]:
    if a.kind == "run" and b.kind == "run":
        return ["run"]
    if "run" in (a.kind, b.kind):
        raise ComparisonError(
            f"cannot pair one run ({a.path if a.kind == 'run' else b.path}) with a set of runs "
            f"({b.path if a.kind == 'run' else a.path}); compare a run with a run, or sets of "
            "runs paired by fold or seed"
        )
    keys = [k for k in a.runs if k in b.runs]
    if not keys:
        raise ComparisonError(
            f"no run of {a.path} ({', '.join(a.runs)}) pairs with one of {b.path} "
            f"({', '.join(b.runs)}): runs are paired by fold or sub-folder name"
        )
    for key in keys:
        if a.runs[key].test_set != b.runs[key].test_set:
            raise ComparisonError(
                f"{key}: tested on {a.runs[key].test_set} in {a.path} but on "
                f"{b.runs[key].test_set} in {b.path}; a paired comparison needs the same images"
            )
    return keys


def compare_run_sets(
    a: RunSet,
    b: RunSet,
    metrics: Sequence[str] = DEFAULT_METRICS,
    bootstrap_samples: int = 1000,
    seed: int = 0,
) -> dict:
    """Per metric: the pairs' values, mean difference B - A, intervals and verdict."""
    keys = _paired_pairs(a, b)
    unpaired = sorted((a.runs.keys() | b.runs.keys()) - set(keys))
    corrected = a.kind == b.kind == "cross-validation" and (a.num_folds or 0) > 1
    paired_bootstrap = None
    if len(keys) == 1 and bootstrap_samples > 0:
        run_a, run_b = a.runs[keys[0]], b.runs[keys[0]]
        paired_bootstrap = paired_bootstrap_ap(
            load_matchings(*run_evaluation_files(run_a.folder, run_a.test_set)),
            load_matchings(*run_evaluation_files(run_b.folder, run_b.test_set)),
            bootstrap_samples,
            seed,
        )
    rows = {}
    for metric in metrics:
        pairs = [(k, _value(a.runs[k], metric), _value(b.runs[k], metric)) for k in keys]
        pairs = [(k, va, vb) for k, va, vb in pairs if va is not None and vb is not None]
        if not pairs:
            continue
        differences = [vb - va for _, va, vb in pairs]
        plain = t_interval(differences)
        row = {
            "pairs": [{"key": k, "a": va, "b": vb, "difference": vb - va} for k, va, vb in pairs],
            "mean_a": sum(va for _, va, _ in pairs) / len(pairs),
            "mean_b": sum(vb for _, _, vb in pairs) / len(pairs),
            "mean_difference": plain.mean,
            "std_difference": plain.std,
            "ci95": None if plain.low is None else [plain.low, plain.high],
        }
        interval, basis = row["ci95"], "t-interval over pairs"
        if corrected and plain.low is not None:
            c = t_interval(differences, test_train_ratio=1 / (a.num_folds - 1))
            row["ci95_corrected"] = [c.low, c.high]
            interval, basis = row["ci95_corrected"], "corrected t-interval over folds"
        task, name = metric.split("/", 1)
        if paired_bootstrap and name in paired_bootstrap.get(task, {}):
            row["ci95_bootstrap"] = paired_bootstrap[task][name]["ci95"]
            interval, basis = row["ci95_bootstrap"], "paired bootstrap over test images"
        row["basis"], row["verdict"] = basis, verdict(interval)
        rows[metric] = row
    if not rows:
        raise ComparisonError(f"{a.path} and {b.path} have none of {', '.join(metrics)} in common")
    return {
        "a": str(a.path), "b": str(b.path), "kind": [a.kind, b.kind], "paired_by": keys,
        "unpaired": unpaired, "metrics": rows,
        "bootstrap": describe_method(bootstrap_samples, seed) if paired_bootstrap else None,
    }  # fmt: skip


def comparison_markdown(result: dict) -> str:
    def interval_text(row):
        for key in ("ci95_bootstrap", "ci95_corrected", "ci95"):
            if row.get(key):
                return f"{row[key][0]:+.2f} to {row[key][1]:+.2f}"
        return "-"

    rows = [
        [metric, len(r["pairs"]), f"{r['mean_a']:.2f}", f"{r['mean_b']:.2f}",
         f"{r['mean_difference']:+.2f}", interval_text(r), r["verdict"]]
        for metric, r in result["metrics"].items()
    ]  # fmt: skip
    headers = ["metric", "pairs", "A", "B", "B - A", "95% interval", "verdict"]
    bases = sorted({r["basis"] for r in result["metrics"].values()})
    lines = [
        "# Comparison", "", f"A: `{result['a']}`", "", f"B: `{result['b']}`", "",
        f"Paired by: {', '.join(result['paired_by'])}; interval: {', '.join(bases)}.", "",
        tabulate(rows, headers=headers, tablefmt="github"), "",
    ]  # fmt: skip
    if result["unpaired"]:
        lines += [f"Left out (in one set only): {', '.join(result['unpaired'])}.", ""]
    return "\n".join(lines)
