#!/usr/bin/env python
"""Ablation of copy-paste, LSJ, photometric jitter, EMA and TTA on a training recipe.

Trains ``tools/train_net.py`` with each addition alone, then all together, once per seed; the
baseline and the all-in models are also evaluated with test-time augmentation (``--eval-only``
with ``TEST.AUG.ENABLED True``). Writes ``ablation.md`` (the table and the command) and
``ablation.json`` (every run) into ``--output``. Each run has its folder
``<output>/<variant>/seed<k>``; a run whose ``final_metrics.json`` exists is reused, so an
interrupted ablation continues where it stopped.

    python benchmarks/augmentation_ablation.py --config-file CPU_CONFIG --output output/ablation
    python benchmarks/augmentation_ablation.py --config-file CPU_CONFIG --output output/abl_lsj \\
        --variants baseline lsj --seeds 0 1 2 INSTSEG.AUG.LSJ.SIZE 384
    python benchmarks/augmentation_ablation.py --config-file CPU_CONFIG --output output/ablation_smoke --smoke

where CPU_CONFIG is configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml; trailing
``KEY VALUE`` overrides apply to every run, ``--smoke`` makes the runs tiny (for the tests).

Columns: bbox/segm AP on the config's test set, mean ± sample standard deviation over seeds;
s/it, the median of metrics.json's ``time`` (training step, data wait included); wall time of
the whole run (periodic evaluations included). TTA rows give the seconds per image of plain and
TTA inference from Detectron2's evaluation log. Run it on quiet cores: timings of runs that share
cores with other work are not comparable.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
from benchmarks.timing import machine_info  # noqa: E402
from instseg_d2.config import load_config  # noqa: E402
from instseg_d2.engine.metrics_file import metric_series  # noqa: E402
from instseg_d2.utils.atomic import atomic_write  # noqa: E402
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402
from instseg_d2.utils.errors import UserError  # noqa: E402

# Each variant's overrides on top of the config; "all" is the union of the others.
ADDITIONS = {
    "copy_paste": ("INSTSEG.COPY_PASTE.ENABLED", "True"),
    "lsj": ("INSTSEG.AUG.LSJ.ENABLED", "True"),
    "photometric": ("INSTSEG.AUG.PHOTOMETRIC.ENABLED", "True"),
    "ema": ("INSTSEG.EMA.ENABLED", "True"),
}
VARIANTS = {"baseline": (), **ADDITIONS, "all": tuple(v for o in ADDITIONS.values() for v in o)}
TTA_OF = ("baseline", "all")  # trained variants that are also evaluated with TTA
# Tiny runs for the smoke test: 10 training / 5 validation images at 128 px, 2 iterations.
SMOKE_OPTS = (
    "DATASETS.TRAIN", "('pennfudan_train_mini',)", "DATASETS.TEST", "('pennfudan_val_mini',)",
    "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "224",
    "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "224",
    "TEST.AUG.MIN_SIZES", "(112, 128)", "TEST.AUG.MAX_SIZE", "224",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "200",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "20",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)",
    "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "100", "TEST.EVAL_PERIOD", "0",
    "DATALOADER.NUM_WORKERS", "0", "INSTSEG.VAL_LOSS", "False", "INSTSEG.VALIDATE_DATA", "False",
    "INSTSEG.LOG_PERIOD", "1", "INSTSEG.REPORT", "False",
)  # fmt: skip
INFERENCE_TIME = re.compile(r"Total inference time: \S+ \(([0-9.]+) s / iter per device")


class AblationError(UserError, RuntimeError):
    """A training or evaluation run of the ablation failed; the message names its log."""


def get_parser() -> ToolArgumentParser:
    parser = ToolArgumentParser(
        __doc__.split("\n\n")[0], output="folder for the runs, ablation.md and ablation.json"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="SEED of each run")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        metavar="NAME", help=f"of {', '.join(VARIANTS)} (default: all)")  # fmt: skip
    parser.add_argument("--no-tta", action="store_true", help="skip the TTA evaluations")
    parser.add_argument("--smoke", action="store_true", help="tiny runs (tests only)")
    return parser


def _run(command: list[str], run_dir: Path) -> float:
    """Run ``command`` (output to run_dir/stdout.txt); its wall time in seconds."""
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(run_dir / "stdout.txt", "w", encoding="utf-8") as log:
        proc = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise AblationError(f"run failed (exit {proc.returncode}); see {run_dir / 'stdout.txt'}")
    return seconds


def _final_ap(run_dir: Path, dataset_suffix: str = "") -> dict[str, float | None]:
    """AP of the run's first test set (``dataset_suffix`` "_TTA": its TTA evaluation)."""
    with open(run_dir / "final_metrics.json", encoding="utf-8") as f:
        final = json.load(f)
    name = load_config(run_dir / "config.yaml").DATASETS.TEST[0] + dataset_suffix
    tasks = final["datasets"][name]
    return {f"{task}_AP": tasks.get(task, {}).get("AP") for task in ("bbox", "segm")}


def train(args, variant: str, seed: int) -> dict:
    run_dir = Path(args.output) / variant / f"seed{seed}"
    opts = [*(SMOKE_OPTS if args.smoke else ()), *VARIANTS[variant], *args.opts]
    command = [sys.executable, "tools/train_net.py", "--config-file", args.config_file,
               *opts, "SEED", str(seed), "OUTPUT_DIR", str(run_dir)]  # fmt: skip
    done = (run_dir / "final_metrics.json").is_file()
    wall = None if done else _run(command, run_dir)
    step_times = [t for _, t in metric_series(run_dir / "metrics.json", "time")]
    return {"variant": variant, "seed": seed, "command": shlex.join(command), "reused": done,
            "wall_s": wall, "s_per_it": statistics.median(step_times) if step_times else None,
            **_final_ap(run_dir)}  # fmt: skip


def evaluate_tta(args, variant: str, seed: int) -> dict:
    trained = Path(args.output) / variant / f"seed{seed}"
    run_dir = Path(args.output) / f"{variant}+tta" / f"seed{seed}"
    opts = [*(SMOKE_OPTS if args.smoke else ()), *VARIANTS[variant], *args.opts]
    command = [sys.executable, "tools/train_net.py", "--config-file", args.config_file,
               "--eval-only", *opts, "TEST.AUG.ENABLED", "True", "INSTSEG.REPORT", "False",
               "MODEL.WEIGHTS", str(trained / "model_final.pth"),
               "OUTPUT_DIR", str(run_dir)]  # fmt: skip
    done = (run_dir / "final_metrics.json").is_file()
    wall = None if done else _run(command, run_dir)
    times = INFERENCE_TIME.findall((run_dir / "log.txt").read_text(encoding="utf-8"))
    plain, tta = (float(t) for t in times[-2:]) if len(times) >= 2 else (None, None)
    return {"variant": f"{variant}+tta", "seed": seed, "command": shlex.join(command),
            "reused": done, "wall_s": wall, "s_per_img_plain": plain, "s_per_img_tta": tta,
            **_final_ap(run_dir, "_TTA")}  # fmt: skip


def _mean_std(values: list) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    spread = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.1f}{spread}"


def _median(values: list, fmt: str) -> str:
    values = [v for v in values if v is not None]
    return format(statistics.median(values), fmt) if values else "-"


def table(runs: list[dict]) -> str:
    lines = ["| variant | runs | bbox AP | segm AP | s/it | wall min | s/img plain -> TTA |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for variant in dict.fromkeys(r["variant"] for r in runs):
        rows = [r for r in runs if r["variant"] == variant]
        walls = [r["wall_s"] / 60 if r["wall_s"] is not None else None for r in rows]
        per_image = "-"
        if variant.endswith("+tta"):
            plain = _median([r["s_per_img_plain"] for r in rows], ".3f")
            per_image = f"{plain} -> {_median([r['s_per_img_tta'] for r in rows], '.3f')}"
        lines.append(
            f"| {variant} | {len(rows)} | {_mean_std([r['bbox_AP'] for r in rows])} | "
            f"{_mean_std([r['segm_AP'] for r in rows])} | "
            f"{_median([r.get('s_per_it') for r in rows], '.2f')} | {_median(walls, '.1f')} | "
            f"{per_image} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    runs = []
    for variant in args.variants:
        for seed in args.seeds:
            runs.append(train(args, variant, seed))
            print(f"{variant} seed {seed}: {runs[-1]}", flush=True)
    for variant in [] if args.no_tta else [v for v in args.variants if v in TTA_OF]:
        for seed in args.seeds:
            runs.append(evaluate_tta(args, variant, seed))
            print(f"{variant}+tta seed {seed}: {runs[-1]}", flush=True)
    machine = machine_info()
    command = shlex.join(["python", "benchmarks/augmentation_ablation.py", *(argv or sys.argv[1:])])
    text = (f"# Augmentation ablation\n\n{args.config_file}, seeds {args.seeds}; CPU: "
            f"{machine['cpu']}, {machine['torch_threads']} torch threads.\n\n{table(runs)}\n\n"
            f"Command: `{command}`\n")  # fmt: skip
    atomic_write(output / "ablation.md", text)
    summary = {"command": command, "machine": machine, "runs": runs}
    atomic_write(output / "ablation.json", json.dumps(summary, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
