"""The config set-up that every tool shares: load, check the dataset names, fit to the machine.

One place for what each tool would otherwise repeat: ``KEY VALUE`` overrides, the CUDA-to-CPU
fallback on machines without a GPU, the weights of a run folder, and dataset names checked up front
(an unknown name is one line with the closest registered names, not a catalog traceback).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from detectron2.config import CfgNode

from ..checkpoint import WeightsUnavailableError, find_run_weights
from ..config import load_config
from ..data.catalog import check_dataset_names
from ..data.datasets.register_dataset_file import apply_dataset_file, register_dataset_file
from ..data.folds import register_config_folds
from ..utils.errors import ConfigError
from .schedule import apply_epoch_schedule

logger = logging.getLogger(__name__)

__all__ = ["dataset_names_from_args", "fall_back_to_cpu", "setup_config", "setup_inference_config"]


def fall_back_to_cpu(cfg: CfgNode) -> list[str]:
    """Make a CUDA config run on a machine without CUDA; returns what was changed, one line each.

    ``MODEL.DEVICE cuda`` becomes ``cpu`` and fp16 AMP (CUDA only) is turned off; the CPU configs
    train in bf16 through ``INSTSEG.CPU_BF16`` instead.
    """
    notes = []
    if cfg.MODEL.DEVICE != "cpu" and not torch.cuda.is_available():
        notes.append(f"no CUDA GPU: MODEL.DEVICE {cfg.MODEL.DEVICE} -> cpu")
        cfg.MODEL.DEVICE = "cpu"
    if cfg.MODEL.DEVICE == "cpu" and cfg.SOLVER.AMP.ENABLED:
        notes.append("SOLVER.AMP.ENABLED needs CUDA: turned off on CPU")
        cfg.SOLVER.AMP.ENABLED = False
    return notes


def setup_config(
    config_file: str | os.PathLike,
    opts: Sequence[str] = (),
    *,
    output_dir: str | os.PathLike | None = None,
    check_datasets: bool = True,
    training: bool = False,
) -> tuple[CfgNode, list[str]]:
    """The config of ``config_file`` with ``opts``, fitted to this machine and data; not frozen.

    ``output_dir`` (a tool's ``--output``) sets ``OUTPUT_DIR``. A dataset file
    (``INSTSEG.DATASET_FILE``) is registered and applied (with ``training``, its records are
    written into ``OUTPUT_DIR``). With ``check_datasets`` the names in ``DATASETS.TRAIN`` /
    ``DATASETS.TEST`` must be registered, and a schedule in epochs is converted to iterations.
    Returns the config and the notes of what was changed (for the caller to log once its logger
    is set up).
    """
    cfg = load_config(config_file, list(opts))
    if output_dir is not None:
        cfg.OUTPUT_DIR = os.fspath(output_dir)
    notes = fall_back_to_cpu(cfg)
    notes += apply_dataset_file(cfg, write_records=training)
    register_config_folds(cfg)  # a cross-validation fold of a pooled dataset, if the config is one
    if check_datasets:
        if not len(cfg.DATASETS.TRAIN):
            raise ConfigError(
                f"{config_file}: no training dataset; give your dataset file with "
                "INSTSEG.DATASET_FILE path/to/data.yaml (or name registered ones in DATASETS.TRAIN)"
            )
        check_dataset_names(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
        schedule = apply_epoch_schedule(cfg)
        if schedule:
            notes.append(schedule)
    return cfg, notes


def setup_inference_config(
    config_file: str | os.PathLike,
    opts: Sequence[str] = (),
    weights: str | os.PathLike | None = None,
    confidence_threshold: float | None = None,
) -> CfgNode:
    """Frozen config for running a trained model.

    Weights: ``weights`` if given, else the config's ``MODEL.WEIGHTS``, else those of the run
    folder the config is in (a run's ``config.yaml``: ``model_final.pth``, else its last checkpoint).
    """
    cfg, notes = setup_config(config_file, opts, check_datasets=False)
    for note in notes:
        logger.warning(note)
    if confidence_threshold is not None:
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = confidence_threshold
    if weights:
        cfg.MODEL.WEIGHTS = os.fspath(weights)
    elif not cfg.MODEL.WEIGHTS:
        found = find_run_weights(Path(config_file).resolve().parent)
        if found is None:
            raise WeightsUnavailableError(
                f"{config_file} has no MODEL.WEIGHTS and its folder holds no model_final.pth or "
                "last_checkpoint; pass --weights path/to/model_final.pth"
            )
        logger.info("MODEL.WEIGHTS is empty: using %s from the run folder", found)
        cfg.MODEL.WEIGHTS = str(found)
    cfg.freeze()
    return cfg


def dataset_names_from_args(
    names: Sequence[str] = (),
    dataset_file: str | os.PathLike | None = None,
    config_file: str | os.PathLike | None = None,
    opts: Sequence[str] = (),
) -> list[str]:
    """The datasets a data tool works on: ``names``, every split of ``dataset_file``, and the
    ``DATASETS.TRAIN`` / ``DATASETS.TEST`` of ``config_file`` (with its ``INSTSEG.DATASET_FILE``),
    registered and checked, without duplicates."""
    found = list(names)
    if dataset_file is not None:
        found += register_dataset_file(dataset_file).names.values()
    if config_file is not None:
        cfg, _ = setup_config(config_file, opts, check_datasets=False)
        found += list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    found = list(dict.fromkeys(found))
    check_dataset_names(found)
    return found
