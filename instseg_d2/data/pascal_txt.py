"""Reader for the PASCAL-v1.00 style ``Annotation/*.txt`` files of Penn-Fudan.

These boxes are only a cross-check for the masks (the masks are the ground truth). Coordinates in
the files are 1-based inclusive pixel indices ("Top left pixel co-ordinates : (1, 1)"), so
``(Xmin, Ymin) - (Xmax, Ymax)`` becomes the continuous ``XYXY_ABS`` box
``(Xmin - 1, Ymin - 1, Xmax, Ymax)``, the same convention as a box computed from a mask.
CRLF and LF line endings are both accepted.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from .errors import DatasetError

_SIZE = re.compile(r"Image size \(X x Y x C\)\s*:\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)")
_COUNT = re.compile(r"Objects with ground truth\s*:\s*(\d+)")
_BOX = re.compile(
    r'Bounding box for object (\d+) "[^"]*" \(Xmin, Ymin\) - \(Xmax, Ymax\)\s*:\s*'
    r"\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*-\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)"
)


@dataclass
class PascalAnnotation:
    width: int
    height: int
    num_objects: int
    # object number (1-based, matches the mask pixel value) -> XYXY_ABS box
    boxes: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)


def parse_pascal_txt(path: str | os.PathLike) -> PascalAnnotation:
    """Parse one annotation file; raises DatasetError naming the file if a field is missing."""
    path = os.fspath(path)
    try:
        with open(path, encoding="latin-1") as f:
            text = f.read()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read annotation ({exc})") from None
    size, count = _SIZE.search(text), _COUNT.search(text)
    if size is None or count is None:
        missing = "'Image size'" if size is None else "'Objects with ground truth'"
        raise DatasetError(f"{path}: not a PASCAL-v1.00 annotation (no {missing} line)")
    boxes = {}
    for match in _BOX.finditer(text):
        number, x0, y0, x1, y1 = (int(v) for v in match.groups())
        boxes[number] = (x0 - 1.0, y0 - 1.0, float(x1), float(y1))
    return PascalAnnotation(int(size.group(1)), int(size.group(2)), int(count.group(1)), boxes)


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two XYXY boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
