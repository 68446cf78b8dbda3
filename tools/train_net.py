#!/usr/bin/env python
"""Train or evaluate Mask R-CNN on the registered datasets with the project's Trainer.

    python tools/train_net.py --config-file configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/x/model_best.pth
    python tools/train_net.py --config-file CFG --resume          # continue an interrupted run
    python tools/train_net.py --config-file CFG --num-gpus 2      # 2 processes (gloo on CPU)

Without a GPU the run goes to the CPU (``MODEL.DEVICE cpu``, AMP off). Writes into OUTPUT_DIR:
metrics.json, TensorBoard events, config.yaml, model_final.pth, model_best.pth, last_checkpoint,
final_metrics.json/.md and (``INSTSEG.REPORT``) report.html.
"""

from __future__ import annotations

import logging
import os
import sys

import torch
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.modeling import build_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

# Runnable as ``python tools/train_net.py`` from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instseg_d2.data  # noqa: E402,F401  (registers pennfudan_* and balloon_*)
from instseg_d2.checkpoint import (  # noqa: E402
    AtomicCheckpointer,
    UnsafeCheckpointError,
    WeightsUnavailableError,
    resolve_weights,
)
from instseg_d2.config import load_config  # noqa: E402
from instseg_d2.data import DatasetError  # noqa: E402
from instseg_d2.engine.final_metrics import write_final_metrics  # noqa: E402
from instseg_d2.engine.trainer import Trainer  # noqa: E402
from instseg_d2.modeling.inference_step import prepare_for_inference  # noqa: E402

logger = logging.getLogger("instseg_d2.train_net")


def setup(args):
    """Config from file and overrides, adapted to the machine; output folder and logging."""
    try:
        cfg = load_config(args.config_file, args.opts)
    except FileNotFoundError as exc:
        raise SystemExit(f"error: {exc}") from None
    notes = []
    if not torch.cuda.is_available() and cfg.MODEL.DEVICE != "cpu":
        notes.append(f"no CUDA GPU: MODEL.DEVICE {cfg.MODEL.DEVICE} -> cpu")
        cfg.MODEL.DEVICE = "cpu"
    if cfg.MODEL.DEVICE == "cpu" and cfg.SOLVER.AMP.ENABLED:
        notes.append("SOLVER.AMP.ENABLED needs CUDA: turned off on CPU")
        cfg.SOLVER.AMP.ENABLED = False
    cfg.freeze()
    default_setup(cfg, args)
    # Our modules log under "instseg_d2": to the console and OUTPUT_DIR/log.txt like Detectron2.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="instseg_d2")
    for note in notes:
        logger.warning(note)
    if cfg.MODEL.DEVICE == "cpu" and comm.get_local_size() > 1:
        # The processes share the machine's cores: do not oversubscribe them.
        torch.set_num_threads(max(1, torch.get_num_threads() // comm.get_local_size()))
    return cfg


def _check_weights(weights: str) -> None:
    try:
        resolve_weights(weights)
    except WeightsUnavailableError as exc:
        raise SystemExit(f"error: {exc}") from None


def _write_results(cfg, results, weights: str, iteration) -> None:
    """Final table (main process), then the HTML report when enabled and available."""
    if not comm.is_main_process() or not results:
        return
    write_final_metrics(results, cfg.OUTPUT_DIR, cfg.DATASETS.TEST, weights=weights,
                        iteration=iteration)  # fmt: skip
    if cfg.INSTSEG.REPORT:
        try:
            from instseg_d2.visualization.report import write_report
        except ImportError:
            logger.info("instseg_d2.visualization.report not available: no report.html")
        else:
            logger.info(f"Report: {write_report(cfg.OUTPUT_DIR)}")


def evaluate(cfg, args):
    # The inference model (speed-up keys at "auto": on CPU), as BatchPredictor builds it.
    model = build_model(cfg)
    _check_weights(cfg.MODEL.WEIGHTS)
    checkpointer = AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    try:
        extra = checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
    except UnsafeCheckpointError as exc:
        raise SystemExit(f"error: {exc}") from None
    weights = checkpointer.get_checkpoint_file() if args.resume and checkpointer.has_checkpoint() \
        else cfg.MODEL.WEIGHTS  # fmt: skip
    prepare_for_inference(model, cfg)  # after loading: folds and casts the loaded weights
    results = Trainer.test(cfg, model)
    _write_results(cfg, results, weights, extra.get("iteration"))
    return results


def train(cfg, args):
    resuming = args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if not resuming:
        # An offline machine stops here, before datasets and model are built.
        _check_weights(cfg.MODEL.WEIGHTS)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    try:
        trainer.train()
    except FloatingPointError as exc:
        last = trainer.last_checkpoint()
        where = (
            f"The last checkpoint saved before it is {last} (nothing of the diverged state was "
            "saved): resume from it with --resume after lowering SOLVER.BASE_LR or enabling "
            "SOLVER.CLIP_GRADIENTS.ENABLED True."
            if last
            else "No checkpoint was saved before it: lower SOLVER.BASE_LR and start again."
        )
        raise SystemExit(f"error: training diverged (NaN/Inf loss). {exc}\n{where}") from None
    results = getattr(trainer, "_last_eval_results", None)
    final = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    _write_results(cfg, results, final, trainer.iter)
    return results


def main(args):
    cfg = setup(args)
    try:
        return evaluate(cfg, args) if args.eval_only else train(cfg, args)
    except DatasetError as exc:
        # A dataset folder or file is missing or malformed: the message names it.
        raise SystemExit(f"error: {exc}") from None


def invoke_main() -> None:
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
