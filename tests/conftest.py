"""Shared test set-up: where the real datasets are, the tiny training run, no network.

The real datasets (Penn-Fudan, balloon) are read from ``$DETECTRON2_DATASETS`` when it is set,
else from ``../shared/data`` beside the checkout. A test that needs one of them takes its fixture
(``pennfudan_data``, ``balloon_data``, or ``shared_data`` for both) and is skipped, with the
reason, when that dataset is missing, except where the data is expected
(``INSTSEG_D2_REQUIRE_DATA=1``, set by ``.ci/run``): there a missing dataset fails the test.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("DETECTRON2_DATASETS") or REPO_ROOT.parent / "shared" / "data")
REQUIRE_DATA = os.environ.get("INSTSEG_D2_REQUIRE_DATA", "") not in ("", "0")

# Set before any test imports instseg_d2.data, which registers the builtin datasets from it.
os.environ["DETECTRON2_DATASETS"] = str(DATA_ROOT)
# Two cores: keep torch from oversubscribing them when tests run subprocesses.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def _dataset(folder: str) -> Path:
    if not (DATA_ROOT / folder).is_dir():
        message = f"{folder} not found under {DATA_ROOT} (DETECTRON2_DATASETS)"
        if REQUIRE_DATA:
            pytest.fail(f"{message}, and INSTSEG_D2_REQUIRE_DATA is set")
        pytest.skip(message)
    return DATA_ROOT


@pytest.fixture(scope="session")
def pennfudan_data() -> Path:
    """The dataset root, which holds PennFudanPed/."""
    return _dataset("PennFudanPed")


@pytest.fixture(scope="session")
def balloon_data() -> Path:
    """The dataset root, which holds balloon/."""
    return _dataset("balloon")


@pytest.fixture(scope="session")
def shared_data(pennfudan_data, balloon_data) -> Path:
    """The dataset root, for tests that need both datasets."""
    return DATA_ROOT


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: would need DNS, i.e. the network


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No test reaches the network: a connection to anything but this machine fails at once."""
    connect = socket.socket.connect

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise OSError(f"tests may not reach the network (connect to {address!r})")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


# --- Training fixtures (training helper) -------------------------------------------------------
# A tiny but real run of tools/train_net.py: the CPU config (R18-FPN, GroupNorm, from scratch) on
# 10 PennFudan training images at 128 px, 4 iterations, evaluated on 5 validation images after
# iterations 2 and 4. SCORE_THRESH_TEST 0 keeps the untrained model's low-score detections so
# that AP is a number (not NaN) and model_best.pth gets written.
CPU_CONFIG = "configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml"
TINY_TRAIN_OPTS = (
    "DATASETS.TRAIN", "('pennfudan_train_mini',)",
    "DATASETS.TEST", "('pennfudan_val_mini',)",
    "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "224",
    "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "224",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "200",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "20",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.005",
    "SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "(3,)", "SOLVER.WARMUP_ITERS", "2",
    "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "2",
    "DATALOADER.NUM_WORKERS", "0", "INSTSEG.LOG_PERIOD", "1", "INSTSEG.REPORT", "False",
)  # fmt: skip


@pytest.fixture(scope="session")
def train_net_command(repo_root, pennfudan_data):
    """``train_net_command(output_dir, *opts, flags=())`` -> argv of a tiny CPU training run:
    ``flags`` such as ``("--resume",)`` go before, ``KEY VALUE`` opts after the tiny settings."""

    import sys

    def command(output_dir, *opts: str, flags: tuple[str, ...] = ()) -> list[str]:
        return [
            sys.executable, str(repo_root / "tools" / "train_net.py"),
            "--config-file", str(repo_root / CPU_CONFIG), *flags,
            *TINY_TRAIN_OPTS, "OUTPUT_DIR", str(output_dir), *opts,
        ]  # fmt: skip

    return command


@pytest.fixture(scope="session")
def tiny_training_run(tmp_path_factory, train_net_command, repo_root) -> Path:
    """OUTPUT_DIR of one tiny training run (metrics.json, model_final.pth, model_best.pth,
    config.yaml, final_metrics.json/.md, TensorBoard events), shared by the whole session."""
    import subprocess

    output_dir = tmp_path_factory.mktemp("tiny_training_run")
    proc = subprocess.run(
        train_net_command(output_dir), cwd=repo_root, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        pytest.fail(f"tiny training run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return output_dir
