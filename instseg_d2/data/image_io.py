"""Image reading that survives the files people actually have, with errors that name the file.

Detectron2's ``detection_utils.read_image`` applies the EXIF orientation and converts with PIL.
This module does the same (so sizes and pixels agree with what the Detectron2 data loader sees
for ordinary 8-bit images) and adds what it lacks:

* 16-bit grayscale PNGs are scaled to 8 bits (``value / 257``, so 65535 maps to 255) instead of
  being clipped at 255 by PIL's ``convert("RGB")``;
* grayscale, palette, RGBA/LA and CMYK images become 3-channel images (alpha is dropped, as PIL
  and Detectron2 do);
* missing, empty (0 bytes), unreadable and truncated files raise :class:`BadImageError`, whose
  message starts with the file name.
"""

from __future__ import annotations

import io
import os
import struct

import numpy as np
from detectron2.data.detection_utils import convert_PIL_to_numpy
from detectron2.utils.file_io import PathManager
from PIL import Image

__all__ = ["BadImageError", "read_image", "read_label_image", "image_size", "EXIF_ORIENTATION_TAG"]

EXIF_ORIENTATION_TAG = 274
# EXIF orientations 5..8 rotate by 90 degrees, so the displayed image has width and height swapped.
_SWAPS_SIDES = {5, 6, 7, 8}
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Errors PIL raises for corrupt data, depending on the codec and where the data breaks off.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    Image.DecompressionBombError,
)


class BadImageError(ValueError):
    """An image file that cannot be used; the message names the file and the problem."""


def _open(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` with PIL (header only), raising BadImageError for missing/empty/unknown files."""
    path = os.fspath(path)
    try:
        with PathManager.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise BadImageError(f"{path}: file not found") from None
    except OSError as exc:
        raise BadImageError(f"{path}: cannot be read ({exc})") from None
    if not data:
        raise BadImageError(f"{path}: empty file (0 bytes)")
    try:
        return Image.open(io.BytesIO(data))
    except _DECODE_ERRORS as exc:
        raise BadImageError(f"{path}: not a readable image ({exc})") from None


def _exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, struct.error):
        # Broken EXIF blocks are common in camera/phone JPEGs; Detectron2 ignores them too.
        return 1


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of the image as :func:`read_image` returns it (EXIF orientation applied).

    Reads only the header, so it is cheap enough for dataset registration.
    """
    image = _open(path)
    width, height = image.size
    if _exif_orientation(image) in _SWAPS_SIDES:
        width, height = height, width
    return height, width


def _to_8bit(image: Image.Image, path: str) -> Image.Image:
    """Bring any PIL mode to "RGB" or "L" with 8 bits per channel."""
    mode = image.mode
    if mode in ("RGB", "L"):
        return image
    if mode.startswith("I"):  # "I;16", "I;16B", "I;16L", "I" (16-bit PNGs open as one of these)
        array = np.asarray(image).astype(np.int64)
        if array.min() < 0 or array.max() > 65535:
            raise BadImageError(
                f"{path}: {mode} image with values outside 0..65535 is not supported"
            )
        return Image.fromarray(((array + 128) // 257).astype(np.uint8), mode="L")
    if mode == "F":
        raise BadImageError(f"{path}: floating-point images (PIL mode F) are not supported")
    if mode in ("1", "LA") or (
        mode == "P" and "transparency" not in image.info and _is_gray(image)
    ):
        return image.convert("L")
    # P, PA, RGBA, RGBX, CMYK, YCbCr, LAB, HSV: PIL knows how to go to RGB (alpha is dropped).
    return image.convert("RGB")


def _is_gray(image: Image.Image) -> bool:
    palette = image.getpalette() or []
    triples = [palette[i : i + 3] for i in range(0, len(palette), 3)]
    return all(r == g == b for r, g, b in triples)


def read_image(path: str | os.PathLike, format: str | None = "BGR") -> np.ndarray:
    """Read an image as an HWC uint8 array in ``format`` ("BGR", "RGB" or "L"; None keeps RGB/L).

    EXIF orientation is applied, as in Detectron2. Raises :class:`BadImageError` naming the file
    for missing, empty, corrupt or truncated files and unsupported pixel types.
    """
    path = os.fspath(path)
    image = _open(path)
    try:
        image.load()  # decodes all pixel data: this is where truncated files fail
    except _DECODE_ERRORS as exc:
        raise BadImageError(f"{path}: image data is corrupt or truncated ({exc})") from None
    method = _TRANSPOSE.get(_exif_orientation(image))
    if method is not None:
        image = image.transpose(method)
    image = _to_8bit(image, path)
    if format is None:
        format = image.mode
    if format not in ("BGR", "RGB", "L"):
        raise ValueError(f"read_image: format must be 'BGR', 'RGB' or 'L', got {format!r}")
    array = convert_PIL_to_numpy(image, format)
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array)


def read_label_image(path: str | os.PathLike) -> np.ndarray:
    """The raw 2-D pixel values of a single-channel label image (e.g. an instance-id mask).

    No EXIF rotation and no conversion: values are ids, not intensities. Raises
    :class:`BadImageError` naming the file if it is unreadable, truncated or has several channels.
    """
    path = os.fspath(path)
    image = _open(path)
    try:
        image.load()
    except _DECODE_ERRORS as exc:
        raise BadImageError(f"{path}: image data is corrupt or truncated ({exc})") from None
    if image.mode not in ("L", "P", "1") and not image.mode.startswith("I"):
        raise BadImageError(
            f"{path}: a label image must have one channel, got PIL mode {image.mode}"
        )
    return np.asarray(image)
