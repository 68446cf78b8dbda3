"""Config additions of this project, and YAMLs that inherit the installed model zoo.

Our YAMLs say ``_BASE_: "model_zoo://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"``: the
part after ``model_zoo://`` is looked up in the ``detectron2.model_zoo`` package that is installed,
so no model-zoo file is copied into this repository. Over 300 lines because every key the
project adds is declared here, each with the comment that says why (one place for the keys).
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


def _ints_to_floats(values: D2CfgNode, reference: D2CfgNode) -> None:
    """Make the ints of ``values`` floats where ``reference`` has a float (in place)."""
    for key, value in values.items():
        target = reference.get(key) if isinstance(reference, D2CfgNode) else None
        if isinstance(value, D2CfgNode):
            _ints_to_floats(value, target)
        elif isinstance(target, float) and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)


class CfgNode(D2CfgNode):
    """Detectron2's CfgNode that can also open ``model_zoo://`` bases, and takes ``30`` for a
    float key such as ``INSTSEG.EPOCHS`` (yacs refuses an int where the default is a float).

    fvcore joins a relative ``_BASE_`` onto the including file's folder, so by the time a path
    reaches ``_open_cfg`` it reads ``configs/PennFudan/model_zoo://COCO-.../x.yaml``; the model-zoo
    file's own relative bases (``../Base-RCNN-FPN.yaml``) are joined the same way and normalised
    here, which resolves them inside the model zoo as well.
    """

    def merge_from_other_cfg(self, cfg_other):
        _ints_to_floats(cfg_other, self)
        return super().merge_from_other_cfg(cfg_other)

    def merge_from_list(self, cfg_list):
        coerced = list(cfg_list)
        for i in range(0, len(coerced) - 1, 2):
            node = self
            for part in str(coerced[i]).split("."):
                node = node.get(part) if isinstance(node, D2CfgNode) else None
            if isinstance(node, float) and re.fullmatch(r"[+-]?\d+", str(coerced[i + 1]).strip()):
                coerced[i + 1] = f"{float(coerced[i + 1])}"
        return super().merge_from_list(coerced)

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
    # A dataset of your own: a YAML dataset file (instseg_d2/data/dataset_file.py) whose splits
    # are registered as <name>_train/_val/_test and set DATASETS.*, NUM_CLASSES and the metadata.
    cfg.INSTSEG.DATASET_FILE = ""
    # The schedule in epochs (passes over the training set) instead of iterations, converted with
    # the training set's size and SOLVER.IMS_PER_BATCH (instseg_d2/engine/schedule.py): the same
    # config then fits datasets of any size. EPOCHS > 0 needs SOLVER.MAX_ITER -1 (one of the two
    # sets the length); LR_STEPS_EPOCHS replaces SOLVER.STEPS, the others their iteration keys
    # when >= 0.
    cfg.INSTSEG.EPOCHS = 0.0
    cfg.INSTSEG.LR_STEPS_EPOCHS = ()
    cfg.INSTSEG.WARMUP_EPOCHS = -1.0
    cfg.INSTSEG.EVAL_PERIOD_EPOCHS = -1.0
    cfg.INSTSEG.CHECKPOINT_PERIOD_EPOCHS = -1.0
    # Metric watched by BestCheckpointer and early stopping, as named in metrics.json.
    cfg.INSTSEG.BEST_METRIC = "segm/AP"
    cfg.INSTSEG.BEST_METRIC_MODE = "max"
    # Stop after this many evaluations without improvement of BEST_METRIC; 0 turns it off.
    cfg.INSTSEG.EARLY_STOP_PATIENCE = 0
    # Compute the loss on the test sets at each evaluation and log it as validation_loss (in the
    # training step's precision: bf16 autocast with INSTSEG.CPU_BF16).
    cfg.INSTSEG.VAL_LOSS = True
    # Check every image and annotation of the training/test sets before training starts.
    cfg.INSTSEG.VALIDATE_DATA = True
    # Write the HTML run report (plots, metrics, sample panels) into OUTPUT_DIR at the end.
    cfg.INSTSEG.REPORT = True
    # bf16 autocast for CPU training (SOLVER.AMP.ENABLED covers CUDA); ignored, with a warning,
    # on CPUs without native bf16.
    cfg.INSTSEG.CPU_BF16 = False
    # The model's speed-ups (instseg_d2.modeling): each keeps the parameters, the checkpoints and
    # the outputs (up to float rounding) and only acts in the components that
    # configs/Base-InstSegRCNN.yaml selects. "auto", "always" or "never"; "auto" is on when
    # MODEL.DEVICE is a CPU (they are CPU speed-ups: slower at batch 1 on a GPU), and follows
    # OPTIMIZE_TRAINING (below) when the Trainer builds the model (instseg_d2.modeling.speedups).
    # Convolutions in channels-last (NHWC) layout, which oneDNN runs faster.
    cfg.INSTSEG.CHANNELS_LAST = "auto"
    # Conv2d + FrozenBatchNorm2d as one FrozenBNConv2d, which scales the small weights instead of
    # the large outputs: fewer passes over every activation, the same gradients.
    cfg.INSTSEG.FROZEN_BN_ON_WEIGHTS = "auto"
    # RoIAlign (forward and backward) as embedding_bag sums over the CPU feature maps:
    # torchvision's CPU RoIAlign kernels run on one core.
    cfg.INSTSEG.CPU_ROI_ALIGN = "auto"
    # GroupNorms with few channels per group (64 channels in 32 groups) computed on an NCHW copy
    # of channels-last CPU maps: there PyTorch's channels-last GroupNorm kernels (bf16 above all)
    # are far slower than its NCHW ones. No-op without GN.
    cfg.INSTSEG.NCHW_GROUP_NORM = "auto"
    # The RPN selects each image's proposals (top-k, NMS) on a thread of its own: torchvision's
    # CPU NMS runs on one core. Exactly the same proposals.
    cfg.INSTSEG.PARALLEL_PROPOSALS = "auto"
    # The RPN head's objectness and anchor-delta 1x1 convs (fp32) as one conv over one fp32 copy
    # of each map, instead of two convs that each copy and read it.
    cfg.INSTSEG.FUSED_RPN_OUTPUTS = "auto"
    # What "auto" means above when the Trainer builds its model, on any device: the speed-ups
    # also shorten a training step on a GPU.
    cfg.INSTSEG.OPTIMIZE_TRAINING = True
    # The inference build step, after the weights are loaded (BatchPredictor, --eval-only, the
    # benchmark; instseg_d2.modeling.inference_step).
    cfg.INSTSEG.INFERENCE = type(cfg)()
    # Frozen BatchNorms folded into the conv weights ("auto"/"always"/"never", as above): a
    # folded model must not train again, so this cannot be part of the build.
    cfg.INSTSEG.INFERENCE.FOLD_FROZEN_BN = "auto"
    # Network under bf16 autocast (fp16 on CUDA), weights stored in bf16 once, output layers and
    # post-processing (mask pasting, box rescaling) in fp32: much faster on CPUs with native
    # bf16, a small AP change (BENCHMARKS.md). Also evaluates in bf16 during training.
    cfg.INSTSEG.INFERENCE.BF16 = False
    # torch.compile of the backbone: a one-off compile (tens of seconds) for a faster backbone.
    cfg.INSTSEG.INFERENCE.COMPILE_BACKBONE = False
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

    # A 95% interval for the final AP/AP50/AP75 (final_metrics.json/.md, the report): the test
    # images are resampled with replacement and COCO AP recomputed on each sample from
    # pycocotools' per-image matching (instseg_d2.evaluation.bootstrap). On 50 images one
    # evaluation says little; the interval says how little.
    cfg.INSTSEG.BOOTSTRAP = type(cfg)()
    # Number of resamples; 0 turns the interval off. More samples only steady the interval's
    # ends (Monte Carlo error), they do not narrow it.
    cfg.INSTSEG.BOOTSTRAP.SAMPLES = 1000
    # Seed of the resampling, separate from SEED so that the interval of one set of predictions
    # is the same number every time it is computed.
    cfg.INSTSEG.BOOTSTRAP.SEED = 0

    # One fold of a pooled k-fold split, set by tools/cross_validate.py when the training set has
    # no built-in folds (a user's dataset). Every process that loads the config (train_net's
    # workers, infer, the report) registers the fold's datasets from these keys
    # (instseg_d2.data.folds), so a fold's config.yaml works on its own.
    cfg.INSTSEG.CROSS_VALIDATION = type(cfg)()
    # Registered datasets whose images are pooled and split; () means no pooled fold.
    cfg.INSTSEG.CROSS_VALIDATION.POOL = ()
    cfg.INSTSEG.CROSS_VALIDATION.NUM_FOLDS = 0
    # The fold tested on (0-based); the other folds are trained on.
    cfg.INSTSEG.CROSS_VALIDATION.FOLD = 0
    # Seed of the fold assignment: repeats of a cross-validation use other assignments.
    cfg.INSTSEG.CROSS_VALIDATION.SEED = 0

    # Experiment tracking with MLflow (pip install 'instseg_d2[tracking]'): the config as params,
    # every scalar of metrics.json, the final metrics, the report and plots as artifacts.
    # TensorBoard and metrics.json are written either way.
    cfg.INSTSEG.MLFLOW = type(cfg)()
    cfg.INSTSEG.MLFLOW.ENABLED = False
    # Empty: an SQLite store in OUTPUT_DIR (mlflow.db, artifacts in mlflow_artifacts/), which
    # `mlflow ui --backend-store-uri sqlite:///OUTPUT_DIR/mlflow.db` browses; or any MLflow
    # tracking URI (http://host:5000, sqlite:///path/to/mlflow.db, databricks).
    cfg.INSTSEG.MLFLOW.TRACKING_URI = ""
    cfg.INSTSEG.MLFLOW.EXPERIMENT_NAME = "instseg_d2"
    # Empty: the name of OUTPUT_DIR's folder.
    cfg.INSTSEG.MLFLOW.RUN_NAME = ""

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

    # A pasted mask probability at or above this is inside the instance (Detectron2's
    # detector_postprocess: 0.5). Every path that pastes masks uses it: evaluation, inference,
    # TTA and exported models. A short training leaves the mask head unsure at object borders
    # (its masks come out thinner than the objects), where a lower threshold recovers them.
    cfg.INSTSEG.MASK_THRESHOLD = 0.5

    # Training batches of images that pad to one shape (instseg_d2.data.shape_grouping) instead
    # of Detectron2's landscape/portrait grouping (DATALOADER.ASPECT_RATIO_GROUPING): less
    # padding in every convolution, so faster steps when image sizes and aspect ratios vary.
    cfg.INSTSEG.SHAPE_GROUPING = type(cfg)()
    cfg.INSTSEG.SHAPE_GROUPING.ENABLED = False
    # Heights and widths rounded up to multiples of BIN pixels form one group. Smaller bins pad
    # less but hold images longer in rarer groups; the FPN pads to 32 pixels anyway.
    cfg.INSTSEG.SHAPE_GROUPING.BIN = 32

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
