#!/usr/bin/env python
"""segm AP of trained runs at several mask thresholds (``INSTSEG.MASK_THRESHOLD``).

    python benchmarks/mask_threshold_sweep.py output/pennfudan_cpu_cv5 --thresholds 0.5 0.4 0.3
    python benchmarks/mask_threshold_sweep.py output/run_a output/run_b --output sweep.md

Each RUN is a training run's folder (its ``config.yaml`` and ``model_final.pth``) or a
cross-validation's folder (every ``r*_fold*`` run in it). Each run's model predicts its test set
(``DATASETS.TEST[0]``, the held-out fold of a cross-validation) once; its masks are then pasted at
every threshold and evaluated with the project's ``COCOEvaluator``, so the rows differ in the
threshold only. bbox AP does not depend on it. Prints, per threshold, segm AP and AP75 of each
run and their mean over the runs.

A threshold chosen on the runs' own test images is tuned on them: choose it on one fold, or on
another cross-validation, and report the others.
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
import torch  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.modeling.postprocessing import detector_postprocess  # noqa: E402

from benchmarks.tables import print_and_write  # noqa: E402
from instseg_d2.engine.defaults import setup_inference_config  # noqa: E402
from instseg_d2.engine.trainer import Trainer  # noqa: E402
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402
from instseg_d2.utils.errors import UserError  # noqa: E402

__all__ = ["paste_at", "raw_predictions", "run_dirs", "sweep_run"]


def run_dirs(paths: list[str]) -> list[Path]:
    """The training runs named by ``paths``: a run folder, or each ``r*_fold*`` run of a
    cross-validation folder."""
    runs = []
    for path in map(Path, paths):
        if (path / "config.yaml").is_file():
            runs.append(path)
            continue
        folds = sorted(p for p in path.glob("r*_fold*") if (p / "config.yaml").is_file())
        if not folds:
            raise UserError(f"{path}: neither a run folder (config.yaml) nor a cross-validation "
                            "folder (r*_fold*/config.yaml)")  # fmt: skip
        runs += folds
    return runs


def sweep_run(run: Path, thresholds: list[float], opts: list[str] | None = None) -> dict:
    """``{threshold: {"bbox AP", "segm AP", "segm AP75"}}`` of ``run``'s final model on its test
    set, from one inference."""
    weights = run / "model_final.pth"
    if not weights.is_file():
        raise UserError(f"{run}: no model_final.pth (the run has not finished)")
    cfg = setup_inference_config(run / "config.yaml", list(opts or []), weights)
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(str(weights))
    model.eval()
    dataset = cfg.DATASETS.TEST[0]
    raw = raw_predictions(model, Trainer.build_test_loader(cfg, dataset))
    results = {}
    for threshold in thresholds:
        # Not the run's inference/ folder: its final evaluation's files stay as they are.
        with tempfile.TemporaryDirectory(prefix="instseg_sweep_") as scratch:
            evaluator = Trainer.build_evaluator(cfg, dataset, output_folder=scratch)
            evaluator.reset()
            for inputs, outputs in paste_at(raw, threshold):
                evaluator.process(inputs, outputs)
            metrics = evaluator.evaluate()
        results[threshold] = {"bbox AP": metrics["bbox"]["AP"], "segm AP": metrics["segm"]["AP"],
                              "segm AP75": metrics["segm"]["AP75"]}  # fmt: skip
    return results


def raw_predictions(model: torch.nn.Module, loader) -> list[tuple[list[dict], list]]:
    """``(inputs, instances)`` of every batch of ``loader``: the model's outputs before its masks
    are pasted (28 x 28 probabilities per detection)."""
    with torch.inference_mode():
        return [(inputs, model.inference(inputs, do_postprocess=False)) for inputs in loader]


def paste_at(raw: list[tuple[list[dict], list]], threshold: float) -> list[tuple[list, list]]:
    """``raw``'s detections at the inputs' size with masks pasted at ``threshold``, as the
    model's own post-processing does."""
    with torch.inference_mode():
        return [
            (inputs, [{"instances": detector_postprocess(copy.deepcopy(o), x["height"],
                                                         x["width"], mask_threshold=threshold)}
                      for x, o in zip(inputs, outputs, strict=True)])
            for inputs, outputs in raw
        ]  # fmt: skip


def markdown(results: dict[str, dict], thresholds: list[float]) -> str:
    runs = list(results)
    lines = ["| threshold | " + " | ".join(f"{r} segm AP (AP75)" for r in runs)
             + " | mean segm AP | mean segm AP75 |",
             "|---" * (len(runs) + 3) + "|"]  # fmt: skip
    for t in thresholds:
        cells = [f"{results[r][t]['segm AP']:.1f} ({results[r][t]['segm AP75']:.1f})" for r in runs]
        mean_ap = statistics.fmean(results[r][t]["segm AP"] for r in runs)
        mean_ap75 = statistics.fmean(results[r][t]["segm AP75"] for r in runs)
        lines.append(f"| {t:g} | " + " | ".join(cells) + f" | {mean_ap:.1f} | {mean_ap75:.1f} |")
    bbox = statistics.fmean(results[r][thresholds[0]]["bbox AP"] for r in runs)
    return "\n".join(lines) + f"\n\nbbox AP (any threshold), mean over the runs: {bbox:.1f}\n"


def get_parser() -> ToolArgumentParser:
    p = ToolArgumentParser(__doc__.split("\n\n")[0], config_file=False,
                           output="also write the table here (Markdown)", output_required=False)  # fmt: skip
    p.add_argument("runs", nargs="+", metavar="RUN", help="run or cross-validation folder")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.45, 0.4, 0.35, 0.3])
    return p


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    bad = [t for t in args.thresholds if not 0.0 < t < 1.0]
    if bad:
        raise SystemExit(f"--thresholds must lie strictly between 0 and 1, got {bad}")
    runs = run_dirs(args.runs)
    unique = len({r.name for r in runs}) == len(runs)
    results = {}
    for run in runs:
        label = run.name if unique else f"{run.parent.name}/{run.name}"
        results[label] = sweep_run(run, args.thresholds)
    text = markdown(results, args.thresholds)
    print_and_write(text, args.output)


if __name__ == "__main__":
    run_tool(main)
