"""python -m instseg_d2.env: what a bug report needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def env_report(**env) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "instseg_d2.env", "--json"],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_env_report_names_route_and_missing_ops(shared_data):
    report = env_report(DETECTRON2_DATASETS=str(shared_data))
    import detectron2
    import torch

    assert report["torch"] == torch.__version__
    d2 = report["detectron2"]
    assert d2["importable"] and d2["version"] == detectron2.__version__
    if d2["distribution"] == "sal-detectron2":
        assert d2["route"].startswith("pypi: sal-detectron2 0.7.2 repacked")
    else:
        assert d2["route"].startswith(("source build from", "editable", "pip distribution"))
    try:
        import detectron2._C  # noqa: F401

        assert d2["_C"] is True
    except ImportError:
        assert d2["_C"] is False
        assert any("deformable" in op for op in d2["missing_ops"])
    assert report["DETECTRON2_DATASETS"] == str(shared_data)
    assert report["datasets"]["PennFudanPed"].startswith("found")
    assert report["datasets"]["balloon"].startswith("found")


def test_env_report_says_what_is_missing(tmp_path):
    (tmp_path / "PennFudanPed" / "PNGImages").mkdir(parents=True)
    report = env_report(DETECTRON2_DATASETS=str(tmp_path))
    assert "PedMasks" in report["datasets"]["PennFudanPed"]
    assert report["datasets"]["PennFudanPed"].startswith("missing")
    assert report["datasets"]["balloon"].startswith("missing train, val")


def test_text_report_prints_route():
    proc = subprocess.run(
        [sys.executable, "-m", "instseg_d2.env"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    assert "route" in proc.stdout and "_C built" in proc.stdout
