#!/usr/bin/env python
"""Draw the ground truth of a config's training sets, as Detectron2's tools/visualize_data.py.

    python tools/visualize_data.py --config-file configs/PennFudan/mask_rcnn_R_18_FPN_gn_scratch_cpu.yaml \\
        --source annotation --output output/vis_gt
    python tools/visualize_data.py --config-file ... --source dataloader --output output/vis_aug \\
        --num-images 8 INPUT.MIN_SIZE_TRAIN "(320,)"

``annotation`` draws the registered dataset dicts on the original images; ``dataloader`` draws
what the model is trained on (after resizing, flips and other augmentations of the config).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, uninstalled

import instseg_d2  # noqa: E402,F401  (first: quiets third-party deprecation notices)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data import detection_utils as utils  # noqa: E402
from detectron2.utils.visualizer import Visualizer  # noqa: E402

from instseg_d2.data.image_io import read_image  # noqa: E402
from instseg_d2.engine.defaults import setup_config  # noqa: E402
from instseg_d2.engine.trainer import Trainer  # noqa: E402
from instseg_d2.utils.cli import ToolArgumentParser, run_tool  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ToolArgumentParser(__doc__.split("\n\n")[0], output="folder for the drawings")
    parser.add_argument("--source", choices=["annotation", "dataloader"], required=True)
    parser.add_argument("--num-images", type=int, default=None, help="stop after N (all)")
    parser.add_argument("--scale", type=float, default=1.0, help="drawing scale")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path]:
    """Draw the images; returns the written files."""
    args = parse_args(argv)
    cfg, _ = setup_config(args.config_file, args.opts)
    cfg.DATALOADER.NUM_WORKERS = 0  # a handful of images: worker start-up would cost more
    cfg.freeze()
    metadata = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
    Path(args.output).mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(vis_image, name: str) -> None:
        path = Path(args.output) / name
        vis_image.save(str(path))
        written.append(path)

    dicts = [d for name in cfg.DATASETS.TRAIN for d in DatasetCatalog.get(name)]
    num_images = len(dicts) if args.num_images is None else min(args.num_images, len(dicts))

    if args.source == "annotation":
        for record in dicts[:num_images]:
            image = read_image(record["file_name"], format="RGB")
            visualizer = Visualizer(image, metadata=metadata, scale=args.scale)
            vis = visualizer.draw_dataset_dict(record)
            save(vis, Path(record["file_name"]).stem + ".jpg")
        return written

    # The training loader (the Trainer's, so the same mapper and augmentations) is infinite and
    # shuffles: take the first num_images it yields.
    loader = Trainer.build_train_loader(cfg)
    per_image_stream = itertools.chain.from_iterable(loader)
    for index, per_image in enumerate(itertools.islice(per_image_stream, num_images)):
        image = per_image["image"].permute(1, 2, 0).cpu().numpy()
        image = utils.convert_image_to_rgb(image, cfg.INPUT.FORMAT)
        visualizer = Visualizer(image, metadata=metadata, scale=args.scale)
        target = per_image["instances"].get_fields()
        labels = [metadata.thing_classes[i] for i in target["gt_classes"]]
        vis = visualizer.overlay_instances(
            labels=labels, boxes=target.get("gt_boxes"), masks=target.get("gt_masks")
        )
        save(vis, f"{index:03d}_{Path(per_image['file_name']).stem}.jpg")
    return written


def cli(argv: list[str] | None = None) -> int:
    files = main(argv)
    print(f"wrote {len(files)} images")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(cli))
