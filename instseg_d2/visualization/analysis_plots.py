"""Figures of the error analysis: precision-recall curves and the confusion matrix."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

# Curves drawn solid and labelled; the other IoU thresholds are drawn faint.
HIGHLIGHTED_IOUS = ("0.50", "0.75")


def pr_curves_figure(curves: dict, f1: dict | None = None) -> Figure:
    """One panel per class: precision over recall at every IoU threshold of ``curves`` (the
    ``pr_curves.json`` layout), with the F1-maximising point of ``f1`` (``f1_thresholds``)."""
    classes = curves["classes"]
    ncols = min(3, max(1, len(classes)))
    nrows = -(-max(1, len(classes)) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.6 * nrows), squeeze=False)
    recall = np.asarray(curves["recall"])
    cmap = plt.get_cmap("viridis")
    for ax, (name, per_iou) in zip(axes.flat, classes.items(), strict=False):
        for i, (iou, curve) in enumerate(per_iou.items()):
            precision = np.asarray(curve["precision"], dtype=float)
            if (precision < 0).all():
                continue  # no ground truth of this class
            highlighted = iou in HIGHLIGHTED_IOUS
            ax.plot(
                recall,
                np.clip(precision, 0, None),
                color=cmap(i / max(1, len(per_iou) - 1)),
                alpha=1.0 if highlighted else 0.3,
                linewidth=2 if highlighted else 1,
                label=f"IoU {iou}" if highlighted else None,
            )
        best = (f1 or {}).get(name)
        if best and best.get("score_threshold") is not None:
            label = f"max F1 {best['f1']:.2f} at score {best['score_threshold']:.2f}"
            ax.plot(best["recall"], best["precision"], "r*", markersize=12, label=label)
        ax.set_title(f"{name} (faint: IoU 0.55 ... 0.95)")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    for ax in axes.flat[len(classes) :]:
        ax.set_visible(False)
    fig.suptitle("Precision-recall, mask IoU (pycocotools)")
    fig.tight_layout()
    return fig


def confusion_matrix_figure(confusion: dict) -> Figure:
    """The ``confusion_matrix.json`` matrix as a heat map with counts (rows: ground truth)."""
    names = confusion["classes"]
    matrix = np.asarray(confusion["matrix"], dtype=float)
    size = 1.6 + 0.55 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    shown = np.where(matrix > 0, matrix, np.nan)  # zero cells stay white
    image = ax.imshow(shown, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    limit = np.nanmax(shown) if np.isfinite(shown).any() else 1
    for (row, col), value in np.ndenumerate(matrix):
        if value:
            ax.text(col, row, f"{int(value)}", ha="center", va="center", fontsize=8,
                    color="white" if value > limit / 2 else "black")  # fmt: skip
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(
        f"Confusion (mask IoU >= {confusion['iou']:g}, score >= {confusion['score_threshold']:g})",
        fontsize=9,
    )
    fig.tight_layout()
    return fig
