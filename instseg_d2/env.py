"""What a bug report needs: ``python -m instseg_d2.env [--short] [--json]``.

Python, torch, torchvision, CUDA and GPUs, detectron2's version and how it was installed, whether
``detectron2._C`` is built (and so which ops are missing), and where datasets are looked for.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import json
import os
import platform
import sys
from typing import Any

# Ops that live in detectron2._C; without it they raise at use, while everything Mask R-CNN needs
# (RoIAlign, NMS) comes from torchvision.
OPS_NEEDING_C = [
    "deformable convolution (DCN)",
    "rotated boxes: RRPN, rotated NMS, ROIAlignRotated",
    "fast C++ COCO evaluation (pycocotools is used instead)",
]


def detectron2_route() -> dict[str, Any]:
    """Which distribution provides ``detectron2`` and how it got here."""
    info: dict[str, Any] = {"importable": False}
    try:
        import detectron2
    except ImportError as exc:
        info["error"] = str(exc)
        return info
    info.update(
        importable=True, version=detectron2.__version__, path=os.path.dirname(detectron2.__file__)
    )
    dists = md.packages_distributions().get("detectron2", [])
    info["distribution"] = dists[0] if dists else None
    route = "unknown (not installed by pip, e.g. PYTHONPATH)"
    if dists:
        dist = md.distribution(dists[0])
        direct_url = dist.read_text("direct_url.json")
        origin = json.loads(direct_url) if direct_url else {}
        if dists[0] == "sal-detectron2":
            route = (
                "pypi: sal-detectron2 0.7.2 repacked as pure Python (scripts/install_detectron2.py)"
            )
        elif "vcs_info" in origin:
            route = (
                f"source build from {origin.get('url')}@{origin['vcs_info'].get('commit_id', '?')}"
            )
        elif origin.get("dir_info", {}).get("editable"):
            route = f"editable source checkout at {origin.get('url')}"
        else:
            route = f"pip distribution {dists[0]} {dist.version}"
    info["route"] = route
    try:
        importlib.import_module("detectron2._C")
        info["_C"] = True
    except ImportError:
        info["_C"] = False
        info["missing_ops"] = OPS_NEEDING_C
    return info


def torch_info() -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        import torch
        import torchvision
    except ImportError as exc:
        return {"error": str(exc)}
    info["torch"] = torch.__version__
    info["torchvision"] = torchvision.__version__
    info["torch_cuda_build"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    info["cpu_threads"] = torch.get_num_threads()
    info["cpu_capability"] = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    return info


def dataset_info() -> dict[str, Any]:
    from instseg_d2.data.paths import dataset_root, find_datasets

    root = dataset_root()
    return {"DETECTRON2_DATASETS": str(root), "datasets": find_datasets(root)}


def collect() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "executable": sys.executable,
        **torch_info(),
        "detectron2": detectron2_route(),
        **dataset_info(),
    }


def format_report(report: dict[str, Any], short: bool = False) -> str:
    d2 = report["detectron2"]
    lines = [
        f"Python        {report['python']} ({report['executable']})",
        f"torch         {report.get('torch', report.get('error'))} "
        f"(CUDA build {report.get('torch_cuda_build')}, CPU {report.get('cpu_capability')})",
        f"torchvision   {report.get('torchvision')}",
        f"CUDA/GPUs     available={report.get('cuda_available')} {report.get('gpus') or 'no GPU'}",
    ]
    if d2["importable"]:
        lines += [
            f"detectron2    {d2['version']} at {d2['path']}",
            f"  route       {d2['route']}",
            f"  _C built    {'yes' if d2['_C'] else 'no: missing ' + '; '.join(d2['missing_ops'])}",
        ]
    else:
        lines.append(f"detectron2    NOT IMPORTABLE: {d2.get('error')}")
    if not short:
        lines.append(f"DETECTRON2_DATASETS  {report['DETECTRON2_DATASETS']}")
        for name, status in report["datasets"].items():
            lines.append(f"  {name:13s} {status}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--short", action="store_true", help="versions and detectron2 route only")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    report = collect()
    print(json.dumps(report, indent=2) if args.json else format_report(report, args.short))


if __name__ == "__main__":
    main()
