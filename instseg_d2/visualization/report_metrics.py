"""The metrics tables of the report: the COCO table with its 95% intervals, the run facts, and
AP per class. They read ``final_metrics.json`` (or the last evaluation line of ``metrics.json``).
"""

from __future__ import annotations

import html

from ..engine.final_metrics import CI_SUFFIX, PER_CLASS_PREFIX
from .html import note, value_text

__all__ = ["flatten_metrics", "metrics_table_html", "metrics_table_rows", "per_class_table_html"]


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
            + "".join(f"<td>{value_text(aps.get(t))}</td>" for t in tasks)
            + "</tr>"
            for cls, aps in classes.items()
        )
        parts.append(
            f'<table class="per-class" data-dataset="{html.escape(dataset)}">'
            f"<tr><th>{html.escape(dataset)}: class</th>{head}</tr>{body}</table>"
        )
    return "".join(parts)


def _split_intervals(rows: dict[str, dict]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Rows without the ``<task>_ci95`` rows of final_metrics.json, and those intervals keyed
    by the row they belong to (``"pennfudan_val segm_ci95"`` -> ``"pennfudan_val segm"``)."""
    intervals = {n[: -len(CI_SUFFIX)]: r for n, r in rows.items() if n.endswith(CI_SUFFIX)}
    return {n: r for n, r in rows.items() if not n.endswith(CI_SUFFIX)}, intervals


def _cell(value, interval) -> str:
    """A metric, followed by its 95% interval when there is one."""
    text = value_text(value)
    if isinstance(interval, list | tuple) and len(interval) == 2:
        low, high = (value_text(float(v)) for v in interval)
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
            parts.append(note(f"[low, high]: {method.get('confidence', 0.95):.0%} interval, "
                               f"{method.get('method')}, {method.get('samples')} samples, "
                               f"seed {method.get('seed')}."))  # fmt: skip
    if info:
        body = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{value_text(v)}</td></tr>" for k, v in info.items()
        )
        parts.append(f'<table id="run-info"><tr><th>key</th><th>value</th></tr>{body}</table>')
    return "".join(parts)
