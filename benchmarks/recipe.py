"""The benchmark's ``recipe`` section: the CPU recipe's training step before and after issue 15,
interleaved in one process, on batches formed as the Trainer forms them.

The other sections compare against torchvision, whose model mirrors a FrozenBN ResNet; the CPU
recipe (``configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml``: ResNet-18, GroupNorm
everywhere, random weights, ~320 px, batch 4, bf16 autocast where the CPU has native bf16) has no
torchvision counterpart, so this section times our ``Trainer.run_step`` only, built from the
recipe's own config with:

- ``recipe as configured``: the config as ``make demo`` trains it;
- ``recipe, step speed-ups off``: the same model with the keys of :data:`STEP_SPEEDUP_KEYS`
  "never" and Detectron2's batch grouping: what the implementation alone gains;
- ``recipe in NCHW layout``: the configured recipe with ``INSTSEG.CHANNELS_LAST never``: its
  convolutions in NCHW, so no copies between layouts around the GroupNorms (the largest share of
  ``aten::copy_`` in ``benchmarks/profile_step.py``'s profile), and oneDNN's NCHW convolutions;
- ``recipe before issue 15``: the recipe as issue 15 found it (:data:`BEFORE_OPTS`: those keys
  off, Detectron2's grouping, 256-channel FPN and mask head, no copy-paste), the reference of
  ``vs_before``.

Each variant trains as the recipe does (its LR warm-up and schedule step after every step), so
untimed warm-up steps (``--train-warmup``) bring it to the state where training spends its
time: a step from random weights is cheaper than a later one, because the mask head runs on the
positive RoIs, which are few until the RPN has learnt to find the objects.

The batches are the training set's images mapped by the recipe's training mapper (random sizes
and flips as in training, two epochs drawn once from the seed, in a seeded order), grouped into
batches by each variant's own grouping (:class:`~instseg_d2.data.shape_grouping.
PaddedShapeGroupedDataset` or Detectron2's ``AspectRatioGroupedDataset``): padding is part of
the step users run. Variants take turns step by step, so that load from other processes falls
on all alike; as the batches differ from step to step, ``vs_before`` compares mean step times.
Besides wall time, each row reports the CPU time of the process per step: on shared cores the
wall time of a multi-threaded step grows with the load (its threads wait for each other), the
CPU time much less.
"""

from __future__ import annotations

import itertools
import os
import random
import time

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.data.common import AspectRatioGroupedDataset

from instseg_d2.config import load_config
from instseg_d2.data.dataset_mapper import build_dataset_mapper
from instseg_d2.data.shape_grouping import PaddedShapeGroupedDataset, padded_shape
from instseg_d2.modeling.precision import cpu_supports_bf16

from .runners import BenchSettings, SectionResult
from .timing import summarize
from .user_paths import OursTrainStep

__all__ = [
    "BEFORE_OPTS",
    "RECIPE_CONFIG",
    "EPOCHS",
    "STEP_SPEEDUP_KEYS",
    "mapped_epochs",
    "recipe_batches",
    "recipe_cfg",
    "run_recipe_training",
]

RECIPE_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "configs",
    "PennFudan",
    "mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml",
)
# The speed-up keys that issue 15 added for the CPU recipe's training step.
STEP_SPEEDUP_KEYS = (
    "INSTSEG.NCHW_GROUP_NORM",
    "INSTSEG.PARALLEL_PROPOSALS",
    "INSTSEG.FUSED_RPN_OUTPUTS",
    "INSTSEG.SHAPE_GROUPING.ENABLED",
)
# The recipe's settings before issue 15 where it changed them.
BEFORE_OPTS = (
    "MODEL.FPN.OUT_CHANNELS", "256",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "256",
    "INSTSEG.COPY_PASTE.ENABLED", "False",
)  # fmt: skip

# Passes over the training set mapped beforehand, each with its own random sizes, flips and
# order; the batches cycle through them.
EPOCHS = 2

STEP_SPEEDUPS_OFF = "recipe, step speed-ups off"
NCHW_LAYOUT = "recipe in NCHW layout"
BEFORE = "recipe before issue 15"
VARIANTS = ("recipe as configured", STEP_SPEEDUPS_OFF, NCHW_LAYOUT, BEFORE)


def _keys_off(keys) -> list[str]:
    return [x for key in keys for x in (key, "False" if key.endswith(".ENABLED") else "never")]


def recipe_cfg(
    variant: str,
    config_file: str = RECIPE_CONFIG,
    opts: list[str] | None = None,
    device: str = "cpu",
) -> CfgNode:
    """The recipe's config for one of :data:`VARIANTS`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown recipe variant {variant!r}; choose from {VARIANTS}")
    variant_opts = []
    if variant == NCHW_LAYOUT:
        variant_opts += ["INSTSEG.CHANNELS_LAST", "never"]
    elif variant != VARIANTS[0]:
        variant_opts += _keys_off(STEP_SPEEDUP_KEYS)
    if variant.startswith(BEFORE):
        variant_opts += BEFORE_OPTS
    cfg = load_config(config_file, [*(opts or []), *variant_opts, "MODEL.DEVICE", device])
    if cfg.INSTSEG.CPU_BF16 and torch.device(device).type == "cpu" and not cpu_supports_bf16():
        cfg.INSTSEG.CPU_BF16 = False  # as the Trainer does, without its warning per variant
    return cfg


def mapped_epochs(cfg: CfgNode, settings: BenchSettings, epochs: int = EPOCHS) -> list[dict]:
    """``epochs`` passes over the training set (its first ``settings.recipe_images`` images when
    that is set), each in a seeded order, mapped by the training mapper with its random sizes
    and flips drawn from ``settings.seed``."""
    dicts = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])
    dicts = dicts[: settings.recipe_images] if settings.recipe_images else dicts
    if not dicts:
        raise ValueError(f"dataset {cfg.DATASETS.TRAIN[0]!r} has no images")
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    mapper = build_dataset_mapper(cfg, is_train=True)
    order = random.Random(settings.seed)
    stream = []
    for _ in range(epochs):
        stream += [mapper(d) for d in order.sample(dicts, len(dicts))]
    return stream


def recipe_batches(cfg: CfgNode, stream: list[dict], count: int) -> list[list[dict]]:
    """The first ``count`` batches the Trainer's grouping forms from ``stream`` (cycled): by
    padded shape with ``INSTSEG.SHAPE_GROUPING``, else Detectron2's landscape/portrait groups."""
    size = cfg.SOLVER.IMS_PER_BATCH
    if len(stream) < size:
        raise ValueError(f"{len(stream)} mapped images cannot fill a batch of {size}")
    if cfg.INSTSEG.SHAPE_GROUPING.ENABLED:
        grouped = PaddedShapeGroupedDataset(itertools.cycle(stream), size,
                                            cfg.INSTSEG.SHAPE_GROUPING.BIN)  # fmt: skip
    else:
        grouped = AspectRatioGroupedDataset(itertools.cycle(stream), size)
    return list(itertools.islice(grouped, count))


def _padding(batches: list[list[dict]], divisibility: int = 32) -> float:
    """Pixels of the padded batches over pixels of their images."""
    padded = real = 0
    for batch in batches:
        height = max(d["image"].shape[1] for d in batch)
        width = max(d["image"].shape[2] for d in batch)
        h, w = padded_shape(height, width, divisibility)
        padded += len(batch) * h * w
        real += sum(d["image"].shape[1] * d["image"].shape[2] for d in batch)
    return padded / real


def run_recipe_training(
    settings: BenchSettings, config_file: str = RECIPE_CONFIG, opts: list[str] | None = None
) -> SectionResult:
    """Seconds per training step of each variant (module docstring), interleaved."""
    cfgs = {v: recipe_cfg(v, config_file, opts, settings.device) for v in VARIANTS}
    count = settings.train_warmup + settings.train_iters
    streams: dict[str, list[dict]] = {}  # one mapping per distinct input pipeline
    batches, steps = {}, {}
    for name, cfg in cfgs.items():
        pipeline = cfg.INPUT.dump() + cfg.INSTSEG.AUG.dump() + cfg.INSTSEG.COPY_PASTE.dump()
        if pipeline not in streams:
            streams[pipeline] = mapped_epochs(cfg, settings)
        batches[name] = recipe_batches(cfg, streams[pipeline], count)
        torch.manual_seed(settings.seed)  # the same random initial weights in every variant
        steps[name] = OursTrainStep(cfg, batches[name], schedule=True)
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for it in range(settings.train_warmup + settings.train_iters):
        for name, step in steps.items():
            start_cpu, start = time.process_time(), time.perf_counter()
            step()
            if it >= settings.train_warmup:
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    result = SectionResult()
    before = summarize(wall[BEFORE])["mean_s"]
    before_cpu = summarize(cpu[BEFORE])["mean_s"]
    for name, step in steps.items():
        stats, cpu_stats = summarize(wall[name]), summarize(cpu[name])
        result.rows[name] = {
            "mean_s": round(stats["mean_s"], 4),
            "median_s": round(stats["median_s"], 4),
            "images_per_s": round(len(batches[name][0]) / stats["mean_s"], 3),
            "vs_before": round(before / stats["mean_s"], 3),
            "cpu_s": round(cpu_stats["mean_s"], 4),
            "cpu_vs_before": round(before_cpu / cpu_stats["mean_s"], 3),
            "padded_vs_image_pixels": round(_padding(batches[name]), 3),
            "first_loss": round(step.losses[0], 4),
            "last_loss": round(step.losses[-1], 4),
        }
    result.extra["loss_curves"] = {
        name: [round(x, 4) for x in step.losses] for name, step in steps.items()
    }
    result.extra["bf16"] = bool(cfgs[BEFORE].INSTSEG.CPU_BF16)
    result.extra["step_speedup_keys"] = list(STEP_SPEEDUP_KEYS)
    result.extra["before_opts"] = list(BEFORE_OPTS)
    first = batches[VARIANTS[0]]
    result.extra["batches"] = {
        "batch_size": len(first[0]),
        "training_images": len(next(iter(streams.values()))) // EPOCHS,
        "image_sizes": sorted({tuple(d["image"].shape[1:]) for b in first for d in b}),
    }
    return result
