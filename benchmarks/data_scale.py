#!/usr/bin/env python
"""How reading, registering and validating a dataset scale: a synthetic COCO json of N images.

    python benchmarks/data_scale.py                 # 20,000 images of 64x48 px
    python benchmarks/data_scale.py --images 2000 --workers 4

Makes, in a temporary folder, N small PNG images and a COCO instances json (two instances per
image: a polygon and an RLE mask; a tenth of the images without instances) with a dataset file
next to it, then times:

* ``load_coco``: reading the json into Detectron2 dicts (no image is opened: the json records
  the sizes); Detectron2's own ``load_coco_json`` on the same file for comparison;
* ``load_dataset_file``: what registering the dataset file costs (reading, class merge, the
  stratified split of val out of train);
* validation of all images, cold (every image decoded, in ``--workers`` threads, results stored
  in a fresh image-check cache) and warm (the same, answered from the cache), and header-only.

Prints a table with the time per image and the machine (CPU model, cores). The images are
tiny, so decoding is cheap and the per-image overheads dominate; bigger images cost more per
image when cold, not when warm.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, uninstalled

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from instseg_d2.data.dataset_file import load_dataset_file, read_dataset_file  # noqa: E402
from instseg_d2.data.formats import load_coco  # noqa: E402
from instseg_d2.data.image_checks import ImageCheckCache  # noqa: E402
from instseg_d2.data.masks import encode_binary_mask  # noqa: E402
from instseg_d2.data.validation import validate_dataset_dicts  # noqa: E402


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_dataset(root: Path, num_images: int, width: int, height: int) -> Path:
    """Images under ``root/images/<k % 100>/``, ``root/instances.json`` and ``root/data.yaml``."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height, width, 3), np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[height // 2 :, width // 2 :] = 1
    rle = encode_binary_mask(mask)
    images, annotations = [], []
    for k in range(num_images):
        file_name = f"{k % 100:02d}/{k:06d}.png"
        path = root / "images" / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.roll(base, k, axis=1)).save(path, compress_level=1)
        images.append({"id": k + 1, "file_name": file_name, "height": height, "width": width})
        if k % 10 == 9:
            continue  # a negative
        w2, h2 = width / 2, height / 2
        polygon = {
            "segmentation": [[2.0, 2.0, w2, 2.0, w2, h2, 2.0, h2]],
            "bbox": [2.0, 2.0, w2 - 2, h2 - 2],
        }
        masked = {"segmentation": rle, "bbox": [w2, h2, w2, h2]}
        for instance, category in ((polygon, 1 + k % 3), (masked, 2)):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": k + 1,
                    "category_id": category,
                    "iscrowd": 0,
                    **instance,
                }  # fmt: skip
            )
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
    (root / "instances.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    spec = root / "data.yaml"
    spec.write_text("name: scale\nformat: coco\ntrain: instances.json\nimages: images\n")
    return spec


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=20000, help="number of images (20000)")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (CPUs)")
    parser.add_argument("--keep", type=Path, help="build the data here and keep it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from detectron2.data.datasets.coco import load_coco_json
    from tabulate import tabulate

    with tempfile.TemporaryDirectory(prefix="instseg_data_scale_") as scratch:
        root = args.keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        spec_path, build = timed(make_dataset, root, args.images, args.width, args.height)
        n = args.images
        rows = []
        loaded, seconds = timed(load_coco, root / "instances.json", root / "images")
        rows.append(["load_coco (read json, no image opened)", seconds])
        with contextlib.redirect_stdout(io.StringIO()):
            _, seconds = timed(load_coco_json, str(root / "instances.json"), str(root / "images"))
        rows.append(["detectron2 load_coco_json (same file)", seconds])
        spec = read_dataset_file(spec_path)
        _, seconds = timed(load_dataset_file, spec)
        rows.append(["load_dataset_file (register: read, classes, val split)", seconds])
        cache = ImageCheckCache(root / "cache" / "image_checks.sqlite")
        workers = args.workers or os.cpu_count() or 1
        for label, decode in (("cold", True), ("warm", True)):
            problems, seconds = timed(
                validate_dataset_dicts, loaded.dicts, decode, workers, 3, cache
            )
            assert not problems, problems[:3]
            rows.append(
                [f"validate, decode all images, {label} cache ({workers} threads)", seconds]
            )
        _, seconds = timed(validate_dataset_dicts, loaded.dicts, False, workers, 3, None)
        rows.append([f"validate, image headers only, no cache ({workers} threads)", seconds])
        table = [[what, f"{s:.2f}", f"{1e6 * s / n:.0f}"] for what, s in rows]
        print(
            f"{n} images of {args.width}x{args.height} px, {loaded.num_instances()} instances "
            f"(built in {build:.0f} s)"
        )
        print(tabulate(table, headers=["step", "seconds", "us per image"], tablefmt="github"))
        print(
            f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; "
            f"Python {platform.python_version()}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
