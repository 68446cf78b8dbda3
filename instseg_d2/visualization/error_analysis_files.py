"""The files of an error analysis of one dataset: tables, candidate list and pictures, curves.

``write_error_analysis`` runs the analyses of :mod:`instseg_d2.evaluation` on a dataset's
predictions and writes into one folder (at the end of training ``OUTPUT_DIR/analysis/<dataset>``,
beside final_metrics.json; the run's report shows it from there):

* ``error_analysis.json``: segm AP, totals, and per image TP/FP/FN at mask IoU 0.5 and 0.75,
  the COCO error types and ``ap_gain``, images ranked by ``ap_gain``;
* ``annotation_candidates.json`` / ``.md``: possibly wrong or missing annotations, highest score
  first, with the image id, annotation id (of Detectron2's COCO conversion: COCOEvaluator's
  ``<dataset>_coco_format.json``, tools/export_coco.py) and the dataset's own ids, and
  ``candidates/<rank>_<image>_<kind>.jpg`` pictures of the first ones;
* ``pr_curves.json`` / ``.png`` (with the F1-maximising score threshold per class) and
  ``confusion_matrix.json`` / ``.png``.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from tqdm import tqdm

from ..data.image_io import read_image
from ..engine.coco_results import instances_to_coco_results
from ..engine.predictor import BatchPredictor
from ..evaluation.annotation_candidates import KINDS, Candidate, find_candidates
from ..evaluation.curves import confusion_matrix, f1_thresholds, pr_curves
from ..evaluation.error_analysis import ERROR_TYPES, ErrorAnalysis, analyze_errors
from ..evaluation.segm_eval import load_ground_truth, load_predictions
from ..utils.atomic import atomic_write
from .analysis_plots import confusion_matrix_figure, pr_curves_figure
from .candidate_panels import (
    candidate_panel,
    draw_candidate_columns,
    results_to_instances,
)
from .plots import figure_png_bytes

logger = logging.getLogger(__name__)

ANALYSIS_DIR = "analysis"
ERROR_ANALYSIS_FILE = "error_analysis.json"
CANDIDATES_FILE = "annotation_candidates.json"
CANDIDATES_LIST = "annotation_candidates.md"
CANDIDATE_PICTURES = "candidates"
PR_CURVES_FILE = "pr_curves.json"
PR_CURVES_PLOT = "pr_curves.png"
CONFUSION_FILE = "confusion_matrix.json"
CONFUSION_PLOT = "confusion_matrix.png"
PREDICTIONS_FILE = "predictions.json"
# Wider candidate pictures are scaled down: three columns of a 500 px image stay full size, and
# ten pictures keep the report at a few MB.
MAX_PICTURE_WIDTH = 1500
# COCOEvaluator's predictions in OUTPUT_DIR/inference/<dataset>/, analysed after training.
EVALUATOR_PREDICTIONS = "coco_instances_results.json"


def predict_dataset(cfg: CfgNode, dataset_dicts: list[dict], dataset_name: str,
                    batch_size: int = 1) -> list[dict]:  # fmt: skip
    """COCO results of the model of ``cfg`` on every image of ``dataset_dicts``."""
    predictor = BatchPredictor(cfg)
    metadata = MetadataCatalog.get(dataset_name)
    images = (read_image(d["file_name"], format="BGR") for d in dataset_dicts)
    results: list[dict] = []
    predictions = predictor.predict_batches(images, batch_size)
    for d, (_, prediction) in tqdm(
        zip(dataset_dicts, predictions, strict=True), total=len(dataset_dicts), desc="predict"
    ):
        results += instances_to_coco_results(prediction["instances"], d["image_id"], metadata)
    return results


def _json(data) -> str:
    return json.dumps(data, indent=1, allow_nan=False) + "\n"


def _picture_name(rank: int, candidate: Candidate) -> str:
    return f"{rank:03d}_{Path(candidate.file_name).stem}_{candidate.kind}.jpg"


def draw_candidates(analysis: ErrorAnalysis, candidates: list[Candidate], folder: Path) -> list:
    """Write a picture of each of ``candidates`` (ranks 1, 2, ...); returns their file names."""
    gt = analysis.gt
    metadata = MetadataCatalog.get(gt.dataset_name)
    folder.mkdir(parents=True, exist_ok=True)
    by_image: dict = defaultdict(list)
    for rank, candidate in enumerate(candidates, 1):
        by_image[candidate.image_id].append((rank, candidate))
    names: dict[int, str] = {}
    for image_id, items in tqdm(by_image.items(), desc="candidate pictures"):
        d = gt.dataset_dicts[gt.image_index[image_id]]
        image = read_image(d["file_name"], format="RGB")
        height, width = image.shape[:2]
        confident = [
            a for a in analysis.predictions.imgToAnns.get(image_id, [])
            if a["score"] >= analysis.score_threshold
        ]  # fmt: skip
        instances = results_to_instances(confident, height, width, metadata)
        drawn = draw_candidate_columns(image, instances, d, metadata)
        num_gt = len(d.get("annotations", []))
        for rank, candidate in items:
            panel = candidate_panel(image, candidate, rank, *drawn, len(confident), num_gt,
                                    analysis.score_threshold)  # fmt: skip
            if panel.shape[1] > MAX_PICTURE_WIDTH:
                height = round(panel.shape[0] * MAX_PICTURE_WIDTH / panel.shape[1])
                panel = cv2.resize(panel, (MAX_PICTURE_WIDTH, height), interpolation=cv2.INTER_AREA)
            ok, jpeg = cv2.imencode(".jpg", panel[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
            if not ok:
                raise RuntimeError(f"could not encode the picture of candidate {rank}")
            names[rank] = _picture_name(rank, candidate)
            atomic_write(folder / names[rank], jpeg.tobytes())
    return [names[rank] for rank in range(1, len(candidates) + 1)]


def candidates_markdown(dataset_name: str, entries: list[dict], num_pictures: int) -> str:
    """The candidate list as a Markdown table, highest score first."""
    counts = {kind: sum(1 for e in entries if e["kind"] == kind) for kind in KINDS}
    lines = [
        f"# Possible annotation errors in {dataset_name}",
        "",
        "Highest score first; kinds and scores are defined in "
        "`instseg_d2/evaluation/annotation_candidates.py`. Annotation ids are those of the "
        "dataset's COCO conversion (tools/export_coco.py).",
        "",
        ", ".join(f"{kind}: {n}" for kind, n in counts.items()),
        "",
        "| rank | kind | score | file | image id | annotation ids | note | picture |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        ids = ", ".join(str(a["annotation_id"]) for a in e["annotations"]) or "-"
        picture = f"[{e['picture']}]({e['picture']})" if e.get("picture") else "-"
        lines.append(
            f"| {e['rank']} | {e['kind']} | {e['score']:.2f} | {Path(e['file_name']).name} | "
            f"{e['image_id']} | {ids} | {e['note']} | {picture} |"
        )
    if len(entries) > num_pictures:
        lines += ["", f"Pictures are drawn for the first {num_pictures} only."]
    return "\n".join(lines) + "\n"


def write_error_analysis(
    dataset_name: str,
    predictions: str | os.PathLike | list[dict],
    output_dir: str | os.PathLike,
    *,
    score_threshold: float = 0.5,
    num_pictures: int = 20,
) -> Path:
    """Analyse ``predictions`` (COCO results: a file or a list) on the registered
    ``dataset_name`` and write the files of the module docstring; returns error_analysis.json."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    gt = load_ground_truth(dataset_name)
    analysis = analyze_errors(gt, load_predictions(predictions, gt), score_threshold)
    source = "the given list" if isinstance(predictions, list) else os.fspath(predictions)

    candidates = find_candidates(analysis)
    pictures = draw_candidates(analysis, candidates[:num_pictures], output_dir / CANDIDATE_PICTURES)
    entries = [c.to_json(gt, rank) for rank, c in enumerate(candidates, 1)]
    for entry, picture in zip(entries, pictures, strict=False):
        entry["picture"] = f"{CANDIDATE_PICTURES}/{picture}"
    atomic_write(output_dir / CANDIDATES_FILE, _json({
        "dataset": dataset_name, "predictions": source, "score_threshold": score_threshold,
        "kinds": {kind: sum(1 for e in entries if e["kind"] == kind) for kind in KINDS},
        "candidates": entries,
    }))  # fmt: skip
    atomic_write(output_dir / CANDIDATES_LIST,
                 candidates_markdown(dataset_name, entries, num_pictures))  # fmt: skip

    curves = pr_curves(analysis.evaluation, gt)
    curves["f1_thresholds"] = f1_thresholds(analysis.evaluation, gt)
    atomic_write(output_dir / PR_CURVES_FILE, _json(curves))
    atomic_write(output_dir / PR_CURVES_PLOT,
                 figure_png_bytes(pr_curves_figure(curves, curves["f1_thresholds"])))  # fmt: skip
    confusion = confusion_matrix(gt, analysis.predictions, score_threshold)
    atomic_write(output_dir / CONFUSION_FILE, _json(confusion))
    atomic_write(output_dir / CONFUSION_PLOT, figure_png_bytes(confusion_matrix_figure(confusion)))

    summary = {
        "dataset": dataset_name,
        "predictions": source,
        "score_threshold": score_threshold,
        "error_types": list(ERROR_TYPES),
        "totals": _finite(analysis.totals),
        "images": _finite(analysis.images),
    }
    path = output_dir / ERROR_ANALYSIS_FILE
    atomic_write(path, _json(summary))
    logger.info(
        "error analysis of %s in %s: segm AP %.1f, %d annotation-error candidate(s)",
        dataset_name, output_dir, analysis.totals["AP"], len(candidates),
    )  # fmt: skip
    return path


def _finite(data):
    """NaN (e.g. AP of a dataset without ground truth) as null, for strict JSON."""
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_finite(v) for v in data]
    if isinstance(data, float) and not np.isfinite(data):
        return None
    return data


def analyze_test_sets(cfg: CfgNode) -> list[Path]:
    """After training or evaluation: analyse each test set's ``COCOEvaluator`` predictions into
    ``OUTPUT_DIR/analysis/<dataset>`` (``INSTSEG.ERROR_ANALYSIS``); returns the json files."""
    options = cfg.INSTSEG.ERROR_ANALYSIS
    if not options.ENABLED:
        return []
    if not cfg.MODEL.MASK_ON:
        logger.info("no error analysis: it compares masks and MODEL.MASK_ON is off")
        return []
    written = []
    for name in cfg.DATASETS.TEST:
        results = Path(cfg.OUTPUT_DIR) / "inference" / name / EVALUATOR_PREDICTIONS
        if not results.is_file():
            logger.warning("no error analysis of %s: %s not found", name, results)
            continue
        written.append(
            write_error_analysis(
                name,
                results,
                Path(cfg.OUTPUT_DIR) / ANALYSIS_DIR / name,
                score_threshold=options.SCORE_THRESH,
                num_pictures=options.NUM_PICTURES,
            )  # fmt: skip
        )
    return written
