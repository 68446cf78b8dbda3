#!/usr/bin/env python
"""Where the CPU recipe's training step spends its time: ``torch.profiler`` over a few
``Trainer.run_step`` calls, self time grouped by kind of operator.

    python benchmarks/profile_step.py --warmup 100 --steps 3 --output output/benchmark/profile_step.md
    python benchmarks/profile_step.py --variant "recipe before issue 15" --warmup 100 --steps 3

The step is the one ``tools/benchmark.py --sections recipe`` times (``benchmarks/recipe.py``:
the recipe's config, its training mapper's batches grouped as the Trainer groups them, our
``Trainer.run_step`` with the LR schedule), so the profile explains that section's rows. Untimed
warm-up steps train the model first: from random weights the mask head runs on few RoIs. Self
time is the time of an operator minus its children, on the thread that called it; what an
operator's own worker threads do is inside its self time. The groups are coarse on purpose: they
name where a speed-up would have to come from. A third table splits ``aten::copy_`` by the
operators that called it and the shape copied (4-D spatial sizes as ``*``: they vary with the
batch), which tells layout copies of activations from dtype casts of weights.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
import torch  # noqa: E402
from torch.autograd.profiler_util import FunctionEvent  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from benchmarks.recipe import (  # noqa: E402
    RECIPE_CONFIG,
    VARIANTS,
    mapped_epochs,
    recipe_batches,
    recipe_cfg,
)
from benchmarks.runners import BenchSettings  # noqa: E402
from benchmarks.tables import print_and_write  # noqa: E402
from benchmarks.timing import machine_info  # noqa: E402
from benchmarks.user_paths import OursTrainStep  # noqa: E402
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402

# First matching group wins; patterns are substrings of ATen operator names.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("convolution (forward, backward)", ("conv", "mkldnn_convolution")),
    ("GroupNorm (forward, backward)", ("group_norm",)),
    ("RoIAlign (embedding_bag, taps)", ("embedding_bag", "roi_align")),
    ("linear layers (matmul)", ("addmm", "aten::mm", "aten::bmm", "matmul", "linear")),
    ("copies and dtype casts", ("copy_", "aten::to", "_to_copy", "contiguous", "clone")),
    (
        "element-wise (add, mul, activations)",
        ("aten::add", "aten::mul", "aten::sub", "aten::div", "relu", "threshold", "sigmoid"),
    ),
    ("optimizer (SGD, foreach)", ("_foreach", "sgd")),
    ("reductions, indexing, sorting", ("sum", "mean", "index", "sort", "topk", "gather", "cat")),
)


def group_of(op_name: str) -> str:
    """The :data:`GROUPS` name of an ATen operator, or "other"."""
    for group, patterns in GROUPS:
        if any(p in op_name for p in patterns):
            return group
    return "other"


# Operators that only forward a copy to aten::copy_; the caller named is the first other one.
_COPY_WRAPPERS = ("aten::copy_", "aten::_to_copy", "aten::to", "aten::clone", "aten::contiguous")


def copy_caller(event: FunctionEvent) -> tuple[str, str]:
    """(calling operators, shape) of one ``aten::copy_`` profiler event: the wrappers it went
    through up to the first other operator ("Python" when none), and the copied shape with the
    spatial sizes of a 4-D tensor as ``*``."""
    chain, parent = [], event.cpu_parent
    while parent is not None:
        chain.append(parent.name)
        if parent.name not in _COPY_WRAPPERS:
            break
        parent = parent.cpu_parent
    else:
        chain.append("Python")
    shape = list(event.input_shapes[0]) if event.input_shapes and event.input_shapes[0] else []
    dims = [str(d) for d in shape[:2]] + ["*"] * (len(shape) - 2) if len(shape) == 4 else shape
    return " < ".join(chain), "[" + ", ".join(map(str, dims)) + "]"


def profile_recipe_step(
    variant: str,
    steps: int,
    warmup: int = 1,
    config_file: str = RECIPE_CONFIG,
    opts: list[str] | None = None,
) -> tuple[dict[str, float], list[tuple[str, float]], list[tuple[str, str, float]]]:
    """Self CPU seconds per step by group, of the top operators, and of ``aten::copy_`` by
    caller and shape (:func:`copy_caller`), over ``steps`` profiled steps after ``warmup``
    unprofiled ones."""
    cfg = recipe_cfg(variant, config_file, opts)
    settings = BenchSettings()
    batches = recipe_batches(cfg, mapped_epochs(cfg, settings), steps + warmup)
    torch.manual_seed(settings.seed)
    step = OursTrainStep(cfg, batches, schedule=True)
    for _ in range(warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    by_copy: dict[tuple[str, str], float] = defaultdict(float)
    for e in prof.events():
        if e.name == "aten::copy_":
            by_copy[copy_caller(e)] += e.self_cpu_time_total / 1e6 / steps
    copies = [(c, shape, t) for (c, shape), t in sorted(by_copy.items(), key=lambda kv: -kv[1])]
    events = prof.key_averages()
    by_group: dict[str, float] = defaultdict(float)
    by_op: dict[str, float] = defaultdict(float)
    for e in events:
        if not e.key.startswith("aten::"):
            continue  # Python-level record_function ranges and profiler bookkeeping
        seconds = e.self_cpu_time_total / 1e6 / steps
        by_group[group_of(e.key)] += seconds
        by_op[e.key] += seconds
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:12]
    return dict(sorted(by_group.items(), key=lambda kv: -kv[1])), top, copies[:10]


def markdown(
    variant: str,
    by_group: dict[str, float],
    top: list[tuple[str, float]],
    copies: Sequence[tuple[str, str, float]] = (),
) -> str:
    """The tables of the report: groups with their share, the top operators, the copies."""
    total = sum(by_group.values())
    lines = [
        f"Self time of ATen operators per training step, `{variant}`, {total:.3f} s in all",
        "",
        "| group | s per step | share |",
        "|---|---|---|",
    ]
    lines += [f"| {g} | {s:.3f} | {100 * s / total:.0f}% |" for g, s in by_group.items()]
    lines += ["", "| operator | s per step | share |", "|---|---|---|"]
    lines += [f"| `{op}` | {s:.3f} | {100 * s / total:.0f}% |" for op, s in top]
    if copies:
        lines += [
            "",
            "| `aten::copy_` called by | shape | s per step | share |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| `{c}` | {shape} | {s:.3f} | {100 * s / total:.0f}% |" for c, shape, s in copies
        ]
    return "\n".join(lines) + "\n"


def get_parser() -> ToolArgumentParser:
    p = ToolArgumentParser(
        description=__doc__.split("\n\n")[0],
        config_file="optional",
        output="also write the tables here (Markdown)",
        output_required=False,
    )
    p.add_argument("--variant", default=VARIANTS[0], choices=VARIANTS)
    p.add_argument("--steps", type=int, default=3, help="profiled steps (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="training steps before (default 1)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: PyTorch's choice)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    by_group, top, copies = profile_recipe_step(
        args.variant,
        args.steps,
        warmup=args.warmup,
        config_file=args.config_file or RECIPE_CONFIG,
        opts=args.opts,
    )
    text = markdown(args.variant, by_group, top, copies)
    machine = machine_info()
    text += "\nMachine: " + ", ".join(f"{k} {v}" for k, v in machine.items()) + "\n"
    print_and_write(text, args.output)


if __name__ == "__main__":
    run_tool(main)
