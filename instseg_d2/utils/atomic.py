"""Files that are never seen half-written: write a temporary file beside, then rename it.

A process killed at any moment (``kill -9``, out of memory) leaves either the old file or the new
one. Used for checkpoints, ``last_checkpoint``, ``final_metrics``, the report and other results.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import IO

__all__ = ["atomic_write", "atomic_write_with"]


def atomic_write_with(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, then move it onto ``path``.

    The data is flushed and fsync'ed before the rename; on any exception (KeyboardInterrupt
    included) the temporary file is removed and ``path`` is left as it was. Missing parent
    folders are created, as ``--output out/run/x.md`` on a fresh checkout expects.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (``str`` as UTF-8) to ``path`` atomically."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    atomic_write_with(path, lambda f: f.write(payload))
