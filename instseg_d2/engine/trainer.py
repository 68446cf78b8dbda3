"""The project's Trainer: Detectron2's ``DefaultTrainer`` plus evaluation-time hooks.

What differs from ``DefaultTrainer`` and why:

* ``__init__``: checkpoints go through :class:`~instseg_d2.checkpoint.AtomicCheckpointer`
  (never half-written), and on CPU the DDP wrapper gets ``device_ids=None`` (Detectron2 passes
  the local rank as a CUDA device, which DDP rejects for a CPU model); the datasets are
  validated first when ``INSTSEG.VALIDATE_DATA``.
* ``build_model``: the speed-up keys left at "auto" follow ``INSTSEG.OPTIMIZE_TRAINING``, on any
  device (:func:`~instseg_d2.modeling.speedups.resolve_auto`), so ``Trainer.build_model(cfg)``
  with a run's ``config.yaml`` rebuilds the model that trained.
* ``build_train_loader`` / ``build_test_loader`` / ``build_val_loss_loader``: every loader maps
  with the mapper of ``INPUT.DATASET_MAPPER_NAME``, so images are read one way everywhere; with
  ``INSTSEG.COPY_PASTE`` the training mapper pastes from the dicts its loader samples; with
  ``INSTSEG.SHAPE_GROUPING`` batches hold images of one padded shape.
* ``build_evaluator``: ``COCOEvaluator`` (bbox, and segm when masks are on).
* ``build_hooks``: validation loss, best checkpoint on ``INSTSEG.BEST_METRIC`` and optional
  early stopping, inserted after ``EvalHook`` and before the ``PeriodicWriter`` so their
  scalars are written in the same ``metrics.json`` line as the evaluation; with
  ``TEST.AUG.ENABLED`` a TTA evaluation after the last iteration (``test_with_TTA``).
* ``INSTSEG.EMA``: an :class:`~.ema.EMAHook` first, evaluation on the averaged weights
  (``evaluation_model``), and an :class:`~.ema.EMACheckpointer`.
* ``build_writers``: adds :class:`~instseg_d2.engine.mlflow_writer.MLflowWriter` when
  ``INSTSEG.MLFLOW.ENABLED``.
* ``resume_or_load``: trims ``metrics.json`` to the resumed iteration (one history), and a
  resumed run continues its MLflow run.
* ``run_step`` and the validation loss: under bf16 autocast on CPU when ``INSTSEG.CPU_BF16``
  (if the CPU has native bf16; the optimizer step keeps fp32 weights).
* ``run_step``/``after_train``: a NaN/Inf loss (Detectron2's ``FloatingPointError``) marks the
  run as diverged, and then no hook may save or evaluate the bad state.

Over 300 lines because each override above is a few lines of the one DefaultTrainer subclass.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections import OrderedDict

import torch
from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data import transforms as T
from detectron2.engine import DefaultTrainer, SimpleTrainer, create_ddp_model, hooks
from detectron2.engine.train_loop import AMPTrainer, TrainerBase
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..data.dataset_mapper import build_dataset_mapper
from ..data.dataset_validation import check_splits
from ..data.shape_grouping import group_by_padded_shape
from ..data.validation import DatasetValidationError, check_registered_datasets
from ..modeling.precision import autocast_context, cpu_supports_bf16
from ..modeling.speedups import resolve_auto
from ..utils.errors import UserError
from .ema import EMACheckpointer, EMAHook, ModelEMA
from .evaluation import build_coco_evaluator
from .hooks import EarlyStop, EarlyStopping, ResumableBestCheckpointer, ValidationLoss
from .metrics_file import trim_metrics_history
from .mlflow_writer import MLflowWriter
from .tta import TTA_SUFFIX, build_tta_model, tta_test_loader

logger = logging.getLogger(__name__)


class _ExpectedStopsWithoutTraceback(logging.Filter):
    """``TrainerBase.train`` logs every exception with its traceback. Early stopping is no error
    (dropped); a NaN/Inf loss and a user's error (a bad image, a missing file) are reported by
    tools/train_net.py in one line with what to do, so no traceback is logged for them."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, EarlyStop):
            return False
        if isinstance(exc, FloatingPointError | UserError):
            record.msg, record.args, record.exc_info = f"{record.msg} {exc}", (), None
        return True


logging.getLogger("detectron2.engine.train_loop").addFilter(_ExpectedStopsWithoutTraceback())


def validate_datasets(cfg) -> None:
    """Check every image and annotation of the train/test sets before the first step, and what
    only the sets together show (a class in a test set but never in training, an image in both).

    Errors stop the run with :class:`~instseg_d2.data.validation.DatasetValidationError`, which
    lists them; warnings (e.g. a Penn-Fudan .txt box that disagrees with its mask) are logged.
    """
    train, test = list(cfg.DATASETS.TRAIN), list(cfg.DATASETS.TEST)
    skip = "INSTSEG.VALIDATE_DATA False skips this check"
    try:
        check_registered_datasets(train + test)
    except DatasetValidationError as exc:
        raise DatasetValidationError(exc.problems, f"{exc.dataset} ({skip})") from None
    splits = {"training sets": [d for name in train for d in DatasetCatalog.get(name)]}
    splits.update({name: DatasetCatalog.get(name) for name in test if name not in train})
    classes = MetadataCatalog.get(train[0]).get("thing_classes") or []
    problems = check_splits(splits, classes, ", ".join(train + test), "training sets")
    if any(p.severity == "error" for p in problems):
        raise DatasetValidationError(problems, f"training and test sets ({skip})")
    for problem in problems:
        logger.warning(str(problem))


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` with COCO evaluation, validation loss, best checkpoint, early stop."""

    def __init__(self, cfg):
        # Same steps as DefaultTrainer.__init__; see the module docstring for the two changes.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        if cfg.INSTSEG.VALIDATE_DATA:
            validate_datasets(cfg)

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        ema = cfg.INSTSEG.EMA
        self.ema = ModelEMA(model, ema.DECAY, ema.WARMUP_ITERS) if ema.ENABLED else None

        on_cuda = torch.device(cfg.MODEL.DEVICE).type == "cuda"
        device_ids = [comm.get_local_rank()] if on_cuda else None
        model = create_ddp_model(model, broadcast_buffers=False, device_ids=device_ids)
        use_amp = cfg.SOLVER.AMP.ENABLED and on_cuda
        self._trainer = (AMPTrainer if use_amp else SimpleTrainer)(model, data_loader, optimizer)
        # bf16 autocast on CPU: see run_step. Without native bf16 it would be emulated and slower.
        self._cpu_bf16 = bool(cfg.INSTSEG.CPU_BF16) and not on_cuda
        if self._cpu_bf16 and not cpu_supports_bf16():
            logger.warning(
                "INSTSEG.CPU_BF16 is set but this CPU has no native bf16 (AVX512-BF16/AMX): "
                "training in fp32"
            )
            self._cpu_bf16 = False

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = EMACheckpointer(
            model, cfg.OUTPUT_DIR, ema=self.ema, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.diverged = False
        self.stopped_early: str | None = None

        self.register_hooks(self.build_hooks())

    @classmethod
    def build_model(cls, cfg):
        """The model of ``cfg``, with the speed-up keys left at "auto" set by
        ``INSTSEG.OPTIMIZE_TRAINING``."""
        return super().build_model(resolve_auto(cfg, cfg.INSTSEG.OPTIMIZE_TRAINING))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder: str | None = None):
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_coco_evaluator(dataset_name, output_folder, tasks)

    @property
    def evaluation_model(self) -> torch.nn.Module:
        """What evaluation, validation loss and TTA run: the EMA when ``INSTSEG.EMA`` is on."""
        return self.ema.module if self.ema is not None else self.model

    @classmethod
    def build_train_loader(cls, cfg):
        dataset = None
        if cfg.INSTSEG.COPY_PASTE.ENABLED:
            # Copy-paste draws its sources from the very dicts the loader samples (loaded once).
            dataset = get_detection_dataset_dicts(
                cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
            )
        mapper = build_dataset_mapper(cfg, is_train=True, paste_pool=dataset)
        loader = build_detection_train_loader(cfg, mapper=mapper, dataset=dataset)
        if cfg.INSTSEG.SHAPE_GROUPING.ENABLED:
            loader = group_by_padded_shape(loader, cfg.INSTSEG.SHAPE_GROUPING.BIN)
        return loader

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        mapper = build_dataset_mapper(cfg, is_train=False)
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_val_loss_loader(cls, cfg, dataset_name: str):
        """Test images with their annotations, at test size and without random flips."""
        resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        mapper = build_dataset_mapper(cfg, is_train=True, augmentations=[resize])
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def test_with_TTA(cls, cfg, model) -> OrderedDict:  # noqa: N802  (Detectron2's name)
        """Evaluate ``model`` with test-time augmentation (``TEST.AUG``), as Detectron2's
        tools/train_net.py does: results named ``bbox_TTA``/``segm_TTA`` (one test set) or
        ``<dataset>_TTA`` (several), written under ``OUTPUT_DIR/inference_TTA``."""
        logger.info("Running inference with test-time augmentation ...")
        tta_model = build_tta_model(cfg, model)
        results = OrderedDict()
        for name in cfg.DATASETS.TEST:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name)
            evaluator = cls.build_evaluator(cfg, name, output_folder=output_folder)
            results[name] = inference_on_dataset(tta_model, tta_test_loader(cfg, name), evaluator)
            if comm.is_main_process():
                logger.info(f"Evaluation results for {name} with TTA in csv format:")
                print_csv_format(results[name])
        if len(results) == 1:
            results = next(iter(results.values()))
        return OrderedDict((f"{k}{TTA_SUFFIX}", v) for k, v in results.items())

    def _test_and_save_results(self):
        self._last_eval_results = self.test(self.cfg, self.evaluation_model)
        return self._last_eval_results

    def _test_with_tta_and_save_results(self):
        self._last_tta_results = self.test_with_TTA(self.cfg, self.evaluation_model)
        return self._last_tta_results

    def build_hooks(self):
        cfg = self.cfg
        # First: the checkpoint and evaluation hooks must see the average of the step just done.
        ret = [EMAHook(self.ema)] if self.ema is not None else []
        for h in super().build_hooks():
            if isinstance(h, hooks.EvalHook):
                # Same place and period, on evaluation_model (the EMA when it is on).
                h = hooks.EvalHook(cfg.TEST.EVAL_PERIOD, self._test_and_save_results)
            if isinstance(h, hooks.PeriodicCheckpointer):
                # Same place, but old periodic checkpoints are deleted (each is ~100-300 MB).
                keep = cfg.INSTSEG.KEEP_CHECKPOINTS or None
                h = hooks.PeriodicCheckpointer(
                    self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD, max_to_keep=keep
                )
            if not isinstance(h, hooks.PeriodicWriter):  # re-added last, below
                ret.append(h)
        period = cfg.TEST.EVAL_PERIOD
        metrics_file = os.path.join(cfg.OUTPUT_DIR, "metrics.json")
        if cfg.INSTSEG.VAL_LOSS and cfg.DATASETS.TEST:
            loaders = [self.build_val_loss_loader(cfg, name) for name in cfg.DATASETS.TEST]
            ret.append(ValidationLoss(period, loaders, cpu_bf16=self._cpu_bf16))
        if comm.is_main_process() and cfg.INSTSEG.BEST_METRIC:
            ret.append(
                ResumableBestCheckpointer(
                    period,
                    self.checkpointer,
                    cfg.INSTSEG.BEST_METRIC,
                    mode=cfg.INSTSEG.BEST_METRIC_MODE,
                    metrics_file=metrics_file,
                )
            )
        if cfg.INSTSEG.EARLY_STOP_PATIENCE > 0:
            ret.append(
                EarlyStopping(
                    period,
                    cfg.INSTSEG.BEST_METRIC,
                    cfg.INSTSEG.EARLY_STOP_PATIENCE,
                    mode=cfg.INSTSEG.BEST_METRIC_MODE,
                    metrics_file=metrics_file,
                )
            )
        if cfg.TEST.AUG.ENABLED:
            # Period 0: after the last iteration only, as in Detectron2's tools/train_net.py.
            ret.append(hooks.EvalHook(0, self._test_with_tta_and_save_results))
        if comm.is_main_process():
            # Last, so that everything the hooks above put into the storage gets written.
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=cfg.INSTSEG.LOG_PERIOD))
        return ret

    def build_writers(self):
        """Detectron2's writers (console, metrics.json, TensorBoard), plus MLflow when
        ``INSTSEG.MLFLOW.ENABLED``."""
        writers = super().build_writers()
        if self.cfg.INSTSEG.MLFLOW.ENABLED:
            self._mlflow_writer = MLflowWriter(self.cfg)
            writers.append(self._mlflow_writer)
        return writers

    def resume_or_load(self, resume: bool = True) -> None:
        super().resume_or_load(resume=resume)
        mlflow_writer = getattr(self, "_mlflow_writer", None)
        if mlflow_writer is not None:
            # A run resumed from a checkpoint continues its MLflow run; otherwise a new one.
            mlflow_writer.start(resume=self.start_iter > 0)
        if comm.is_main_process():
            metrics_file = os.path.join(self.cfg.OUTPUT_DIR, "metrics.json")
            removed = trim_metrics_history(metrics_file, self.start_iter - 1)
            if removed:
                logger.info(
                    f"Removed {removed} bytes of metrics.json written after iteration "
                    f"{self.start_iter - 1} (by the interrupted run or an earlier one)"
                )
        comm.synchronize()

    def train(self):
        try:
            return super().train()
        except EarlyStop as stop:
            logger.info(str(stop))
            return getattr(self, "_last_eval_results", None)

    def run_step(self):
        try:
            with autocast_context("cpu", enabled=self._cpu_bf16):
                super().run_step()
        except FloatingPointError:
            # Raised before optimizer.step(): the weights are those of the last finite step.
            self.diverged = True
            raise

    def after_step(self):
        try:
            super().after_step()
        except FloatingPointError:
            # AtomicCheckpointer refuses to save NaN/Inf weights.
            self.diverged = True
            raise

    def after_train(self):
        if self.diverged:
            # Write the metrics so far, but let no hook checkpoint or evaluate the bad state.
            self.storage.iter = self.iter
            if getattr(self, "_mlflow_writer", None) is not None:
                self._mlflow_writer.end_status = "FAILED"
            for h in self._hooks:
                if isinstance(h, hooks.PeriodicWriter):
                    h.after_train()
            return
        if self.stopped_early:
            # PeriodicCheckpointer only writes model_final at MAX_ITER.
            self.checkpointer.save("model_final", iteration=self.iter)
        super().after_train()

    def last_checkpoint(self) -> str | None:
        """Path of the checkpoint ``--resume`` would load, if any."""
        if not self.checkpointer.has_checkpoint():
            return None
        return self.checkpointer.get_checkpoint_file()
