"""Overlay PNGs: boxes land on the image's pixels after the thumbnail, the image is kept."""

from __future__ import annotations

import numpy as np
from PIL import Image

from monai_smalldet.visualize import OVERLAY_TITLE_PX, overlay_png


def test_overlay_draws_findings_and_truth_on_the_image_pixels(tmp_path):
    image = np.tile(np.linspace(0.0, 1.0, 400, dtype=np.float32), (300, 1))  # (H=300, W=400) ramp
    out = overlay_png(
        image,
        tmp_path / "o.png",
        boxes=[[100, 60, 200, 140]],
        scores=[0.42],
        truth=[[20, 200, 60, 260]],
        max_side=200,  # half size: every coordinate halves
        title="L CC  1 finding(s)",
    )
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]  # no temporary file left
    rgb = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert rgb.shape == (150 + OVERLAY_TITLE_PX, 200, 3)
    body = rgb[OVERLAY_TITLE_PX:]
    red, lime = (255, 0, 0), (0, 255, 0)
    # the finding's outline at (50, 30)-(99, 69) thumbnail pixels, the truth's at (10, 100)-(29, 129)
    for x, y in [(50, 30), (75, 30), (99, 50), (75, 69), (50, 50)]:
        assert tuple(body[y, x]) == red, (x, y, body[y, x])
    for x, y in [(10, 100), (20, 129), (29, 110)]:
        assert tuple(body[y, x]) == lime, (x, y, body[y, x])
    # inside the boxes and elsewhere: the image itself, gray, brightness rising left to right
    inside = body[50, 60:90]
    assert (inside[:, 0] == inside[:, 1]).all() and (inside[:, 1] == inside[:, 2]).all()
    assert np.all(np.diff(body[148, :, 0]) >= 0) and body[148, 0, 0] < 10 and body[148, -1, 0] > 245
    # the title strip holds the (dark) title text on white
    strip = rgb[:OVERLAY_TITLE_PX]
    assert strip.min() < 100 and np.median(strip) == 255


def test_overlay_without_findings_is_the_image(tmp_path):
    image = np.full((64, 48), 0.5, dtype=np.float32)
    out = overlay_png(image, tmp_path / "sub" / "o.png")
    rgb = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert rgb.shape == (64 + OVERLAY_TITLE_PX, 48, 3)
    assert (rgb[OVERLAY_TITLE_PX:] == 128).all()
