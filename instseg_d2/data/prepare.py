"""Put a dataset under ``$DETECTRON2_DATASETS`` from a download, a local archive or a folder.

Used by ``datasets/prepare_pennfudan.py`` and ``datasets/prepare_balloon.py``. Steps: skip if the
dataset folder already matches its manifest; otherwise get the archive (download with a progress
bar, or ``--archive``), extract it with :func:`safe_extract` into a scratch folder next to the
target, find the dataset folder inside, move it into place, and verify every file against the
per-file sha256 manifest committed in ``datasets/``.

Line endings: the manifests hash the text files (``.txt``, ``.json``) with LF endings; copies of
Penn-Fudan exist whose ``.txt`` files have CRLF endings (the upstream zip may be one), so text
files are compared after turning CRLF into LF. Images and masks are compared byte for byte.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..utils.download import DownloadError, download, safe_extract, sha256_of, verify_sha256
from ..utils.errors import UserError
from .paths import EXPECTED_LAYOUT

TEXT_SUFFIXES = frozenset({".txt", ".json"})


class PrepareError(UserError, RuntimeError):
    """Preparing a dataset failed; the message says what to do."""


@dataclass(frozen=True)
class DatasetSource:
    name: str  # folder under the dataset root, e.g. "PennFudanPed"
    url: str
    archive_name: str
    # sha256 of the upstream archive. None until someone measures it on a machine that can reach
    # the URL (this project was set up offline); the extracted files are checked either way.
    archive_sha256: str | None = None

    @property
    def layout(self) -> tuple[str, ...]:
        return EXPECTED_LAYOUT[self.name]


PENNFUDAN = DatasetSource(
    "PennFudanPed",
    "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip",
    "PennFudanPed.zip",
)
BALLOON = DatasetSource(
    "balloon",
    "https://github.com/matterport/Mask_RCNN/releases/download/v2.1/balloon_dataset.zip",
    "balloon_dataset.zip",
)


def read_manifest(manifest: str | Path) -> dict[str, str]:
    """``relative path -> sha256`` from a ``sha256sum``-style file (paths relative to the root)."""
    entries = {}
    for number, line in enumerate(Path(manifest).read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise PrepareError(f"{manifest}:{number}: not a '<sha256>  <path>' line: {line!r}")
        entries[rel.lstrip("*")] = digest.lower()
    return entries


def verify_tree(root: str | Path, manifest: str | Path) -> list[str]:
    """Problems of the files under ``root`` against ``manifest``; empty when all match.

    Reports missing files, per-folder file counts and sha256 mismatches, each naming the file.
    """
    root = Path(root)
    expected = read_manifest(manifest)
    problems = []
    expected_counts = Counter(str(PurePosixPath(rel).parent) for rel in expected)
    for folder, count in sorted(expected_counts.items()):
        present = [p for p in (root / folder).glob("*") if p.is_file()] if folder else []
        listed = sum(1 for p in present if f"{folder}/{p.name}" in expected)
        if folder and listed != count:
            problems.append(f"{root / folder}: {listed} of the {count} expected files present")
    for rel, digest in sorted(expected.items()):
        path = root / rel
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_of(path, normalize_newlines=path.suffix in TEXT_SUFFIXES) != digest:
            problems.append(f"{path}: sha256 differs from {Path(manifest).name}")
    return problems


def find_dataset_folder(tree: Path, source: DatasetSource) -> Path:
    """The folder under ``tree`` (itself included) that has all of ``source.layout``."""
    candidates = [tree, *sorted(p for p in tree.rglob("*") if p.is_dir())]
    for folder in candidates:
        if "__MACOSX" in folder.parts:
            continue  # macOS resource forks in the balloon zip mirror the real folders
        if all((folder / sub).is_dir() for sub in source.layout):
            return folder
    raise PrepareError(
        f"{tree}: no folder with {', '.join(source.layout)} inside; is this the {source.name} data?"
    )


def manual_instructions(source: DatasetSource, root: Path) -> str:
    subfolders = ", ".join(f"{root / source.name / sub}" for sub in source.layout)
    return (
        f"To place the data by hand: on a machine with internet download {source.url}, copy it "
        f"here and run this script with --archive PATH/{source.archive_name}; or unpack it so "
        f"that these folders exist: {subfolders}; or pass --source FOLDER with an unpacked copy."
    )


def prepare_dataset(
    source: DatasetSource,
    root: str | Path,
    manifest: str | Path,
    archive: str | Path | None = None,
    folder: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Make ``root/source.name`` a verified copy of the dataset and return its path.

    ``folder`` copies an unpacked copy; ``archive`` extracts a local archive; otherwise the
    archive is downloaded into ``root`` (kept, so a rerun does not download again).
    Raises PrepareError with manual instructions when offline or when verification fails.
    """
    root = Path(root)
    dest = root / source.name
    if dest.exists() and not force:
        problems = verify_tree(root, manifest)
        if not problems:
            print(f"{dest}: already prepared and verified, nothing to do")
            return dest
        raise PrepareError(
            f"{dest} exists but does not match {Path(manifest).name} ({len(problems)} problem(s), "
            f"first: {problems[0]}); rerun with --force to replace it"
        )
    root.mkdir(parents=True, exist_ok=True)
    scratch = root / f".prepare-{source.name}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        if folder is not None:
            found = find_dataset_folder(Path(folder), source)
            staged = scratch / source.name
            shutil.copytree(found, staged, symlinks=False)
        else:
            if archive is None:
                try:
                    archive = download(
                        source.url, root / source.archive_name, source.archive_sha256
                    )
                except DownloadError as exc:
                    raise PrepareError(f"{exc}\n{manual_instructions(source, root)}") from None
            elif source.archive_sha256 is not None:
                verify_sha256(archive, source.archive_sha256)
            if not Path(archive).is_file():
                raise PrepareError(f"{archive}: archive not found")
            safe_extract(archive, scratch)
            staged = find_dataset_folder(scratch, source)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(staged), dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    problems = verify_tree(root, manifest)
    if problems:
        shown = "\n  ".join(problems[:10])
        raise PrepareError(
            f"{dest}: {len(problems)} problem(s) against {Path(manifest).name}:\n  {shown}"
        )
    print(f"{dest}: prepared, {len(read_manifest(manifest))} files verified")
    return dest


def prepare_cli(
    source: DatasetSource, manifest: str | Path, description: str, argv: list[str] | None = None
) -> int:
    """The command line of the ``datasets/prepare_*.py`` scripts (run through
    :func:`instseg_d2.utils.cli.run_tool`, which reports the errors)."""
    import argparse

    from .paths import dataset_root

    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", type=Path, help="dataset root (default: $DETECTRON2_DATASETS, else ./datasets)"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--archive", type=Path, help=f"a local copy of {source.archive_name}")
    group.add_argument("--source", type=Path, help="an unpacked copy of the dataset to copy")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing folder that fails verification"
    )
    args = parser.parse_args(argv)
    root = args.root if args.root is not None else dataset_root()
    prepare_dataset(
        source, root, manifest, archive=args.archive, folder=args.source, force=args.force
    )
    return 0
