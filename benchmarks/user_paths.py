"""Our side of the benchmark: the code users run, configured the way users configure it.

- Inference: :class:`~instseg_d2.engine.predictor.BatchPredictor` built from a config and a
  checkpoint, called on one BGR image (it resizes, converts to float32, runs the model and the
  post-processing) as ``tools/infer.py`` does.
- Training: the project's :class:`~instseg_d2.engine.trainer.Trainer` built from a config, timed
  on ``run_step`` (forward, losses, backward, gradient clipping, optimizer step, metrics), with
  ``INSTSEG.OPTIMIZE_TRAINING`` and ``INSTSEG.CPU_BF16`` (``SOLVER.AMP.ENABLED`` on CUDA) as the
  variant asks. Its data loader is the only thing replaced: it cycles through batches mapped
  beforehand, so that both libraries train on the same pixels and the loader is timed apart.

Each variant is a config (:func:`inference_cfg`, :func:`training_cfg`), not a model changed here.
"""

from __future__ import annotations

import itertools
import tempfile

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.utils.events import EventStorage

from instseg_d2.engine.predictor import BatchPredictor
from instseg_d2.engine.trainer import Trainer
from instseg_d2.modeling.speedups import override_all

from .detection_match import Detections

# Ablation rows: one speed-up on, the others off (the config key of each).
INFERENCE_ABLATION = {
    "fold_bn": "INSTSEG.INFERENCE.FOLD_FROZEN_BN",
    "channels_last": "INSTSEG.CHANNELS_LAST",
    "cpu_roi_align": "INSTSEG.CPU_ROI_ALIGN",
}
TRAINING_ABLATION = {
    "channels_last": "INSTSEG.CHANNELS_LAST",
    "frozen_bn_on_weights": "INSTSEG.FROZEN_BN_ON_WEIGHTS",
    "cpu_roi_align": "INSTSEG.CPU_ROI_ALIGN",
}


def inference_cfg(
    cfg: CfgNode,
    *,
    optimized: bool,
    reduced_precision: bool = False,
    compiled: bool = False,
    only: str | None = None,
) -> CfgNode:
    """``cfg`` with every speed-up on (``optimized``) or off, or only the key ``only`` on."""
    cfg = override_all(cfg, optimized and only is None)
    opts = ["INSTSEG.INFERENCE.BF16", reduced_precision]
    opts += ["INSTSEG.INFERENCE.COMPILE_BACKBONE", compiled]
    if only is not None:
        opts += [only, "always"]
    cfg.merge_from_list(opts)
    return cfg


def training_cfg(
    cfg: CfgNode, *, optimized: bool, reduced_precision: bool = False, only: str | None = None
) -> CfgNode:
    """``cfg`` with ``INSTSEG.OPTIMIZE_TRAINING`` (or only the key ``only``) and bf16 / AMP."""
    cfg = cfg.clone()
    cfg.defrost()
    on_cuda = torch.device(cfg.MODEL.DEVICE).type == "cuda"
    cfg.merge_from_list(
        [
            "INSTSEG.OPTIMIZE_TRAINING", optimized and only is None,
            "INSTSEG.CPU_BF16", reduced_precision and not on_cuda,
            "SOLVER.AMP.ENABLED", reduced_precision and on_cuda,
        ]
    )  # fmt: skip
    if only is not None:
        cfg.merge_from_list([only, "always"])
    return cfg


class OursPredictor:
    """``BatchPredictor(cfg)([image])``: one BGR uint8 image in, ``Instances`` out."""

    def __init__(self, cfg: CfgNode):
        self.predictor = BatchPredictor(cfg)

    def __call__(self, image_bgr: np.ndarray):
        return self.predictor([image_bgr])[0]["instances"]

    @staticmethod
    def to_detections(output) -> Detections:
        return Detections.from_instances(output)


class OursTrainStep:
    """``Trainer(cfg).run_step()`` on the given mapped batches, from ``cfg.MODEL.WEIGHTS``;
    with ``schedule`` the LR schedule steps after each step, as the Trainer's hook does."""

    def __init__(self, cfg: CfgNode, batches: list[list[dict]], *, schedule: bool = False):
        cfg = cfg.clone()
        cfg.defrost()
        self._output_dir = tempfile.TemporaryDirectory(prefix="instseg_bench_")
        # No evaluation, validation loss, data checks or best checkpoint: only run_step is timed.
        cfg.merge_from_list(
            [
                "OUTPUT_DIR", self._output_dir.name,
                "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0",
                "INSTSEG.VAL_LOSS", "False", "INSTSEG.VALIDATE_DATA", "False",
                "INSTSEG.BEST_METRIC", "", "INSTSEG.REPORT", "False",
            ]
        )  # fmt: skip

        class _MappedBatchesTrainer(Trainer):
            @classmethod
            def build_train_loader(cls, cfg):
                return itertools.cycle(batches)

        self.trainer = _MappedBatchesTrainer(cfg)
        self.trainer.resume_or_load(resume=False)  # loads MODEL.WEIGHTS
        self.storage = EventStorage(0)
        self.losses: list[float] = []
        self.schedule = schedule

    def __call__(self) -> float:
        with self.storage:
            self.trainer.iter = self.storage.iter
            self.trainer.run_step()
            if self.schedule:
                self.trainer.scheduler.step()
            self.storage.step()
        loss = float(self.storage.history("total_loss").latest())
        self.losses.append(loss)
        return loss
