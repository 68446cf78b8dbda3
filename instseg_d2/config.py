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

    # Training augmentation beyond Detectron2's resize + flip (instseg_d2.data.augmentation).
    cfg.INSTSEG.AUG = type(cfg)()
    # Large-scale jitter (the recipe Simple Copy-Paste was published with; Detectron2's
    # new_baselines *_LSJ.py): resize to a random MIN_SCALE..MAX_SCALE of a SIZE x SIZE square
    # (aspect ratio kept), then crop or pad to SIZE x SIZE. Replaces INPUT.MIN_SIZE_TRAIN's resize;
    # the boxes of cropped instances are recomputed from their masks. Test-time resizing is
    # unchanged (INPUT.MIN_SIZE_TEST).
    cfg.INSTSEG.AUG.LSJ = type(cfg)()
    cfg.INSTSEG.AUG.LSJ.ENABLED = False
    cfg.INSTSEG.AUG.LSJ.MIN_SCALE = 0.1
    cfg.INSTSEG.AUG.LSJ.MAX_SCALE = 2.0
    # 0: the largest INPUT.MIN_SIZE_TRAIN, so that turning LSJ on keeps a config's image scale.
    cfg.INSTSEG.AUG.LSJ.SIZE = 0
    # Photometric jitter from Detectron2's transforms, each intensity drawn uniformly per image:
    # RandomBrightness, RandomContrast, RandomSaturation (ranges around 1 = unchanged) and
    # AlexNet's PCA RandomLighting. Applied after the geometric augmentations.
    cfg.INSTSEG.AUG.PHOTOMETRIC = type(cfg)()
    cfg.INSTSEG.AUG.PHOTOMETRIC.ENABLED = False
    cfg.INSTSEG.AUG.PHOTOMETRIC.BRIGHTNESS = (0.8, 1.2)
    cfg.INSTSEG.AUG.PHOTOMETRIC.CONTRAST = (0.8, 1.2)
    cfg.INSTSEG.AUG.PHOTOMETRIC.SATURATION = (0.8, 1.2)
    # Standard deviation of the PCA weights on the [0, 1] colour scale (AlexNet: 0.1); 0 is off.
    cfg.INSTSEG.AUG.PHOTOMETRIC.LIGHTING = 0.1

    # Simple Copy-Paste (Ghiasi et al., CVPR 2021): objects of another training image, cut out
    # along their masks, pasted onto the image before the other augmentations; the objects they
    # cover lose those pixels, and their boxes follow their masks. Needs MODEL.MASK_ON; training
    # masks then become bitmaps whatever INPUT.MASK_FORMAT says.
    cfg.INSTSEG.COPY_PASTE = type(cfg)()
    cfg.INSTSEG.COPY_PASTE.ENABLED = False
    # Share of training images that get pasted objects (the others are left as they are).
    cfg.INSTSEG.COPY_PASTE.PROB = 0.5
    # A random 1..MAX_INSTANCES of the source image's objects are pasted.
    cfg.INSTSEG.COPY_PASTE.MAX_INSTANCES = 4
    # The source image is scaled to fit the target image, times a random factor in this range,
    # flipped horizontally half of the time (FLIP) and put at a random place.
    cfg.INSTSEG.COPY_PASTE.MIN_SCALE = 0.5
    cfg.INSTSEG.COPY_PASTE.MAX_SCALE = 1.5
    cfg.INSTSEG.COPY_PASTE.FLIP = True
    # A covered object keeps its (reduced) mask while at least this fraction of its pixels stays
    # visible; below, it is dropped (the paper drops fully covered objects; a sliver at the edge
    # of a pasted object is no object a detector could find).
    cfg.INSTSEG.COPY_PASTE.MIN_VISIBLE = 0.1

    # Exponential moving average of the weights (instseg_d2.engine.ema), updated after every
    # step. Evaluation, validation loss, TTA and every checkpoint's "model" use the averaged
    # weights; the training weights are kept in the checkpoint's "ema" entry so that --resume
    # continues both. (--resume of an EMA run with EMA off continues from the averaged weights.)
    cfg.INSTSEG.EMA = type(cfg)()
    cfg.INSTSEG.EMA.ENABLED = False
    # The average forgets at this rate per step once warmed up: it spans ~1/(1 - DECAY) steps,
    # which should stay well under SOLVER.MAX_ITER.
    cfg.INSTSEG.EMA.DECAY = 0.998
    # Warm-up of the decay as in YOLOv5's ModelEMA / MMDetection's ExpMomentumEMA: after n
    # updates the decay is DECAY * (1 - exp(-n / WARMUP_ITERS)), so the random or pretrained
    # start is forgotten quickly. 0 uses DECAY from the first update.
    cfg.INSTSEG.EMA.WARMUP_ITERS = 50


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
