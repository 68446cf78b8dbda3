"""The benchmark's ``recipe`` section: the CPU recipe's training step with and without the
training-step speed-ups (issue 15), interleaved in one process.

The other sections compare against torchvision, whose model mirrors a FrozenBN ResNet; the CPU
recipe (``configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml``: ResNet-18, GroupNorm
everywhere, random weights, ~320 px, batch 4, bf16 autocast where the CPU has native bf16) has no
torchvision counterpart, so this section times our ``Trainer.run_step`` only, built from the
recipe's own config with:

- ``recipe as configured``: the config as ``make demo`` trains it (every speed-up key at its
  default);
- ``recipe, step speed-ups off``: the same with the keys of :data:`STEP_SPEEDUP_KEYS` "never",
  i.e. the recipe's step before issue 15;
- ``recipe, all speed-ups off``: every speed-up key "never" (for reference).

The same batches, mapped beforehand by the recipe's own training mapper (random sizes and flips
as in training, drawn once), cycle through every variant; variants take turns step by step, so
that load from other processes falls on all alike. Besides wall time, each row reports the CPU
time of the process per step: on shared cores the wall time of a multi-threaded step grows with
the load (its threads wait for each other), the CPU time much less.
"""

from __future__ import annotations

import os
import random
import time

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog

from instseg_d2.config import load_config
from instseg_d2.data.dataset_mapper import build_dataset_mapper
from instseg_d2.modeling.precision import cpu_supports_bf16
from instseg_d2.modeling.speedups import override_all

from .runners import BenchSettings, SectionResult
from .timing import summarize
from .user_paths import OursTrainStep

__all__ = ["RECIPE_CONFIG", "STEP_SPEEDUP_KEYS", "recipe_cfg", "run_recipe_training"]

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
)

BEFORE = "recipe, step speed-ups off"
VARIANTS = ("recipe as configured", BEFORE, "recipe, all speed-ups off")


def recipe_cfg(
    variant: str,
    config_file: str = RECIPE_CONFIG,
    opts: list[str] | None = None,
    device: str = "cpu",
) -> CfgNode:
    """The recipe's config for one of :data:`VARIANTS` (no LR warm-up: only ``run_step`` is
    timed, without the hook that steps the schedule)."""
    cfg = load_config(config_file, [*(opts or []), "MODEL.DEVICE", device])
    cfg.SOLVER.WARMUP_ITERS = 0
    if variant == "recipe, all speed-ups off":
        cfg = override_all(cfg, False)
    elif variant == BEFORE:
        cfg.merge_from_list([x for key in STEP_SPEEDUP_KEYS for x in (key, "never")])
    elif variant != "recipe as configured":
        raise ValueError(f"unknown recipe variant {variant!r}; choose from {VARIANTS}")
    if cfg.INSTSEG.CPU_BF16 and torch.device(device).type == "cpu" and not cpu_supports_bf16():
        cfg.INSTSEG.CPU_BF16 = False  # as the Trainer does, without its warning per variant
    return cfg


def _recipe_batches(cfg: CfgNode, settings: BenchSettings) -> list[list[dict]]:
    """Batches of ``cfg.SOLVER.IMS_PER_BATCH`` (at most ``settings.train_images``) of the first
    ``settings.train_images`` training images, mapped by the training mapper with its random
    sizes and flips drawn once from ``settings.seed``."""
    dicts = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[: settings.train_images]
    if not dicts:
        raise ValueError(f"dataset {cfg.DATASETS.TRAIN[0]!r} has no images")
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    mapper = build_dataset_mapper(cfg, is_train=True)
    mapped = [mapper(d) for d in dicts]
    size = min(cfg.SOLVER.IMS_PER_BATCH, len(mapped))
    return [mapped[i : i + size] for i in range(0, len(mapped) - size + 1, size)]


def run_recipe_training(
    settings: BenchSettings, config_file: str = RECIPE_CONFIG, opts: list[str] | None = None
) -> SectionResult:
    """Seconds per training step of each variant (module docstring), interleaved."""
    cfgs = {v: recipe_cfg(v, config_file, opts, settings.device) for v in VARIANTS}
    batches = _recipe_batches(cfgs[BEFORE], settings)
    steps: dict[str, OursTrainStep] = {}
    for name, cfg in cfgs.items():
        torch.manual_seed(settings.seed)  # the same random initial weights in every variant
        steps[name] = OursTrainStep(cfg, batches)
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
    before = summarize(wall[BEFORE])["median_s"]
    before_cpu = summarize(cpu[BEFORE])["median_s"]
    for name, step in steps.items():
        stats, cpu_stats = summarize(wall[name]), summarize(cpu[name])
        result.rows[name] = {
            "median_s": round(stats["median_s"], 4),
            "p90_s": round(stats["p90_s"], 4),
            "images_per_s": round(len(batches[0]) / stats["median_s"], 3),
            "vs_before": round(before / stats["median_s"], 3),
            "cpu_s": round(cpu_stats["median_s"], 4),
            "cpu_vs_before": round(before_cpu / cpu_stats["median_s"], 3),
            "first_loss": round(step.losses[0], 4),
            "last_loss": round(step.losses[-1], 4),
        }
    result.extra["loss_curves"] = {
        name: [round(x, 4) for x in step.losses] for name, step in steps.items()
    }
    result.extra["bf16"] = bool(cfgs[BEFORE].INSTSEG.CPU_BF16)
    result.extra["step_speedup_keys"] = list(STEP_SPEEDUP_KEYS)
    result.extra["batches"] = {
        "batch_size": len(batches[0]),
        "image_sizes": sorted({tuple(d["image"].shape[1:]) for b in batches for d in b}),
    }
    return result
