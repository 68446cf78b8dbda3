#!/usr/bin/env python
"""Train or evaluate Mask R-CNN with the project's Trainer (Detectron2's command line).

    python tools/train_net.py --config-file configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/x/model_best.pth
    python tools/train_net.py --config-file CFG --resume          # continue an interrupted run
    python tools/train_net.py --config-file CFG --num-gpus 2      # 2 processes (gloo on CPU)

Without a GPU the run goes to the CPU (``MODEL.DEVICE cpu``, AMP off). Writes into OUTPUT_DIR
(``--output``): metrics.json, TensorBoard events, config.yaml, model_final.pth, model_best.pth,
last_checkpoint, final_metrics.json/.md (with 95% bootstrap intervals of AP and the seed),
(``INSTSEG.ERROR_ANALYSIS``) analysis/<dataset>/ and (``INSTSEG.REPORT``) report.html; with
``INSTSEG.MLFLOW.ENABLED True`` also an MLflow run. With ``TEST.AUG.ENABLED True`` the final
evaluation is also run with test-time augmentation (rows ``<dataset>_TTA`` in final_metrics).
"""

from __future__ import annotations

import logging
import os
import sys

# Runnable as ``python tools/train_net.py`` from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
import torch  # noqa: E402
from detectron2.engine import default_argument_parser, default_setup, launch  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from instseg_d2.checkpoint import AtomicCheckpointer, resolve_weights  # noqa: E402
from instseg_d2.engine.defaults import setup_config  # noqa: E402
from instseg_d2.engine.trainer import Trainer  # noqa: E402
from instseg_d2.modeling.inference_step import prepare_for_inference  # noqa: E402
from instseg_d2.utils.errors import UserError  # noqa: E402
from instseg_d2.visualization.run_results import write_run_results  # noqa: E402

logger = logging.getLogger("instseg_d2.train_net")


def get_parser():
    parser = default_argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--output", metavar="DIR", help="OUTPUT_DIR (default: the config's)")
    return parser


def setup(args):
    """Config from file and overrides, adapted to the machine; output folder and logging."""
    cfg, notes = setup_config(args.config_file, args.opts, output_dir=args.output)
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


def evaluate(cfg, args):
    # The inference model (speed-up keys at "auto": on CPU), as BatchPredictor builds it.
    model = build_model(cfg)
    resolve_weights(cfg.MODEL.WEIGHTS)
    checkpointer = AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    extra = checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
    weights = checkpointer.get_checkpoint_file() if args.resume and checkpointer.has_checkpoint() \
        else cfg.MODEL.WEIGHTS  # fmt: skip
    prepare_for_inference(model, cfg)  # after loading: folds and casts the loaded weights
    results = Trainer.test(cfg, model)
    tta_results = Trainer.test_with_TTA(cfg, model) if cfg.TEST.AUG.ENABLED else None
    write_run_results(cfg, results, weights, extra.get("iteration"), None, tta_results)
    return results


class TrainingDiverged(UserError, FloatingPointError):
    """A NaN/Inf loss; the message says which checkpoint to resume from and what to change."""


def train(cfg, args):
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
        raise TrainingDiverged(f"training diverged (NaN/Inf loss). {exc}\n{where}") from None
    results = getattr(trainer, "_last_eval_results", None)
    final = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    write_run_results(cfg, results, final, trainer.iter, cfg.SEED,
                   getattr(trainer, "_last_tta_results", None))  # fmt: skip
    return results


def main(args):
    try:
        cfg = setup(args)
        return evaluate(cfg, args) if args.eval_only else train(cfg, args)
    except UserError as exc:
        # In a process started by launch() the parent sees only the exit status.
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def check_before_launch(args) -> None:
    """Stop on a bad config, dataset name or unreachable weights before any process starts.

    ``SEED -1`` (Detectron2's "a random seed") is drawn here, once for all processes, and added
    to ``args.opts``: config.yaml, final_metrics.json and the report then say which seed ran,
    and the run can be repeated with it (rank r seeds python, numpy and torch with SEED + r).
    """
    cfg, _ = setup_config(
        args.config_file, args.opts, output_dir=args.output, training=not args.eval_only
    )
    if cfg.SEED < 0:
        args.opts = [*args.opts, "SEED", str(int.from_bytes(os.urandom(4), "big") % 2**31)]
    resuming = args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if not resuming:
        # An offline machine stops here, before datasets and model are built.
        resolve_weights(cfg.MODEL.WEIGHTS)


def invoke_main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        check_before_launch(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("Command Line Args:", args)
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines,
               machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))  # fmt: skip
    except torch.multiprocessing.ProcessExitedException:
        return 1  # a worker stopped on an error it has printed
    return 0


if __name__ == "__main__":
    sys.exit(invoke_main())
