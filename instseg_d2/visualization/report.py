"""A self-contained HTML report of one training run (``OUTPUT_DIR/report.html``).

Everything is embedded (plots and sample panels as base64 ``data:`` URIs, styles and the one
script inline), so the file can be mailed or archived on its own and opens without a network.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import logging
import math
from pathlib import Path

import cv2

from ..checkpoint import find_run_weights
from ..data.catalog import get_dataset_dicts
from ..data.errors import DatasetError
from ..engine.defaults import setup_inference_config
from ..engine.final_metrics import CI_SUFFIX, PER_CLASS_PREFIX
from ..engine.metrics_file import METRICS_FILE, MetricsFileError, load_metrics_records
from ..engine.predictor import BatchPredictor
from ..utils.atomic import atomic_write
from ..utils.errors import UserError
from .analysis_report import analysis_sections_html
from .metrics import extract_series, last_eval_metrics
from .plots import eval_metrics_figure, figure_png_bytes, learning_curve_figure
from .split_panels import compare_split

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
FINAL_METRICS_FILE = "final_metrics.json"
CONFIG_FILE = "config.yaml"

# Sets data-images-loaded="<decoded>/<total>" on <body> once the page has loaded, so a headless
# browser (tests/test_report.py) can check that every embedded picture really decodes.
_IMAGES_LOADED_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var decoded = images.filter(function (img) { return img.complete && img.naturalWidth > 0; });
  document.body.setAttribute("data-images-loaded", decoded.length + "/" + images.length);
});
"""

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; }
figure { margin: 0 0 1.5em; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.8em; }
.note { color: #777; font-style: italic; }
.ci { color: #777; font-size: 0.85em; }
"""


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _img(data: bytes, mime: str, alt: str) -> str:
    return f'<img src="{_data_uri(data, mime)}" alt="{html.escape(alt)}">'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def flatten_metrics(metrics: dict, prefix: str = "") -> dict[str, object]:
    """``{"segm": {"AP": 1}}`` -> ``{"segm/AP": 1}`` (already flat keys are kept)."""
    flat: dict[str, object] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, name))
        else:
            flat[name] = value
    return flat


def metrics_table_rows(
    metrics: dict,
) -> tuple[dict[str, dict[str, object]], dict[str, object]]:
    """Rows of the metrics table (``{row: {metric: value}}``) and the other run facts.

    Understands metrics.json's flat ``bbox/AP`` keys, nested ``{"bbox": {"AP": ...}}`` and
    tools/train_net.py's final_metrics.json, whose ``datasets`` holds one ``{task: {...}}`` per
    test set (its top-level ``bbox``/``segm`` repeat the first test set and are left out then).
    """
    rows: dict[str, dict[str, object]] = {}
    info = {k: v for k, v in metrics.items() if not isinstance(v, dict) and "/" not in k}
    datasets = metrics.get("datasets")
    if isinstance(datasets, dict) and datasets:
        for dataset, tasks in datasets.items():
            for task, values in flatten_metrics(tasks).items():
                row, metric = task.rsplit("/", 1) if "/" in task else ("", task)
                if not metric.startswith(PER_CLASS_PREFIX):  # in the per-class table
                    rows.setdefault(f"{dataset} {row}".strip(), {})[metric] = values
        return rows, info
    for key, value in flatten_metrics(metrics).items():
        if "/" in key:
            row, metric = key.rsplit("/", 1)
            if not metric.startswith(PER_CLASS_PREFIX):
                rows.setdefault(row, {})[metric] = value
    return rows, info


def per_class_table_html(metrics: dict) -> str:
    """AP per class and task (final_metrics.json's ``per_class``), for multi-class test sets."""
    per_class = metrics.get("per_class")
    if not isinstance(per_class, dict):
        return ""
    parts = []
    for dataset, classes in per_class.items():
        if not isinstance(classes, dict) or len(classes) < 2:
            continue
        tasks = list(dict.fromkeys(t for aps in classes.values() for t in aps))
        head = "".join(f"<th>{html.escape(t)} AP</th>" for t in tasks)
        body = "".join(
            f"<tr><td>{html.escape(cls)}</td>"
            + "".join(f"<td>{_format_value(aps.get(t))}</td>" for t in tasks)
            + "</tr>"
            for cls, aps in classes.items()
        )
        parts.append(
            f'<table class="per-class" data-dataset="{html.escape(dataset)}">'
            f"<tr><th>{html.escape(dataset)}: class</th>{head}</tr>{body}</table>"
        )
    return "".join(parts)


def final_metrics(output_dir: Path, records: list[dict] | None) -> tuple[dict, str]:
    """Final metrics and where they came from: final_metrics.json, else metrics.json's last eval."""
    path = output_dir / FINAL_METRICS_FILE
    if path.is_file():
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as exc:
            raise ReportError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ReportError(f"{path}: expected a JSON object, got {type(data).__name__}")
        return data, FINAL_METRICS_FILE
    if records:
        evals = last_eval_metrics(records)
        if evals:
            iteration = next(r["iteration"] for r in reversed(records) if evals.keys() & r.keys())
            return evals, f"last evaluation in {METRICS_FILE} (iteration {iteration})"
    return {}, ""


def _format_value(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"  # COCO's NaN (no object of that size), null in final_metrics.json
    if isinstance(value, float):
        return f"{value:.2f}"
    return html.escape(str(value))


def _split_intervals(rows: dict[str, dict]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Rows without the ``<task>_ci95`` rows of final_metrics.json, and those intervals keyed
    by the row they belong to (``"pennfudan_val segm_ci95"`` -> ``"pennfudan_val segm"``)."""
    intervals = {n[: -len(CI_SUFFIX)]: r for n, r in rows.items() if n.endswith(CI_SUFFIX)}
    return {n: r for n, r in rows.items() if not n.endswith(CI_SUFFIX)}, intervals


def _cell(value, interval) -> str:
    """A metric, followed by its 95% interval when there is one."""
    text = _format_value(value)
    if isinstance(interval, list | tuple) and len(interval) == 2:
        low, high = (_format_value(float(v)) for v in interval)
        text += f' <span class="ci">[{low}, {high}]</span>'
    return text


def metrics_table_html(metrics: dict) -> str:
    """The metrics as a (dataset) task x metric table, the other facts as a second table."""
    rows, info = metrics_table_rows(metrics)
    rows, intervals = _split_intervals(rows)
    parts = []
    if rows:
        columns = list(dict.fromkeys(m for row in rows.values() for m in row))
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join(
            f"<tr><td>{html.escape(name)}</td>"
            + "".join(
                f"<td>{_cell(row[c], intervals.get(name, {}).get(c)) if c in row else ''}</td>"
                for c in columns
            )
            + "</tr>"
            for name, row in rows.items()
        )
        parts.append(f'<table id="final-metrics"><tr><th>task</th>{head}</tr>{body}</table>')
        method = metrics.get("bootstrap")
        if intervals and isinstance(method, dict):
            parts.append(_note(f"[low, high]: {method.get('confidence', 0.95):.0%} interval, "
                               f"{method.get('method')}, {method.get('samples')} samples, "
                               f"seed {method.get('seed')}."))  # fmt: skip
    if info:
        body = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{_format_value(v)}</td></tr>"
            for k, v in info.items()
        )
        parts.append(f'<table id="run-info"><tr><th>key</th><th>value</th></tr>{body}</table>')
    return "".join(parts)


def sample_panels_html(output_dir: Path, num_samples: int) -> str:
    """Panels of the first ``num_samples`` images of ``cfg.DATASETS.TEST[0]`` with the run's model.

    Needs config.yaml, a checkpoint and the dataset; when one is missing the section says why.
    """
    config_file, weights = output_dir / CONFIG_FILE, find_run_weights(output_dir)
    if not config_file.is_file():
        return _note(f"No sample panels: {CONFIG_FILE} not found in the run folder.")
    if weights is None:
        return _note("No sample panels: no model_final.pth or last_checkpoint in the run folder.")
    cfg = setup_inference_config(config_file, weights=weights)
    if not len(cfg.DATASETS.TEST):
        return _note("No sample panels: the config has no DATASETS.TEST.")
    dataset_name = cfg.DATASETS.TEST[0]
    try:
        dicts = get_dataset_dicts(dataset_name, num_samples)
    except (DatasetError, OSError) as exc:
        return _note(f"No sample panels: dataset {dataset_name} is not available ({exc}).")
    predictor = BatchPredictor(cfg)
    figures = []
    for item in compare_split(predictor, dataset_name, dicts, batch_size=1):
        ok, jpeg = cv2.imencode(".jpg", item.panel[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise RuntimeError(f"could not encode the panel of {item.dataset_dict['file_name']}")
        name = Path(item.dataset_dict["file_name"]).name
        m = item.match
        figures.append(
            f"<figure>{_img(jpeg.tobytes(), 'image/jpeg', f'panel {name}')}"
            f"<figcaption>{html.escape(name)}: TP {m.true_positives}, FP {m.false_positives}, "
            f"FN {m.false_negatives}</figcaption></figure>"
        )
    intro = _note(
        f"image | predictions | ground truth for the first {len(figures)} images of "
        f"{dataset_name}, weights {weights.name}, score >= "
        f"{cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST:g}; TP/FP/FN by mask IoU >= 0.5."
    )
    return intro + "".join(figures)


class ReportError(UserError, ValueError):
    """A run folder the report cannot be made of; the message names the file."""


def write_report(
    output_dir: str | Path, num_samples: int = 3, report_path: str | Path | None = None
) -> Path:
    """Write ``OUTPUT_DIR/report.html`` (or ``report_path``) and return its path.

    Sections: final metrics (final_metrics.json, else the last evaluation in metrics.json),
    learning curve and validation metrics plots, ``num_samples`` comparison panels (0 skips
    them; they need config.yaml, a checkpoint and the test dataset), the error analysis of
    ``OUTPUT_DIR/analysis/<dataset>/`` (:mod:`.analysis_report`) and the config.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise ReportError(f"{output_dir}: run folder not found")
    records_problem = ""
    try:
        records = load_metrics_records(output_dir)
    except MetricsFileError as exc:
        logger.warning("report: %s", exc)
        records, records_problem = None, str(exc)

    metrics, source = final_metrics(output_dir, records)
    if metrics:
        metrics_html = (
            _note(f"Source: {source}.")
            + metrics_table_html(metrics)
            + per_class_table_html(metrics)
        )
    else:
        metrics_html = _note(f"No evaluation results in {FINAL_METRICS_FILE} or {METRICS_FILE}.")

    if records:
        runs = {output_dir.name: extract_series(records)}
        plots_html = (
            "<h3>Learning curve</h3>"
            + _img(figure_png_bytes(learning_curve_figure(runs)), "image/png", "learning curve")
            + "<h3>Validation metrics</h3>"
            + _img(figure_png_bytes(eval_metrics_figure(runs)), "image/png", "validation metrics")
        )
    else:
        plots_html = _note(f"No plots: {records_problem}.")

    samples_html = (
        sample_panels_html(output_dir, num_samples) if num_samples > 0 else _note("Not requested.")
    )

    config_path = output_dir / CONFIG_FILE
    config_html = (
        f"<pre>{html.escape(config_path.read_text(encoding='utf-8'))}</pre>"
        if config_path.is_file()
        else _note(f"{CONFIG_FILE} not found.")
    )

    title = f"Run report: {output_dir.resolve().name}"
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body data-images-loaded="pending">
<h1>{html.escape(title)}</h1>
<p class="note">{html.escape(str(output_dir.resolve()))}, generated {generated}</p>
<section id="metrics"><h2>Final metrics</h2>{metrics_html}</section>
<section id="plots"><h2>Training curves</h2>{plots_html}</section>
<section id="samples"><h2>Sample predictions</h2>{samples_html}</section>
{analysis_sections_html(output_dir)}
<section id="config"><h2>Config</h2>{config_html}</section>
<script>{_IMAGES_LOADED_SCRIPT}</script>
</body>
</html>
"""
    report_path = output_dir / REPORT_FILE if report_path is None else Path(report_path)
    atomic_write(report_path, page)
    return report_path
