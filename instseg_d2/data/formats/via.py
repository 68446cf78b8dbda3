"""VGG Image Annotator (VIA) 1/2 json: :func:`load_via`, and the parser it is built on.

Accepted layouts (all produce the same result):

* VIA 1.x ``via_region_data.json``: ``{"<filename><size>": {"filename", "size", "regions", ...}}``
  with ``regions`` a dict ``{"0": region, ...}`` (VIA 1) or a list (VIA 2 "export as json");
* VIA 2 project files: the same mapping under ``"_via_img_metadata"``.

VIA 3 projects (``"project"``/``"file"``/``"metadata"`` keys) are rejected with a message that
says how to export VIA 2 json instead.

Shapes become closed polygons: ``polygon`` and ``polyline`` (closed) by their points, ``rect`` by
its four corners, ``circle`` and ``ellipse`` (with optional ``theta``) by ``ELLIPSE_POINTS``
points. ``point`` and unknown shapes are rejected. Every problem is reported (all at once, in one
:class:`ViaFormatError`) naming the json file, the image and the region.

Coordinates: VIA stores integer pixel indices, and matterport's balloon code rasterises them as
pixel centres (``skimage.draw.polygon``); Detectron2 puts pixel ``i``'s centre at ``i + 0.5``, so
``PIXEL_CENTER_SHIFT`` is added to every coordinate, as Detectron2's balloon tutorial does.

Classes: with ``class_attribute``, ``region_attributes[class_attribute]`` names each region's
class: a text, dropdown or radio value (surrounding white space stripped), or a checkbox dict
with exactly one option ticked. The class order is the attribute's ``options`` in a VIA 2
project file, else the names sorted. Without ``class_attribute`` every region is ``class_name``.

(Longer than ~300 lines: the VIA parser, which balloon's tests and the property tests use on its
own, and the reader built on it are one format's code.)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...utils.parallel import parallel_map
from ..errors import DatasetError
from ..image_io import BadImageError
from .common import (
    ELLIPSE_POINTS,
    OUTSIDE_TOLERANCE,
    LoadedSplit,
    ProblemLog,
    check_unique_image_ids,
    clip_polygons,
    clip_xy,
    ellipse_polygon,
    image_size_or_error,
    polygon_annotation,
    stable_image_id,
)

__all__ = [
    "ELLIPSE_POINTS",
    "PIXEL_CENTER_SHIFT",
    "ViaFormatError",
    "ViaImage",
    "load_via",
    "load_via_file",
    "parse_via",
    "polygon_to_annotation",
    "shape_to_polygon",
    "via_image_id",
]

PIXEL_CENTER_SHIFT = 0.5
_VIA3_KEYS = {"project", "file", "metadata", "view"}


class ViaFormatError(DatasetError):
    """A VIA json file that cannot be read as region annotations."""


@dataclass
class ViaImage:
    """One image entry: its file name, VIA's recorded byte size, one polygon per region and the
    region's ``region_attributes`` (same order).

    Polygons are lists of ``(x, y)`` in VIA's pixel coordinates (no shift applied).
    """

    filename: str
    size: int | None
    polygons: list[list[tuple[float, float]]] = field(default_factory=list)
    attributes: list[Any] = field(default_factory=list)


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
        flat = ellipse_polygon(cx, cy, rx, ry, theta)
        return list(zip(flat[0::2], flat[1::2], strict=True))
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


def _image_entries(data: Any, source: str) -> dict:
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
    return data


def parse_via(data: Any, source: str = "<via json>") -> list[ViaImage]:
    """The images of decoded VIA json ``data`` (see the module docstring for accepted layouts).

    Raises one ViaFormatError listing every bad entry and region, each named.
    """
    entries = _image_entries(data, source)
    log = ProblemLog(source, ViaFormatError)
    images = []
    for key, entry in entries.items():
        if key.startswith("_via_"):
            continue  # other VIA 2 project sections (_via_settings, _via_attributes, ...)
        if not isinstance(entry, dict):
            log.error(source, f"entry {key!r} must be an object, got {entry!r}")
            continue
        filename = entry.get("filename")
        if not isinstance(filename, str) or not filename:
            log.error(source, f"entry {key!r} has no 'filename'")
            continue
        size = entry.get("size")
        size = int(size) if isinstance(size, int) and not isinstance(size, bool) else None
        image = ViaImage(filename, size)
        try:
            regions = _regions(entry, filename)
        except ViaFormatError as exc:
            log.error(source, str(exc))
            continue
        for i, region in enumerate(regions):
            where = f"{filename} region {i}"
            try:
                if not isinstance(region, dict):
                    raise ViaFormatError(f"{where}: a region must be an object, got {region!r}")
                image.polygons.append(shape_to_polygon(region.get("shape_attributes"), where))
                image.attributes.append(region.get("region_attributes"))
            except ViaFormatError as exc:
                log.error(source, str(exc))
        images.append(image)
    log.raise_if_errors()
    return images


def read_via_json(json_file: str | os.PathLike) -> Any:
    """The decoded json of a VIA file; a missing or broken file raises ViaFormatError naming it."""
    json_file = os.fspath(json_file)
    try:
        with open(json_file, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ViaFormatError(f"{json_file}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ViaFormatError(f"{json_file}: not valid JSON ({exc})") from None


def load_via_file(json_file: str | os.PathLike) -> list[ViaImage]:
    """Read and parse a VIA json file; any problem raises ViaFormatError naming the file."""
    return parse_via(read_via_json(json_file), os.fspath(json_file))


def via_image_id(relative_path: str) -> int:
    """Stable 31-bit id from ``<image folder name>/<filename>``."""
    return stable_image_id(relative_path)


def polygon_to_annotation(
    points: list[tuple[float, float]], height: int, width: int, category_id: int = 0
) -> dict:
    """A Detectron2 polygon annotation from VIA points: shifted to pixel centres, clipped (any
    distance) onto the image."""
    flat = [v + PIXEL_CENTER_SHIFT for point in points for v in point]
    clipped, _, _, _ = clip_xy(flat, height, width, None)
    return polygon_annotation([clipped], category_id)


def _declared_options(data: Any, attribute: str) -> list[str] | None:
    """The option ids of region attribute ``attribute`` in a VIA 2 project, if it declares any."""
    try:
        options = data["_via_attributes"]["region"][attribute]["options"]
    except (KeyError, TypeError):
        return None
    return list(options) if isinstance(options, dict) and options else None


def _region_class(attrs: Any, attribute: str) -> str:
    """The class name in one region's ``region_attributes``; raises ValueError saying why not."""
    if not isinstance(attrs, dict):
        raise ValueError(f"'region_attributes' must be an object, got {attrs!r}")
    if attribute not in attrs:
        raise ValueError(f"no region attribute {attribute!r} (has {sorted(attrs)})")
    value = attrs[attribute]
    if isinstance(value, dict):  # a checkbox attribute: {option: true, ...}
        ticked = [name for name, on in value.items() if on]
        if len(ticked) != 1:
            raise ValueError(
                f"region attribute {attribute!r} has {len(ticked)} options ticked {ticked}; "
                "an instance needs exactly one class"
            )
        value = ticked[0]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"region attribute {attribute!r} is {value!r}, not a class name")
    return value.strip()


def load_via(
    json_file: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    class_attribute: str | None = None,
    *,
    class_name: str = "object",
    outside_tolerance: float | None = OUTSIDE_TOLERANCE,
    num_workers: int | None = None,
) -> LoadedSplit:
    """The images of a VIA json whose files are in ``image_dir`` (default: the json's folder).

    Records are sorted by file name; ``image_id`` is :func:`via_image_id` of
    ``<image_dir name>/<filename>``; images without regions stay, with no annotations. Image
    sizes come from the image headers (VIA does not record them). Raises DatasetError listing
    every problem: bad regions, unknown classes, images listed twice, missing or unreadable.
    """
    json_file = Path(json_file)
    image_dir = json_file.parent if image_dir is None else Path(image_dir)
    data = read_via_json(json_file)
    images = sorted(parse_via(data, str(json_file)), key=lambda im: im.filename)
    log = ProblemLog(json_file)
    declared = _declared_options(data, class_attribute) if class_attribute else None

    labels: list[list[str]] = []
    for image in images:
        names = []
        for i, attrs in enumerate(image.attributes):
            if class_attribute is None:
                names.append(class_name)
                continue
            try:
                names.append(_region_class(attrs, class_attribute))
            except ValueError as exc:
                log.error(json_file, f"{image.filename} region {i}: {exc}")
                names.append("")
            if declared is not None and names[-1] and names[-1] not in declared:
                log.error(
                    json_file,
                    f"{image.filename} region {i}: class {names[-1]!r} is not among the options "
                    f"{declared} of region attribute {class_attribute!r}",
                )
        labels.append(names)
    found = sorted({name for names in labels for name in names if name})
    classes = (declared or found) if class_attribute else [class_name]
    index = {name: i for i, name in enumerate(classes)}

    paths, seen = [], set()
    for image in images:
        path = image_dir / image.filename
        if image.filename in seen:
            log.error(path, f"listed more than once in {json_file}")
        seen.add(image.filename)
        paths.append(path)
    sizes = parallel_map(
        lambda p: image_size_or_error(p) if p.is_file() else None, paths, num_workers
    )
    dicts = []
    for image, names, path, size in zip(images, labels, paths, sizes, strict=True):
        if size is None:
            log.error(path, f"image listed in {json_file.name} not found")
            continue
        if isinstance(size, BadImageError):
            log.error(path, str(size).removeprefix(f"{path}: "))
            continue
        height, width = size
        if image.size is not None and image.size != path.stat().st_size:
            log.note(
                path,
                f"{path.stat().st_size} bytes but VIA recorded {image.size}; the annotations "
                "may be for another version of the image",
            )
        annotations = []
        for i, (points, name) in enumerate(zip(image.polygons, names, strict=True)):
            flat = [v + PIXEL_CENTER_SHIFT for point in points for v in point]
            where = f"{image.filename} region {i}"
            clipped = clip_polygons([flat], height, width, outside_tolerance, log, json_file, where)
            annotations.append(polygon_annotation(clipped, index.get(name, 0)))
        dicts.append(
            {
                "file_name": str(path),
                "height": height,
                "width": width,
                "image_id": via_image_id(f"{image_dir.name}/{image.filename}"),
                "annotations": annotations,
            }
        )
    check_unique_image_ids(log, dicts, image_dir, "image file names")
    log.raise_if_errors()
    return LoadedSplit(
        dicts=dicts,
        classes=classes,
        dataset_ids=list(range(1, len(classes) + 1)),
        notes=log.notes,
        num_negative_images=sum(not d["annotations"] for d in dicts),
        source=str(json_file),
        class_order="declared" if declared else "sorted",
    )
