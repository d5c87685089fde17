"""The tiles' picture files: grey levels, mask outlines."""

from __future__ import annotations

import numpy as np

from pipeline.report.tile_files import map_png, mask_outline, outline_png, outline_rgba


def test_map_png_is_the_grey_level_of_the_map() -> None:
    from io import BytesIO

    from PIL import Image

    values = np.array([[0.0, 0.5], [1.0, np.nan]], dtype=np.float32)
    img = Image.open(BytesIO(map_png(values)))
    assert img.mode == "L"
    assert np.asarray(img).tolist() == [[0, 128], [255, 0]]


def test_a_mask_outline_is_the_masks_border() -> None:
    from io import BytesIO

    from PIL import Image

    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 2:6] = True
    edge = mask_outline(mask)
    ring = mask.copy()
    ring[3:5, 3:5] = False
    np.testing.assert_array_equal(edge, ring)
    assert mask_outline(mask, width=2)[2:6, 2:6].all()
    img = Image.open(BytesIO(outline_png(outline_rgba(mask))))
    assert img.mode == "RGBA"
    alpha = np.asarray(img)[..., 3]
    np.testing.assert_array_equal(alpha > 0, ring)
