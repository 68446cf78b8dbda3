"""read_image / image_size / read_label_image on tiny generated files with real-world quirks."""

from __future__ import annotations

import io

import numpy as np
import pytest
from detectron2.data import detection_utils
from PIL import Image

from instseg_d2.data.image_io import (
    EXIF_ORIENTATION_TAG,
    BadImageError,
    image_size,
    read_image,
    read_label_image,
)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_rgb_png_matches_detectron2(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(path)
    bgr = read_image(path)
    assert bgr.shape == (5, 7, 3) and bgr.dtype == np.uint8
    np.testing.assert_array_equal(bgr, detection_utils.read_image(str(path), format="BGR"))
    np.testing.assert_array_equal(read_image(path, format="RGB"), rgb)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    path = tmp_path / "gray.png"
    Image.fromarray(gray, mode="L").save(path)
    bgr = read_image(path)
    assert bgr.shape == (3, 4, 3)
    for channel in range(3):
        np.testing.assert_array_equal(bgr[:, :, channel], gray)
    assert read_image(path, format="L").shape == (3, 4, 1)


def test_rgba_drops_alpha_and_keeps_colour_order(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # pure red, fully transparent
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    bgr = read_image(path)
    assert bgr.shape == (2, 2, 3)
    assert bgr[0, 0].tolist() == [0, 0, 200]


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 1000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file
    gray = read_image(path, format="L")[:, :, 0]
    assert gray.tolist() == [[0, 100, 255, 4]]  # 1000 / 257 = 3.9 -> 4
    # Detectron2's own reader clips everything above 255 to 255: the reason for this function.
    assert detection_utils.read_image(str(path), format="L")[0, 3, 0] == 255


def test_palette_image(tmp_path):
    image = Image.new("P", (3, 2))
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    image.putpixel((1, 1), 1)
    path = tmp_path / "palette.png"
    image.save(path)
    assert read_image(path, format="RGB")[1, 1].tolist() == [10, 200, 30]


@pytest.mark.parametrize(
    "orientation, expected_hw", [(1, (20, 40)), (3, (20, 40)), (6, (40, 20)), (8, (40, 20))]
)
def test_exif_orientation_applied_like_detectron2(tmp_path, orientation, expected_hw):
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:5, :5] = 255  # a white top-left corner tells where the image went
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    path = tmp_path / f"rot{orientation}.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    ours = read_image(path)
    assert ours.shape[:2] == expected_hw
    assert image_size(path) == expected_hw  # registration sizes agree with the pixels
    reference = detection_utils.read_image(str(path), format="BGR")
    np.testing.assert_array_equal(ours, reference)


def test_truncated_png_and_jpeg(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for suffix, fmt in ((".png", "PNG"), (".jpg", "JPEG")):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format=fmt)
        path = tmp_path / f"cut{suffix}"
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        with pytest.raises(BadImageError, match=rf"^{path}: image data is corrupt or truncated"):
            read_image(path)


def test_zero_byte_missing_and_non_image_files(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(BadImageError, match=rf"^{empty}: empty file \(0 bytes\)"):
        read_image(empty)
    with pytest.raises(BadImageError, match=r"nope\.png: file not found"):
        image_size(tmp_path / "nope.png")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(BadImageError, match=rf"^{text}: not a readable image"):
        read_image(text)
    assert issubclass(BadImageError, ValueError)


def test_unknown_format_is_rejected(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (2, 2)).save(path)
    with pytest.raises(ValueError, match="format must be"):
        read_image(path, format="HSV")


def test_read_label_image_keeps_ids_and_rejects_colour(tmp_path):
    ids = np.array([[0, 1], [3, 255]], dtype=np.uint8)
    path = tmp_path / "mask.png"
    Image.fromarray(ids, mode="L").save(path)
    np.testing.assert_array_equal(read_label_image(path), ids)
    colour = tmp_path / "colour_mask.png"
    colour.write_bytes(_png_bytes(Image.new("RGB", (2, 2))))
    with pytest.raises(BadImageError, match="must have one channel"):
        read_label_image(colour)
