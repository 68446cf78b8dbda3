"""Confidence intervals: Student's t over a few values, percentiles over bootstrap samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

__all__ = ["CONFIDENCE", "MeanInterval", "percentile_interval", "t_interval"]

# Every interval of the project is a 95% interval (the ``_ci95`` keys of the result files).
CONFIDENCE = 0.95


@dataclass(frozen=True)
class MeanInterval:
    """Mean of ``n`` values, their sample standard deviation and the interval of the mean.

    ``low``/``high`` are None for fewer than two values (no spread to estimate).
    """

    n: int
    mean: float
    std: float | None
    low: float | None
    high: float | None

    def to_json(self) -> dict:
        return asdict(self)


def t_interval(
    values: Sequence[float], confidence: float = CONFIDENCE, *, test_train_ratio: float = 0.0
) -> MeanInterval:
    """Student's t interval of the mean of ``values``.

    ``test_train_ratio`` > 0 applies Nadeau and Bengio's correction for values from resampled
    train/test splits of one dataset (the folds of a cross-validation share most of their
    training images, so their values are correlated and the plain interval is too narrow): the
    variance of the mean becomes ``s^2 (1/n + n_test/n_train)`` instead of ``s^2 / n``
    ("Inference for the generalization error", Machine Learning 52, 2003).
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or not len(x):
        raise ValueError(f"t_interval needs a non-empty list of values, got {values!r}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"t_interval needs finite values, got {values!r}")
    n, mean = len(x), float(np.mean(x))
    if n < 2:
        return MeanInterval(n, mean, None, None, None)
    std = float(np.std(x, ddof=1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * std * math.sqrt(1 / n + test_train_ratio)
    return MeanInterval(n, mean, std, mean - float(half), mean + float(half))


def percentile_interval(
    samples: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """The central ``confidence`` interval of bootstrap ``samples`` (percentile method);
    None when no sample is finite."""
    finite = np.asarray(samples, dtype=float)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return None
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)
