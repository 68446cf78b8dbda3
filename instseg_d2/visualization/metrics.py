"""Per-key series of a run's ``metrics.json`` for the plots (no drawing here, see ``plots``).

The file is read by :mod:`instseg_d2.engine.metrics_file`, the project's one reader of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.metrics_file import load_metrics_records

# Loss terms of Mask R-CNN as Detectron2 names them in metrics.json.
LOSS_KEYS = ("total_loss", "loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc")
VALIDATION_LOSS_KEY = "validation_loss"
EVAL_TASKS = ("bbox", "segm")
EVAL_METRICS = ("AP", "AP50", "AP75")


@dataclass(frozen=True)
class Series:
    """One scalar over training iterations, sorted by iteration, one value per iteration."""

    iterations: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.iterations)


def _as_finite_float(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def extract_series(records: list[dict]) -> dict[str, Series]:
    """Every numeric key of ``records`` as a ``Series``.

    A resumed run writes again the iterations after its last checkpoint, so the same
    (key, iteration) can appear twice: the later line wins. NaN/inf values (e.g. ``bbox/APs``
    when the val set has no small objects, or a diverged loss) are dropped, not plotted as 0.
    """
    latest: dict[str, dict[int, float | None]] = {}
    for record in records:
        iteration = int(record["iteration"])
        for key, value in record.items():
            if key == "iteration":
                continue
            # A later NaN also replaces an earlier finite value: the later line is the truth.
            latest.setdefault(key, {})[iteration] = _as_finite_float(value)
    series = {}
    for key, by_iter in latest.items():
        points = sorted((it, v) for it, v in by_iter.items() if v is not None)
        if points:
            its, vals = zip(*points, strict=True)
            series[key] = Series(np.asarray(its, dtype=np.int64), np.asarray(vals, dtype=float))
    return series


def load_series(run: str | Path) -> dict[str, Series]:
    """``extract_series`` of a run's metrics.json."""
    return extract_series(load_metrics_records(run))


def last_eval_metrics(records: list[dict]) -> dict[str, float]:
    """The ``task/metric`` values of the last line that has evaluation results."""
    for record in reversed(records):
        evals = {
            k: float(v)
            for k, v in record.items()
            if "/" in k and k.split("/", 1)[0] in EVAL_TASKS and _as_number(v)
        }
        if evals:
            return evals
    return {}


def _as_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def smooth(values: np.ndarray, weight: float = 0.6) -> np.ndarray:
    """TensorBoard-style debiased exponential moving average (``weight`` 0 returns ``values``)."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    values = np.asarray(values, dtype=float)
    out = np.empty_like(values)
    ema = 0.0
    for i, v in enumerate(values):
        ema = weight * ema + (1.0 - weight) * v
        out[i] = ema / (1.0 - weight ** (i + 1))  # debias the zero start
    return out
