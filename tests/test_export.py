"""Export to TorchScript and ONNX of a trained tiny model: parity with the eager model, the
artifact without Detectron2, the tools (slow: a 100-iteration training run, then exports)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
PARITY_DATASET = "pennfudan_val"
NUM_PARITY_IMAGES = 5
# Built into the exports: ~5-15 detections per image to compare.
SCORE_THRESHOLD = "0.3"
# 100 iterations at 160 px (~3 minutes on 2 free cores): scores from ~0.3 to ~0.9, well apart
# (not the ties of random weights), and masks of a few thousand pixels. The mask loss only starts
# to fall after ~50 iterations: 60 iterations gave mostly empty masks for some seeds and model
# versions, 30 iterations at 128 px always.
TRAIN_OPTS = (
    "INPUT.MIN_SIZE_TRAIN", "(160,)", "INPUT.MAX_SIZE_TRAIN", "256",
    "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "256",
    "SOLVER.MAX_ITER", "100", "SOLVER.STEPS", "(85,)", "SOLVER.BASE_LR", "0.02",
    "SOLVER.WARMUP_ITERS", "10", "SOLVER.CHECKPOINT_PERIOD", "1000", "TEST.EVAL_PERIOD", "0",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05", "TEST.DETECTIONS_PER_IMAGE", "100",
    # A fixed seed: the scores and masks below are those of one known training, not a draw.
    "SEED", "0",
)  # fmt: skip


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(
        f"tool_{name}", REPO_ROOT / "tools" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, train_net_command, repo_root) -> Path:
    """A 100-iteration CPU training run (config.yaml, model_final.pth)."""
    output_dir = tmp_path_factory.mktemp("export_trained_run")
    proc = subprocess.run(
        train_net_command(output_dir, *TRAIN_OPTS),
        cwd=repo_root, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"training run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return output_dir


@pytest.fixture(scope="session")
def parity_images(pennfudan_data) -> list[np.ndarray]:
    from instseg_d2.data.catalog import get_dataset_dicts
    from instseg_d2.data.image_io import read_image

    dicts = get_dataset_dicts(PARITY_DATASET, num_images=NUM_PARITY_IMAGES)
    return [read_image(d["file_name"], format="BGR") for d in dicts]


def _export_argv(run: Path, fmt: str, output: Path, *extra: str) -> list[str]:
    return [
        "--config-file", str(run / "config.yaml"), "--format", fmt, "--output", str(output),
        "--parity-dataset", PARITY_DATASET, "--parity-images", str(NUM_PARITY_IMAGES),
        "--confidence-threshold", SCORE_THRESHOLD, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def exports(trained_run, tmp_path_factory, pennfudan_data) -> dict[str, Path]:
    """``tools/export_model.py`` of the trained run, once per format (export folders)."""
    tool = _load_tool("export_model")
    folders = {}
    for fmt in ("torchscript", "onnx"):
        output = tmp_path_factory.mktemp(f"export_{fmt}")
        assert tool.main(_export_argv(trained_run, fmt, output)) == 0
        folders[fmt] = output
    return folders


@pytest.fixture(scope="session")
def eager_predictor(trained_run):
    from instseg_d2.engine.defaults import setup_inference_config
    from instseg_d2.engine.predictor import BatchPredictor

    cfg = setup_inference_config(
        trained_run / "config.yaml", [], None, confidence_threshold=float(SCORE_THRESHOLD)
    )
    return BatchPredictor(cfg, optimize=False)


def test_trained_model_gives_confident_separated_detections(eager_predictor, parity_images):
    instances = [eager_predictor([image])[0]["instances"] for image in parity_images]
    scores = np.concatenate([i.scores.numpy() for i in instances])
    assert len(scores) >= 10
    # A trained model, not random weights: those give every box about the same score, and NMS
    # then keeps arbitrary boxes, which no parity check can follow.
    assert scores.max() - scores.min() > 0.1
    assert len(np.unique(np.round(scores, 4))) > 0.9 * len(scores)  # no pile of tied scores
    mask_pixels = np.concatenate([i.pred_masks.sum((1, 2)).numpy() for i in instances])
    assert (mask_pixels > 100).mean() > 0.8  # masks to compare, not empty ones


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_parity_and_metadata(exports, trained_run, fmt):
    from instseg_d2.export.metadata import sha256_of

    metadata = json.loads((exports[fmt] / "metadata.json").read_text())
    parity = metadata["parity"]
    assert parity["passed"], parity["failures"]
    assert parity["num_images"] == NUM_PARITY_IMAGES and parity["num_eager"] >= 10
    assert parity["num_matched"] == parity["num_eager"] == parity["num_exported"]
    assert parity["max_box_px"] <= 0.5 and parity["max_score_diff"] <= 1e-3
    assert parity["min_mask_iou"] >= 0.98
    assert metadata["class_names"] == ["pedestrian"] and metadata["category_ids"] == [1]
    assert metadata["input"]["channel_order"] == "BGR" and metadata["input"]["dtype"] == "uint8"
    assert metadata["resize"]["min_size"] == 160 and metadata["resize"]["max_size"] == 256
    assert metadata["score_threshold"] == float(SCORE_THRESHOLD)
    assert metadata["weights"]["sha256"] == sha256_of(trained_run / "model_final.pth")
    assert "ROI_HEADS:" in metadata["config_yaml"] and metadata["versions"]["torch"]
    assert (exports[fmt] / metadata["artifact"]).is_file()
    assert (exports[fmt] / "runtime.py").is_file()


# Run in a fresh interpreter where `import detectron2` (and so instseg_d2) fails: only torch /
# onnxruntime, numpy and the export folder's runtime.py. Writes the detections to an .npz file.
_WITHOUT_DETECTRON2 = """
import sys
import numpy as np
try:
    import detectron2
except ImportError:
    pass
else:
    raise SystemExit("detectron2 was importable")
export_dir, out = sys.argv[1], sys.argv[2]
sys.path.insert(0, export_dir)
import runtime
model = runtime.load(export_dir, threads=1)
images = np.load(sys.argv[3])
arrays = {}
for i, name in enumerate(sorted(images.files)):
    result = model(images[name])
    for key, value in result.items():
        arrays[f"{i}_{key}"] = value
blank = model(np.full((97, 131, 3), 127, np.uint8), min_score=0.999)
assert blank["masks"].shape == (0, 97, 131), blank["masks"].shape
assert not any(m.startswith(("detectron2", "instseg_d2")) for m in sys.modules)
np.savez(out, **arrays)
"""


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_artifact_runs_without_detectron2(exports, eager_predictor, parity_images, tmp_path, fmt):
    from instseg_d2.export.parity import Detections, compare_detections

    blocker = tmp_path / "blocker" / "detectron2"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('detectron2 is blocked here')\n")
    images = tmp_path / "images.npz"
    np.savez(images, **{f"image{i}": image for i, image in enumerate(parity_images)})
    script = tmp_path / "run.py"
    script.write_text(_WITHOUT_DETECTRON2)
    env = {**os.environ, "PYTHONPATH": str(blocker.parent)}
    out = tmp_path / "out.npz"
    proc = subprocess.run(
        [sys.executable, str(script), str(exports[fmt]), str(out), str(images)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = np.load(out)
    exported = [
        Detections.from_outputs(
            {k: saved[f"{i}_{k}"] for k in ("boxes", "scores", "classes", "masks")}
        )  # fmt: skip
        for i in range(len(parity_images))
    ]
    eager = [
        Detections.from_instances(eager_predictor([image])[0]["instances"])
        for image in parity_images
    ]
    report = compare_detections(eager, exported, float(SCORE_THRESHOLD))
    assert report.passed, report.failures
    assert report.num_matched >= 10 and report.min_mask_iou >= 0.98


@pytest.mark.parametrize("variant", ["bf16", "optimized"])
def test_torchscript_variants_match_their_eager_model(
    trained_run, parity_images, tmp_path, variant
):
    from instseg_d2.engine.defaults import setup_inference_config
    from instseg_d2.export.exporter import export_model

    cfg = setup_inference_config(trained_run / "config.yaml", [], None, float(SCORE_THRESHOLD))
    result = export_model(cfg, "torchscript", tmp_path, parity_images[:3], variant=variant)
    assert result.parity.passed and result.parity.num_matched >= 5
    assert json.loads(result.metadata_file.read_text())["variant"] == variant


def test_onnx_variants_are_refused_with_the_reason(trained_run, tmp_path, capsys):
    tool = _load_tool("export_model")
    from instseg_d2.utils.cli import run_tool

    argv = _export_argv(trained_run, "onnx", tmp_path, "--variant", "bf16")
    assert run_tool(tool.main, argv) == 1
    assert "no bf16 convolutions" in capsys.readouterr().err


def test_export_tool_fails_when_parity_fails(trained_run, tmp_path, monkeypatch, capsys):
    """Break the exported graph (boxes shifted by 1 px): the tool must exit 1 and say why."""
    from instseg_d2.export import deployable
    from instseg_d2.utils.cli import run_tool

    original = deployable.ImageToDetections.__call__

    def shifted(self, model, image):
        outputs = original(self, model, image)
        return {**outputs, "boxes": outputs["boxes"] + 1.0}

    monkeypatch.setattr(deployable.ImageToDetections, "__call__", shifted)
    tool = _load_tool("export_model")
    argv = _export_argv(trained_run, "torchscript", tmp_path, "--parity-images", "2")
    assert run_tool(tool.main, argv) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "box corners differ by 1 px" in err
    assert json.loads((tmp_path / "metadata.json").read_text())["parity"]["passed"] is False


def test_zero_detections_in_both_formats(trained_run, tmp_path):
    """An image without detections: ONNX Runtime must not fail on the empty mask-head batch."""
    tool = _load_tool("export_model")
    for fmt in ("torchscript", "onnx"):
        argv = _export_argv(trained_run, fmt, tmp_path / fmt, "--parity-images", "1")
        argv[argv.index("--confidence-threshold") + 1] = "0.9999"
        assert tool.main(argv) == 0
        metadata = json.loads((tmp_path / fmt / "metadata.json").read_text())
        assert metadata["parity"]["num_eager"] == metadata["parity"]["num_exported"] == 0


def test_predict_exported_writes_what_infer_writes(exports, trained_run, pennfudan_data, tmp_path):
    from instseg_d2.data.catalog import get_dataset_dicts

    files = [d["file_name"] for d in get_dataset_dicts(PARITY_DATASET, num_images=2)]
    predict, infer = _load_tool("predict_exported"), _load_tool("infer")
    threshold = ["--confidence-threshold", SCORE_THRESHOLD]
    assert predict.main(["--model", str(exports["onnx"]), "--input", *files,
                         "--output", str(tmp_path / "exported"), *threshold]) == 0  # fmt: skip
    assert infer.main(["--config-file", str(trained_run / "config.yaml"), "--input", *files,
                       "--output", str(tmp_path / "eager"), "--no-optimize", "--batch-size", "1",
                       *threshold]) == 0  # fmt: skip
    exported = json.loads((tmp_path / "exported" / "predictions.json").read_text())
    eager = json.loads((tmp_path / "eager" / "predictions.json").read_text())
    assert len(exported) == len(eager) > 0
    for a, b in zip(exported, eager, strict=True):
        assert a["image_id"] == b["image_id"] and a["category_id"] == b["category_id"]
        assert abs(a["score"] - b["score"]) <= 1e-3
        assert np.allclose(a["bbox"], b["bbox"], atol=0.5)
    for folder in ("exported", "eager"):
        names = sorted(p.name for p in (tmp_path / folder).iterdir())
        assert names == sorted(
            [Path(f).stem + ".png" for f in files] + ["image_index.json", "predictions.json"]
        )


def test_runtime_rejects_bad_input(exports):
    sys.path.insert(0, str(exports["torchscript"]))
    try:
        from instseg_d2.export import runtime
    finally:
        sys.path.pop(0)
    model = runtime.load(exports["torchscript"])
    with pytest.raises(ValueError, match="H x W x 3 uint8 BGR"):
        model(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="H x W x 3 uint8 BGR"):
        model(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        runtime.load(exports["torchscript"] / "nowhere")


def test_export_speed_benchmark_rows_and_floor(trained_run, pennfudan_data, tmp_path):
    spec = importlib.util.spec_from_file_location(
        "export_speed", REPO_ROOT / "benchmarks" / "export_speed.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "speed.json"
    result = bench.main(["--config-file", str(trained_run / "config.yaml"), "--num-images", "1",
                         "--repeats", "1", "--formats", "onnx", "--threads", "1",
                         "--output", str(out)])  # fmt: skip
    assert json.loads(out.read_text()) == result
    assert result["model_gmac_per_image"] > 0.1 and result["conv3x3_tflops"]["fp32"] > 0
    rows = result["rows"]
    assert {"eager plain", "eager optimized", "onnxruntime plain (opt all)"} <= set(rows)
    for row in rows.values():
        assert row["median_s"] > 0
        assert row["floor_fraction"] == pytest.approx(row["floor_s"] / row["median_s"], abs=2e-3)
    assert rows["onnxruntime plain (opt all)"]["parity_passed"] is True
