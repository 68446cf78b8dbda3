"""A training schedule in epochs, converted to Detectron2's iteration keys.

Detectron2 counts iterations; datasets differ in size, so "20 epochs" is what a user of a small
dataset means. With ``INSTSEG.EPOCHS > 0`` (and ``SOLVER.MAX_ITER -1``), :func:`apply_epoch_schedule`
sets ``SOLVER.MAX_ITER``, ``SOLVER.STEPS``, ``SOLVER.WARMUP_ITERS``, ``TEST.EVAL_PERIOD`` and
``SOLVER.CHECKPOINT_PERIOD`` from the epoch keys, the number of images the training loader
samples from (after ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``) and ``SOLVER.IMS_PER_BATCH``.

The number of processes: ``IMS_PER_BATCH`` is the batch of all processes together. When
``SOLVER.REFERENCE_WORLD_SIZE`` is set, Detectron2 rescales the batch and every iteration key for
the actual number of processes (``DefaultTrainer.auto_scale_workers``), which keeps the number of
epochs; so the conversion here uses the configured batch, and the epochs hold for any ``--num-gpus``.
"""

from __future__ import annotations

import logging
import math

from detectron2.config import CfgNode
from detectron2.data import get_detection_dataset_dicts

from ..utils.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["apply_epoch_schedule", "epochs_to_iterations"]


def epochs_to_iterations(epochs: float, num_images: int, batch_size: int) -> int:
    """Iterations that show ``epochs`` passes over ``num_images`` at ``batch_size`` (rounded up)."""
    return math.ceil(epochs * num_images / batch_size)


def _check(cfg: CfgNode, max_iter: int | None, steps: tuple[int, ...] | None) -> None:
    """Errors for keys that contradict each other. ``max_iter`` / ``steps``: the converted values
    (None without epochs); a config that already holds exactly them (a run's config.yaml) is fine."""
    epochs = cfg.INSTSEG.EPOCHS
    if epochs <= 0:
        if cfg.SOLVER.MAX_ITER == -1:
            raise ConfigError("SOLVER.MAX_ITER -1 (count in epochs) needs INSTSEG.EPOCHS > 0")
        return
    if cfg.SOLVER.MAX_ITER not in (-1, max_iter):
        raise ConfigError(
            f"INSTSEG.EPOCHS {epochs:g} and SOLVER.MAX_ITER {cfg.SOLVER.MAX_ITER} both set the "
            "length of training: set SOLVER.MAX_ITER -1 to count in epochs, or INSTSEG.EPOCHS 0 "
            "to count in iterations"
        )
    if steps and len(cfg.SOLVER.STEPS) and tuple(cfg.SOLVER.STEPS) != steps:
        raise ConfigError(
            f"SOLVER.STEPS {tuple(cfg.SOLVER.STEPS)} and INSTSEG.LR_STEPS_EPOCHS "
            f"{tuple(cfg.INSTSEG.LR_STEPS_EPOCHS)} both set the LR steps: set SOLVER.STEPS () "
            "when counting in epochs"
        )
    outside = [e for e in cfg.INSTSEG.LR_STEPS_EPOCHS if not 0 < e < epochs]
    if outside:
        raise ConfigError(
            f"INSTSEG.LR_STEPS_EPOCHS {tuple(cfg.INSTSEG.LR_STEPS_EPOCHS)}: steps must lie "
            f"inside the {epochs:g} epochs"
        )


def apply_epoch_schedule(cfg: CfgNode, num_images: int | None = None) -> str | None:
    """Convert the epoch keys of ``cfg`` in place; returns the one log line, or None when the
    schedule is in iterations. ``num_images`` defaults to the training loader's images."""
    if cfg.INSTSEG.EPOCHS <= 0:
        _check(cfg, None, None)
        return None
    if num_images is None:
        num_images = len(
            get_detection_dataset_dicts(
                cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
            )
        )
    batch = cfg.SOLVER.IMS_PER_BATCH

    def iters(epochs: float) -> int:
        return max(1, epochs_to_iterations(epochs, num_images, batch))

    steps = tuple(iters(e) for e in cfg.INSTSEG.LR_STEPS_EPOCHS)
    _check(cfg, iters(cfg.INSTSEG.EPOCHS), steps)
    cfg.SOLVER.MAX_ITER = iters(cfg.INSTSEG.EPOCHS)
    parts = [
        f"{cfg.INSTSEG.EPOCHS:g} epochs x {num_images} images / batch {batch} = "
        f"{cfg.SOLVER.MAX_ITER} iterations"
    ]
    if len(cfg.INSTSEG.LR_STEPS_EPOCHS):
        cfg.SOLVER.STEPS = steps
        parts.append(
            f"LR steps at epochs {tuple(cfg.INSTSEG.LR_STEPS_EPOCHS)} = {cfg.SOLVER.STEPS}"
        )
    for key, target, node, field in (
        ("WARMUP_EPOCHS", "warm-up", cfg.SOLVER, "WARMUP_ITERS"),
        ("EVAL_PERIOD_EPOCHS", "evaluation every", cfg.TEST, "EVAL_PERIOD"),
        ("CHECKPOINT_PERIOD_EPOCHS", "checkpoint every", cfg.SOLVER, "CHECKPOINT_PERIOD"),
    ):
        epochs = cfg.INSTSEG[key]
        if epochs >= 0:
            # 0: no warm-up / no periodic evaluation (Detectron2's 0) / checkpoints at the end only.
            zero = cfg.SOLVER.MAX_ITER if field == "CHECKPOINT_PERIOD" else 0
            node[field] = zero if epochs == 0 else iters(epochs)
            parts.append(f"{target} {epochs:g} epochs = {node[field]} iterations")
    line = "schedule: " + "; ".join(parts)
    logger.info(line)
    return line
