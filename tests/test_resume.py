"""Interruption and divergence: a real ``kill -9`` then ``--resume``; a NaN loss stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from detectron2.solver import build_lr_scheduler

from instseg_d2.config import load_config
from instseg_d2.engine.metrics_file import iter_metrics


def checkpoint_iteration(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["iteration"])


def training_iterations(output_dir: Path) -> list[int]:
    return [r["iteration"] for r in iter_metrics(str(output_dir / "metrics.json"))
            if "total_loss" in r]  # fmt: skip


def expected_lrs(cfg, n: int) -> list[float]:
    """The LR of iterations 0..n-1 of an uninterrupted run, from Detectron2's own scheduler."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(n):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    return lrs


@pytest.mark.slow  # ~60 s on 2 idle cores: a killed run and its resumed run
def test_kill_9_then_resume_continues_from_the_last_checkpoint(
    train_net_command, repo_root, tmp_path
):
    max_iter = 8
    opts = ("SOLVER.MAX_ITER", str(max_iter), "SOLVER.STEPS", "(5,)", "SOLVER.WARMUP_ITERS", "4",
            "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "4")  # fmt: skip
    proc = subprocess.Popen(
        train_net_command(tmp_path, *opts),
        cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 400
    try:
        # Kill once a checkpoint exists and training has logged an iteration after it.
        while True:
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint within the time limit"
            tag = tmp_path / "last_checkpoint"
            if tag.exists():
                saved = checkpoint_iteration(tmp_path / tag.read_text())
                done = training_iterations(tmp_path)
                if done and done[-1] > saved and done[-1] < max_iter - 2:
                    break
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    resume_from = checkpoint_iteration(tmp_path / (tmp_path / "last_checkpoint").read_text())
    before = training_iterations(tmp_path)
    assert before[-1] > resume_from  # the killed run had gone past the checkpoint

    resumed = subprocess.run(
        train_net_command(tmp_path, *opts, flags=("--resume",)),
        cwd=repo_root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    started = re.search(r"Starting training from iteration (\d+)", resumed.stdout + resumed.stderr)
    assert started and int(started.group(1)) == resume_from + 1

    rows = list(iter_metrics(str(tmp_path / "metrics.json")))
    iterations = [r["iteration"] for r in rows]
    assert iterations == sorted(set(iterations)), "metrics.json holds more than one history"
    assert training_iterations(tmp_path) == list(range(max_iter))
    # The scheduler state came back: the LR of every iteration is that of an uninterrupted run.
    cfg = load_config(str(tmp_path / "config.yaml"))
    lrs = {r["iteration"]: r["lr"] for r in rows if "lr" in r}
    assert [lrs[i] for i in range(max_iter)] == pytest.approx(expected_lrs(cfg, max_iter))
    final = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == max_iter - 1
    assert final["trainer"]["_trainer"]["optimizer"]["state"], "optimizer state not saved"
    assert not list(tmp_path.glob(".*.tmp")), "temporary checkpoint files left behind"


def test_nan_loss_stops_with_a_message_and_keeps_the_last_checkpoint(
    train_net_command, repo_root, tmp_path
):
    # Iteration 0 runs at BASE_LR * 1e-9 (finite, checkpointed); iteration 1 at BASE_LR / 2
    # blows the weights up, so a later loss is NaN/Inf.
    proc = subprocess.run(
        train_net_command(
            tmp_path, "SOLVER.BASE_LR", "1e9", "SOLVER.WARMUP_ITERS", "2",
            "SOLVER.WARMUP_FACTOR", "1e-9", "SOLVER.MAX_ITER", "6", "SOLVER.STEPS", "(5,)",
            "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "0",
        ),
        cwd=repo_root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "training diverged (NaN/Inf loss)" in proc.stderr
    assert "Traceback" not in proc.stderr
    named = re.search(r"The last checkpoint saved before it is (\S+\.pth)", proc.stderr)
    assert named, proc.stderr[-2000:]
    checkpoint = Path(named.group(1))
    assert checkpoint == tmp_path / (tmp_path / "last_checkpoint").read_text()
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "model_final.pth").exists()
