"""The benchmark's accuracy sections: COCO evaluation of the inference outputs (time and AP), and
the AP of a trained checkpoint in fp32 against reduced precision."""

from __future__ import annotations

import contextlib
import io
import tempfile
import time

import numpy as np
from detectron2.config import CfgNode

from .detection_match import Detections, compare_detections
from .runners import BenchSettings, SectionResult, low_precision_name, use_reduced
from .user_paths import OursPredictor, inference_cfg


def run_eval(
    cfg: CfgNode,
    settings: BenchSettings,
    dicts: list[dict],
    outputs: dict[str, list],
) -> SectionResult:
    """COCO evaluation time (pycocotools) of our predictions; AP of each of our variants."""
    from instseg_d2.engine.evaluation import build_coco_evaluator

    result = SectionResult()
    image_ids = {d["image_id"] for d in dicts}
    # One folder for the run: the first COCOEvaluator caches the COCO-format json there and
    # points the dataset's metadata at it.
    with tempfile.TemporaryDirectory() as tmp:
        for name, instances_list in outputs.items():
            if not name.startswith("ours"):
                continue
            start = time.perf_counter()
            evaluator = build_coco_evaluator(
                settings.test_dataset, tmp, ("bbox", "segm"), distributed=False
            )
            setup_s = time.perf_counter() - start
            # Only the images we predicted on count, so --num-images N gives a consistent AP.
            evaluator._coco_api.imgs = {
                k: v for k, v in evaluator._coco_api.imgs.items() if k in image_ids
            }
            evaluator.reset()
            start = time.perf_counter()
            for d, instances in zip(dicts, instances_list, strict=True):
                evaluator.process([{"image_id": d["image_id"]}], [{"instances": instances}])
            process_s = time.perf_counter() - start
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
                metrics = evaluator.evaluate()
            evaluate_s = time.perf_counter() - start
            result.rows[name] = {
                "setup_s": round(setup_s, 3),
                "process_s": round(process_s, 3),
                "evaluate_s": round(evaluate_s, 3),
                # No detections at all gives no metrics (Detectron2 warns and returns {}).
                "bbox_AP": round(metrics.get("bbox", {}).get("AP", float("nan")), 3),
                "segm_AP": round(metrics.get("segm", {}).get("AP", float("nan")), 3),
            }
    return result


def run_precision_check(
    cfg: CfgNode, settings: BenchSettings, dicts: list[dict], images: list[np.ndarray]
) -> SectionResult:
    """AP of a trained model (``cfg.MODEL.WEIGHTS``) in fp32 vs the reduced-precision mode.

    Random weights cannot show that bf16 keeps accuracy (their tied scores make NMS pick
    arbitrary boxes); a trained checkpoint can. Any project config works here (GroupNorm too):
    torchvision is not involved.
    """
    low = low_precision_name(settings.device)
    variants = {
        "ours fp32": OursPredictor(inference_cfg(cfg, optimized=False)),
        "ours fp32 optimized": OursPredictor(inference_cfg(cfg, optimized=True)),
    }
    if use_reduced(settings):
        variants[f"ours {low} optimized"] = OursPredictor(
            inference_cfg(cfg, optimized=True, reduced_precision=True)
        )
    outputs = {name: [p(image) for image in images] for name, p in variants.items()}
    result = run_eval(cfg, settings, dicts, outputs)
    base = result.rows["ours fp32"]
    for row in result.rows.values():
        row["segm_AP_delta"] = round(row["segm_AP"] - base["segm_AP"], 3)
        row["bbox_AP_delta"] = round(row["bbox_AP"] - base["bbox_AP"], 3)
    result.extra["agreement_with_ours_fp32"] = {
        name: compare_detections(
            [Detections.from_instances(o) for o in outputs["ours fp32"]],
            [Detections.from_instances(o) for o in outs],
        ).as_dict()
        for name, outs in outputs.items()
        if name != "ours fp32"
    }
    return result
