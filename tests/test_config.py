"""The YAMLs under configs/: they inherit the installed model zoo and say what we mean."""

from __future__ import annotations

from pathlib import Path

import pytest
from detectron2 import model_zoo
from detectron2.data import DatasetCatalog

import instseg_d2.data  # noqa: F401  (registers the datasets the configs name)
from instseg_d2.config import add_instseg_config, get_instseg_cfg, load_config
from instseg_d2.utils.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ZOO = "COCO-InstanceSegmentation/{}.yaml"
GPU_MODELS = ("mask_rcnn_R_50_FPN_3x", "mask_rcnn_R_101_FPN_3x", "mask_rcnn_X_101_32x8d_FPN_3x")
DATASETS = {"PennFudan": ("pennfudan", "bitmask"), "Balloon": ("balloon", "polygon")}


def all_configs() -> list[Path]:
    """The configs of the builtin datasets (configs/Custom/ needs a dataset file: test_own_data)."""
    return sorted(
        p for d in DATASETS for p in (CONFIGS / d).glob("*.yaml") if not p.name.startswith("Base-")
    )


def test_every_dataset_has_gpu_models_and_a_cpu_config():
    for folder in DATASETS:
        names = {p.stem for p in (CONFIGS / folder).glob("*.yaml")}
        assert {f"Base-{folder}", *GPU_MODELS} <= names, folder
        assert any(n.endswith("_cpu") for n in names), folder


@pytest.mark.parametrize("path", all_configs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_loads_with_datasets_and_one_class(path):
    cfg = load_config(str(path))
    prefix, mask_format = DATASETS[path.parent.name]
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1 and cfg.MODEL.MASK_ON
    assert cfg.INPUT.MASK_FORMAT == mask_format
    assert cfg.DATASETS.TRAIN == (f"{prefix}_train",) and cfg.DATASETS.TEST == (f"{prefix}_val",)
    for name in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST:
        assert name in DatasetCatalog.list()
    # Inherited from the model zoo's Base-RCNN-FPN.yaml, not written in our files.
    assert cfg.MODEL.ROI_HEADS.IN_FEATURES == ["p2", "p3", "p4", "p5"]
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == [[32], [64], [128], [256], [512]]
    # A schedule that makes sense: warm-up, LR steps and evaluations inside the run.
    assert 0 < cfg.SOLVER.WARMUP_ITERS < cfg.SOLVER.MAX_ITER
    assert all(0 < s < cfg.SOLVER.MAX_ITER for s in cfg.SOLVER.STEPS)
    assert 0 < cfg.TEST.EVAL_PERIOD <= cfg.SOLVER.MAX_ITER // 2
    assert cfg.OUTPUT_DIR.startswith("./output/")


@pytest.mark.parametrize("folder", DATASETS)
@pytest.mark.parametrize("model", GPU_MODELS)
def test_gpu_configs_start_from_the_matching_model_zoo_weights(folder, model):
    cfg = load_config(str(CONFIGS / folder / f"{model}.yaml"))
    zoo = model_zoo.get_config(ZOO.format(model))
    # detectron2:// is what the zoo URL is served under (Detectron2's iopath handler).
    url = model_zoo.get_checkpoint_url(ZOO.format(model))
    assert cfg.MODEL.WEIGHTS == url.replace(
        "https://dl.fbaipublicfiles.com/detectron2/", "detectron2://"
    )
    # The thin model files must rebuild the model-zoo architecture exactly.
    assert cfg.MODEL.RESNETS == zoo.MODEL.RESNETS
    assert cfg.MODEL.PIXEL_STD == zoo.MODEL.PIXEL_STD
    assert cfg.MODEL.FPN == zoo.MODEL.FPN
    assert cfg.SOLVER.AMP.ENABLED
    assert cfg.SOLVER.BASE_LR / cfg.SOLVER.IMS_PER_BATCH == pytest.approx(0.02 / 16)


@pytest.mark.parametrize("folder", DATASETS)
def test_cpu_configs_train_from_scratch_with_group_norm(folder):
    (path,) = (CONFIGS / folder).glob("*_cpu.yaml")
    cfg = load_config(str(path))
    assert cfg.MODEL.WEIGHTS == "" and cfg.MODEL.DEVICE == "cpu"
    assert not cfg.SOLVER.AMP.ENABLED
    assert cfg.MODEL.RESNETS.NORM == "GN" and cfg.MODEL.FPN.NORM == "GN"
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0  # nothing pretrained to freeze
    assert max(cfg.INPUT.MIN_SIZE_TRAIN) <= 384 and cfg.INPUT.MIN_SIZE_TEST <= 384


def test_overrides_and_instseg_keys():
    cfg = load_config(
        str(CONFIGS / "PennFudan" / "mask_rcnn_R_50_FPN_3x.yaml"),
        ["INSTSEG.EARLY_STOP_PATIENCE", "3", "INSTSEG.BEST_METRIC", "bbox/AP",
         "SOLVER.MAX_ITER", "7"],
    )  # fmt: skip
    assert cfg.INSTSEG.EARLY_STOP_PATIENCE == 3 and cfg.INSTSEG.BEST_METRIC == "bbox/AP"
    assert cfg.SOLVER.MAX_ITER == 7
    defaults = get_instseg_cfg().INSTSEG
    assert defaults.BEST_METRIC == "segm/AP" and defaults.EARLY_STOP_PATIENCE == 0
    assert defaults.VAL_LOSS and defaults.VALIDATE_DATA and defaults.REPORT


def test_add_instseg_config_on_a_plain_detectron2_cfg():
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_instseg_config(cfg)
    cfg.merge_from_list(["INSTSEG.LOG_PERIOD", "5"])
    assert cfg.INSTSEG.LOG_PERIOD == 5


def test_unknown_model_zoo_base_and_missing_file_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text('_BASE_: "model_zoo://COCO-InstanceSegmentation/no_such_model.yaml"\n')
    with pytest.raises(ConfigError, match="no_such_model.yaml: not a config of the installed"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_unknown_key_names_the_key(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text('_BASE_: "model_zoo://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"\n'
                   "SOLVER:\n  MAX_ITERS: 5\n")  # fmt: skip
    with pytest.raises(
        ConfigError, match="unknown config key SOLVER.MAX_ITERS; did you mean SOLVER.MAX_ITER"
    ):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="override SOLVER.BASE_RL: unknown config key"):
        load_config(Path(__file__).resolve().parents[1] / "configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml",
                    ["SOLVER.BASE_RL", "1"])  # fmt: skip
