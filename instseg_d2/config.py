"""Config additions of this project, and YAMLs that inherit the installed model zoo.

Our YAMLs say ``_BASE_: "model_zoo://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"``: the
part after ``model_zoo://`` is looked up in the ``detectron2.model_zoo`` package that is installed,
so no model-zoo file is copied into this repository.
"""

from __future__ import annotations

import os

from detectron2 import model_zoo
from detectron2.config import CfgNode as D2CfgNode
from detectron2.config import get_cfg

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


def get_instseg_cfg() -> CfgNode:
    """Detectron2's defaults plus ours, as a CfgNode that understands ``model_zoo://`` bases."""
    cfg = CfgNode(get_cfg())
    add_instseg_config(cfg)
    return cfg


def load_config(config_file: str, opts: list[str] | None = None) -> CfgNode:
    """Defaults, then ``config_file``, then ``KEY VALUE`` overrides; not frozen."""
    cfg = get_instseg_cfg()
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file not found: {config_file}")
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts or []))
    return cfg
