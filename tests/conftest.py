"""Shared test set-up: the real datasets in ../shared/data are the DETECTRON2_DATASETS root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("INSTSEG_D2_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Set before any test imports instseg_d2.data, which registers the builtin datasets from it.
os.environ.setdefault("DETECTRON2_DATASETS", str(SHARED_DATA))
# Two cores: keep torch from oversubscribing them when tests run subprocesses.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "PennFudanPed").is_dir() or not (SHARED_DATA / "balloon").is_dir():
        pytest.skip(f"real datasets not found under {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
