"""benchmarks/augmentation_ablation.py in its tiny smoke mode: every addition at once in one
real training run (copy-paste, LSJ, photometric jitter, EMA, TTA at the end), then its TTA
evaluation, and the table."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from instseg_d2.engine.metrics_file import iter_metrics

CPU_CONFIG = "configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml"


@pytest.fixture(scope="module")
def ablation(pennfudan_data, repo_root, tmp_path_factory):
    output = tmp_path_factory.mktemp("ablation")
    command = [sys.executable, "benchmarks/augmentation_ablation.py", "--config-file", CPU_CONFIG,
               "--output", str(output), "--smoke", "--variants", "all", "--seeds", "0",
               "TEST.AUG.ENABLED", "True"]  # fmt: skip
    proc = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return output


@pytest.mark.slow  # one tiny training run and one TTA evaluation: ~1 min on 2 idle cores
def test_ablation_writes_the_table_and_its_command(ablation):
    table = (ablation / "ablation.md").read_text(encoding="utf-8")
    assert "| all | 1 |" in table and "| all+tta | 1 |" in table
    assert "Command: `python benchmarks/augmentation_ablation.py --config-file" in table
    runs = json.loads((ablation / "ablation.json").read_text(encoding="utf-8"))["runs"]
    assert [r["variant"] for r in runs] == ["all", "all+tta"]
    assert all(isinstance(r["bbox_AP"], float) and isinstance(r["segm_AP"], float) for r in runs)
    assert runs[1]["s_per_img_tta"] > 0 and runs[1]["s_per_img_plain"] > 0


@pytest.mark.slow
def test_training_with_every_addition_averages_weights_and_ends_with_tta(ablation):
    run = ablation / "all" / "seed0"
    last_eval = [r for r in iter_metrics(str(run / "metrics.json")) if "bbox/AP" in r][-1]
    assert "bbox_TTA/AP" in last_eval and "segm_TTA/AP" in last_eval
    final = json.loads((run / "final_metrics.json").read_text(encoding="utf-8"))
    assert set(final["datasets"]) == {"pennfudan_val_mini", "pennfudan_val_mini_TTA"}
    checkpoint = torch.load(run / "model_final.pth", map_location="cpu", weights_only=True)
    assert int(checkpoint["ema"]["n_averaged"]) == 2  # one update per iteration (MAX_ITER 2)
    # "model" is the average, "ema" the training weights: after two steps they differ.
    weights = [k for k, v in checkpoint["model"].items() if v.is_floating_point()]
    assert any(
        not torch.equal(checkpoint["model"][k], checkpoint["ema"][f"module.{k}"]) for k in weights
    )
