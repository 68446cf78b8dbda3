"""The benchmark's timed sections: inference, training, data loading (COCO evaluation and AP are
in :mod:`.accuracy`).

Every section runs our variants and torchvision's interleaved (one image / one step of each in
turn), so that load from other processes falls on both alike, and reports medians. Over 300
lines because the three sections share their interleaving and measurement helpers here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from torch import nn

from instseg_d2.data.dataset_mapper import build_dataset_mapper
from instseg_d2.modeling.precision import cpu_supports_bf16

from .detection_match import compare_detections
from .timing import PeakMemory, summarize, timed
from .torchvision_reference import (
    TorchvisionPredictor,
    TorchvisionTrainStep,
    pennfudan_mask_path,
    torchvision_batch,
    tutorial_dataset_item,
)
from .user_paths import (
    INFERENCE_ABLATION,
    TRAINING_ABLATION,
    OursPredictor,
    OursTrainStep,
    inference_cfg,
    training_cfg,
)

logger = logging.getLogger(__name__)

BASELINE = "torchvision fp32"
TRICKS = "torchvision channels-last+{low}"


@dataclass
class BenchSettings:
    """What to run; ``quick``/``smoke`` presets are in ``tools/benchmark.py``."""

    train_dataset: str = "pennfudan_train"
    test_dataset: str = "pennfudan_val"
    num_images: int = 50  # inference / evaluation images (first N of test_dataset)
    repeats: int = 1  # passes over the inference images
    train_images: int = 12  # distinct training images, cycled
    recipe_images: int = 0  # the recipe section's training images; 0: the whole training set
    train_batch: int = 2
    train_warmup: int = 1
    train_iters: int = 5  # timed steps per variant
    mapper_images: int = 20
    device: str = "cpu"
    reduced_precision: bool = True  # bf16 on CPU, fp16 AMP on CUDA
    compile: bool = False  # add torch.compile'd-backbone inference variants
    ablation: bool = False  # add one-speed-up-at-a-time variants
    sections: tuple[str, ...] = ("inference", "train", "recipe", "data", "eval")
    seed: int = 0


@dataclass
class SectionResult:
    rows: dict[str, dict] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)

    def to_json(self, title: str) -> dict:
        """The section as it goes into the benchmark's JSON: title, a row per variant, extras."""
        return {"title": title, "rows": self.rows, **self.extra}


def low_precision_name(device: str) -> str:
    return "bf16" if torch.device(device).type == "cpu" else "fp16 AMP"


def use_reduced(settings: BenchSettings) -> bool:
    if not settings.reduced_precision:
        return False
    if torch.device(settings.device).type == "cpu" and not cpu_supports_bf16():
        logger.warning("this CPU has no native bf16 (AVX512-BF16/AMX): bf16 rows are skipped")
        return False
    return True


def load_test_images(dataset: str, num_images: int) -> tuple[list[dict], list[np.ndarray]]:
    """The first ``num_images`` records of a registered dataset and their BGR pixels."""
    from instseg_d2.data.image_io import read_image

    dicts = DatasetCatalog.get(dataset)[:num_images]
    if not dicts:
        raise ValueError(f"dataset {dataset!r} has no images")
    return dicts, [read_image(d["file_name"], format="BGR") for d in dicts]


def _add_ratios(rows: dict[str, dict], key: str, low: str) -> None:
    """``vs_torchvision``: ``key`` against plain fp32 torchvision (the tutorial as it is);
    ``vs_tv_tricks``: against torchvision with channels-last + autocast (the honest one)."""
    for column, base_name in (
        ("vs_torchvision", BASELINE),
        ("vs_tv_tricks", TRICKS.format(low=low)),
    ):
        base = rows.get(base_name, {}).get(key)
        for row in rows.values():
            value = row.get(key)
            if base and value:
                row[column] = round(value / base, 3)


def run_inference(
    cfg: CfgNode,
    torchvision_model: nn.Module,
    settings: BenchSettings,
    images: list[np.ndarray],
) -> tuple[SectionResult, dict[str, list]]:
    """Per-image latency (median, p90) and throughput of each variant; output agreement.

    ``cfg.MODEL.WEIGHTS`` holds torchvision's weights as our checkpoint; each of our variants is
    a ``BatchPredictor`` built from a variant of ``cfg``.
    """
    low = low_precision_name(settings.device)
    reduced = use_reduced(settings)
    variants: dict[str, object] = {
        BASELINE: TorchvisionPredictor(torchvision_model),
        "ours fp32": OursPredictor(inference_cfg(cfg, optimized=False)),
    }
    if reduced:
        variants[TRICKS.format(low=low)] = TorchvisionPredictor(torchvision_model, tricks=True)
    if settings.ablation:
        for step, key in INFERENCE_ABLATION.items():
            variants[f"ours fp32 +{step} only"] = OursPredictor(
                inference_cfg(cfg, optimized=False, only=key)
            )
    variants["ours fp32 optimized"] = OursPredictor(inference_cfg(cfg, optimized=True))
    if reduced:
        variants[f"ours {low} optimized"] = OursPredictor(
            inference_cfg(cfg, optimized=True, reduced_precision=True)
        )
    if settings.compile:
        variants["ours fp32 optimized+compile"] = OursPredictor(
            inference_cfg(cfg, optimized=True, compiled=True)
        )
        if reduced:
            variants[f"ours {low} optimized+compile"] = OursPredictor(
                inference_cfg(cfg, optimized=True, reduced_precision=True, compiled=True)
            )

    times: dict[str, list[float]] = {name: [] for name in variants}
    outputs: dict[str, list] = {name: [] for name in variants}
    memory: dict[str, float] = {}
    cuda_memory: dict[str, float | None] = {}
    warmup: dict[str, float] = {}
    for name, predictor in variants.items():  # warm-up: first-call allocations, compilation
        with PeakMemory(settings.device).measure() as mem:
            warmup[name], _ = timed(lambda p=predictor: p(images[0]), settings.device)
        memory[name] = mem.rss_peak_mb
        cuda_memory[name] = mem.cuda_peak_mb
    for rep in range(settings.repeats):
        for image in images:
            for name, predictor in variants.items():
                seconds, out = timed(lambda p=predictor, im=image: p(im), settings.device)
                times[name].append(seconds)
                if rep == 0:
                    outputs[name].append(out)

    result = SectionResult()
    detections = {
        name: [type(variants[name]).to_detections(o) for o in outs]
        for name, outs in outputs.items()
    }
    for name in variants:
        stats = summarize(times[name])
        row = {
            "median_s": round(stats["median_s"], 4),
            "p90_s": round(stats["p90_s"], 4),
            "images_per_s": round(len(times[name]) / sum(times[name]), 3),
            "detections_per_image": round(
                float(np.mean([len(d.boxes) for d in detections[name]])), 1
            ),
            "rss_peak_mb": round(memory[name], 1),
            "first_call_s": round(warmup[name], 2),
        }
        if cuda_memory[name] is not None:
            row["cuda_peak_mb"] = round(cuda_memory[name], 1)
        result.rows[name] = row
    _add_ratios(result.rows, "images_per_s", low)
    # Unchanged outputs: each speed-up against plain fp32 on the same images.
    reference = detections["ours fp32"]
    result.extra["agreement_with_ours_fp32"] = {
        name: compare_detections(reference, dets).as_dict()
        for name, dets in detections.items()
        if name.startswith("ours") and name != "ours fp32"
    }
    result.extra["ours_vs_torchvision_same_weights"] = compare_detections(
        detections[BASELINE], reference
    ).as_dict()
    return result, outputs


def _mapped_batches(cfg: CfgNode, settings: BenchSettings) -> list[list[dict]]:
    """Training batches at the test size, no flip: identical pixels and targets for both sides."""
    dicts = DatasetCatalog.get(settings.train_dataset)[: settings.train_images]
    if not dicts:
        raise ValueError(f"dataset {settings.train_dataset!r} has no images")
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, "choice")
    mapper = build_dataset_mapper(cfg, is_train=True, augmentations=[resize])
    mapped = [mapper(d) for d in dicts]
    size = settings.train_batch
    return [mapped[i : i + size] for i in range(0, len(mapped) - size + 1, size)]


def run_training(
    cfg: CfgNode, torchvision_model: nn.Module, settings: BenchSettings
) -> SectionResult:
    """Images/s of a full training step (forward, backward, optimizer) after warm-up.

    Our variants are the project's ``Trainer`` built from variants of ``cfg`` (whose
    ``MODEL.WEIGHTS`` holds torchvision's weights), timed on ``run_step``.
    """
    batches = _mapped_batches(cfg, settings)
    tv_batches = [torchvision_batch(b, settings.device) for b in batches]
    low = low_precision_name(settings.device)
    reduced = use_reduced(settings)
    steps: dict[str, object] = {
        BASELINE: TorchvisionTrainStep(torchvision_model, cfg, tv_batches),
        "ours fp32": OursTrainStep(training_cfg(cfg, optimized=False), batches),
    }
    if reduced:
        steps[TRICKS.format(low=low)] = TorchvisionTrainStep(
            torchvision_model, cfg, tv_batches, tricks=True
        )
    if settings.ablation:
        for step, key in TRAINING_ABLATION.items():
            steps[f"ours fp32 +{step} only"] = OursTrainStep(
                training_cfg(cfg, optimized=False, only=key), batches
            )
    steps["ours fp32 optimized"] = OursTrainStep(training_cfg(cfg, optimized=True), batches)
    if reduced:
        steps[f"ours {low} optimized"] = OursTrainStep(
            training_cfg(cfg, optimized=True, reduced_precision=True), batches
        )
    times: dict[str, list[float]] = {name: [] for name in steps}
    memory: dict[str, float] = dict.fromkeys(steps, 0.0)
    cuda_memory: dict[str, float] = dict.fromkeys(steps, 0.0)
    for it in range(settings.train_warmup + settings.train_iters):
        for name, step in steps.items():
            with PeakMemory(settings.device).measure() as mem:
                seconds, _ = timed(step, settings.device)
            memory[name] = max(memory[name], mem.rss_peak_mb)
            cuda_memory[name] = max(cuda_memory[name], mem.cuda_peak_mb or 0.0)
            if it >= settings.train_warmup:
                times[name].append(seconds)
    result = SectionResult()
    for name, step in steps.items():
        stats = summarize(times[name])
        result.rows[name] = {
            "median_s": round(stats["median_s"], 4),
            "p90_s": round(stats["p90_s"], 4),
            "images_per_s": round(settings.train_batch / stats["median_s"], 3),
            "first_loss": round(step.losses[0], 4),
            "last_loss": round(step.losses[-1], 4),
            "rss_peak_mb": round(memory[name], 1),
        }
        if torch.device(settings.device).type == "cuda":
            result.rows[name]["cuda_peak_mb"] = round(cuda_memory[name], 1)
    _add_ratios(result.rows, "images_per_s", low)
    ours_fp32 = steps["ours fp32"].losses
    result.extra["loss_curves"] = {
        name: [round(x, 4) for x in s.losses] for name, s in steps.items()
    }
    result.extra["max_rel_loss_diff_vs_ours_fp32"] = {
        name: round(
            max(abs(a - b) / max(abs(a), 1e-8) for a, b in zip(ours_fp32, s.losses, strict=True)), 4
        )
        for name, s in steps.items()
        if name.startswith("ours") and name != "ours fp32"
    }
    result.extra["batches"] = {
        "batch_size": settings.train_batch,
        "image_sizes": sorted({tuple(d["image"].shape[1:]) for b in batches for d in b}),
    }
    return result


def run_data(cfg: CfgNode, settings: BenchSettings) -> SectionResult:
    """Images/s of our training mapper vs the tutorial's dataset ``__getitem__`` (one process)."""
    dicts = DatasetCatalog.get(settings.train_dataset)[: settings.mapper_images]
    mapper = build_dataset_mapper(cfg, is_train=True)
    paths = [(d["file_name"], pennfudan_mask_path(d["file_name"])) for d in dicts]
    has_tutorial = all(mask is not None for _, mask in paths)
    times: dict[str, list[float]] = {"ours InstSegDatasetMapper": []}
    if has_tutorial:
        times["torchvision tutorial dataset"] = []
    mapper(dicts[0])  # warm-up (imports, first decode)
    for d, (image_path, mask_path) in zip(dicts, paths, strict=True):
        seconds, _ = timed(lambda d=d: mapper(d))
        times["ours InstSegDatasetMapper"].append(seconds)
        if has_tutorial:
            seconds, _ = timed(lambda i=image_path, m=mask_path: tutorial_dataset_item(i, m))
            times["torchvision tutorial dataset"].append(seconds)
    result = SectionResult()
    for name, values in times.items():
        stats = summarize(values)
        result.rows[name] = {
            "median_s": round(stats["median_s"], 4),
            "p90_s": round(stats["p90_s"], 4),
            "images_per_s": round(len(values) / sum(values), 2),
        }
    result.extra["note"] = (
        "ours: decode + resize + RLE masks to bitmasks + Instances; tutorial: decode + "
        "masks from the instance PNG, no resize (its model resizes inside the forward pass)"
    )
    return result
