#!/usr/bin/env python
"""Benchmark this project against torchvision's Mask R-CNN, side by side on the same machine.

Measures, in one run: training throughput (images/s of a full SGD step), inference latency per
image (median, p90) and throughput, data loading (mapper images/s), COCO evaluation time and peak
memory; and the CPU recipe's training step with and without its training-step speed-ups
(``recipe`` section: ``benchmarks/recipe.py``). Our rows time what users run:
``BatchPredictor`` (inference) and the project's ``Trainer.run_step`` (training), built from ``configs/Base-InstSegRCNN.yaml`` (the model-zoo
R50-FPN Mask R-CNN) with the speed-up keys off and on; torchvision's rows run the fine-tuning
tutorial's ``maskrcnn_resnet50_fpn``, plain fp32 and with channels-last + bf16 autocast. Matched
settings, the same random weights. Prints a table and writes JSON. The code is in ``benchmarks/``;
see BENCHMARKS.md for the settings mapping and the numbers. Over 300 lines: the presets and
options of every section are parsed here, in one place.

Examples::

    python tools/benchmark.py --quick                  # < 2 minutes on 2 cores
    python tools/benchmark.py --quick --smoke          # CI smoke test: tiny, < 60 s
    python tools/benchmark.py --output output/benchmark/full.json   # the BENCHMARKS.md run
    python tools/benchmark.py --sections recipe --train-iters 8     # CPU recipe step, before/after
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

# Runnable as ``python tools/benchmark.py`` from a checkout: benchmarks/ is not installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
import torch  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402

from benchmarks.accuracy import run_eval, run_precision_check  # noqa: E402
from benchmarks.models import benchmark_cfg, build_torchvision, save_shared_weights  # noqa: E402
from benchmarks.recipe import run_recipe_training  # noqa: E402
from benchmarks.runners import (  # noqa: E402
    BenchSettings,
    load_test_images,
    run_data,
    run_inference,
    run_training,
)
from benchmarks.tables import SECTIONS, format_table, markdown_table  # noqa: E402
from benchmarks.timing import machine_info  # noqa: E402
from instseg_d2.config import load_config  # noqa: E402

logger = logging.getLogger("instseg_d2.benchmark")

# name: (test size, train size, settings overrides, config overrides)
PRESETS: dict[str, tuple[int, int, dict, list[str]]] = {
    "full": (800, 512, {}, []),
    "quick": (
        480,
        320,
        {
            "test_dataset": "pennfudan_val_mini",
            "num_images": 3,
            "train_images": 4,
            "train_iters": 2,
            "mapper_images": 5,
        },
        [],
    ),
    "smoke": (
        160,
        128,
        {
            "test_dataset": "pennfudan_val_mini",
            "num_images": 1,
            "train_images": 1,
            "train_batch": 1,
            "train_warmup": 0,
            "train_iters": 1,
            "mapper_images": 1,
            "recipe_images": 4,
        },
        # Only checks that every path runs: a ResNet-18 (mapped the same way) and few RoIs keep it
        # cheap (random weights give 100 detections per image, and 100 mask-head RoIs cost more
        # than a small image's backbone).
        [
            "MODEL.RESNETS.DEPTH",
            "18",
            "MODEL.RPN.POST_NMS_TOPK_TEST",
            "100",
            "MODEL.RPN.POST_NMS_TOPK_TRAIN",
            "100",
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
            "64",
            "TEST.DETECTIONS_PER_IMAGE",
            "10",
        ],
    ),
}


# The recipe section at the smoke preset's training size, 2 images per step.
RECIPE_SMOKE_OPTS = ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "224",
                     "SOLVER.IMS_PER_BATCH", "2"]  # fmt: skip


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s [options] [KEY VALUE ...]",
        epilog="Method and latest figures: BENCHMARKS.md.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes and counts (< 2 min)")
    p.add_argument("--smoke", action="store_true", help="with --quick: 1 image at tiny size")
    p.add_argument(
        "--config-file",
        default=None,
        help="our model's YAML (default: configs/Base-InstSegRCNN.yaml, the model-zoo R50-FPN)",
    )
    p.add_argument("--min-size", type=int, metavar="N", help="test shortest edge (full: 800)")
    p.add_argument("--max-size", type=int, metavar="N", default=1333)
    p.add_argument("--train-size", type=int, metavar="N", help="training shortest edge (full: 512)")
    p.add_argument("--num-images", type=int, metavar="N", help="inference/eval images (full: 50)")
    p.add_argument("--repeats", type=int, metavar="N", help="passes over the inference images")
    p.add_argument("--train-iters", type=int, metavar="N", help="timed training steps per variant")
    p.add_argument(
        "--train-batch", type=int, metavar="N", help="images per training step (full: 2)"
    )
    p.add_argument(
        "--train-images", type=int, metavar="N", help="distinct training images, cycled (full: 12)"
    )
    p.add_argument(
        "--train-warmup", type=int, metavar="N", help="untimed training steps per variant (full: 1)"
    )
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--threads", type=int, metavar="N", help="torch CPU threads (default: PyTorch's choice)"
    )
    p.add_argument(
        "--no-tf32",
        action="store_true",
        help="CUDA: run fp32 convolutions/matmuls in full fp32 (PyTorch lets cuDNN use TF32)",
    )
    p.add_argument(
        "--no-reduced-precision",
        action="store_true",
        help="skip bf16 / AMP rows (ours and torchvision's)",
    )
    p.add_argument(
        "--compile", action="store_true", help="add torch.compile'd-backbone inference rows"
    )
    p.add_argument("--ablation", action="store_true", help="add one-speed-up-at-a-time rows (fp32)")
    p.add_argument(
        "--ap-weights",
        help="trained checkpoint of --ap-config-file: adds an 'ap' section, AP of fp32 vs bf16/AMP",
    )
    p.add_argument("--ap-config-file", help="the project config that --ap-weights was trained with")
    p.add_argument("--output", default="output/benchmark/benchmark.json", help="JSON path")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of our config")
    return p


def settings_from_args(
    args: argparse.Namespace,
) -> tuple[BenchSettings, int, int, str, list[str]]:
    if args.smoke and not args.quick:
        raise SystemExit("--smoke is a variant of --quick: pass both")
    preset = "smoke" if args.smoke else "quick" if args.quick else "full"
    test_size, train_size, overrides, cfg_opts = PRESETS[preset]
    settings = BenchSettings(device=args.device, **overrides)
    for arg, field_name in [
        ("num_images", "num_images"),
        ("repeats", "repeats"),
        ("train_iters", "train_iters"),
        ("train_batch", "train_batch"),
        ("train_images", "train_images"),
        ("train_warmup", "train_warmup"),
    ]:
        value = getattr(args, arg)
        if value is not None:
            least = 0 if arg == "train_warmup" else 1
            if value < least:
                raise SystemExit(f"--{arg.replace('_', '-')} must be at least {least}, got {value}")
            setattr(settings, field_name, value)
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"--sections: unknown {unknown}; choose from {list(SECTIONS)}")
    if "eval" in sections and "inference" not in sections:
        raise SystemExit("--sections: 'eval' evaluates the inference predictions; add 'inference'")
    if bool(args.ap_weights) != bool(args.ap_config_file):
        raise SystemExit("--ap-weights and --ap-config-file go together")
    if args.ap_weights and not os.path.isfile(args.ap_weights):
        raise SystemExit(f"--ap-weights: no such file: {args.ap_weights}")
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"--threads must be at least 1, got {args.threads}")
    if settings.train_images < settings.train_batch:
        raise SystemExit(
            f"--train-images ({settings.train_images}) must be at least --train-batch "
            f"({settings.train_batch})"
        )
    settings.sections = sections
    settings.reduced_precision = not args.no_reduced_precision
    settings.compile = args.compile
    settings.ablation = args.ablation
    opts = [*cfg_opts, *args.opts]
    return settings, args.min_size or test_size, args.train_size or train_size, preset, opts


def main(argv: list[str] | None = None) -> dict:
    args = get_parser().parse_args(argv)
    settings, test_size, train_size, preset, opts = settings_from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import instseg_d2.data  # noqa: F401  (registers pennfudan_*)

    for name in (settings.train_dataset, settings.test_dataset):
        if name not in DatasetCatalog.list():
            raise SystemExit(f"dataset {name!r} is not registered (see instseg_d2.data)")
    torch.manual_seed(settings.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    start = time.perf_counter()

    def cfg_at(min_size: int):
        return benchmark_cfg(
            args.config_file,
            min_size=min_size,
            max_size=args.max_size,
            device=settings.device,
            opts=opts,
        )

    cfg = cfg_at(test_size)
    torchvision_model = build_torchvision(cfg)
    # Our side loads torchvision's random weights from a checkpoint, as users load theirs.
    weights_dir = tempfile.TemporaryDirectory(prefix="instseg_bench_weights_")
    cfg.MODEL.WEIGHTS = save_shared_weights(cfg, torchvision_model, weights_dir.name)
    # DefaultTrainer logs the whole model for every training variant.
    logging.getLogger("detectron2.engine.defaults").setLevel(logging.WARNING)

    results: dict = {
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "preset": preset,
        "machine": machine_info(),
        "settings": {**asdict(settings), "test_min_size": test_size, "train_min_size": train_size},
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    if "inference" in settings.sections:
        dicts, images = load_test_images(settings.test_dataset, settings.num_images)
        logger.info(f"inference: {len(images)} images x {settings.repeats} at min size {test_size}")
        section, outputs = run_inference(cfg, torchvision_model, settings, images)
        results["inference"] = section.to_json(
            f"per image, shortest edge {test_size}, batch 1, {len(images)} images "
            f"of {settings.test_dataset} x {settings.repeats}"
        )
        if "eval" in settings.sections:
            logger.info("eval: COCO evaluation of our predictions")
            section = run_eval(cfg, settings, dicts, outputs)
            results["eval"] = section.to_json(f"COCOEvaluator on {len(dicts)} images")
        del outputs
    if "train" in settings.sections:
        train_cfg = cfg_at(train_size)
        train_cfg.merge_from_list(
            ["MODEL.WEIGHTS", cfg.MODEL.WEIGHTS, "MODEL.PIXEL_MEAN", cfg.MODEL.PIXEL_MEAN,
             "MODEL.PIXEL_STD", cfg.MODEL.PIXEL_STD]
        )  # fmt: skip
        logger.info(
            f"train: batch {settings.train_batch} at min size {train_size}, "
            f"{settings.train_warmup} warm-up + {settings.train_iters} timed steps per variant"
        )
        section = run_training(train_cfg, torchvision_model, settings)
        results["train"] = section.to_json(
            f"SGD step, batch {settings.train_batch}, shortest edge {train_size}, "
            f"{settings.train_iters} timed steps"
        )
    if "recipe" in settings.sections:
        # Smoke: the same tiny sizes and RoI counts as the other sections.
        recipe_opts = [] if preset != "smoke" else [*PRESETS["smoke"][3], *RECIPE_SMOKE_OPTS]
        logger.info(
            f"recipe: CPU recipe training step, {settings.train_warmup} warm-up + "
            f"{settings.train_iters} timed steps per variant, {torch.get_num_threads()} threads"
        )
        section = run_recipe_training(settings, opts=recipe_opts)
        results["recipe"] = section.to_json(
            f"CPU recipe Trainer.run_step, batch {section.extra['batches']['batch_size']}, "
            f"{'bf16' if section.extra['bf16'] else 'fp32'}, {settings.train_iters} timed steps, "
            f"{torch.get_num_threads()} threads"
        )
    if "data" in settings.sections:
        logger.info("data: mapper throughput")
        section = run_data(cfg, settings)
        results["data"] = section.to_json(
            f"{settings.mapper_images} images of {settings.train_dataset}, one process"
        )
    if args.ap_weights:
        ap_cfg = load_config(args.ap_config_file, ["MODEL.WEIGHTS", args.ap_weights])
        ap_cfg.MODEL.DEVICE = settings.device
        dicts, images = load_test_images(settings.test_dataset, settings.num_images)
        logger.info(f"ap: {args.ap_weights} on {len(images)} images, fp32 vs reduced precision")
        section = run_precision_check(ap_cfg, settings, dicts, images)
        results["ap"] = section.to_json(
            f"trained {args.ap_weights}, {len(images)} images of {settings.test_dataset}"
        )
    weights_dir.cleanup()
    results["total_s"] = round(time.perf_counter() - start, 1)
    results["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None

    print(format_table(results))
    print(f"\ntotal {results['total_s']} s")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out.with_suffix(".md")).write_text(markdown_table(results) + "\n")
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return results


if __name__ == "__main__":
    main()
