"""Run a function over items on threads, in order: for work that releases the GIL (image
decoding in PIL, file reads)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def parallel_map(
    function: Callable[[Any], T], items: Iterable[Any], num_workers: int | None
) -> list[T]:
    """``[function(item) ...]`` in order; ``num_workers`` None means one thread per CPU, 0 or 1
    runs in the calling thread."""
    items = list(items)
    workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    if workers <= 1 or len(items) < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(function, items))
