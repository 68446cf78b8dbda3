"""Checked downloads and archive extraction that cannot write outside the target folder.

Shared by the dataset preparation scripts and the model-weights code:

* :func:`download` fetches a URL with a tqdm progress bar into a ``.part`` file, checks the
  optional pinned sha256 and only then renames it into place; an existing file with the right
  checksum is not downloaded again. Network failures raise :class:`DownloadError` naming the URL.
* :func:`verify_sha256` raises :class:`ChecksumError` naming the file, expected and actual digest.
* :func:`safe_extract` unpacks a zip or tar archive after checking *every* entry first: absolute
  paths, entries that resolve outside the target (``../``, or through a symlink already in the
  target), and link, device and fifo entries are refused with :class:`UnsafeArchiveError`, and
  then nothing at all is extracted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

from tqdm import tqdm

from .errors import UserError

__all__ = [
    "ChecksumError",
    "DownloadError",
    "UnsafeArchiveError",
    "download",
    "safe_extract",
    "sha256_of",
    "verify_sha256",
]

_CHUNK = 1 << 20


class DownloadError(UserError, RuntimeError):
    """A URL could not be fetched (offline, HTTP error, ...); the message names the URL."""


class ChecksumError(UserError, ValueError):
    """A file's sha256 differs from the pinned value; the message names the file."""


class UnsafeArchiveError(UserError, ValueError):
    """An archive entry would escape the target folder or is a link/special file."""


def sha256_of(path: str | os.PathLike, normalize_newlines: bool = False) -> str:
    """Hex sha256 of a file; with ``normalize_newlines`` CRLF is hashed as LF (for text files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if normalize_newlines:
            digest.update(f.read().replace(b"\r\n", b"\n"))
        else:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str, normalize_newlines: bool = False) -> None:
    """Raise ChecksumError unless ``path`` has sha256 ``expected`` (hex, case-insensitive)."""
    actual = sha256_of(path, normalize_newlines)
    if actual != expected.strip().lower():
        raise ChecksumError(f"{path}: sha256 is {actual}, expected {expected.strip().lower()}")


def download(
    url: str, dest: str | os.PathLike, sha256: str | None = None, timeout: float = 60.0
) -> Path:
    """Download ``url`` to the file ``dest`` (parent folders created) and return ``dest``.

    If ``dest`` exists and matches ``sha256`` (or no sha256 is pinned) nothing is downloaded.
    """
    dest = Path(dest)
    if dest.is_file():
        if sha256 is None:
            return dest
        try:
            verify_sha256(dest, sha256)
            return dest
        except ChecksumError:
            pass  # stale or partial file from elsewhere: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot download {url}: {reason}") from None
    if sha256 is not None:
        try:
            verify_sha256(part, sha256)
        except ChecksumError as exc:
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"download of {url} is corrupt or changed upstream: {exc}"
            ) from None
    part.replace(dest)
    return dest


def _check_member_path(name: str, target: Path, archive: Path) -> Path:
    """Where ``name`` would be written; raises UnsafeArchiveError if outside ``target``."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or (posix.parts and posix.parts[0].endswith(":")):
        raise UnsafeArchiveError(f"{archive}: entry {name!r} has an absolute path")
    dest = (target / posix).resolve()
    if dest != target and target not in dest.parents:
        raise UnsafeArchiveError(f"{archive}: entry {name!r} would be written outside {target}")
    return dest


def _zip_entry_kind(info: zipfile.ZipInfo) -> str | None:
    """'link' or 'special' for unix symlinks/devices stored in a zip, None for files/folders."""
    # Zips made on unix keep st_mode in the high 16 bits; others leave the file type bits at 0.
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type == stat.S_IFLNK:
        return "link"
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "special file"
    return None


@dataclass(frozen=True)
class _ArchiveEntry:
    """One member of a zip or tar archive, as much as extraction needs to know of it."""

    name: str
    is_dir: bool
    unsafe_kind: str | None  # "link" or "special file": never extracted
    open: Callable[[], IO[bytes]]


def _zip_entries(zf: zipfile.ZipFile) -> list[_ArchiveEntry]:
    return [
        _ArchiveEntry(info.filename, info.is_dir(), _zip_entry_kind(info), partial(zf.open, info))
        for info in zf.infolist()
    ]


def _tar_entry_kind(member: tarfile.TarInfo) -> str | None:
    if member.isfile() or member.isdir():
        return None
    return "link" if member.issym() or member.islnk() else "special file"


def _tar_entries(tf: tarfile.TarFile) -> list[_ArchiveEntry]:
    return [
        _ArchiveEntry(m.name, m.isdir(), _tar_entry_kind(m), partial(tf.extractfile, m))
        for m in tf.getmembers()
    ]


def _extract_entries(entries: list[_ArchiveEntry], target: Path, archive: Path) -> list[Path]:
    # Every entry is checked before the first byte is written.
    for entry in entries:
        _check_member_path(entry.name, target, archive)
        if entry.unsafe_kind is not None:
            raise UnsafeArchiveError(
                f"{archive}: entry {entry.name!r} is a {entry.unsafe_kind}; archives with links "
                "or special files are not extracted"
            )
    written = []
    for entry in entries:
        dest = _check_member_path(entry.name, target, archive)
        if entry.is_dir:
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        with entry.open() as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
        written.append(dest)
    return written


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> list[Path]:
    """Extract a .zip or tar archive into ``target`` and return the extracted file paths.

    Every entry is checked before anything is written; see the module docstring.
    """
    archive = Path(archive)
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    target = target.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            return _extract_entries(_zip_entries(zf), target, archive)
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            return _extract_entries(_tar_entries(tf), target, archive)
    raise UnsafeArchiveError(f"{archive}: not a zip or tar archive")
