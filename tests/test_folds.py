"""Cross-validation folds: the stratified pooled split, its registration from the config, the
built-in Penn-Fudan folds, the fold plan and what an interrupted fold folder still needs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import instseg_d2.data  # noqa: F401  (registers the built-in datasets)
from instseg_d2.config import get_instseg_cfg
from instseg_d2.data.errors import DatasetError
from instseg_d2.data.folds import register_config_folds
from instseg_d2.data.splits import stratified_kfold
from instseg_d2.evaluation.cross_validation import (
    CrossValidationError,
    fold_state,
    plan_folds,
)
from instseg_d2.utils.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_dicts(num_images: int, prefix: str, id_base: int = 0) -> list[dict]:
    """Images of class 0, every fifth also of the rare class 1, every seventh without objects."""
    dicts = []
    for i in range(num_images):
        classes = [] if i % 7 == 6 else [0] + ([1] if i % 5 == 0 else [])
        annotations = [{"category_id": c, "bbox": [0, 0, 4, 4], "bbox_mode": 1} for c in classes]
        dicts.append({"file_name": f"{prefix}/{i:03d}.png", "image_id": id_base + i,
                      "height": 8, "width": 8, "annotations": annotations})  # fmt: skip
    return dicts


def register(name: str, dicts: list[dict], **metadata) -> str:
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])
        MetadataCatalog.get(name).set(thing_classes=["a", "b"], **metadata)
    return name


def test_stratified_kfold_partitions_and_spreads_the_rare_class():
    dicts = make_dicts(43, "x")
    folds = [stratified_kfold(dicts, 5, k, seed=3) for k in range(5)]
    val_files = [[d["file_name"] for d in val] for _, val in folds]
    everything = sorted(f for files in val_files for f in files)
    assert everything == sorted(d["file_name"] for d in dicts)  # val parts partition the pool
    assert max(map(len, val_files)) - min(map(len, val_files)) <= 1
    for train, val in folds:
        assert len(train) + len(val) == len(dicts)
        assert not {d["file_name"] for d in train} & {d["file_name"] for d in val}
    rare = Counter(sum(any(a["category_id"] == 1 for a in d["annotations"]) for d in val)
                   for _, val in folds)  # fmt: skip
    assert set(rare) <= {1, 2}  # 9 rare images over 5 folds: 1 or 2 each, never 0 and 5
    again = [[d["file_name"] for d in stratified_kfold(dicts, 5, k, seed=3)[1]] for k in range(5)]
    assert again == val_files
    other = [[d["file_name"] for d in stratified_kfold(dicts, 5, k, seed=4)[1]] for k in range(5)]
    assert other != val_files
    with pytest.raises(ValueError, match="cannot make 5 folds of 3 image"):
        stratified_kfold(dicts[:3], 5, 0, seed=0)


def test_config_folds_are_registered_and_become_the_datasets():
    a = register("folds_test_a", make_dicts(12, "a"), dataset_root="/data/x")
    b = register("folds_test_b", make_dicts(8, "b", id_base=100), dataset_root="/data/x")
    cfg = get_instseg_cfg()
    cfg.merge_from_list(["INSTSEG.CROSS_VALIDATION.POOL", f"('{a}', '{b}')",
                         "INSTSEG.CROSS_VALIDATION.NUM_FOLDS", "4",
                         "INSTSEG.CROSS_VALIDATION.FOLD", "1",
                         "INSTSEG.CROSS_VALIDATION.SEED", "2"])  # fmt: skip
    register_config_folds(cfg)
    (train,), (test,) = cfg.DATASETS.TRAIN, cfg.DATASETS.TEST
    assert train == f"{a}+{b}_cv4s2_fold1_train" and test == f"{a}+{b}_cv4s2_fold1_val"
    train_files = {d["file_name"] for d in DatasetCatalog.get(train)}
    test_files = {d["file_name"] for d in DatasetCatalog.get(test)}
    assert len(test_files) == 5 and len(train_files) == 15 and not train_files & test_files
    assert {f.split("/")[0] for f in test_files | train_files} == {"a", "b"}
    assert MetadataCatalog.get(test).thing_classes == ["a", "b"]
    assert MetadataCatalog.get(test).dataset_root == "/data/x"  # shared by the pool: kept


def test_bad_fold_configs_are_clear_errors():
    cfg = get_instseg_cfg()
    cfg.merge_from_list(["INSTSEG.CROSS_VALIDATION.NUM_FOLDS", "3"])
    with pytest.raises(ConfigError, match="POOL names no dataset"):
        register_config_folds(cfg)
    a = register("folds_test_c", make_dicts(6, "c"))
    cfg.merge_from_list(["INSTSEG.CROSS_VALIDATION.POOL", f"('{a}',)",
                         "INSTSEG.CROSS_VALIDATION.FOLD", "3"])  # fmt: skip
    with pytest.raises(ConfigError, match="FOLD 3 of NUM_FOLDS 3 does not exist"):
        register_config_folds(cfg)
    other = "folds_test_other_classes"
    if other not in DatasetCatalog.list():
        DatasetCatalog.register(other, lambda: make_dicts(4, "o", id_base=50))
        MetadataCatalog.get(other).set(thing_classes=["cat"])
    cfg.merge_from_list(["INSTSEG.CROSS_VALIDATION.POOL", f"('{a}', '{other}')",
                         "INSTSEG.CROSS_VALIDATION.FOLD", "0"])  # fmt: skip
    with pytest.raises(DatasetError, match="their classes differ"):
        register_config_folds(cfg)
    clash = register("folds_test_clash", make_dicts(6, "d"))  # same image ids as folds_test_c
    cfg.merge_from_list(["INSTSEG.CROSS_VALIDATION.POOL", f"('{a}', '{clash}')"])
    register_config_folds(cfg)
    with pytest.raises(DatasetError, match="image_id 0 of d/000.png is also the id"):
        DatasetCatalog.get(cfg.DATASETS.TRAIN[0])


def test_plan_uses_pennfudan_builtin_folds_then_pooled_ones_for_repeats():
    cfg = get_instseg_cfg()
    cfg.merge_from_list(["DATASETS.TRAIN", "('pennfudan_train',)",
                         "DATASETS.TEST", "('pennfudan_val',)"])  # fmt: skip
    plan = plan_folds(cfg, 5, repeats=2, seed=10)
    assert [f.name for f in plan[:2]] == ["r0_fold0", "r0_fold1"] and len(plan) == 10
    assert plan[0].source == "built-in" and plan[0].train == "pennfudan_fold0of5_train"
    assert plan[0].opts[-2:] == ("SEED", "10") and "('pennfudan_fold0of5_val',)" in plan[0].opts
    assert {f.source for f in plan[5:]} == {"pooled"} and {f.seed for f in plan[5:]} == {11}
    assert plan[5].test == "pennfudan_train+pennfudan_val_cv5s11_fold0_val"
    # 3 folds are not built in, nor are folds of the mini sets.
    assert {f.source for f in plan_folds(cfg, 3)} == {"pooled"}
    cfg.merge_from_list(["DATASETS.TRAIN", "('pennfudan_train_mini',)"])
    assert {f.source for f in plan_folds(cfg, 5)} == {"pooled"}
    with pytest.raises(CrossValidationError, match="--folds must be at least 2"):
        plan_folds(cfg, 1)


def test_fold_state_and_the_command_that_continues_it(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "tools"))
    import cross_validate

    cfg = get_instseg_cfg()
    cfg.merge_from_list(["DATASETS.TRAIN", "('pennfudan_train',)",
                         "DATASETS.TEST", "('pennfudan_val',)"])  # fmt: skip
    fold = plan_folds(cfg, 5)[2]
    args = SimpleNamespace(config_file="cfg.yaml", opts=["SOLVER.MAX_ITER", "10"])
    folder = tmp_path / fold.name
    folder.mkdir()
    assert fold_state(folder) == "train"
    command = cross_validate.fold_command(args, fold, folder, "train", [])
    assert command[2:] == ["--config-file", "cfg.yaml", "--output", str(folder),
                           "SOLVER.MAX_ITER", "10", *fold.opts]  # fmt: skip
    (folder / "last_checkpoint").write_text("model_0000009.pth")
    assert fold_state(folder) == "resume"
    assert "--resume" in cross_validate.fold_command(args, fold, folder, "resume", [])
    (folder / "model_final.pth").write_bytes(b"")
    assert fold_state(folder) == "evaluate"
    command = cross_validate.fold_command(args, fold, folder, "evaluate", [])
    assert "--eval-only" in command and command[-2:] == [
        "MODEL.WEIGHTS",
        str(folder / "model_final.pth"),
    ]
    (folder / "final_metrics.json").write_text("{}")
    assert fold_state(folder) == "done"


def test_tool_runs_one_fold_per_gpu_and_gives_the_folds_one_mlflow_store(tmp_path, monkeypatch):
    """tools/cross_validate.py's orchestration with train_net replaced by a stand-in that
    writes a fold's final_metrics.json: devices, resume of finished folds, the summary."""
    import threading
    import time

    sys.path.insert(0, str(REPO_ROOT / "tools"))
    import cross_validate

    tests = {f.name: f.test for f in plan_folds(_pennfudan_cfg(), 5)}
    seen, lock, running = [], threading.Lock(), [0, 0]  # [now, most at once]

    def fake_train_net(command, stdout, stderr, env):
        fold_dir = Path(command[command.index("--output") + 1])
        with lock:
            running[0] += 1
            running[1] = max(running)
            seen.append((fold_dir.name, env.get("CUDA_VISIBLE_DEVICES"), command))
        time.sleep(0.2)
        value = 10.0 + int(fold_dir.name[-1])
        metrics = {"segm": {"AP": value, "AP50": 2 * value}, "bbox": {"AP": value + 1}}
        final = {"datasets": {tests[fold_dir.name]: metrics}, **metrics}
        (fold_dir / "final_metrics.json").write_text(json.dumps(final))
        with lock:
            running[0] -= 1
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(cross_validate.subprocess, "run", fake_train_net)
    monkeypatch.setattr(cross_validate, "visible_gpus", lambda cfg, limit: ["3", "5"])
    stores = []
    monkeypatch.setattr(cross_validate, "ensure_experiment", lambda uri, name: stores.append(uri))
    config = str(REPO_ROOT / "configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml")
    argv = ["--config-file", config, "--folds", "5", "--output", str(tmp_path / "cv"),
            "INSTSEG.MLFLOW.ENABLED", "True"]  # fmt: skip
    assert cross_validate.main(argv) == 0
    assert sorted(name for name, _, _ in seen) == [f"r0_fold{i}" for i in range(5)]
    assert {device for _, device, _ in seen} == {"3", "5"} and running[1] == 2
    assert stores == [f"sqlite:///{(tmp_path / 'cv').resolve()}/mlflow.db"]
    for name, _, command in seen:
        assert command[command.index("INSTSEG.MLFLOW.TRACKING_URI") + 1] == stores[0]
        assert command[command.index("INSTSEG.MLFLOW.RUN_NAME") + 1] == f"cv/{name}"
    summary = json.loads((tmp_path / "cv" / "cv_summary.json").read_text())
    assert summary["summary"]["segm"]["AP"]["values"] == [10.0, 11.0, 12.0, 13.0, 14.0]
    assert summary["summary"]["segm"]["AP"]["mean"] == pytest.approx(12.0)
    assert "AP75" not in summary["summary"]["segm"]  # in no fold's results
    seen.clear()
    assert cross_validate.main(argv) == 0 and seen == []  # every fold done: nothing runs


def _pennfudan_cfg():
    cfg = get_instseg_cfg()
    cfg.merge_from_list(["DATASETS.TRAIN", "('pennfudan_train',)",
                         "DATASETS.TEST", "('pennfudan_val',)"])  # fmt: skip
    return cfg
