"""tools/benchmark.py: the quick smoke run works end to end; the pieces it reports are right."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from benchmarks.detection_match import Detections, compare_detections
from benchmarks.tables import format_table, markdown_table
from benchmarks.timing import PeakMemory, summarize
from instseg_d2.engine.predictor import BatchPredictor
from instseg_d2.engine.trainer import Trainer


@pytest.fixture(scope="module")
def benchmark_tool(repo_root):
    spec = importlib.util.spec_from_file_location(
        "benchmark_tool", repo_root / "tools/benchmark.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmark_tool"] = module
    spec.loader.exec_module(module)
    return module


def _count_calls(monkeypatch, cls, name: str) -> list:
    calls: list = []
    original = getattr(cls, name)

    def counted(self, *args, **kwargs):
        calls.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, counted)
    return calls


def test_quick_smoke_run_writes_every_section(benchmark_tool, shared_data, tmp_path, monkeypatch):
    # Timing is not asserted (shared, noisy CPUs); that every section runs and reports is, and
    # that our rows come from the user paths.
    predictor_calls = _count_calls(monkeypatch, BatchPredictor, "__call__")
    run_steps = _count_calls(monkeypatch, Trainer, "run_step")
    out = tmp_path / "bench.json"
    results = benchmark_tool.main(["--quick", "--smoke", "--output", str(out)])
    saved = json.loads(out.read_text())
    assert saved["preset"] == "smoke"
    assert (tmp_path / "bench.md").read_text().count("| torchvision fp32 |") == 2

    inference = saved["inference"]["rows"]
    assert set(inference) >= {"torchvision fp32", "ours fp32", "ours fp32 optimized"}
    assert inference["torchvision fp32"]["vs_torchvision"] == 1.0
    for row in inference.values():
        assert row["median_s"] > 0 and row["images_per_s"] > 0 and row["rss_peak_mb"] > 0
    # Same weights and settings: both sides find the same number of instances.
    assert inference["ours fp32"]["detections_per_image"] == pytest.approx(
        inference["torchvision fp32"]["detections_per_image"], abs=1
    )
    exact = saved["inference"]["agreement_with_ours_fp32"]["ours fp32 optimized"]
    assert exact["matched_fraction"] == 1.0 and exact["max_box_abs_diff"] < 1e-2
    # One BatchPredictor call per image (1, after a warm-up call) for each of our variants.
    ours_inference = [name for name in inference if name.startswith("ours")]
    assert len(predictor_calls) == 2 * len(ours_inference)
    assert len({id(p) for p in predictor_calls}) == len(ours_inference)

    train = saved["train"]["rows"]
    assert set(train) >= {"torchvision fp32", "ours fp32", "ours fp32 optimized"}
    for row in train.values():
        assert row["images_per_s"] > 0 and row["first_loss"] == row["first_loss"]  # not NaN
    # One Trainer.run_step per timed step (1, no warm-up) for each of our variants, at the LR
    # torchvision's steps use (no LR warm-up: the schedule's hook does not run); then one for
    # each variant of the CPU recipe, at the recipe's LR.
    recipe = saved["recipe"]["rows"]
    ours_train = [name for name in train if name.startswith("ours")]
    assert len(run_steps) == len({id(t) for t in run_steps}) == len(ours_train) + len(recipe)
    assert {t.optimizer.param_groups[0]["lr"] for t in run_steps[: len(ours_train)]} == {0.002}
    # The recipe's variants step its LR schedule: one step into the warm-up.
    recipe_lrs = {t.optimizer.param_groups[0]["lr"] for t in run_steps[len(ours_train) :]}
    assert len(recipe_lrs) == 1 and 0 < recipe_lrs.pop() < 0.02
    assert recipe["recipe before issue 15"]["vs_before"] == 1.0
    for row in recipe.values():
        assert row["mean_s"] > 0 and row["cpu_s"] > 0 and row["first_loss"] == row["first_loss"]
        assert row["padded_vs_image_pixels"] >= 1.0
    # The variants are the recipe's model with and without the keys, in NCHW layout, and the
    # recipe's model as issue 15 found it (256-channel FPN), built from its config.
    models = {id(t): t.model for t in run_steps[len(ours_train) :]}.values()
    assert sorted(type(m.backbone.bottom_up.stem.conv1.norm).__name__ for m in models) == [
        "GroupNorm", "GroupNorm", "NCHWGroupNorm", "NCHWGroupNorm"
    ]  # fmt: skip
    weights = [m.backbone.bottom_up.stem.conv1.weight for m in models]
    assert sum(not w.is_contiguous() for w in weights) == 3  # channels-last: all but NCHW's
    assert sorted(m.backbone.output_shape()["p2"].channels for m in models)[-1] == 256
    if "torchvision channels-last+bf16" in inference:  # CPUs with native bf16
        assert "torchvision channels-last+bf16" in train
        assert inference["torchvision channels-last+bf16"]["vs_tv_tricks"] == 1.0

    assert saved["data"]["rows"]["ours InstSegDatasetMapper"]["images_per_s"] > 0
    assert saved["eval"]["rows"]["ours fp32"]["evaluate_s"] >= 0
    assert results["total_s"] > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--smoke"], "--smoke is a variant of --quick"),
        (["--sections", "inference,gpu"], "unknown ['gpu']"),
        (["--sections", "eval"], "add 'inference'"),
        (["--num-images", "0"], "at least 1"),
    ],
)
def test_bad_arguments_exit_with_a_message(benchmark_tool, argv, message):
    args = benchmark_tool.get_parser().parse_args(argv)
    with pytest.raises(SystemExit, match=message.replace("[", r"\[").replace("]", r"\]")):
        benchmark_tool.settings_from_args(args)


def test_tables_show_each_variant_and_ratio():
    results = {
        "inference": {
            "title": "t",
            "rows": {
                "torchvision fp32": {"median_s": 2.0, "images_per_s": 0.5, "vs_torchvision": 1.0},
                "ours fp32 optimized": {
                    "median_s": 1.0,
                    "images_per_s": 1.0,
                    "vs_torchvision": 2.0,
                },
            },
        }
    }
    text = format_table(results)
    assert "ours fp32 optimized" in text and "2.0" in text
    md = markdown_table(results)
    assert "| ours fp32 optimized | 1.0 | 1.0 | 2.0 |" in md


def test_summarize_median_and_p90():
    stats = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats["median_s"] == 3.0
    assert 4.0 < stats["p90_s"] < 100.0
    assert stats["n"] == 5


def _current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_covers_the_rss_reached_inside_the_block():
    with PeakMemory("cpu").measure() as mem:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        inside = _current_rss_mb()
        del block
    assert mem.rss_is_phase
    assert mem.rss_peak_mb >= inside - 1.0
    assert mem.as_dict()["cuda_peak_allocated_mb"] is None


def _dets(boxes, scores):
    return Detections(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores))


def test_compare_detections_matches_regardless_of_order():
    a = _dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8])
    b = _dets([[20, 20, 40, 40.5], [0, 0, 10, 10]], [0.8, 0.9])
    agreement = compare_detections([a], [b])
    assert agreement.num_matched == 2 and agreement.matched_fraction == 1.0
    assert agreement.max_box_abs_diff == pytest.approx(0.5)


def test_compare_detections_reports_missing_and_moved_boxes():
    a = _dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8])
    b = _dets([[0, 0, 10, 10], [60, 60, 80, 80]], [0.9, 0.8])
    agreement = compare_detections([a], [b])
    assert agreement.num_matched == 1 and agreement.matched_fraction == 0.5
    with pytest.raises(ValueError, match="1 reference images but 2"):
        compare_detections([a], [b, b])


def test_profile_of_the_recipe_step_groups_every_operator(benchmark_tool, pennfudan_data):
    """benchmarks/profile_step.py: the groups add up to all ATen self time, convolutions are
    found, and the top operators are the largest and belong to the groups' total."""
    from benchmarks.profile_step import group_of, profile_recipe_step

    assert group_of("aten::convolution_backward") == "convolution (forward, backward)"
    assert group_of("aten::native_group_norm_backward") == "GroupNorm (forward, backward)"
    assert group_of("aten::some_new_op") == "other"
    opts = [*benchmark_tool.PRESETS["smoke"][3], *benchmark_tool.RECIPE_SMOKE_OPTS]
    by_group, top, copies = profile_recipe_step(
        "recipe as configured", steps=1, warmup=0, opts=opts
    )
    assert by_group["convolution (forward, backward)"] > 0
    assert list(by_group.values()) == sorted(by_group.values(), reverse=True)
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    assert sum(s for _, s in top) <= sum(by_group.values()) + 1e-9
    # The copies table splits aten::copy_ (at most its own time, which the copies group holds
    # whether or not aten::copy_ is among the top operators) by the operator that asked for the
    # copy: the channels-last model's NCHW GroupNorms copy 4-D maps of 4 images.
    copy_total = by_group["copies and dtype casts"]
    assert copies and sum(s for *_, s in copies) <= copy_total + 1e-9
    if "aten::copy_" in dict(top):
        assert sum(s for *_, s in copies) <= dict(top)["aten::copy_"] + 1e-9
    assert all(not c.startswith("aten::copy_") for c, _, _ in copies)
    callers = {c for c, shape, _ in copies if shape.endswith("*, *]")}
    assert any("native_group_norm" in c or "contiguous" in c for c in callers), callers
