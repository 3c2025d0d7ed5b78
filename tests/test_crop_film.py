"""The breast crop on scanned-film-like images: a bright film edge joins the breast, a burnt-in
label and a marker into one component unless the edge bands are removed first."""

from __future__ import annotations

import numpy as np
import pytest

from monai_smalldet.data.synthetic import generate_mammogram
from monai_smalldet.transforms.crop import CropBreast


def _film(seed: int, bands: tuple[str, ...], chest: str = "left") -> tuple[np.ndarray, np.ndarray, tuple]:
    """(image (1, H, W), lesion boxes (row1, col1, row2, col2), label box (x1, y1, x2, y2)).

    A textured breast against the chest-wall edge, bright film-edge bands on ``bands``, a
    burnt-in rectangular label touching the band in the far corner, a marker ball in the air,
    scanner noise."""
    rng = np.random.default_rng(seed)
    h, w = 600, 480
    yy, xx = np.mgrid[0:h, 0:w]
    cx = 0 if chest == "left" else w - 1
    breast = ((xx - cx) / (0.62 * w)) ** 2 + ((yy - h * 0.5) / (0.38 * h)) ** 2 < 1
    img = 0.08 + 0.02 * rng.standard_normal((h, w))  # film base + scanner noise
    img[breast] = 0.45 + 0.08 * rng.standard_normal(int(breast.sum()))
    lesions = []
    for r, c, size in (
        (260, 90 if chest == "left" else w - 130, 24),
        (360, 160 if chest == "left" else w - 200, 14),
    ):
        img[r : r + size, c : c + size] += 0.25
        lesions.append([r, c, r + size, c + size])
    band = 14
    for side in bands:
        if side == "top":
            img[:band, :] = 0.95
        elif side == "bottom":
            img[-band:, :] = 0.95
        elif side == "left":
            img[:, :band] = 0.95
        elif side == "right":
            img[:, -band:] = 0.95
    # a label "LCC" in the far corner, touching the top band; a marker ball in the air
    lx1 = w - 120 if chest == "left" else 30
    label = (lx1, band, lx1 + 80, band + 40)
    img[label[1] : label[3], label[0] : label[2]] = 1.0
    mr, mc = h - 80, (w - 60 if chest == "left" else 60)
    img[((yy - mr) ** 2 + (xx - mc) ** 2) < 12**2] = 1.0
    return np.clip(img, 0, 1)[None].astype(np.float32), np.array(lesions, np.float32), label


@pytest.mark.parametrize(
    ("bands", "chest"),
    [
        (("top", "right", "bottom"), "left"),
        (("top", "left", "bottom", "right"), "left"),
        (("top", "left"), "right"),
    ],
)
def test_film_edges_labels_and_markers_are_not_breast(bands, chest):
    img, lesions, label = _film(0, bands, chest)
    x1, y1, x2, y2 = CropBreast(margin_px=8).compute_crop_box(img)
    for r1, c1, r2, c2 in lesions:  # every lesion inside
        assert x1 <= c1 and c2 <= x2 and y1 <= r1 and r2 <= y2
    lx1, ly1, lx2, ly2 = label
    assert lx2 <= x1 or lx1 >= x2 or ly2 <= y1 or ly1 >= y2  # the label is cut off entirely
    h, w = img.shape[1:]
    assert (x2 - x1) * (y2 - y1) < 0.8 * h * w
    # without removing the bands the film's edge holds everything together: the whole film
    assert CropBreast(margin_px=8, border_band_fraction=0).compute_crop_box(img) == (0, 0, w, h)


def test_synthetic_ffdm_crops_are_unchanged_by_the_band_rule():
    """FFDM has dark air at the border: the band rule changes no crop of the project's
    synthetic mammograms (both views and lateralities), and keeps every lesion."""
    for seed in range(8):
        for view in ("CC", "MLO"):
            for side in ("L", "R"):
                m = generate_mammogram(seed, scale=0.08, view=view, laterality=side, n_lesions=2)
                img = (m.image.astype(np.float32) / 4095.0)[None]
                box = CropBreast(margin_px=8).compute_crop_box(img)
                assert box == CropBreast(margin_px=8, border_band_fraction=0).compute_crop_box(img)
                sp = m.pixel_spacing_mm
                for les in m.lesions:
                    bx1, by1, bx2, by2 = (v / sp for v in les.box_mm)
                    assert box[0] <= bx1 and bx2 <= box[2] + 1 and box[1] <= by1 and by2 <= box[3] + 1


def test_the_detection_output_says_what_the_crop_kept():
    from monai_smalldet.inference import MultiScaleDetector
    from tests.fakes import BrightSquareNet

    img, _, label = _film(1, ("top", "right", "bottom"), "left")
    detector = MultiScaleDetector(BrightSquareNet(), scales=(1.0, 0.5), tile_size=128, device="cpu")
    out = detector.predict(img[0]).to_dict()
    x1, y1, x2, y2 = out["crop"]["box_px"]
    h, w = img.shape[1:]
    assert out["crop"]["fraction_kept"] == pytest.approx((x2 - x1) * (y2 - y1) / (h * w), abs=1e-4)
    assert 0 < out["crop"]["fraction_kept"] < 0.8
    assert label[0] >= x2 or label[3] <= y1  # the label lies outside what was kept
    # mirrored (a right breast is flipped to the left first): the box is still in input pixels
    out_r = detector.predict(img[0][:, ::-1].copy(), laterality="R").to_dict()
    rx1, ry1, rx2, ry2 = out_r["crop"]["box_px"]
    assert (rx1, rx2) == pytest.approx((w - x2, w - x1), abs=1) and (ry1, ry2) == pytest.approx(
        (y1, y2), abs=1
    )
