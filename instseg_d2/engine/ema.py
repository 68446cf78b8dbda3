"""Exponential moving average (EMA) of the weights: a hook, and checkpoints that carry it.

The average is ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn`` (one fused
``lerp`` over all parameters), updated after every optimizer step by :class:`EMAHook`. The decay
warms up as in YOLOv5's ``ModelEMA`` and MMDetection's ``ExpMomentumEMA``: after ``n`` updates it
is ``decay * (1 - exp(-n / warmup_iters))``, so early on the average follows the fast-changing
weights closely and forgets the random or pretrained start; later it approaches ``decay``.
Buffers (e.g. frozen BatchNorm statistics) are copied from the model, not averaged, which is
``AveragedModel``'s default and MMEngine's.

Checkpoints (as MMEngine's ``EMAHook`` writes them): ``"model"`` holds the *averaged* weights, so
that ``model_final.pth``, ``model_best.pth``, ``--eval-only`` and ``tools/infer.py`` use them
without knowing about EMA; ``"ema"`` holds the training weights and the update count.
:class:`EMACheckpointer` swaps the two around each save, and :meth:`ModelEMA.load_state_dict`
swaps them back on ``--resume``, so that training and averaging continue exactly.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator

import torch
from detectron2.engine.train_loop import HookBase
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..checkpoint import AtomicCheckpointer, non_finite_parameters
from ..utils.errors import ConfigError

__all__ = ["EMACheckpointer", "EMAHook", "ModelEMA"]

logger = logging.getLogger(__name__)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


class ModelEMA:
    """The EMA of ``model``'s parameters, with a warm-up of the decay.

    ``module`` is the averaged copy of the model (a full ``GeneralizedRCNN`` to evaluate);
    :meth:`update` folds in the current weights of ``model``. ``state_dict`` /
    ``load_state_dict`` make it a checkpointable of Detectron2's ``Checkpointer``.
    """

    def __init__(self, model: nn.Module, decay: float, warmup_iters: float = 0.0):
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"INSTSEG.EMA.DECAY must be in [0, 1), got {decay}")
        if warmup_iters < 0:
            raise ConfigError(f"INSTSEG.EMA.WARMUP_ITERS must be >= 0, got {warmup_iters}")
        self.model = _unwrap(model)
        self.decay = decay
        self.warmup_iters = warmup_iters
        self.averaged = AveragedModel(self.model, multi_avg_fn=self._average, use_buffers=False)
        self.averaged.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        """The averaged model."""
        return self.averaged.module

    @property
    def num_updates(self) -> int:
        return int(self.averaged.n_averaged)

    def decay_at(self, num_updates: int) -> float:
        """The decay used by update number ``num_updates + 1`` (the first update copies)."""
        if self.warmup_iters <= 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-num_updates / self.warmup_iters))

    def _average(self, averaged: list, current: list, num_updates) -> None:
        get_ema_multi_avg_fn(self.decay_at(int(num_updates)))(averaged, current, num_updates)

    def update(self) -> None:
        """Fold the model's current weights into the average (the first call copies them)."""
        self.averaged.update_parameters(self.model)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the values of the model's and the average's parameters and buffers."""
        if self.num_updates == 0:
            # Nothing averaged yet: the average is, by definition, the model (the first update
            # copies it), not the stale copy made at construction.
            self.module.load_state_dict(self.model.state_dict())
        own, other = self.model.state_dict(), self.module.state_dict()
        for name, value in own.items():
            scratch = value.clone()
            value.copy_(other[name])
            other[name].copy_(scratch)

    def state_dict(self) -> dict:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore from a checkpoint written through :class:`EMACheckpointer`.

        Detectron2's ``Checkpointer.load`` loads ``"model"`` (the averaged weights) into the model
        before its checkpointables, so at this point the model holds the average and ``state``
        the training weights: they are loaded, then swapped into place.
        """
        self.averaged.load_state_dict(state)
        self.swap()
        logger.info(f"EMA restored after {self.num_updates} updates")


class EMAHook(HookBase):
    """Updates the :class:`ModelEMA` after every step. Register it before the checkpoint and
    evaluation hooks, so that they see the average of the step that just ended."""

    def __init__(self, ema: ModelEMA):
        self.ema = ema

    def after_step(self):
        self.ema.update()


class EMACheckpointer(AtomicCheckpointer):
    """``AtomicCheckpointer`` whose ``"model"`` is the EMA and ``"ema"`` the training weights.

    With ``ema=None`` it is a plain ``AtomicCheckpointer`` that warns when ``--resume`` meets a
    checkpoint of an EMA run (training then continues from the averaged weights).
    """

    def __init__(self, model: nn.Module, save_dir: str = "", *, ema: ModelEMA | None = None,
                 **checkpointables):  # fmt: skip
        if ema is not None:
            checkpointables["ema"] = ema
        super().__init__(model, save_dir, **checkpointables)
        self.ema = ema

    @contextlib.contextmanager
    def _averaged_weights_in_model(self) -> Iterator[None]:
        if self.ema is None:
            yield
            return
        self.ema.swap()
        try:
            yield
        finally:
            self.ema.swap()

    def save(self, name: str, **kwargs) -> None:
        if self.ema is not None and self.save_dir and self.save_to_disk:
            bad = non_finite_parameters(self.ema.module)
            if bad:
                raise FloatingPointError(
                    f"not saving checkpoint {name}.pth: {len(bad)} EMA tensors hold NaN/Inf "
                    f"(first: {bad[0]}); the previous checkpoints in {self.save_dir} are kept"
                )
        with self._averaged_weights_in_model():
            super().save(name, **kwargs)

    def load(self, path: str, checkpointables: list[str] | None = None) -> dict:
        extra = super().load(path, checkpointables)
        if self.ema is None and checkpointables is None and "ema" in extra:
            logger.warning(
                f"{path} was written with INSTSEG.EMA enabled and EMA is off now: training "
                "continues from its averaged weights"
            )
        return extra
