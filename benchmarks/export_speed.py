#!/usr/bin/env python
"""CPU inference speed of the exported models next to eager, and how close each runs to the
machine's convolution rate.

Rows, all on the same images in one run, interleaved image by image: eager ``BatchPredictor`` at
batch 1 (plain fp32, optimized fp32, plain bf16, optimized bf16), TorchScript (plain, optimized, bf16) and ONNX Runtime
(plain; all graph optimisations, and the basic level), every row timed from the BGR uint8 image
to full-size masks. Each exported row also reports its agreement with its eager model
(:mod:`instseg_d2.export.parity`; meaningful for trained weights only).

The floor: the model's multiply-adds per image (Detectron2's ``FlopCountAnalysis``, which counts
one multiply-add as one flop, averaged over the images) divided by the machine's measured rate of
a 3x3 convolution (256 -> 256 channels, channels-last, fp32 and bf16). Each row's
``floor_fraction`` is that floor over its median time: 1.0 would be a run at the speed of one
large convolution. bf16 rows use the bf16 rate.

Examples::

    python benchmarks/export_speed.py --config-file output/pennfudan_cpu/config.yaml \
        --size 800 --num-images 5 --output output/benchmark/export.json
    python benchmarks/export_speed.py --config-file configs/PennFudan/mask_rcnn_R_50_FPN_3x.yaml \
        --random-weights --size 800 --output output/benchmark/export_r50.json
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.analysis import FlopCountAnalysis  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from instseg_d2.data.catalog import get_dataset_dicts  # noqa: E402
from instseg_d2.data.image_io import read_image  # noqa: E402
from instseg_d2.engine.defaults import setup_inference_config  # noqa: E402
from instseg_d2.engine.predictor import BatchPredictor  # noqa: E402
from instseg_d2.export.deployable import OUTPUT_NAMES, build_tracing_adapter  # noqa: E402
from instseg_d2.export.exporter import (  # noqa: E402
    ARTIFACT_NAMES,
    SUPPORTED,
    traceable_model,
    write_artifact,
)
from instseg_d2.export.parity import Detections, compare_detections  # noqa: E402
from instseg_d2.export.resize import (  # noqa: E402
    image_size,
    resize_bilinear_like_pillow,
    shortest_edge_size,
)
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402

logger = logging.getLogger("instseg_d2.export_speed")

Predict = Callable[[np.ndarray], Detections]


def conv_rate(dtype: torch.dtype, seconds: float = 1.0, size: int = 96) -> float:
    """Measured multiply-adds per second of a 3x3, 256 -> 256 channel convolution (channels-last,
    batch 1, ``size`` x ``size``) in ``dtype``: the best of repeated runs for ``seconds``."""
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).eval().to(dtype)
    conv = conv.to(memory_format=torch.channels_last).requires_grad_(False)
    x = torch.randn(1, 256, size, size).to(dtype).contiguous(memory_format=torch.channels_last)
    macs = 256 * 256 * 9 * size * size
    best = float("inf")
    with torch.inference_mode():
        conv(x)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - start)
    return macs / best


def model_macs(cfg, images: list[np.ndarray]) -> float:
    """Mean multiply-adds per image of the network (``FlopCountAnalysis``; resize excluded)."""
    model = BatchPredictor(cfg, optimize=False).model
    totals = []
    for image in images:
        tensor = torch.from_numpy(image)
        new_size = shortest_edge_size(image_size(tensor), cfg.INPUT.MIN_SIZE_TEST,
                                      cfg.INPUT.MAX_SIZE_TEST)  # fmt: skip
        resized = resize_bilinear_like_pillow(tensor, new_size).permute(2, 0, 1)
        analysis = FlopCountAnalysis(model, [{"image": resized}])
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        totals.append(analysis.total())
    return float(np.mean(totals))


def _eager(predictor: BatchPredictor) -> Predict:
    return lambda image: Detections.from_instances(predictor([image])[0]["instances"])


def _torchscript(path: Path) -> Predict:
    module = torch.jit.load(str(path))

    def predict(image: np.ndarray) -> Detections:
        with torch.inference_mode():
            outputs = module(torch.from_numpy(image))
        return Detections.from_outputs(
            dict(zip(OUTPUT_NAMES, (t.numpy() for t in outputs), strict=True))
        )

    return predict


def _onnxruntime(path: Path, level: str, threads: int) -> Predict:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, level)
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def predict(image: np.ndarray) -> Detections:
        return Detections.from_outputs(
            dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {"image": image}), strict=True))
        )

    return predict


def build_rows(cfg, images: list[np.ndarray], folder: Path, threads: int, formats: list[str]):
    """``{row name: (predict, eager reference name, bf16)}`` for every variant this CPU runs."""
    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    variants = ["plain", "optimized"] + (["bf16"] if bf16 else [])
    # The exports' references (exporter._eager_predictor) plus "eager optimized bf16", the path of
    # tools/infer.py --bf16.
    eager = {v: BatchPredictor(cfg, optimize=v == "optimized", bf16=v == "bf16") for v in variants}
    if bf16:
        eager["optimized bf16"] = BatchPredictor(cfg, optimize=True, bf16=True)
    rows = {f"eager {v}": (_eager(p), None, v.endswith("bf16")) for v, p in eager.items()}
    sample = torch.from_numpy(images[0])
    for fmt in formats:
        for variant in (v for v in variants if v in SUPPORTED[fmt]):
            path = folder / f"{variant}_{ARTIFACT_NAMES[fmt]}"
            adapter = build_tracing_adapter(traceable_model(cfg, variant), cfg, sample,
                                            bf16=variant == "bf16")  # fmt: skip
            write_artifact(adapter, sample, fmt, path, variant)
            if fmt == "torchscript":
                rows[f"torchscript {variant}"] = (_torchscript(path), f"eager {variant}",
                                                  variant == "bf16")  # fmt: skip
            else:
                for level, name in (("ORT_ENABLE_ALL", "all"), ("ORT_ENABLE_BASIC", "basic")):
                    rows[f"onnxruntime {variant} (opt {name})"] = (
                        _onnxruntime(path, level, threads),
                        f"eager {variant}",
                        False,
                    )
    return rows


def run(cfg, images: list[np.ndarray], *, repeats: int, threads: int, formats: list[str]) -> dict:
    """Time every row on every image (interleaved), then agreement and floor fractions."""
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as folder:
        rows = build_rows(cfg, images, Path(folder), threads, formats)
        outputs = {name: [predict(image) for image in images] for name, (predict, _, _) in
                   rows.items()}  # warm-up and outputs  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(repeats):
            for image in images:
                for name, (predict, _, _) in rows.items():
                    start = time.perf_counter()
                    predict(image)
                    times[name].append(time.perf_counter() - start)
    macs = model_macs(cfg, images)
    rates = {"fp32": conv_rate(torch.float32)}
    if any(bf16 for _, _, bf16 in rows.values()):
        rates["bf16"] = conv_rate(torch.bfloat16)
    result_rows = {}
    baseline = float(np.median(times["eager optimized"]))
    for name, (_, reference, bf16) in rows.items():
        median = float(np.median(times[name]))
        floor = macs / rates["bf16" if bf16 else "fp32"]
        row = {
            "median_s": round(median, 4),
            "p90_s": round(float(np.percentile(times[name], 90)), 4),
            "vs_eager_optimized": round(baseline / median, 3),
            "floor_s": round(floor, 4),
            "floor_fraction": round(floor / median, 3),
        }
        if reference:
            report = compare_detections(
                outputs[reference], outputs[name], cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
                max_detections=cfg.TEST.DETECTIONS_PER_IMAGE,
            )  # fmt: skip
            row["parity_passed"] = report.passed
            row["parity"] = report.summary()
        result_rows[name] = row
    return {
        "images": len(images),
        "repeats": repeats,
        "threads": threads,
        "size": [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST],
        "model_gmac_per_image": round(macs / 1e9, 2),
        "conv3x3_tflops": {k: round(2 * v / 1e12, 3) for k, v in rates.items()},
        "rows": result_rows,
    }


def format_table(result: dict) -> str:
    lines = [
        f"model: {result['model_gmac_per_image']} GMAC/image at {result['size']}; 3x3 conv: "
        + ", ".join(f"{k} {v} TFLOP/s" for k, v in result["conv3x3_tflops"].items()),
        f"{'row':34} {'median s':>9} {'p90 s':>7} {'vs eager opt':>12} {'floor s':>8} "
        f"{'of floor':>8}  parity",
    ]
    for name, row in result["rows"].items():
        parity = {True: "ok", False: "FAILED"}.get(row.get("parity_passed"), "-")
        lines.append(
            f"{name:34} {row['median_s']:9.4f} {row['p90_s']:7.4f} "
            f"{row['vs_eager_optimized']:12.3f} {row['floor_s']:8.4f} "
            f"{row['floor_fraction']:8.1%}  {parity}"
        )
    return "\n".join(lines)


def get_parser() -> ToolArgumentParser:
    parser = ToolArgumentParser(__doc__.split("\n\n")[0], output="JSON file for the results")
    parser.add_argument("--weights", help="checkpoint (default: MODEL.WEIGHTS, else the run's)")
    parser.add_argument("--random-weights", action="store_true",
                        help="seeded random weights (speed only; parity is meaningless)")  # fmt: skip
    parser.add_argument("--dataset", default="pennfudan_val", help="images to time on")
    parser.add_argument("--num-images", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, help="INPUT.MIN_SIZE_TEST (default: the config's)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--formats", nargs="+", default=sorted(SUPPORTED), choices=sorted(SUPPORTED)
    )
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = get_parser().parse_args(argv)
    setup_logger(name="instseg_d2")
    opts = list(args.opts) + (["INPUT.MIN_SIZE_TEST", str(args.size)] if args.size else [])
    with tempfile.TemporaryDirectory() as folder:
        if args.random_weights:
            cfg = setup_inference_config(args.config_file, opts, "random", None).clone()
            cfg.defrost()
            torch.manual_seed(0)
            DetectionCheckpointer(build_model(cfg), save_dir=folder).save("random")
            cfg.MODEL.WEIGHTS = os.path.join(folder, "random.pth")
            cfg.freeze()
        else:
            cfg = setup_inference_config(args.config_file, opts, args.weights, None)
        dicts = get_dataset_dicts(args.dataset, num_images=args.num_images)
        images = [read_image(d["file_name"], format="BGR") for d in dicts]
        result = run(cfg, images, repeats=args.repeats, threads=args.threads,
                     formats=args.formats)  # fmt: skip
    print(format_table(result))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def cli(argv: list[str] | None = None) -> int:
    main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(cli))
