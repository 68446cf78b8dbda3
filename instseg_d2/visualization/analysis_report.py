"""The report's error-analysis sections, from the files in ``RUN/analysis/<dataset>/``.

Per analysed dataset, worst first in each: possible annotation errors (pictures of the first
ones, then a table), the images that cost the most AP, the error types, the precision-recall
curves with the F1-maximising thresholds, and the confusion matrix. Everything is embedded as
``data:`` URIs, like the rest of the report.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from .error_analysis_files import (
    ANALYSIS_DIR,
    CANDIDATES_FILE,
    CONFUSION_PLOT,
    ERROR_ANALYSIS_FILE,
    PR_CURVES_FILE,
    PR_CURVES_PLOT,
)
from .html import embedded_file, note

NUM_PICTURES = 10
NUM_ROWS = 15


def _esc(value) -> str:
    return html.escape(str(value))


def _table(table_id: str, header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><tr>{head}</tr>{body}</table>'


def _load(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def candidates_html(folder: Path, key: str) -> str:
    data = _load(folder / CANDIDATES_FILE)
    entries = data["candidates"]
    kinds = ", ".join(f"{kind}: {n}" for kind, n in data["kinds"].items())
    if not entries:
        return note(f"No candidate ({kinds}).")
    parts = [note(
        f"{len(entries)} candidates ({kinds}), highest score first; detections count from "
        f"score {data['score_threshold']:g}. The full list with annotation ids: "
        f"{ANALYSIS_DIR}/{folder.name}/annotation_candidates.md / .json."
    )]  # fmt: skip
    for e in entries[:NUM_PICTURES]:
        picture = folder / e["picture"] if e.get("picture") else None
        if picture is None or not picture.is_file():
            continue
        ids = ", ".join(str(a["annotation_id"]) for a in e["annotations"]) or "none"
        caption = (f"#{e['rank']} {e['kind']}, score {e['score']:.2f}: {Path(e['file_name']).name}"
                   f" (image id {e['image_id']}, annotation ids {ids}): {e['note']}")  # fmt: skip
        image = embedded_file(picture, "image/jpeg", f"candidate {e['rank']}")
        parts.append(f"<figure>{image}<figcaption>{_esc(caption)}</figcaption></figure>")
    rows = [
        [e["rank"], e["kind"], f"{e['score']:.2f}", Path(e["file_name"]).name, e["image_id"],
         ", ".join(str(a["annotation_id"]) for a in e["annotations"]) or "-", e["note"]]
        for e in entries[NUM_PICTURES : NUM_PICTURES + NUM_ROWS]
    ]  # fmt: skip
    if rows:
        header = ["rank", "kind", "score", "file", "image id", "annotation ids", "note"]
        parts.append(_table(f"candidates-{key}", header, rows))
    return "".join(parts)


def _points(value) -> str:
    """AP points; null (NaN: a dataset without ground truth) as n/a."""
    return "n/a" if value is None else f"{value:.2f}"


def _counts(record: dict, iou: str) -> str:
    c = record[iou]
    return f"{c['tp']} / {c['fp']} / {c['fn']}"


def costly_images_html(analysis: dict, key: str) -> str:
    rows = []
    for rank, r in enumerate(analysis["images"][:NUM_ROWS], 1):
        errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items() if v) or "-"
        rows.append([rank, Path(r["file_name"]).name, _points(r["ap_gain"]), _counts(r, "iou50"),
                     _counts(r, "iou75"), errors])  # fmt: skip
    header = ["rank", "file", "AP gain if perfect", "TP/FP/FN @0.5", "TP/FP/FN @0.75", "errors"]
    intro = note(
        "AP gain: segm AP (points) of the dataset with this image's predictions replaced by its "
        f"ground truth, minus the AP ({_points(analysis['totals']['AP'])}). Counts: detections "
        f"with score >= {analysis['score_threshold']:g}, mask IoU thresholds 0.5 and 0.75."
    )
    return intro + _table(f"costly-images-{key}", header, rows)


def error_types_html(analysis: dict, key: str) -> str:
    totals = analysis["totals"]
    gains = totals["ap50_gain_if_removed"]
    rows = sorted(
        ([name, count, _points(gains[name]) if name in gains else "-"]
         for name, count in totals["errors"].items()),
        key=lambda row: -row[1],
    )  # fmt: skip
    intro = note(
        f"COCO error types at mask IoU 0.5 of the detections with score >= "
        f"{analysis['score_threshold']:g} (missed: ground truth no such detection overlaps at "
        "IoU 0.1); AP50 gain: what removing every detection of that type would add to AP50. "
        "Definitions: instseg_d2/evaluation/error_analysis.py."
    )
    return intro + _table(f"error-types-{key}", ["type", "count", "AP50 gain if removed"], rows)


def pr_curves_html(folder: Path, key: str) -> str:
    f1 = _load(folder / PR_CURVES_FILE).get("f1_thresholds", {})
    rows = sorted(
        ([name, "-" if e["score_threshold"] is None else f"{e['score_threshold']:.3f}",
          f"{e['f1']:.3f}", f"{e['precision']:.3f}", f"{e['recall']:.3f}", e["num_ground_truth"]]
         for name, e in f1.items()),
        key=lambda row: row[2],
    )  # fmt: skip
    header = ["class", "score threshold (max F1)", "F1", "precision", "recall", "ground truth"]
    return (embedded_file(folder / PR_CURVES_PLOT, "image/png", "precision-recall curves")
            + note("Score threshold with the highest F1 at mask IoU 0.5, worst class first.")
            + _table(f"f1-thresholds-{key}", header, rows))  # fmt: skip


def dataset_sections_html(folder: Path) -> str:
    """The five sections of one analysed dataset's folder."""
    name = folder.name
    key = "".join(ch if ch.isalnum() else "-" for ch in name)
    try:
        analysis = _load(folder / ERROR_ANALYSIS_FILE)
        sections = [
            ("annotation-candidates", "Possible annotation errors", candidates_html(folder, key)),
            ("costly-images", "Images that cost the most AP", costly_images_html(analysis, key)),
            ("error-types", "Error types", error_types_html(analysis, key)),
            ("pr-curves", "Precision-recall curves", pr_curves_html(folder, key)),
            ("confusion-matrix", "Confusion matrix",
             embedded_file(folder / CONFUSION_PLOT, "image/png", "confusion matrix")),
        ]  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return (f'<section id="error-analysis-{key}"><h2>Error analysis: {_esc(name)}</h2>'
                f"{note(f'{folder}: the analysis files are incomplete or unreadable ({exc}).')}"
                "</section>")  # fmt: skip
    return "".join(
        f'<section id="{sid}-{key}"><h2>{_esc(title)}: {_esc(name)}</h2>{body}</section>'
        for sid, title, body in sections
    )


def analysis_sections_html(run_dir: str | Path) -> str:
    """Sections for every ``RUN/analysis/<dataset>/`` with an error_analysis.json, else a note."""
    folders = sorted(
        p.parent for p in (Path(run_dir) / ANALYSIS_DIR).glob(f"*/{ERROR_ANALYSIS_FILE}")
    )
    if not folders:
        return (
            '<section id="error-analysis"><h2>Error analysis</h2>'
            + note(
                f"No {ANALYSIS_DIR}/<dataset>/{ERROR_ANALYSIS_FILE} in the run folder: it is "
                "written at the end of training (INSTSEG.ERROR_ANALYSIS.ENABLED) or by "
                "tools/analyze_errors.py --output RUN/analysis/<dataset>."
            )
            + "</section>"
        )
    return "".join(dataset_sections_html(folder) for folder in folders)
