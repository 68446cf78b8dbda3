"""The figure of a cross-validation summary (``cv_summary.json``): one panel per task, one
column per metric with the fold values, their mean, +-1 standard deviation and the 95%
t-interval of the mean."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["cv_summary_figure"]


def cv_summary_figure(result: Mapping) -> Figure:
    """``result``: :func:`instseg_d2.evaluation.cross_validation.summarize_folds`'s dict."""
    summary = result["summary"]
    tasks = list(summary) or ["no results"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.8), squeeze=False)
    repeats = sorted({f["repeat"] for f in result["folds"]})
    colors = plt.get_cmap("tab10")
    for ax, task in zip(axes.flat, tasks, strict=True):
        metrics = summary.get(task, {})
        for x, (metric, s) in enumerate(metrics.items()):
            # Fold values, spread a little sideways and colored by repeat.
            for f in result["folds"]:
                value = f["metrics"].get(task, {}).get(metric)
                if value is None:
                    continue
                offset = (f["fold"] + 0.5) / max(len(result["folds"]), 1) * 0.3 - 0.15
                color = colors(repeats.index(f["repeat"]) % 10)
                ax.plot(x + offset, value, "o", color=color, alpha=0.8, markersize=5)
            ax.hlines(s["mean"], x - 0.3, x + 0.3, color="black", linewidth=2)
            if s["std"] is not None:
                ax.add_patch(plt.Rectangle((x - 0.25, s["mean"] - s["std"]), 0.5, 2 * s["std"],
                                           color="gray", alpha=0.2, linewidth=0))  # fmt: skip
            if s["ci95"] is not None:
                low, high = s["ci95"]
                ax.errorbar(x + 0.35, s["mean"], yerr=[[s["mean"] - low], [high - s["mean"]]],
                            color="tab:red", capsize=4, linewidth=1.5)  # fmt: skip
        ax.set_xticks(np.arange(len(metrics)), list(metrics))
        ax.set_xlim(-0.6, max(len(metrics), 1) - 0.3)
        ax.set_title(f"{task}: {len(result['folds'])} folds")
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].set_ylabel("COCO AP (%)")
    fig.text(0.01, 0.01, "dots: folds (color: repeat); bar: mean; gray: +-1 std; "
             "red: 95% t-interval of the mean", fontsize=8, color="dimgray")  # fmt: skip
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig
