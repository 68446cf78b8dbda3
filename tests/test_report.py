"""The self-contained HTML run report: content, no external resource, renders in Chromium."""

from __future__ import annotations

import html
import importlib.util
import json
import logging
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from viz_tiny_model import metrics_lines, run_dir, write_metrics

from instseg_d2.engine.metrics_file import load_metrics_records
from instseg_d2.visualization.metrics import last_eval_metrics
from instseg_d2.visualization.report import ReportError, write_report

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _ResourceCollector(HTMLParser):
    """Every URL-valued attribute (src, href, srcset, poster, data) and the tags seen."""

    URL_ATTRIBUTES = {"src", "href", "srcset", "poster", "data", "action"}

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls.extend(v for k, v in attrs if k in self.URL_ATTRIBUTES and v is not None)


def _external_references(page: str) -> list[str]:
    parser = _ResourceCollector()
    parser.feed(page)
    css_urls = re.findall(r"url\(\s*['\"]?([^'\")]+)", page)
    imports = re.findall(r"@import\s+['\"]([^'\"]+)", page)
    return [u for u in parser.urls + css_urls + imports if not u.startswith("data:")]


@pytest.fixture(scope="module")
def run_copy(request, tmp_path_factory) -> Path:
    """A run folder of our own (the shared run is not written into): its config, metrics and a
    link to its weights."""
    source = run_dir(request, tmp_path_factory)
    run = tmp_path_factory.mktemp("report_run")
    for name in ("config.yaml", "metrics.json"):
        shutil.copy(source / name, run / name)
    (run / "model_final.pth").symlink_to(source / "model_final.pth")
    return run


@pytest.fixture(scope="module")
def report(run_copy, pennfudan_data) -> Path:
    return write_report(run_copy, num_samples=2)


def test_report_is_self_contained(report, run_copy):
    page = report.read_text(encoding="utf-8")
    assert report == run_copy / "report.html"
    assert _external_references(page) == []
    assert len(re.findall(r'<img src="data:image/(?:png|jpeg);base64,', page)) == 4
    assert "<link" not in page and "<iframe" not in page
    # The config is embedded as (escaped) text.
    assert html.escape((run_copy / "config.yaml").read_text(encoding="utf-8")) in page


def test_report_table_has_the_last_evaluation(report, run_copy):
    page = report.read_text(encoding="utf-8")
    evals = last_eval_metrics(load_metrics_records(run_copy))
    table = re.search(r'<table id="final-metrics">(.*?)</table>', page, re.S).group(1)
    assert f"<td>{evals['segm/AP']:.2f}</td>" in table
    assert f"<td>{evals['bbox/AP50']:.2f}</td>" in table
    assert "<td>segm</td>" in table and "<td>bbox</td>" in table


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(report, tmp_path):
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--dump-dom",
        report.resolve().as_uri(),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    # Set by the page's script on load: decoded images / all images.
    assert 'data-images-loaded="4/4"' in dom
    assert '<table id="final-metrics">' in dom
    assert "Sample predictions" in dom


def test_final_metrics_json_is_preferred_and_missing_parts_are_noted(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_metrics(run / "metrics.json", metrics_lines())
    # tools/train_net.py's layout: per test set, the first one repeated at the top, NaN as null.
    first = {"bbox": {"AP": 12.345, "APs": None}, "segm": {"AP": 11.0}}
    final = {
        "weights": "output/x/model_final.pth",
        "iteration": 79,
        "datasets": {"pennfudan_val": first, "balloon_val": {"segm": {"AP": 70.0}}},
        **first,
    }
    (run / "final_metrics.json").write_text(json.dumps(final))
    page = write_report(run, num_samples=3).read_text(encoding="utf-8")
    table = re.search(r'<table id="final-metrics">(.*?)</table>', page, re.S).group(1)
    rows = re.findall(r"<tr><td>([^<]*)</td>(.*?)</tr>", table)
    assert [name for name, _ in rows] == [
        "pennfudan_val bbox",
        "pennfudan_val segm",
        "balloon_val segm",
    ]
    assert "<td>12.35</td><td>n/a</td>" in rows[0][1]
    assert "<td>70.00</td>" in rows[2][1]
    assert "<td>9.75</td>" not in table  # metrics.json's last bbox/AP is not used
    info = re.search(r'<table id="run-info">(.*?)</table>', page, re.S).group(1)
    assert "<td>output/x/model_final.pth</td>" in info and "<td>79</td>" in info
    assert "No sample panels: config.yaml not found" in page
    assert _external_references(page) == []


def test_nested_final_metrics_without_datasets(tmp_path):
    (tmp_path / "final_metrics.json").write_text(json.dumps({"segm": {"AP": 1.5, "AP50": 2}}))
    page = write_report(tmp_path, num_samples=0).read_text(encoding="utf-8")
    table = re.search(r'<table id="final-metrics">(.*?)</table>', page, re.S).group(1)
    assert "<tr><td>segm</td><td>1.50</td><td>2</td></tr>" in table


def test_report_without_metrics_and_tool_errors(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        page = write_report(tmp_path, num_samples=0).read_text(encoding="utf-8")
    assert "No plots:" in page and "metrics file not found" in page
    assert not caplog.records  # an --eval-only run has no metrics.json: nothing to warn about
    (tmp_path / "metrics.json").write_text("not json\n")
    with caplog.at_level(logging.WARNING):
        page = write_report(tmp_path, num_samples=0).read_text(encoding="utf-8")
    assert "no metrics line" in page
    assert any("no metrics line" in r.getMessage() for r in caplog.records)
    (tmp_path / "metrics.json").unlink()
    assert "<img" not in page
    spec = importlib.util.spec_from_file_location("make_report", REPO_ROOT / "tools/make_report.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(ReportError, match="run folder not found"):
        tool.main([str(tmp_path / "missing")])
    (tmp_path / "final_metrics.json").write_text("{broken")
    with pytest.raises(ReportError, match="final_metrics.json: not valid JSON"):
        tool.main([str(tmp_path), "--num-samples", "0"])
