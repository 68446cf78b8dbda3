"""Learning-curve and evaluation-metric figures of one or several runs (data from ``metrics``)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .metrics import (  # noqa: E402
    EVAL_METRICS,
    EVAL_TASKS,
    LOSS_KEYS,
    VALIDATION_LOSS_KEY,
    Series,
    smooth,
)

RunSeries = Mapping[str, Series]


def _run_colors(n: int) -> list:
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def _empty(ax, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def learning_curve_figure(
    runs: Mapping[str, RunSeries], smoothing: float = 0.6, loss_keys: Sequence[str] = LOSS_KEYS
) -> Figure:
    """One panel per loss term; each run in its own color.

    The raw training loss is drawn faint and its smoothed version solid; ``validation_loss`` (if
    logged) is drawn on the ``total_loss`` panel as dashed markers, at its evaluation iterations.
    """
    ncols = 3
    nrows = -(-len(loss_keys) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    colors = _run_colors(len(runs))
    for ax, key in zip(axes.flat, loss_keys, strict=False):
        drawn = False
        for (name, series), color in zip(runs.items(), colors, strict=True):
            if key in series and len(series[key]):
                s = series[key]
                ax.plot(s.iterations, s.values, color=color, alpha=0.25, linewidth=1)
                ax.plot(s.iterations, smooth(s.values, smoothing), color=color, label=f"{name}")
                drawn = True
            if key == "total_loss" and VALIDATION_LOSS_KEY in series:
                v = series[VALIDATION_LOSS_KEY]
                ax.plot(
                    v.iterations, v.values, "--o", color=color, markersize=3, label=f"{name} (val)"
                )
                drawn = True
        if not drawn:
            _empty(ax, key)
            continue
        ax.set_title(key)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if key == "total_loss" or len(runs) > 1:
            ax.legend(fontsize=7)
    for ax in axes.flat[len(loss_keys) :]:
        ax.set_visible(False)
    fig.suptitle(f"Training loss (faint: raw, solid: EMA smoothing {smoothing:g})")
    fig.tight_layout()
    return fig


def eval_metrics_figure(
    runs: Mapping[str, RunSeries],
    tasks: Sequence[str] = EVAL_TASKS,
    metrics: Sequence[str] = EVAL_METRICS,
) -> Figure:
    """A grid of ``task/metric`` (rows bbox, segm; columns AP, AP50, AP75) over iterations."""
    fig, axes = plt.subplots(
        len(tasks), len(metrics), figsize=(4.2 * len(metrics), 3.2 * len(tasks)), squeeze=False
    )
    colors = _run_colors(len(runs))
    for row, task in enumerate(tasks):
        for col, metric in enumerate(metrics):
            ax, key = axes[row][col], f"{task}/{metric}"
            drawn = False
            for (name, series), color in zip(runs.items(), colors, strict=True):
                if key in series and len(series[key]):
                    s = series[key]
                    ax.plot(s.iterations, s.values, "-o", color=color, markersize=3, label=name)
                    drawn = True
            if not drawn:
                _empty(ax, key)
                continue
            ax.set_title(key)
            ax.set_xlabel("iteration")
            ax.set_ylabel("AP (%)")
            ax.set_ylim(bottom=0)  # AP is never negative; a flat 0 curve stays on the axis
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle("Validation metrics (COCO AP, %)")
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 80) -> Path:
    """Write ``fig`` as PNG and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def figure_png_bytes(fig: Figure, dpi: int = 80) -> bytes:
    """``fig`` as PNG bytes (for embedding in the HTML report), closing it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
