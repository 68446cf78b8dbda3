"""Reading and trimming ``metrics.json`` (Detectron2's JSONWriter: one JSON object per line)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator


def iter_metrics(path: str) -> Iterator[dict]:
    """The complete records of ``metrics.json`` in file order; stops at a torn last line."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                return
            if isinstance(record, dict) and "iteration" in record:
                yield record


def trim_metrics_history(path: str, last_iteration: int) -> int:
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
            try:
                record = json.loads(raw)
                iteration = record["iteration"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                break
            if not raw.endswith(b"\n") or iteration > last_iteration:
                break
            keep += len(raw)
        size = f.seek(0, os.SEEK_END)
        if keep < size:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return size - keep


def metric_series(path: str, key: str) -> list[tuple[int, float]]:
    """``(iteration, value)`` of every finite value of ``key`` in ``metrics.json``."""
    return [
        (int(r["iteration"]), float(r[key]))
        for r in iter_metrics(path)
        if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
    ]
