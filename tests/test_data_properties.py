"""Property-based tests (hypothesis) of the mask encoder and the VIA parser."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from instseg_d2.data.formats.via import ViaFormatError, parse_via, polygon_to_annotation
from instseg_d2.data.masks import decode_rle, id_mask_to_annotations

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

id_masks = st.tuples(st.integers(1, 12), st.integers(1, 12)).flatmap(
    lambda hw: arrays(np.uint8, hw, elements=st.integers(0, 5))
)


@FAST
@given(id_masks)
def test_decode_encode_is_identity_for_every_instance(id_mask):
    annotations = id_mask_to_annotations(id_mask)
    assert [a["instance_id"] for a in annotations] == sorted(set(id_mask.flat) - {0})
    rebuilt = np.zeros_like(id_mask)
    for ann in annotations:
        binary = decode_rle(ann["segmentation"]).astype(bool)
        np.testing.assert_array_equal(binary, id_mask == ann["instance_id"])
        rebuilt[binary] = ann["instance_id"]
        ys, xs = np.nonzero(binary)
        x, y, w, h = ann["bbox"]
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert mask_util.area(ann["segmentation"]) == binary.sum()
    np.testing.assert_array_equal(rebuilt, id_mask)


coordinates = st.floats(-100, 400, allow_nan=False, allow_infinity=False)


@FAST
@given(
    st.lists(st.tuples(coordinates, coordinates), min_size=3, max_size=12),
    st.integers(1, 300),
    st.integers(1, 300),
)
def test_polygon_boxes_lie_inside_the_image_and_match_the_extent(points, height, width):
    ann = polygon_to_annotation(points, height, width)
    x0, y0, x1, y1 = ann["bbox"]
    assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
    (flat,) = ann["segmentation"]
    assert len(flat) == 2 * len(points)
    assert [x0, y0, x1, y1] == [min(flat[0::2]), min(flat[1::2]), max(flat[0::2]), max(flat[1::2])]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=True)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
shape_names = st.sampled_from(
    ["polygon", "polyline", "rect", "circle", "ellipse", "point", "other"]
)
shape_keys = st.sampled_from(
    [
        "all_points_x",
        "all_points_y",
        "x",
        "y",
        "width",
        "height",
        "cx",
        "cy",
        "r",
        "rx",
        "ry",
        "theta",
    ]
)
# VIA-shaped documents whose leaves are random: reaches the deep parsing paths.
via_like = st.dictionaries(
    st.text(max_size=6),
    st.fixed_dictionaries(
        {
            "filename": st.text(max_size=6) | json_values,
            "regions": st.lists(
                st.fixed_dictionaries(
                    {
                        "shape_attributes": st.fixed_dictionaries({"name": shape_names}).flatmap(
                            lambda d: st.dictionaries(
                                shape_keys,
                                json_values | st.lists(st.integers(-5, 50), max_size=5),
                                max_size=6,
                            ).map(lambda e: {**d, **e})
                        )
                    }
                ),
                max_size=3,
            )
            | json_values,
        }
    ),
    max_size=3,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    json_values | via_like | st.fixed_dictionaries({"_via_img_metadata": via_like | json_values})
)
def test_random_json_gives_images_or_a_via_format_error(data):
    try:
        images = parse_via(data, "random.json")
    except ViaFormatError as exc:
        assert str(exc).startswith("random.json")
        return
    for image in images:
        assert isinstance(image.filename, str) and image.filename
        for polygon in image.polygons:
            assert len(polygon) >= 3
            assert all(np.isfinite(v) for point in polygon for v in point)
