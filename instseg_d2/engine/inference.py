"""Run a model on image files or a video and write pictures plus COCO-format predictions.

This is the library side of ``tools/infer.py``: collecting inputs (files, folders, globs),
reading them with errors that name the file, batching through ``BatchPredictor`` and writing
``predictions.json`` (COCO results) with ``image_index.json`` (which id is which file). The
picture of each prediction is drawn by the ``draw`` callable the caller passes (the tools pass
:func:`instseg_d2.visualization.panels.prediction_picture`), so this module draws nothing itself.
"""

from __future__ import annotations

import glob
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from detectron2.data.catalog import Metadata
from detectron2.structures import Instances
from tqdm import tqdm

from ..data.image_io import BadImageError, read_image
from ..utils.errors import UserError
from .coco_results import instances_to_coco_results
from .predictor import BatchPredictor

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
PREDICTIONS_FILE = "predictions.json"
IMAGE_INDEX_FILE = "image_index.json"


class NoInputError(UserError, ValueError):
    """Nothing to run on: no input matched, or none of them could be read."""


@dataclass
class InferenceSummary:
    """What a run wrote and what it had to skip (file and reason)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    num_instances: int = 0
    predictions_file: Path | None = None


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def collect_image_paths(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files, folders (their image files, sorted, not recursive) and globs.

    Returns the image paths (first occurrence order, no duplicates) and the inputs that gave
    nothing, each with the reason, so the caller can report them instead of losing them silently.
    """
    paths: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and _is_image_file(p))
            ignored = sum(1 for p in path.iterdir() if p.is_file() and not _is_image_file(p))
            if ignored:
                logger.info("%s: ignoring %d file(s) without an image extension", path, ignored)
            if not found:
                problems.append(
                    (item, f"folder has no files ending in {', '.join(IMAGE_EXTENSIONS)}")
                )
        elif path.is_file():
            found = [path]  # named explicitly: tried whatever its extension
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item) if Path(p).is_file())
            if not found:
                problems.append((item, "pattern matches no file"))
        else:
            found = []
            problems.append((item, "no such file or folder"))
        paths.extend(found)
    unique = list(dict.fromkeys(p.resolve() for p in paths))
    return unique, problems


def _unique_output_name(stem: str, used: set[str], suffix: str = ".png") -> str:
    name, n = f"{stem}{suffix}", 1
    while name in used:
        name, n = f"{stem}_{n}{suffix}", n + 1
    used.add(name)
    return name


# (image RGB, its predicted instances) -> the picture to write, RGB, same size.
DrawFn = Callable[[np.ndarray, Instances], np.ndarray]


def image_inputs(images: list[str], video: str | None) -> list[Path]:
    """The image files of a tool's ``--input`` (none with ``--video-input``), checked before a
    model is loaded: exactly one of the two is given, and at least one image is found (what is
    not an image is warned about, by name)."""
    if bool(images) == bool(video):
        raise NoInputError("give either --input (images) or --video-input (a video)")
    if video:
        return []
    paths, problems = collect_image_paths(images)
    for item, reason in problems:
        logger.warning("input %s: %s", item, reason)
    if not paths:
        raise NoInputError("no input image found (see the warnings above)")
    return paths


def log_summary(summary: InferenceSummary, output_dir: str | Path, num_inputs: int) -> None:
    """Log what :func:`run_on_images` or :func:`run_on_video` wrote; :class:`NoInputError` (a
    tool's exit status 1) when none of the ``num_inputs`` input images could be read."""
    for path, reason in summary.skipped:
        logger.warning("skipped %s: %s", path, reason)
    logger.info(
        "%d file(s) written to %s (%d instances), %d skipped; predictions: %s",
        len(summary.written),
        output_dir,
        summary.num_instances,
        len(summary.skipped),
        summary.predictions_file,
    )
    if num_inputs and not summary.written:
        raise NoInputError(
            f"none of the {num_inputs} input image(s) could be read (see the warnings above)"
        )


def dataset_image_ids(dataset_dicts: list[dict]) -> dict[Path, int | str]:
    """Resolved file path -> ``image_id`` of a registered dataset (for COCO-consistent ids)."""
    return {Path(d["file_name"]).resolve(): d["image_id"] for d in dataset_dicts}


def run_on_images(
    predictor: BatchPredictor,
    paths: list[Path],
    output_dir: str | Path,
    draw: DrawFn,
    metadata: Metadata | None = None,
    batch_size: int = 1,
    image_ids: dict[Path, int | str] | None = None,
) -> InferenceSummary:
    """Predict ``paths`` and write one picture per image (``draw``) plus the predictions files.

    A file that cannot be read is skipped and listed in ``summary.skipped`` (and in
    ``image_index.json``); the others are still processed. ``image_ids`` maps resolved paths to
    the image ids to write (e.g. from ``dataset_image_ids``); without it the ids are 0, 1, 2, ...
    in input order, and ``image_index.json`` says which file each id is.
    """
    missing_ids = [str(p) for p in paths if image_ids is not None and p not in image_ids]
    if missing_ids:
        raise NoInputError(f"not images of the given dataset: {', '.join(missing_ids)}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = InferenceSummary()

    read_paths: list[Path] = []  # the paths readable_images() yielded, in order

    def readable_images() -> Iterator[np.ndarray]:
        # The progress bar counts files read (a batch ahead of the drawings at most).
        for path in tqdm(paths, desc="infer", unit="img"):
            try:
                image = read_image(path, format="BGR")
            except BadImageError as exc:
                logger.warning("skipped: %s", exc)
                summary.skipped.append((str(path), str(exc)))
                continue
            read_paths.append(path)
            yield image

    results: list[dict] = []
    index: list[dict] = []
    used_names: set[str] = set()
    predictions = predictor.predict_batches(readable_images(), batch_size)
    for i, (image_bgr, prediction) in enumerate(predictions):
        path = read_paths[i]
        instances = prediction["instances"]
        image_id = image_ids[path] if image_ids is not None else i
        results.extend(instances_to_coco_results(instances, image_id, metadata))
        picture = draw(np.ascontiguousarray(image_bgr[:, :, ::-1]), instances)
        out_path = output_dir / _unique_output_name(path.stem, used_names)
        cv2.imwrite(str(out_path), picture[:, :, ::-1])
        height, width = image_bgr.shape[:2]
        index.append(
            {
                "id": image_id,
                "file_name": str(path),
                "height": height,
                "width": width,
                "output": out_path.name,
                "num_instances": len(instances),
            }
        )
        summary.written.append(out_path)
        summary.num_instances += len(instances)
    summary.predictions_file = _write_predictions(output_dir, results, index, summary.skipped)
    return summary


def _write_predictions(
    output_dir: Path, results: list[dict], index: list[dict], skipped: list[tuple[str, str]]
) -> Path:
    predictions_file = output_dir / PREDICTIONS_FILE
    with open(predictions_file, "w", encoding="utf-8") as f:
        json.dump(results, f)
    with open(output_dir / IMAGE_INDEX_FILE, "w", encoding="utf-8") as f:
        json.dump(
            {"images": index, "skipped": [{"file": p, "error": e} for p, e in skipped]},
            f,
            indent=1,
        )
    return predictions_file


def _video_frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


def run_on_video(
    predictor: BatchPredictor,
    video_path: str | Path,
    output_dir: str | Path,
    draw: DrawFn,
    metadata: Metadata | None = None,
    batch_size: int = 1,
) -> InferenceSummary:
    """Predict every frame of a video; write ``<name>.mp4`` and predictions (image_id = frame)."""
    video_path, output_dir = Path(video_path), Path(output_dir)
    if not video_path.is_file():
        raise NoInputError(f"{video_path}: video file not found")
    capture = cv2.VideoCapture(str(video_path))
    if not capture.isOpened():
        raise NoInputError(f"{video_path}: cannot be opened as a video by OpenCV")
    output_dir.mkdir(parents=True, exist_ok=True)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    out_path = output_dir / f"{video_path.stem}.mp4"
    writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        capture.release()
        raise NoInputError(f"{out_path}: OpenCV cannot write an mp4v video here")
    summary = InferenceSummary()
    results: list[dict] = []
    index: list[dict] = []
    try:
        frames = predictor.predict_batches(_video_frames(capture), batch_size)
        for frame_id, (frame_bgr, prediction) in enumerate(
            tqdm(frames, total=total, desc="video", unit="frame")
        ):
            instances = prediction["instances"]
            results.extend(instances_to_coco_results(instances, frame_id, metadata))
            picture = draw(np.ascontiguousarray(frame_bgr[:, :, ::-1]), instances)
            writer.write(np.ascontiguousarray(picture[:, :, ::-1]))
            index.append(
                {
                    "id": frame_id,
                    "file_name": f"{video_path}#frame={frame_id}",
                    "height": height,
                    "width": width,
                    "num_instances": len(instances),
                }
            )
            summary.num_instances += len(instances)
    finally:
        capture.release()
        writer.release()
    if not index:
        out_path.unlink(missing_ok=True)
        raise NoInputError(f"{video_path}: no frame could be decoded")
    summary.written.append(out_path)
    summary.predictions_file = _write_predictions(output_dir, results, index, [])
    return summary
