"""Parser for VGG Image Annotator (VIA) region files, as matterport's balloon dataset uses.

Accepted layouts (all produce the same result):

* VIA 1.x ``via_region_data.json``: ``{"<filename><size>": {"filename", "size", "regions", ...}}``
  with ``regions`` a dict ``{"0": region, ...}`` (VIA 1) or a list (VIA 2 "export as json");
* VIA 2 project files: the same mapping under ``"_via_img_metadata"``.

VIA 3 projects (``"project"``/``"file"``/``"metadata"`` keys) are rejected with a message that
says how to export VIA 2 json instead.

Shapes become closed polygons: ``polygon`` and ``polyline`` (closed) by their points, ``rect`` by
its four corners, ``circle`` and ``ellipse`` (with optional ``theta``) by ``ELLIPSE_POINTS``
points. ``point`` and unknown shapes are rejected. Every problem raises :class:`ViaFormatError`
naming the json file, the image and the region.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import DatasetError

ELLIPSE_POINTS = 32
_VIA3_KEYS = {"project", "file", "metadata", "view"}


class ViaFormatError(DatasetError):
    """A VIA json file that cannot be read as region annotations."""


@dataclass
class ViaImage:
    """One image entry: its file name, VIA's recorded byte size, and one polygon per region.

    Polygons are lists of ``(x, y)`` in VIA's pixel coordinates (no shift applied).
    """

    filename: str
    size: int | None
    polygons: list[list[tuple[float, float]]] = field(default_factory=list)


def _number(value: Any, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ViaFormatError(f"{where}: '{name}' must be a finite number, got {value!r}")
    return float(value)


def _points(attrs: dict, where: str) -> list[tuple[float, float]]:
    xs, ys = attrs.get("all_points_x"), attrs.get("all_points_y")
    if not isinstance(xs, list) or not isinstance(ys, list):
        raise ViaFormatError(f"{where}: 'all_points_x' and 'all_points_y' must be lists")
    if len(xs) != len(ys):
        raise ViaFormatError(f"{where}: {len(xs)} x coordinates but {len(ys)} y coordinates")
    points = [
        (_number(x, where, "all_points_x"), _number(y, where, "all_points_y"))
        for x, y in zip(xs, ys, strict=True)
    ]
    # VIA repeats the first point at the end of a closed polygon; a polygon needs 3 distinct ones.
    if len(points) > 1 and points[0] == points[-1]:
        points = points[:-1]
    if len(points) < 3:
        raise ViaFormatError(f"{where}: a polygon needs at least 3 points, got {len(points)}")
    return points


def _ellipse(cx: float, cy: float, rx: float, ry: float, theta: float) -> list[tuple[float, float]]:
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    points = []
    for i in range(ELLIPSE_POINTS):
        a = 2 * math.pi * i / ELLIPSE_POINTS
        x, y = rx * math.cos(a), ry * math.sin(a)
        points.append((cx + x * cos_t - y * sin_t, cy + x * sin_t + y * cos_t))
    return points


def shape_to_polygon(attrs: Any, where: str) -> list[tuple[float, float]]:
    """The polygon of one region's ``shape_attributes``; raises ViaFormatError naming ``where``."""
    if not isinstance(attrs, dict):
        raise ViaFormatError(f"{where}: 'shape_attributes' must be an object, got {attrs!r}")
    name = attrs.get("name")
    if name in ("polygon", "polyline"):
        return _points(attrs, where)
    if name == "rect":
        x, y = _number(attrs.get("x"), where, "x"), _number(attrs.get("y"), where, "y")
        w = _number(attrs.get("width"), where, "width")
        h = _number(attrs.get("height"), where, "height")
        if w <= 0 or h <= 0:
            raise ViaFormatError(f"{where}: rect with non-positive size {w}x{h}")
        return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    if name in ("circle", "ellipse"):
        cx, cy = _number(attrs.get("cx"), where, "cx"), _number(attrs.get("cy"), where, "cy")
        if name == "circle":
            rx = ry = _number(attrs.get("r"), where, "r")
            theta = 0.0
        else:
            rx, ry = _number(attrs.get("rx"), where, "rx"), _number(attrs.get("ry"), where, "ry")
            theta = _number(attrs.get("theta", 0.0), where, "theta")
        if rx <= 0 or ry <= 0:
            raise ViaFormatError(f"{where}: {name} with non-positive radius")
        return _ellipse(cx, cy, rx, ry, theta)
    if name == "point":
        raise ViaFormatError(f"{where}: 'point' regions have no area and cannot be instance masks")
    raise ViaFormatError(
        f"{where}: unsupported shape {name!r} (supported: polygon, polyline, rect, circle, ellipse)"
    )


def _regions(entry: dict, where: str) -> list[Any]:
    regions = entry.get("regions", [])
    if regions is None:
        return []
    if isinstance(regions, dict):
        return list(regions.values())
    if isinstance(regions, list):
        return regions
    raise ViaFormatError(f"{where}: 'regions' must be an object or a list, got {regions!r}")


def parse_via(data: Any, source: str = "<via json>") -> list[ViaImage]:
    """The images of decoded VIA json ``data`` (see the module docstring for accepted layouts)."""
    if not isinstance(data, dict):
        raise ViaFormatError(
            f"{source}: expected a JSON object of images, got {type(data).__name__}"
        )
    if _VIA3_KEYS <= data.keys():
        raise ViaFormatError(
            f"{source}: this is a VIA 3 project, which is not supported; open it in VIA 2 "
            "and use Annotation > Export Annotations (as json)"
        )
    if "_via_img_metadata" in data:
        data = data["_via_img_metadata"]
        if not isinstance(data, dict):
            raise ViaFormatError(f"{source}: '_via_img_metadata' must be an object")
    images = []
    for key, entry in data.items():
        if key.startswith("_via_"):
            continue  # other VIA 2 project sections (_via_settings, _via_attributes, ...)
        if not isinstance(entry, dict):
            raise ViaFormatError(f"{source}: entry {key!r} must be an object, got {entry!r}")
        filename = entry.get("filename")
        if not isinstance(filename, str) or not filename:
            raise ViaFormatError(f"{source}: entry {key!r} has no 'filename'")
        size = entry.get("size")
        size = int(size) if isinstance(size, int) and not isinstance(size, bool) else None
        image = ViaImage(filename, size)
        for i, region in enumerate(_regions(entry, f"{source}: {filename}")):
            where = f"{source}: {filename} region {i}"
            if not isinstance(region, dict):
                raise ViaFormatError(f"{where}: a region must be an object, got {region!r}")
            image.polygons.append(shape_to_polygon(region.get("shape_attributes"), where))
        images.append(image)
    return images


def load_via_file(json_file: str | os.PathLike) -> list[ViaImage]:
    """Read and parse a VIA json file; any problem raises ViaFormatError naming the file."""
    json_file = os.fspath(json_file)
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ViaFormatError(f"{json_file}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ViaFormatError(f"{json_file}: not valid JSON ({exc})") from None
    return parse_via(data, json_file)
