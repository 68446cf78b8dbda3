"""Training hooks: validation loss, best checkpoint across resumes, early stopping.

All of them act at the iterations where Detectron2's ``EvalHook`` evaluates (every
``TEST.EVAL_PERIOD`` iterations and after the last one) and must be registered after it and
before the ``PeriodicWriter``, so that what they put into the EventStorage is written into
``metrics.json`` / TensorBoard in the same line as the evaluation results.
"""

from __future__ import annotations

import logging
import math
import operator
import os
from collections.abc import Iterable

import torch
from detectron2.engine import hooks
from detectron2.engine.train_loop import HookBase
from detectron2.utils import comm
from detectron2.utils.events import EventStorage
from torch.nn.parallel import DistributedDataParallel

from ..modeling.precision import autocast_context
from .metrics_file import metric_series

logger = logging.getLogger(__name__)


def is_eval_step(trainer, period: int) -> bool:
    """Same condition as ``EvalHook.after_step`` (the last iteration is left to after_train)."""
    next_iter = trainer.iter + 1
    return period > 0 and next_iter % period == 0 and next_iter != trainer.max_iter


def finished_all_iterations(trainer) -> bool:
    """Same condition as ``EvalHook.after_train``: the loop reached ``max_iter``."""
    return trainer.iter + 1 >= trainer.max_iter


class ValidationLoss(HookBase):
    """Mean training loss on the test sets, logged as ``validation_loss`` at each evaluation.

    The model is run in training mode (that is the mode that returns losses) under
    ``torch.no_grad``; BatchNorm layers are switched to eval for it so that the validation
    images do not update their running statistics. ``cpu_bf16``: under the bf16 autocast that
    the training step runs in (``INSTSEG.CPU_BF16``), so that the validation loss is computed as
    the training loss it is plotted against is, and at the step's speed rather than fp32's. Each
    worker takes its shard of the loader and the sums are gathered, so the value is the same for
    any number of processes.
    """

    def __init__(self, eval_period: int, data_loaders: Iterable, *, cpu_bf16: bool = False):
        self._period = eval_period
        self._loaders = list(data_loaders)
        self._cpu_bf16 = cpu_bf16

    def _model(self) -> torch.nn.Module:
        # The model that evaluation runs (the Trainer's EMA weights when INSTSEG.EMA is on).
        model = getattr(self.trainer, "evaluation_model", self.trainer.model)
        return model.module if isinstance(model, DistributedDataParallel) else model

    def _compute(self) -> dict[str, float]:
        model = self._model()
        was_training = model.training
        model.train()
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in norms:
            m.eval()
        sums: dict[str, float] = {}
        count = 0
        try:
            # The model's own training statistics (fast_rcnn/cls_accuracy, ...) go into a
            # throw-away storage, not into the training metrics of this iteration.
            with (
                torch.no_grad(),
                autocast_context("cpu", enabled=self._cpu_bf16),
                EventStorage(self.trainer.iter),
            ):
                for loader in self._loaders:
                    for inputs in loader:
                        losses = model(inputs)
                        for k, v in losses.items():
                            sums[k] = sums.get(k, 0.0) + float(v) * len(inputs)
                        count += len(inputs)
        finally:
            model.train(was_training)
        all_sums = comm.all_gather((sums, count))
        total = sum(c for _, c in all_sums)
        keys = sorted({k for s, _ in all_sums for k in s})
        mean = {k: sum(s.get(k, 0.0) for s, _ in all_sums) / max(total, 1) for k in keys}
        return mean

    def _log(self) -> None:
        mean = self._compute()
        scalars = {f"validation_{k}": v for k, v in mean.items()}
        scalars["validation_loss"] = sum(mean.values())
        logger.info(f"validation_loss {scalars['validation_loss']:.4f} at iter {self.trainer.iter}")
        self.trainer.storage.put_scalars(smoothing_hint=False, **scalars)

    def after_step(self):
        if is_eval_step(self.trainer, self._period):
            self._log()

    def after_train(self):
        if finished_all_iterations(self.trainer):
            self._log()


def _compare(mode: str):
    if mode not in ("max", "min"):
        raise ValueError(f"INSTSEG.BEST_METRIC_MODE must be 'max' or 'min', got {mode!r}")
    return operator.gt if mode == "max" else operator.lt


class ResumableBestCheckpointer(hooks.BestCheckpointer):
    """``BestCheckpointer`` that remembers, after ``--resume``, the best value reached so far.

    Detectron2's hook starts from "no best yet", so the first evaluation after a resume would
    overwrite ``model_best.pth`` even when it is worse; here the best is read back from the
    (already trimmed) ``metrics.json`` history before training starts.
    """

    def __init__(self, eval_period, checkpointer, val_metric, mode="max", metrics_file=""):
        super().__init__(eval_period, checkpointer, val_metric, mode=mode)
        self._metrics_file = metrics_file

    def before_train(self):
        series = metric_series(self._metrics_file, self._val_metric)
        if series and os.path.isfile(os.path.join(self._checkpointer.save_dir, "model_best.pth")):
            best_iter, best = series[0]
            for it, value in series[1:]:
                if self._compare(value, best):
                    best_iter, best = it, value
            self.best_metric, self.best_iter = best, best_iter
            logger.info(f"Best {self._val_metric} so far: {best:.4f} @ iteration {best_iter}")


class EarlyStop(Exception):
    """Raised by :class:`EarlyStopping` to end the training loop; the Trainer catches it."""


class EarlyStopping(HookBase):
    """Stop training after ``patience`` evaluations in a row without improving ``metric``."""

    def __init__(self, eval_period: int, metric: str, patience: int, mode: str = "max",
                 metrics_file: str = ""):  # fmt: skip
        self._period = eval_period
        self._metric = metric
        self._patience = patience
        self._better = _compare(mode)
        self._metrics_file = metrics_file
        self.best: float | None = None
        self.bad_evals = 0

    def _update(self, value: float) -> None:
        if math.isnan(value):
            self.bad_evals += 1
        elif self.best is None or self._better(value, self.best):
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1

    def before_train(self):
        # After --resume, continue counting from the history of the interrupted run.
        for _, value in metric_series(self._metrics_file, self._metric):
            self._update(value)

    def after_step(self):
        if not is_eval_step(self.trainer, self._period):
            return
        stop = False
        if comm.is_main_process():  # evaluators return their results on the main process only
            latest = self.trainer.storage.latest().get(self._metric)
            if latest is None:
                logger.warning(f"early stopping: {self._metric} was not computed; not counting")
            else:
                self._update(latest[0])
                stop = self.bad_evals >= self._patience
        # Every worker must leave the loop at the same iteration.
        if comm.all_gather(stop)[0]:
            message = (
                f"early stopping at iteration {self.trainer.iter}: {self._metric} did not "
                f"improve on {self.best} for {self.bad_evals} evaluations "
                f"(INSTSEG.EARLY_STOP_PATIENCE {self._patience})"
            )
            # The Trainer saves model_final in after_train when this is set.
            self.trainer.stopped_early = message
            raise EarlyStop(message)
