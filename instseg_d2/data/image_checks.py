"""Decode images in parallel and remember the result, so an unchanged file is not decoded again.

:func:`check_images` reads each distinct file once (threads: PIL decodes without the GIL) and
returns its size or the reason it is unusable. :class:`ImageCheckCache` keeps those results in a
small SQLite file keyed by the resolved path, with the file's size and ``mtime_ns``: a file whose
size or modification time changed is checked again. The default cache is
``<cache_dir()>/image_checks.sqlite`` (``$INSTSEG_D2_CACHE_DIR``, else
``$XDG_CACHE_HOME/instseg_d2``, else ``~/.cache/instseg_d2``).

Several processes may share the file (e.g. the ``launch`` workers of a multi-GPU run): SQLite
serialises writers, each process writes its new results in one transaction, and a writer that
still finds the file locked after ``timeout`` seconds skips storing (a cache miss later, never a
wrong result). A cache that cannot be opened (read-only home, ...) is turned off with a warning.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..utils.parallel import parallel_map
from .image_io import BadImageError, image_size, read_image
from .paths import cache_dir

logger = logging.getLogger(__name__)

# Bump when what a check finds changes (e.g. image_io learns a new image type): older results
# are then ignored, since they live in a table of another name.
CHECK_VERSION = 1
_TABLE = f"image_checks_v{CHECK_VERSION}"
_CHUNK = 500  # SQLite's default limit on bound parameters is 999


@dataclass(frozen=True)
class ImageCheck:
    """The outcome of reading one image: its (height, width), or ``error`` (message without
    the file name). ``decoded`` says whether every pixel was decoded (else only the header)."""

    height: int | None = None
    width: int | None = None
    error: str | None = None
    decoded: bool = False


class ImageCheckCache:
    """Results of :func:`check_images` by (resolved path, size, mtime_ns), in a SQLite file."""

    def __init__(self, path: str | os.PathLike, timeout: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=timeout)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")  # readers do not wait for a writer
        except sqlite3.DatabaseError:
            pass  # e.g. a file system without shared memory; the default journal still works
        with self._db:
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {_TABLE} (path TEXT PRIMARY KEY, size INTEGER, "
                "mtime_ns INTEGER, height INTEGER, width INTEGER, error TEXT, decoded INTEGER)"
            )

    def lookup(self, stats: dict[str, os.stat_result]) -> dict[str, ImageCheck]:
        """Stored checks of the paths in ``stats`` whose size and mtime_ns still match."""
        found: dict[str, ImageCheck] = {}
        paths = list(stats)
        for start in range(0, len(paths), _CHUNK):
            chunk = paths[start : start + _CHUNK]
            rows = self._db.execute(
                f"SELECT path, size, mtime_ns, height, width, error, decoded FROM {_TABLE} "
                f"WHERE path IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for path, size, mtime_ns, height, width, error, decoded in rows:
                st = stats[path]
                if (size, mtime_ns) == (st.st_size, st.st_mtime_ns):
                    found[path] = ImageCheck(height, width, error, bool(decoded))
        return found

    def store(self, results: Iterable[tuple[str, os.stat_result, ImageCheck]]) -> None:
        """Remember ``(resolved path, stat, check)`` triples, replacing older entries."""
        rows = [
            (p, st.st_size, st.st_mtime_ns, c.height, c.width, c.error, int(c.decoded))
            for p, st, c in results
        ]
        if not rows:
            return
        try:
            with self._db:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO {_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)", rows
                )
        except sqlite3.OperationalError as exc:  # locked past the timeout, disk full, ...
            logger.warning("%s: image checks not cached (%s)", self.path, exc)

    def close(self) -> None:
        self._db.close()


def default_image_cache() -> ImageCheckCache | None:
    """The cache at ``<cache_dir()>/image_checks.sqlite``, or None (with a warning) if that
    file cannot be opened."""
    path = cache_dir() / "image_checks.sqlite"
    try:
        return ImageCheckCache(path)
    except (OSError, sqlite3.Error) as exc:
        logger.warning(
            "%s: image-check cache unavailable, images are decoded again (%s)", path, exc
        )
        return None


def _check(path: str, decode: bool) -> ImageCheck:
    try:
        if decode:
            height, width = read_image(path, format="BGR").shape[:2]
        else:
            height, width = image_size(path)
    except BadImageError as exc:
        return ImageCheck(error=str(exc).removeprefix(f"{path}: "), decoded=decode)
    return ImageCheck(int(height), int(width), decoded=decode)


def check_images(
    paths: Iterable[str],
    decode: bool = True,
    num_workers: int | None = None,
    cache: ImageCheckCache | None = None,
) -> dict[str, ImageCheck]:
    """``{path: ImageCheck}`` for every distinct path (as given).

    With ``decode`` every pixel is decoded (finds truncated files), else only headers are read.
    ``num_workers`` threads (None: one per CPU). A cached full decode also answers a header
    check; a cached header check does not answer a decode.
    """
    paths = list(dict.fromkeys(paths))
    results: dict[str, ImageCheck] = {}
    stats: dict[str, os.stat_result] = {}
    resolved: dict[str, str] = {}
    for path in paths:
        try:
            real = os.path.realpath(path)
            stats[real] = os.stat(real)
            resolved[path] = real
        except OSError:
            results[path] = ImageCheck(error="file not found", decoded=decode)
    cached = cache.lookup(stats) if cache is not None and stats else {}
    todo = []
    for path, real in resolved.items():
        hit = cached.get(real)
        if hit is not None and (hit.decoded or not decode):
            results[path] = hit
        else:
            todo.append(path)
    checked = parallel_map(lambda p: _check(p, decode), todo, num_workers)
    results.update(zip(todo, checked, strict=True))
    if cache is not None:
        cache.store(
            (resolved[p], stats[resolved[p]], c) for p, c in zip(todo, checked, strict=True)
        )
    return {path: results[path] for path in paths}
