"""metrics.json -> series (duplicates of a resumed run, NaN, broken lines) and tools/plot_metrics.py."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from viz_tiny_model import metrics_lines, write_metrics

from instseg_d2.engine.metrics_file import MetricsFileError, load_metrics_records
from instseg_d2.visualization.metrics import extract_series, last_eval_metrics, load_series, smooth
from instseg_d2.visualization.plots import eval_metrics_figure, learning_curve_figure

REPO_ROOT = Path(__file__).resolve().parents[1]


def _plot_tool():
    spec = importlib.util.spec_from_file_location(
        "plot_metrics", REPO_ROOT / "tools/plot_metrics.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run(tmp_path) -> Path:
    run = tmp_path / "run_a"
    run.mkdir()
    write_metrics(run / "metrics.json", metrics_lines())
    return run


def test_series_match_metrics_json_with_resume_duplicates_and_nan(run):
    series = load_series(run)
    total = series["total_loss"]
    np.testing.assert_array_equal(total.iterations, [9, 19, 29, 39])
    # Iteration 29 was written twice (resume): the later line (2.25) wins over 4 - 29/20.
    np.testing.assert_allclose(total.values, [4 - 9 / 20, 4 - 19 / 20, 2.25, 4 - 39 / 20])
    np.testing.assert_allclose(series["loss_cls"].values, [0.61, 0.51, 0.4, 0.31])
    # Keys the resumed line does not have keep their first value.
    np.testing.assert_allclose(series["loss_box_reg"].values, [0.5] * 4)
    np.testing.assert_array_equal(series["segm/AP"].iterations, [19, 39])
    np.testing.assert_allclose(series["segm/AP"].values, [19 / 5, 39 / 5])
    np.testing.assert_allclose(series["validation_loss"].values, [3.5 - 19 / 40, 3.5 - 39 / 40])
    assert "bbox/APs" not in series  # only NaN: nothing to plot
    assert "iteration" not in series


def test_later_nan_replaces_earlier_value_and_bad_lines_are_skipped(tmp_path, caplog):
    path = tmp_path / "metrics.json"
    path.write_text(
        '{"iteration": 0, "total_loss": 1.5}\n'
        '{"iteration": 1, "total_loss": 1.0}\n'
        '{"iteration": 1, "total_loss": NaN}\n'
        "\n"
        '{"no_iteration": 3}\n'
        '{"iteration": 2, "total_loss": Infinity, "lr": 0.1, "note": "text"}\n'
        '{"iteration": 3, "total_loss": 0.5, "lr"'  # cut off by a kill during a write
    )
    with caplog.at_level(logging.WARNING):
        series = extract_series(load_metrics_records(path))
    np.testing.assert_array_equal(series["total_loss"].iterations, [0])
    np.testing.assert_array_equal(series["lr"].values, [0.1])
    assert "note" not in series
    assert f"{path}:5" in caplog.text and f"{path}:7" in caplog.text


def test_missing_or_empty_metrics_file_is_a_clear_error(tmp_path):
    with pytest.raises(MetricsFileError, match="metrics file not found"):
        load_metrics_records(tmp_path)
    (tmp_path / "metrics.json").write_text("garbage\n")
    with pytest.raises(MetricsFileError, match="no metrics line"):
        load_metrics_records(tmp_path)


def test_last_eval_metrics_takes_the_last_evaluation(run):
    evals = last_eval_metrics(load_metrics_records(run))
    assert evals["segm/AP"] == pytest.approx(39 / 5)
    assert evals["bbox/AP50"] == pytest.approx(39 / 2)
    assert math.isnan(evals["bbox/APs"])
    assert "validation_loss" not in evals and "total_loss" not in evals


def test_smooth():
    np.testing.assert_allclose(smooth(np.full(5, 3.0), 0.9), np.full(5, 3.0))  # debiased
    values = np.array([1.0, 5.0, 2.0])
    np.testing.assert_allclose(smooth(values, 0.0), values)
    out = smooth(np.array([0.0, 10.0]), 0.5)
    np.testing.assert_allclose(out, [0.0, 5.0 / 0.75])
    with pytest.raises(ValueError):
        smooth(values, 1.0)


def test_figures_draw_the_extracted_series(run, tmp_path):
    other = tmp_path / "run_b"
    other.mkdir()
    write_metrics(other / "metrics.json", [{"iteration": 5, "total_loss": 9.0, "segm/AP": 1.0}])
    runs = {"a": load_series(run), "b": load_series(other)}

    fig = learning_curve_figure(runs, smoothing=0.0)
    ax = next(a for a in fig.axes if a.get_title() == "total_loss")
    ydata = [tuple(line.get_ydata()) for line in ax.get_lines()]
    assert tuple(runs["a"]["total_loss"].values) in ydata
    assert tuple(runs["a"]["validation_loss"].values) in ydata
    assert (9.0,) in ydata
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"a", "a (val)", "b"}

    fig = eval_metrics_figure(runs)
    ax = next(a for a in fig.axes if a.get_title() == "segm/AP")
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["a"].get_xdata(), [19, 39])
    np.testing.assert_allclose(lines["a"].get_ydata(), [19 / 5, 39 / 5])
    np.testing.assert_allclose(lines["b"].get_ydata(), [1.0])


def test_plot_tool_writes_pngs_for_several_runs(run, tmp_path):
    other = tmp_path / "run_b"
    other.mkdir()
    write_metrics(other / "metrics.json", metrics_lines()[:3])
    out = tmp_path / "plots"
    assert _plot_tool().main([str(run), str(other / "metrics.json"), "--output", str(out)]) == 0
    for name in ("learning_curve.png", "eval_metrics.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
    with pytest.raises(MetricsFileError, match="metrics file not found"):
        _plot_tool().main([str(tmp_path / "nowhere")])


def test_plot_tool_reads_a_real_training_run(tiny_training_run, tmp_path):
    """The series of a real run match its metrics.json line by line."""
    records = [
        json.loads(line)
        for line in (tiny_training_run / "metrics.json").read_text().splitlines()
        if line.strip()
    ]
    series = load_series(tiny_training_run)
    for key in ("total_loss", "segm/AP", "validation_loss"):
        expected = {}
        for record in records:  # last value per iteration, finite only
            if key in record:
                expected[record["iteration"]] = record[key]
        expected = {k: v for k, v in expected.items() if math.isfinite(v)}
        np.testing.assert_array_equal(series[key].iterations, sorted(expected))
        np.testing.assert_allclose(series[key].values, [expected[k] for k in sorted(expected)])
    assert _plot_tool().main([str(tiny_training_run), "--output", str(tmp_path)]) == 0
    assert (tmp_path / "learning_curve.png").stat().st_size > 10_000


def test_results_table_rows_come_from_the_runs_own_files(tmp_path, capsys):
    """tools/results_table.py quotes final_metrics.json (with its interval) and metrics.json."""
    spec = importlib.util.spec_from_file_location(
        "results_table", REPO_ROOT / "tools/results_table.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    run = tmp_path / "run_a"
    run.mkdir()
    final = {
        "iteration": 239,
        "seed": 7,
        "bbox": {"AP": 31.24, "AP50": 70.0},
        "segm": {"AP": 20.0, "AP50": 60.55},
        "segm_ci95": {"AP": [15.04, 25.26]},
    }
    (run / "final_metrics.json").write_text(json.dumps(final))
    write_metrics(
        run / "metrics.json", [{"iteration": i, "time": t} for i, t in enumerate([1.0, 3.0, 2.0])]
    )
    assert tool.main([str(run)]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert row == "| run_a | 239 | 7 | 31.2 / 70.0 | 20.0 [15.0, 25.3] / 60.5 | 2.00 |"
    from instseg_d2.utils.errors import UserError

    with pytest.raises(UserError, match="final_metrics.json: not found"):
        tool.main([str(tmp_path / "nowhere")])
