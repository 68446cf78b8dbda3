"""Training batches of images that pad to the same shape (``INSTSEG.SHAPE_GROUPING``).

Detectron2 pads every image of a batch to the batch's largest height and width (rounded up to
the backbone's size divisibility), and its ``AspectRatioGroupedDataset`` only keeps landscape and
portrait images apart. With multi-scale training sizes and images of many aspect ratios the
padding is a large share of every convolution's input: on Penn-Fudan at the CPU recipe's sizes a
batch of 4 holds about a third more pixels than its images. Grouping by the padded shape itself
(the image's height and width rounded up to ``bin`` pixels) leaves only the rounding.

Images wait in their shape's bucket until it holds a batch, as in Detectron2's grouping, so the
stream of images is the sampler's, reordered.
"""

from __future__ import annotations

from collections.abc import Iterator

from detectron2.data.common import AspectRatioGroupedDataset

from ..utils.errors import ConfigError

__all__ = ["PaddedShapeGroupedDataset", "group_by_padded_shape", "padded_shape"]


def padded_shape(height: int, width: int, bin: int) -> tuple[int, int]:  # noqa: A002
    """``(height, width)`` rounded up to multiples of ``bin``."""
    return -(-height // bin) * bin, -(-width // bin) * bin


class PaddedShapeGroupedDataset(AspectRatioGroupedDataset):
    """Batches of mapped dicts whose ``image`` tensors (C x H x W) have one padded shape.

    Args:
        dataset: an iterable of mapped dicts (Detectron2's per-image training loader).
        batch_size: images per batch.
        bin: pixels the height and width are rounded up to (the backbone's size divisibility
            pads no further).
    """

    def __init__(self, dataset, batch_size: int, bin: int):  # noqa: A002
        if bin <= 0:
            raise ConfigError(f"INSTSEG.SHAPE_GROUPING.BIN must be > 0 pixels, got {bin}")
        super().__init__(dataset, batch_size)
        self.bin = bin
        self._shape_buckets: dict[tuple[int, int], list[dict]] = {}

    def __iter__(self) -> Iterator[list[dict]]:
        for d in self.dataset:
            height, width = d["image"].shape[-2:]
            bucket = self._shape_buckets.setdefault(padded_shape(height, width, self.bin), [])
            bucket.append(d)
            if len(bucket) == self.batch_size:
                batch = bucket[:]
                del bucket[:]
                yield batch


def group_by_padded_shape(loader, bin: int) -> PaddedShapeGroupedDataset:  # noqa: A002
    """Detectron2's aspect-ratio-grouped training loader regrouped by padded shape."""
    if not isinstance(loader, AspectRatioGroupedDataset):
        raise ConfigError(
            "INSTSEG.SHAPE_GROUPING.ENABLED regroups Detectron2's aspect-ratio grouping: set "
            "DATALOADER.ASPECT_RATIO_GROUPING True (and keep the default collate), or turn "
            "INSTSEG.SHAPE_GROUPING.ENABLED off"
        )
    return PaddedShapeGroupedDataset(loader.dataset, loader.batch_size, bin)
