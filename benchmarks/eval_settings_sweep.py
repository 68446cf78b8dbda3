#!/usr/bin/env python
"""bbox and segm AP of trained runs evaluated under other test-time settings.

    python benchmarks/eval_settings_sweep.py output/pennfudan_cpu_cv5 \\
        --setting MODEL.ROI_HEADS.NMS_THRESH_TEST 0.4 --setting INPUT.MIN_SIZE_TEST 352

Each RUN is a training run's folder or a cross-validation's folder (every ``r*_fold*`` run in
it), as for ``benchmarks/mask_threshold_sweep.py``. Each run's final model (``model_final.pth``)
is evaluated on its test set (``DATASETS.TEST[0]``, the held-out fold of a cross-validation) with
the settings it was trained with, then once per ``--setting`` (``KEY VALUE ...`` overrides of
its ``config.yaml``: test-time keys such as NMS and score thresholds, test sizes, detections per
image), by the project's ``COCOEvaluator`` in a scratch folder, so the run's own files stay as
they are. Prints, per setting, the mean AP over the runs and its paired difference from the
run's own settings with a 95% t-interval over the runs.

A setting chosen on the runs' own test images is tuned on them: choose on one cross-validation
and confirm on another, or report it as a sweep.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.evaluation import inference_on_dataset  # noqa: E402

from benchmarks.mask_threshold_sweep import run_dirs  # noqa: E402
from benchmarks.tables import print_and_write  # noqa: E402
from instseg_d2.engine.defaults import setup_inference_config  # noqa: E402
from instseg_d2.engine.trainer import Trainer  # noqa: E402
from instseg_d2.evaluation.intervals import t_interval  # noqa: E402
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402
from instseg_d2.utils.errors import UserError  # noqa: E402

__all__ = ["AS_TRAINED", "METRICS", "evaluate_run", "markdown", "sweep"]

AS_TRAINED = "as trained"
METRICS = (("bbox", "AP"), ("bbox", "AP75"), ("segm", "AP"), ("segm", "AP75"))


def evaluate_run(run: Path, opts: list[str]) -> dict[str, float]:
    """``{"bbox AP": ..., ...}`` (:data:`METRICS` the model has) of ``run``'s final model on its
    test set, its config overridden by ``opts``."""
    weights = run / "model_final.pth"
    if not weights.is_file():
        raise UserError(f"{run}: no model_final.pth (the run has not finished)")
    cfg = setup_inference_config(run / "config.yaml", list(opts), weights)
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(str(weights))
    model.eval()
    dataset = cfg.DATASETS.TEST[0]
    # Not the run's inference/ folder: its final evaluation's files stay as they are.
    with tempfile.TemporaryDirectory(prefix="instseg_sweep_") as scratch:
        evaluator = Trainer.build_evaluator(cfg, dataset, output_folder=scratch)
        metrics = inference_on_dataset(model, Trainer.build_test_loader(cfg, dataset), evaluator)
    return {f"{task} {name}": float(metrics[task][name])
            for task, name in METRICS if task in metrics}  # fmt: skip


def sweep(runs: list[Path], settings: list[list[str]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{setting: {run label: metrics}}``: :data:`AS_TRAINED` first, then each of ``settings``
    (a list of ``KEY VALUE ...`` overrides each)."""
    unique = len({r.name for r in runs}) == len(runs)
    labels = [r.name if unique else f"{r.parent.name}/{r.name}" for r in runs]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for setting in [[], *settings]:
        name = " ".join(setting) or AS_TRAINED
        results[name] = {
            label: evaluate_run(run, setting) for label, run in zip(labels, runs, strict=True)
        }
    return results


def _difference_text(values: list[float]) -> str:
    interval = t_interval(values)
    if interval.low is None:
        return f"{interval.mean:+.2f}"
    return f"{interval.mean:+.2f} ({interval.low:+.2f} to {interval.high:+.2f})"


def markdown(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """One row per setting: mean of each metric over the runs, the paired differences of bbox
    and segm AP from :data:`AS_TRAINED`, and each run's bbox AP."""
    base = results[AS_TRAINED]
    runs = list(base)
    keys = [k for k in (f"{t} {n}" for t, n in METRICS) if k in base[runs[0]]]
    compared = [k for k in ("bbox AP", "segm AP") if k in keys]
    lines = [
        "| setting | " + " | ".join(f"mean {k}" for k in keys) + " | "
        + " | ".join(f"{k} minus as trained (95%)" for k in compared) + " | bbox AP per run |",
        "|---" * (2 + len(keys) + len(compared)) + "|",
    ]  # fmt: skip
    for name, by_run in results.items():
        means = [sum(by_run[r][k] for r in runs) / len(runs) for k in keys]
        diffs = ["-" if name == AS_TRAINED else
                 _difference_text([by_run[r][k] - base[r][k] for r in runs]) for k in compared]  # fmt: skip
        per_run = ", ".join(f"{by_run[r]['bbox AP']:.1f}" for r in runs)
        lines.append(f"| {name} | " + " | ".join(f"{m:.2f}" for m in means) + " | "
                     + " | ".join(diffs) + f" | {per_run} |")  # fmt: skip
    return "\n".join(lines) + f"\n\n{len(runs)} run(s): {', '.join(runs)}\n"


def get_parser() -> ToolArgumentParser:
    p = ToolArgumentParser(__doc__.split("\n\n")[0], config_file=False,
                           output="also write the table here (Markdown)", output_required=False)  # fmt: skip
    p.add_argument("runs", nargs="+", metavar="RUN", help="run or cross-validation folder")
    p.add_argument("--setting", nargs="+", action="append", default=[], metavar="KEY VALUE",
                   help="config overrides evaluated together; repeat for more settings")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    odd = [" ".join(s) for s in args.setting if len(s) % 2]
    if odd:
        raise UserError(f"--setting takes KEY VALUE pairs; not pairs: {odd}")
    results = sweep(run_dirs(args.runs), args.setting)
    text = markdown(results)
    print_and_write(text, args.output)


if __name__ == "__main__":
    run_tool(main)
