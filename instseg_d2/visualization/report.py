"""A self-contained HTML report of one training run (``OUTPUT_DIR/report.html``).

Everything is embedded (plots and sample panels as base64 ``data:`` URIs, styles and the one
script inline), so the file can be mailed or archived on its own and opens without a network.
"""

from __future__ import annotations

import datetime
import html
import json
import logging
from pathlib import Path

import cv2

from ..checkpoint import find_run_weights
from ..data.catalog import get_dataset_dicts
from ..data.errors import DatasetError
from ..engine.defaults import setup_inference_config
from ..engine.metrics_file import METRICS_FILE, MetricsFileError, load_metrics_records
from ..engine.predictor import BatchPredictor
from ..utils.atomic import atomic_write
from ..utils.errors import UserError
from .analysis_report import analysis_sections_html
from .html import img, note
from .metrics import extract_series, last_eval_metrics
from .plots import eval_metrics_figure, figure_png_bytes, learning_curve_figure
from .report_metrics import metrics_table_html, per_class_table_html
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


def sample_panels_html(output_dir: Path, num_samples: int) -> str:
    """Panels of the first ``num_samples`` images of ``cfg.DATASETS.TEST[0]`` with the run's model.

    Needs config.yaml, a checkpoint and the dataset; when one is missing the section says why.
    """
    config_file, weights = output_dir / CONFIG_FILE, find_run_weights(output_dir)
    if not config_file.is_file():
        return note(f"No sample panels: {CONFIG_FILE} not found in the run folder.")
    if weights is None:
        return note("No sample panels: no model_final.pth or last_checkpoint in the run folder.")
    cfg = setup_inference_config(config_file, weights=weights)
    if not len(cfg.DATASETS.TEST):
        return note("No sample panels: the config has no DATASETS.TEST.")
    dataset_name = cfg.DATASETS.TEST[0]
    try:
        dicts = get_dataset_dicts(dataset_name, num_samples)
    except (DatasetError, OSError) as exc:
        return note(f"No sample panels: dataset {dataset_name} is not available ({exc}).")
    predictor = BatchPredictor(cfg)
    figures = []
    for item in compare_split(predictor, dataset_name, dicts, batch_size=1):
        ok, jpeg = cv2.imencode(".jpg", item.panel[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise RuntimeError(f"could not encode the panel of {item.dataset_dict['file_name']}")
        name = Path(item.dataset_dict["file_name"]).name
        m = item.match
        figures.append(
            f"<figure>{img(jpeg.tobytes(), 'image/jpeg', f'panel {name}')}"
            f"<figcaption>{html.escape(name)}: TP {m.true_positives}, FP {m.false_positives}, "
            f"FN {m.false_negatives}</figcaption></figure>"
        )
    intro = note(
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
        # No metrics.json is what an --eval-only run leaves: no history, nothing wrong. A file
        # that is there but holds no record is worth a warning.
        if (output_dir / METRICS_FILE).is_file():
            logger.warning("report: %s", exc)
        records, records_problem = None, str(exc)

    metrics, source = final_metrics(output_dir, records)
    if metrics:
        metrics_html = (
            note(f"Source: {source}.") + metrics_table_html(metrics) + per_class_table_html(metrics)
        )
    else:
        metrics_html = note(f"No evaluation results in {FINAL_METRICS_FILE} or {METRICS_FILE}.")

    if records:
        runs = {output_dir.name: extract_series(records)}
        plots_html = (
            "<h3>Learning curve</h3>"
            + img(figure_png_bytes(learning_curve_figure(runs)), "image/png", "learning curve")
            + "<h3>Validation metrics</h3>"
            + img(figure_png_bytes(eval_metrics_figure(runs)), "image/png", "validation metrics")
        )
    else:
        plots_html = note(f"No plots: {records_problem}.")

    samples_html = (
        sample_panels_html(output_dir, num_samples) if num_samples > 0 else note("Not requested.")
    )

    config_path = output_dir / CONFIG_FILE
    config_html = (
        f"<pre>{html.escape(config_path.read_text(encoding='utf-8'))}</pre>"
        if config_path.is_file()
        else note(f"{CONFIG_FILE} not found.")
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
