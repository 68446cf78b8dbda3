"""The one reader (and trimmer) of ``metrics.json``, Detectron2's JSONWriter file.

JSONWriter appends one JSON object per line, each with an ``iteration``. Every part of the project
reads the file through :func:`iter_metrics`: a line that is not such an object (torn by ``kill -9``
while being written, or edited by hand) is skipped with a warning that names the file and line.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

from ..utils.errors import UserError

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"

__all__ = [
    "METRICS_FILE",
    "MetricsFileError",
    "iter_metrics",
    "load_metrics_records",
    "metric_series",
    "metrics_path",
    "trim_metrics_history",
]


class MetricsFileError(UserError, ValueError):
    """A metrics.json that cannot be used (missing, or without a single valid line)."""


def metrics_path(run: str | os.PathLike) -> Path:
    """``run`` may be an OUTPUT_DIR or the metrics.json file itself."""
    run = Path(run)
    return run / METRICS_FILE if run.is_dir() else run


def _parse_line(line: str | bytes) -> dict | None:
    """The record of one line, or None if it is not a JSON object with an ``iteration``."""
    try:
        record = json.loads(line)  # Python's json reads NaN/Infinity as floats
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) and "iteration" in record else None


def iter_metrics(path: str | os.PathLike) -> Iterator[dict]:
    """The valid records of ``metrics.json`` in file order (nothing if the file does not exist)."""
    path = metrics_path(path)
    if not path.is_file():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            record = _parse_line(line)
            if record is None:
                logger.warning(
                    "%s:%d: skipped, not a JSON object with an 'iteration'", path, line_no
                )
                continue
            yield record


def load_metrics_records(run: str | os.PathLike) -> list[dict]:
    """All valid records of a run's metrics.json; :class:`MetricsFileError` if there is none."""
    path = metrics_path(run)
    if not path.is_file():
        raise MetricsFileError(f"{path}: metrics file not found")
    records = list(iter_metrics(path))
    if not records:
        raise MetricsFileError(f"{path}: no metrics line with an 'iteration' in it")
    return records


def trim_metrics_history(path: str | os.PathLike, last_iteration: int) -> int:
    """Cut ``metrics.json`` after the records of iterations ``<= last_iteration``.

    A run resumed from the checkpoint of ``last_iteration`` repeats the later iterations, and
    Detectron2's JSONWriter appends: without this the file would hold those iterations twice.
    One history is written in increasing iteration order, so what is kept is a prefix of the
    file: a single truncate (also safe while a JSONWriter holds the file open in append mode)
    drops the rest, including a line torn by ``kill -9``. Returns the number of bytes removed.
    """
    if not os.path.isfile(path):
        return 0
    with open(path, "r+b") as f:
        keep = 0
        for raw in f:
            record = _parse_line(raw)
            if record is None or not raw.endswith(b"\n") or record["iteration"] > last_iteration:
                break
            keep += len(raw)
        size = f.seek(0, os.SEEK_END)
        if keep < size:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return size - keep


def metric_series(path: str | os.PathLike, key: str) -> list[tuple[int, float]]:
    """``(iteration, value)`` of every finite value of ``key`` in ``metrics.json``."""
    return [
        (int(r["iteration"]), float(r[key]))
        for r in iter_metrics(path)
        if isinstance(r.get(key), int | float) and math.isfinite(r[key])
    ]
