#!/usr/bin/env python
"""K-fold cross-validation of a config: train and evaluate every fold, then summarise.

    python tools/cross_validate.py --config-file configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml \\
        --folds 5 --output output/pennfudan_cpu_cv5
    python tools/cross_validate.py --config-file CFG --folds 5 --repeats 2 SOLVER.MAX_ITER 500

The images of DATASETS.TRAIN + DATASETS.TEST are pooled and split into K folds (the dataset's
built-in folds when it has them, e.g. Penn-Fudan's 5; else a seeded split stratified by class);
each fold is one tools/train_net.py run in OUTPUT/r<repeat>_fold<i>/. Folds run one after the
other, or one per GPU at a time when several are visible. Run the same command again after an
interruption: finished folds are kept, an interrupted fold resumes from its last checkpoint; run
it with a larger --repeats to add repeats to a finished cross-validation.
Writes OUTPUT/cv_summary.json/.md (per metric: fold values, mean, std, 95% t-intervals) and
cv_summary.png.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
import torch  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from instseg_d2.engine.defaults import setup_config  # noqa: E402
from instseg_d2.engine.mlflow_writer import default_tracking_uri, ensure_experiment  # noqa: E402
from instseg_d2.evaluation.cross_validation import (  # noqa: E402
    CrossValidationError,
    Fold,
    fold_state,
    plan_folds,
    read_fold_metrics,
    summarize_folds,
    write_summary,
)
from instseg_d2.utils.atomic import atomic_write  # noqa: E402
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402
from instseg_d2.visualization.cv_plots import cv_summary_figure  # noqa: E402
from instseg_d2.visualization.plots import save_figure  # noqa: E402

logger = logging.getLogger("instseg_d2.cross_validate")
TRAIN_NET = Path(__file__).resolve().parent / "train_net.py"
PLAN_FILE = "cv_plan.json"
FOLD_LOG = "train_net.out"


def get_parser() -> ToolArgumentParser:
    parser = ToolArgumentParser(__doc__.split("\n\n")[0], output=None)
    parser.add_argument("--folds", type=int, required=True, metavar="K", help="number of folds")
    parser.add_argument("--repeats", type=int, default=1, metavar="R",
                        help="repeats with other fold assignments and seeds (1)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="SEED of repeat 0; repeat r: +r (0)")
    parser.add_argument("--output", metavar="DIR", help="default: the config's OUTPUT_DIR_cvK")
    parser.add_argument("--gpus", type=int, default=None, metavar="N",
                        help="folds at a time, one per GPU (default: the visible GPUs)")  # fmt: skip
    return parser


def visible_gpus(cfg, limit: int | None) -> list[str]:
    """CUDA_VISIBLE_DEVICES entries for one fold each; [] means one fold at a time as is."""
    if cfg.MODEL.DEVICE == "cpu" or not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = [d for d in listed.split(",") if d] if listed else []
    devices = devices or [str(i) for i in range(torch.cuda.device_count())]
    devices = devices[:limit] if limit else devices
    return devices if len(devices) > 1 else []


def check_plan(output: Path, plan: dict) -> None:
    """Write the plan, or check that a resumed cross-validation has the same settings.

    More ``--repeats`` than before extend a cross-validation: repeat r's folds depend on the
    settings and on SEED + r only, so the repeats already run are the first ones of the longer
    plan and are kept.
    """
    path = output / PLAN_FILE
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous == plan:
            return
        changed = sorted(k for k in plan.keys() | previous.keys() if previous.get(k) != plan.get(k))
        if changed == ["repeats"] and plan["repeats"] > previous["repeats"]:
            logger.info(f"{output}: extended from {previous['repeats']} to {plan['repeats']} "
                        "repeats; the finished folds are kept")  # fmt: skip
        else:
            raise CrossValidationError(
                f"{output} holds a cross-validation with other settings ({', '.join(changed)} "
                f"differ, see {path}); give another --output, or delete the folder to start over"
            )
    output.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(plan, indent=1) + "\n")


def fold_command(args, fold: Fold, fold_dir: Path, state: str, extra: list[str]) -> list[str]:
    """tools/train_net.py for the fold: train, ``--resume``, or ``--eval-only`` its final model."""
    flags = {"train": [], "resume": ["--resume"], "evaluate": ["--eval-only"]}[state]
    opts = [*args.opts, *extra, *fold.opts]
    if state == "evaluate":
        opts += ["MODEL.WEIGHTS", str(fold_dir / "model_final.pth")]
    return [sys.executable, str(TRAIN_NET), "--config-file", args.config_file, *flags,
            "--output", str(fold_dir), *opts]  # fmt: skip


def run_fold(command: list[str], fold: Fold, fold_dir: Path, devices: queue.Queue | None) -> str:
    """Run one fold's process (on a free GPU of ``devices``); returns an error or ''."""
    env = dict(os.environ)
    device = devices.get() if devices is not None else None
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    fold_dir.mkdir(parents=True, exist_ok=True)
    where = f" on GPU {device}" if device is not None else ""
    logger.info(
        f"{fold.name}: {' '.join(command[2:4])} ...{where}, output in {fold_dir / FOLD_LOG}"
    )
    try:
        with open(fold_dir / FOLD_LOG, "a", encoding="utf-8") as log:
            status = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, env=env
            ).returncode
    finally:
        if device is not None:
            devices.put(device)
    if status != 0:
        tail = (fold_dir / FOLD_LOG).read_text(encoding="utf-8", errors="replace").splitlines()
        return f"{fold.name} failed (exit {status}); last lines of {fold_dir / FOLD_LOG}:\n" + \
            "\n".join(tail[-8:])  # fmt: skip
    logger.info(f"{fold.name}: finished")
    return ""


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="instseg_d2")
    cfg, _ = setup_config(args.config_file, args.opts)
    folds = plan_folds(cfg, args.folds, args.repeats, args.seed)
    output = Path(args.output or f"{cfg.OUTPUT_DIR.rstrip('/')}_cv{args.folds}")
    config_text = Path(args.config_file).read_bytes()
    info = {"config_file": args.config_file, "opts": list(args.opts), "num_folds": args.folds,
            "repeats": args.repeats, "seed": args.seed}  # fmt: skip
    check_plan(output, {**info, "config_sha256": hashlib.sha256(config_text).hexdigest()})
    extra = []
    if cfg.INSTSEG.MLFLOW.ENABLED and not cfg.INSTSEG.MLFLOW.TRACKING_URI:
        # One store for all folds, created here so that parallel folds do not race to create it.
        uri = default_tracking_uri(output)
        ensure_experiment(uri, cfg.INSTSEG.MLFLOW.EXPERIMENT_NAME)
        extra = ["INSTSEG.MLFLOW.TRACKING_URI", uri]

    todo = []
    for fold in folds:
        fold_dir = output / fold.name
        state = fold_state(fold_dir)
        if state == "done":
            logger.info(f"{fold.name}: done ({fold_dir / 'final_metrics.json'})")
            continue
        run_name = ["INSTSEG.MLFLOW.RUN_NAME", f"{output.name}/{fold.name}"] if extra else []
        todo.append((fold_command(args, fold, fold_dir, state, extra + run_name), fold, fold_dir))
    devices = visible_gpus(cfg, args.gpus)
    if devices:
        device_queue: queue.Queue = queue.Queue()
        for device in devices:
            device_queue.put(device)
        with ThreadPoolExecutor(max_workers=len(devices)) as pool:
            errors = list(pool.map(lambda t: run_fold(*t, device_queue), todo))
    else:
        errors = [run_fold(*t, None) for t in todo]
    errors = [e for e in errors if e]
    if errors:
        raise CrossValidationError(
            f"{len(errors)} of {len(folds)} folds failed (the others are kept; run the same "
            "command again to retry):\n" + "\n".join(errors)
        )

    metrics = [read_fold_metrics(output / f.name, f.test) for f in folds]
    result = summarize_folds(folds, metrics, num_folds=args.folds)
    path = write_summary(output, result, info)
    save_figure(cv_summary_figure(result), output / "cv_summary.png")
    print((output / "cv_summary.md").read_text(encoding="utf-8"))
    logger.info(f"Summary: {path}, {output / 'cv_summary.md'}, {output / 'cv_summary.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
