"""A dataset of your own through INSTSEG.DATASET_FILE: registration, the config it sets, the held-out
split kept with the run, the schedule in epochs, and a tiny 2-class run in two processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import instseg_d2.data  # noqa: F401  (registers the builtin datasets)
from instseg_d2.data.dataset_file import DatasetFileError
from instseg_d2.data.datasets.register_dataset_file import (
    DATASET_RECORD_FILE,
    SPLIT_RECORD_FILE,
    class_colors,
)
from instseg_d2.data.export import dicts_to_coco, write_json
from instseg_d2.data.writers import write_labelme
from instseg_d2.engine.defaults import setup_config
from instseg_d2.engine.schedule import apply_epoch_schedule
from instseg_d2.utils.errors import ConfigError

CLASSES = ["pedestrian", "balloon"]
CPU_CONFIG = "configs/Custom/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml"


def _mixed(pennfudan: str, balloon: str) -> list[dict]:
    """Penn-Fudan records with class 0 and balloon records with class 1."""
    balloons = [
        {**r, "annotations": [{**a, "category_id": 1} for a in r["annotations"]]}
        for r in DatasetCatalog.get(balloon)
    ]
    return DatasetCatalog.get(pennfudan) + balloons


@pytest.fixture(scope="module")
def coco_dataset(tmp_path_factory, shared_data):
    """A 2-class COCO dataset (ids 7 and 3, not contiguous) with a train json and a val json."""
    folder = tmp_path_factory.mktemp("coco_data")
    for split in ("train", "val"):
        dicts = _mixed(f"pennfudan_{split}_mini", f"balloon_{split}_mini")
        write_json(dicts_to_coco(dicts, CLASSES, [7, 3]), folder / f"{split}.json")
    data_file = folder / "data.yaml"
    data_file.write_text("name: twoclass\nformat: coco\ntrain: train.json\nval: val.json\n")
    return data_file


def _cfg(repo_root, data_file, tmp_path, *opts):
    return setup_config(
        repo_root / CPU_CONFIG,
        ["INSTSEG.DATASET_FILE", str(data_file), "OUTPUT_DIR", str(tmp_path / "run"), *opts],
    )[0]


def test_dataset_file_sets_datasets_classes_and_metadata(repo_root, coco_dataset, tmp_path):
    cfg = _cfg(repo_root, coco_dataset, tmp_path)
    assert cfg.DATASETS.TRAIN == ("twoclass_train",) and cfg.DATASETS.TEST == ("twoclass_val",)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2
    assert cfg.INPUT.MASK_FORMAT == "bitmask"  # pedestrians are RLE
    metadata = MetadataCatalog.get("twoclass_val")
    # COCO's class order is its category ids: balloon (3) before pedestrian (7).
    assert metadata.thing_classes == ["balloon", "pedestrian"]
    assert metadata.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1}
    assert metadata.thing_colors == class_colors(2) and len(set(metadata.thing_colors)) == 2
    val = DatasetCatalog.get("twoclass_val")
    assert len(val) == 10
    for record in val:
        expected = 1 if "Ped" in record["file_name"] else 0
        assert {a["category_id"] for a in record["annotations"]} == {expected}


def test_classes_key_orders_the_model_and_num_classes_must_agree(repo_root, coco_dataset, tmp_path):
    ordered = coco_dataset.with_name("ordered.yaml")
    ordered.write_text(coco_dataset.read_text() + "classes: [pedestrian, balloon]\n")
    _cfg(repo_root, ordered, tmp_path)
    assert MetadataCatalog.get("twoclass_train").thing_classes == CLASSES
    with pytest.raises(ConfigError, match=r"NUM_CLASSES is 1 but .*ordered.yaml has 2 class"):
        _cfg(repo_root, ordered, tmp_path, "MODEL.ROI_HEADS.NUM_CLASSES", "1")


def test_held_out_val_is_saved_with_the_run_and_reused(repo_root, coco_dataset, tmp_path):
    no_val = coco_dataset.with_name("no_val.yaml")
    no_val.write_text("name: heldout\nformat: coco\ntrain: train.json\nval_fraction: 0.3\n")
    setup_config(
        repo_root / CPU_CONFIG,
        ["INSTSEG.DATASET_FILE", str(no_val), "OUTPUT_DIR", str(tmp_path / "run")],
        training=True,
    )
    saved = json.loads((tmp_path / "run" / SPLIT_RECORD_FILE).read_text())
    val_files = sorted(d["file_name"] for d in DatasetCatalog.get("heldout_val"))
    assert sorted(saved["val"]) == val_files and len(val_files) == 6
    record = json.loads((tmp_path / "run" / DATASET_RECORD_FILE).read_text())
    assert record["classes"] == ["balloon", "pedestrian"] and record["splits"]["val"]["images"] == 6
    # The run's saved split wins over a split made anew.
    saved["val"] = saved["val"][:3]
    (tmp_path / "run" / SPLIT_RECORD_FILE).write_text(json.dumps(saved))
    _cfg(repo_root, no_val, tmp_path)
    assert sorted(d["file_name"] for d in DatasetCatalog.get("heldout_val")) == sorted(saved["val"])
    assert len(DatasetCatalog.get("heldout_train")) == 17
    saved["seed"] = 5  # a split made with another seed is not this run's
    (tmp_path / "run" / SPLIT_RECORD_FILE).write_text(json.dumps(saved))
    with pytest.raises(DatasetFileError, match="dataset_split.json: was made for another"):
        _cfg(repo_root, no_val, tmp_path)


def test_epochs_become_iterations_and_contradictions_are_errors(repo_root, coco_dataset, tmp_path):
    cfg = _cfg(repo_root, coco_dataset, tmp_path)
    # 20 training images, batch 4: 5 iterations per epoch.
    assert cfg.SOLVER.MAX_ITER == 60 and cfg.SOLVER.STEPS == (45, 55)
    assert cfg.TEST.EVAL_PERIOD == 20 and cfg.SOLVER.CHECKPOINT_PERIOD == 20
    # A run's config.yaml holds both: the same values again are no contradiction.
    assert apply_epoch_schedule(cfg.clone(), num_images=20) is not None
    with pytest.raises(ConfigError, match="INSTSEG.EPOCHS 12 and SOLVER.MAX_ITER 100 both set"):
        _cfg(repo_root, coco_dataset, tmp_path, "SOLVER.MAX_ITER", "100")
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER -1 .* needs INSTSEG.EPOCHS > 0"):
        _cfg(repo_root, coco_dataset, tmp_path, "INSTSEG.EPOCHS", "0")
    with pytest.raises(ConfigError, match="LR_STEPS_EPOCHS .* inside the 12 epochs"):
        _cfg(repo_root, coco_dataset, tmp_path, "INSTSEG.LR_STEPS_EPOCHS", "(13,)")


def test_gpu_custom_config_fine_tunes_from_coco_weights_on_the_file(
    repo_root, coco_dataset, tmp_path
):
    cfg, _ = setup_config(
        repo_root / "configs/Custom/mask_rcnn_R_50_FPN_3x.yaml",
        ["INSTSEG.DATASET_FILE", str(coco_dataset), "OUTPUT_DIR", str(tmp_path)],
    )
    assert cfg.MODEL.WEIGHTS.startswith("detectron2://COCO-InstanceSegmentation/")
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2 and cfg.DATASETS.TEST == ("twoclass_val",)
    # 30 epochs of 20 images at batch 4; LR steps at 70% and 90%.
    assert cfg.SOLVER.MAX_ITER == 150 and cfg.SOLVER.STEPS == (105, 135)


def test_config_without_a_dataset_says_how_to_give_one(repo_root):
    with pytest.raises(ConfigError, match="no training dataset; .*INSTSEG.DATASET_FILE"):
        setup_config(repo_root / CPU_CONFIG)


@pytest.mark.slow
def test_two_class_labelme_dataset_trains_in_two_processes_and_is_drawn_with_class_names(
    repo_root, shared_data, tmp_path, train_net_command
):
    """The new user's path: a LabelMe dataset file, validated, trained by two processes (the
    datasets must be registered in each), evaluated with AP per class, drawn with class names."""
    for split in ("train", "val"):
        write_labelme(_mixed(f"pennfudan_{split}_mini", f"balloon_{split}_mini"), CLASSES,
                      tmp_path / "labelme" / split)  # fmt: skip
    data_file = tmp_path / "data.yaml"
    data_file.write_text(
        "name: mylabelme\nformat: labelme\ntrain: labelme/train\nval: labelme/val\n"
    )
    run = tmp_path / "run"
    # The tiny run's config is Penn-Fudan's (1 class): NUM_CLASSES 0 takes the file's 2.
    command = train_net_command(run, "INSTSEG.DATASET_FILE", str(data_file),
                                "MODEL.ROI_HEADS.NUM_CLASSES", "0", "SOLVER.MAX_ITER", "2",
                                flags=("--num-gpus", "2"))  # fmt: skip
    proc = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = json.loads((run / "final_metrics.json").read_text())
    assert set(final["per_class"]["mylabelme_val"]) == {"balloon", "pedestrian"}
    assert "AP per class" in (run / "final_metrics.md").read_text()
    assert json.loads((run / DATASET_RECORD_FILE).read_text())["classes"] == [
        "balloon",
        "pedestrian",
    ]
    # The run's config.yaml alone finds the data again: draw with class names.
    out = tmp_path / "drawn"
    images = [r["file_name"] for r in _mixed("pennfudan_val_mini", "balloon_val_mini")][::4]
    infer = [sys.executable, str(repo_root / "tools/infer.py"), "--config-file",
             str(run / "config.yaml"), "--input", *images, "--output", str(out),
             "--confidence-threshold", "0.0", "INPUT.MIN_SIZE_TEST", "128"]  # fmt: skip
    proc = subprocess.run(infer, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = json.loads((out / "predictions.json").read_text())
    assert {p["category_id"] for p in predictions} <= {1, 2}
