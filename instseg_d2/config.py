"""Config additions of this project, and YAMLs that inherit the installed model zoo.

Our YAMLs say ``_BASE_: "model_zoo://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"``: the
part after ``model_zoo://`` is looked up in the ``detectron2.model_zoo`` package that is installed,
so no model-zoo file is copied into this repository.
"""

from __future__ import annotations

import difflib
import os
import re

import yaml
from detectron2 import model_zoo
from detectron2.config import CfgNode as D2CfgNode
from detectron2.config import get_cfg

from .utils.errors import ConfigError

MODEL_ZOO_PREFIX = "model_zoo://"


class CfgNode(D2CfgNode):
    """Detectron2's CfgNode that can also open ``model_zoo://`` bases.

    fvcore joins a relative ``_BASE_`` onto the including file's folder, so by the time a path
    reaches ``_open_cfg`` it reads ``configs/PennFudan/model_zoo://COCO-.../x.yaml``; the model-zoo
    file's own relative bases (``../Base-RCNN-FPN.yaml``) are joined the same way and normalised
    here, which resolves them inside the model zoo as well.
    """

    @classmethod
    def _open_cfg(cls, filename):
        if MODEL_ZOO_PREFIX in filename:
            relative = os.path.normpath(filename.split(MODEL_ZOO_PREFIX, 1)[1])
            try:
                filename = model_zoo.get_config_file(relative)
            except RuntimeError as exc:
                raise FileNotFoundError(
                    f"{MODEL_ZOO_PREFIX}{relative}: not a config of the installed detectron2 model zoo ({exc})"
                ) from None
        return super()._open_cfg(filename)


def add_instseg_config(cfg: D2CfgNode) -> None:
    """Add this project's keys (all under ``cfg.INSTSEG``) with their defaults."""
    # The dataset mapper of every loader (training, validation loss, evaluation), from
    # instseg_d2.data.dataset_mapper.MAPPER_REGISTRY, as Mask2Former selects its mappers.
    cfg.INPUT.DATASET_MAPPER_NAME = "InstSegDatasetMapper"
    # Same node class as ``cfg``: yacs refuses to merge a YAML section into a node of another class.
    cfg.INSTSEG = type(cfg)()
    # Metric watched by BestCheckpointer and early stopping, as named in metrics.json.
    cfg.INSTSEG.BEST_METRIC = "segm/AP"
    cfg.INSTSEG.BEST_METRIC_MODE = "max"
    # Stop after this many evaluations without improvement of BEST_METRIC; 0 turns it off.
    cfg.INSTSEG.EARLY_STOP_PATIENCE = 0
    # Compute the loss on the test sets at each evaluation and log it as validation_loss.
    cfg.INSTSEG.VAL_LOSS = True
    # Check every image and annotation of the training/test sets before training starts.
    cfg.INSTSEG.VALIDATE_DATA = True
    # Write the HTML run report (plots, metrics, sample panels) into OUTPUT_DIR at the end.
    cfg.INSTSEG.REPORT = True
    # bf16 autocast for CPU training (SOLVER.AMP.ENABLED covers CUDA); ignored, with a warning,
    # on CPUs without native bf16.
    cfg.INSTSEG.CPU_BF16 = False
    # Channels-last convolutions, frozen BatchNorms applied to the conv weights and the CPU
    # RoIAlign during training (instseg_d2.modeling.optimize.optimize_for_training): same
    # parameters, gradients up to float rounding and checkpoints, less time per step
    # (BENCHMARKS.md).
    cfg.INSTSEG.OPTIMIZE_TRAINING = True
    # Write metrics.json / TensorBoard / the console every this many iterations (Detectron2: 20).
    cfg.INSTSEG.LOG_PERIOD = 20
    # Periodic checkpoints (model_<iter>.pth) kept on disk; older ones are deleted. 0 keeps all.
    # model_final.pth and model_best.pth are never deleted.
    cfg.INSTSEG.KEEP_CHECKPOINTS = 2
    # Error analysis of each test set at the end of training / --eval-only, from the predictions
    # the final evaluation wrote (no second inference), into OUTPUT_DIR/analysis/<dataset>: per
    # image errors, annotation-error candidates, PR curves, confusion matrix; the report shows it.
    cfg.INSTSEG.ERROR_ANALYSIS = type(cfg)()
    cfg.INSTSEG.ERROR_ANALYSIS.ENABLED = True
    # Detections at or above this score are the model's answer for counts, candidates and the
    # confusion matrix (AP and the PR curves use every detection). The same default as the
    # inference tools' --confidence-threshold.
    cfg.INSTSEG.ERROR_ANALYSIS.SCORE_THRESH = 0.5
    # Pictures drawn of the highest-ranked annotation-error candidates (the json lists them all).
    cfg.INSTSEG.ERROR_ANALYSIS.NUM_PICTURES = 20


def get_instseg_cfg() -> CfgNode:
    """Detectron2's defaults plus ours, as a CfgNode that understands ``model_zoo://`` bases."""
    cfg = CfgNode(get_cfg())
    add_instseg_config(cfg)
    return cfg


def config_keys(cfg: D2CfgNode, prefix: str = "") -> list[str]:
    """Every leaf key of ``cfg`` as a dotted name (``SOLVER.MAX_ITER``)."""
    keys = []
    for name, value in cfg.items():
        full = f"{prefix}{name}"
        keys += config_keys(value, f"{full}.") if isinstance(value, D2CfgNode) else [full]
    return keys


def unknown_key_message(key: str, cfg: D2CfgNode) -> str:
    """``unknown config key X`` with the closest existing keys, e.g. for ``SOLVER.MAX_ITR``."""
    close = difflib.get_close_matches(key, config_keys(cfg), n=3, cutoff=0.75)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"unknown config key {key}{hint}"


def _check_override_keys(cfg: D2CfgNode, opts: list[str]) -> None:
    if len(opts) % 2:
        raise ConfigError(
            f"config overrides come in KEY VALUE pairs, got {len(opts)} words: {opts}"
        )
    for key in opts[0::2]:
        node = cfg
        for part in key.split("."):
            if not isinstance(node, D2CfgNode) or part not in node:
                raise ConfigError(f"override {key}: {unknown_key_message(key, cfg)}")
            node = node[part]


def load_config(config_file: str | os.PathLike, opts: list[str] | None = None) -> CfgNode:
    """Defaults, then ``config_file``, then ``KEY VALUE`` overrides; not frozen.

    Raises :class:`~instseg_d2.utils.errors.ConfigError` naming the file or override for a missing
    file, invalid YAML, an unknown key (with the closest existing keys) or a value of the wrong type.
    """
    config_file = os.fspath(config_file)
    opts = [str(v) for v in (opts or [])]
    cfg = get_instseg_cfg()
    if not os.path.isfile(config_file):
        raise ConfigError(f"{config_file}: config file not found")
    try:
        cfg.merge_from_file(config_file)
    except KeyError as exc:
        match = re.search(r"Non-existent config key: ([A-Za-z0-9_.]+)", str(exc))
        if match is None:
            raise ConfigError(f"{config_file}: {exc.args[0] if exc.args else exc}") from None
        raise ConfigError(
            f"{config_file} (or a _BASE_ it inherits): {unknown_key_message(match.group(1), cfg)}"
        ) from None
    except (ValueError, AssertionError) as exc:  # yacs: type mismatch, bad _BASE_, version
        raise ConfigError(f"{config_file}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_file}: not valid YAML ({exc})") from None
    except FileNotFoundError as exc:  # a _BASE_ that does not exist
        raise ConfigError(f"{config_file}: {exc}") from None
    _check_override_keys(cfg, opts)
    try:
        cfg.merge_from_list(opts)
    except (ValueError, AssertionError, KeyError) as exc:
        raise ConfigError(f"config overrides {' '.join(opts)}: {exc}") from None
    return cfg
