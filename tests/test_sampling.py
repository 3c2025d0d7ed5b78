"""Training tiles around lesions: level quotas, offsets that move, zoom, hard negatives, small boxes.

A synthetic pyramid sample is built by the real ``ScalePyramidd`` from an image in which each
lesion is a bright square on a dark ground, so that a tile's content can be checked against
the boxes it carries. Boxes are in MONAI's order (row1, col1, row2, col2).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.apps.detection.transforms.dictionary import RandFlipBoxd
from monai.data import MetaTensor

from monai_smalldet.transforms import ScalePyramidd, from_spatial_order
from monai_smalldet.transforms.sampling import RandLesionTileSamplerd, _place, enlarge_small_boxes

LESION = (200.0, 300.0, 240.0, 340.0)  # rows 200-240, columns 300-340: 40 px square, bright
BENIGN = (500.0, 100.0, 530.0, 130.0)  # 30 px square, half as bright


def _sample() -> dict:
    img = np.zeros((1, 640, 480), np.float32)
    y1, x1, y2, x2 = (int(v) for v in LESION)
    img[0, y1:y2, x1:x2] = 1.0
    by1, bx1, by2, bx2 = (int(v) for v in BENIGN)
    img[0, by1:by2, bx1:bx2] = 0.5
    d = {
        "image": MetaTensor(torch.from_numpy(img)),
        "box": np.array([LESION], np.float32),
        "label": np.array([1]),
        "benign_box": np.array([BENIGN], np.float32),
    }
    return ScalePyramidd("image", ["box", "benign_box"], scales=(1.0, 0.5, 0.25))(d)


def _sampler(**kwargs) -> RandLesionTileSamplerd:
    kwargs.setdefault("tile_size", 128)
    kwargs.setdefault("num_samples", 400)
    s = RandLesionTileSamplerd("image", "box", "label", hard_negative_key="benign_box", **kwargs)
    s.set_random_state(seed=3)
    return s


def test_positive_tiles_hold_the_whole_lesion_at_varying_offsets() -> None:
    tiles = _sampler(pos=1, neg=0, level_weights=(1, 0, 0), scale_jitter=1.0)(_sample())
    assert {t["tile_kind"] for t in tiles} == {"positive"} and {t["tile_level"] for t in tiles} == {0}
    origins = set()
    for t in tiles:
        (by1, bx1, by2, bx2), img = t["box"][0], t["image"][0].numpy()
        assert t["box"].shape == (1, 4) and t["label"].tolist() == [1]
        assert (bx2 - bx1, by2 - by1) == pytest.approx((40, 40))  # whole, not clipped
        # the pixels under the box are the lesion, those outside it are not
        assert img[int(by1) : int(by2), int(bx1) : int(bx2)].min() == 1.0
        assert img.sum() == pytest.approx(40 * 40)
        origins.add(t["tile_origin_px"])
    # 128 - 40 + 1 = 89 admissible offsets per axis: the lesion moves about the tile
    assert len(origins) > 300


def test_level_weights_set_the_share_of_each_level() -> None:
    tiles = _sampler(pos=1, neg=0, level_weights=(0.6, 0.3, 0.1), num_samples=3000)(_sample())
    share = np.bincount([t["tile_level"] for t in tiles], minlength=3) / len(tiles)
    assert share == pytest.approx([0.6, 0.3, 0.1], abs=0.03)


def test_zoom_scales_boxes_and_pixels_alike() -> None:
    tiles = _sampler(pos=1, neg=0, level_weights=(1, 0, 0), scale_jitter=1.5)(_sample())
    zooms = np.array([t["tile_zoom"] for t in tiles])
    assert zooms.min() < 0.75 and zooms.max() > 1.35 and (zooms >= 1 / 1.5 - 0.02).all()
    for t in tiles[:50]:
        side = t["box"][0, 2] - t["box"][0, 0]
        assert side == pytest.approx(40 * t["tile_zoom"], rel=1e-5)
        # the bright area of the resized tile is the box's area (within the resampled rim)
        bright = float((t["image"][0] > 0.5).sum())
        assert bright == pytest.approx(side * side, rel=0.15)


def test_frame_maps_tile_boxes_back_to_the_image() -> None:
    from monai_smalldet.transforms.frames import tile_boxes_to_original

    for t in _sampler(pos=1, neg=0, scale_jitter=1.4, num_samples=60, small_box_rule="keep")(_sample()):
        back = tile_boxes_to_original(from_spatial_order(t["box"]), t["frame"])  # detections: x = column
        assert np.asarray(back)[0] == pytest.approx(from_spatial_order(np.array([LESION]))[0], abs=1e-3)


def test_hard_negatives_are_centred_on_benign_findings_and_carry_no_target() -> None:
    tiles = _sampler(pos=0, neg=1, hard_negative_ratio=1.0, level_weights=(1, 0, 0), scale_jitter=1.0)(
        _sample()
    )
    assert {t["tile_kind"] for t in tiles} == {"hard_negative"}
    for t in tiles:
        img = t["image"][0].numpy()
        assert (img == 0.5).sum() == 30 * 30  # the whole benign finding is in the tile
        assert t["box"].shape == (0, 4) and len(t["label"]) == 0
    mixed = _sampler(pos=0, neg=1, hard_negative_ratio=0.25, num_samples=2000)(_sample())
    share = np.mean([t["tile_kind"] == "hard_negative" for t in mixed])
    assert share == pytest.approx(0.25, abs=0.03)


def test_sample_without_lesions_gives_negatives() -> None:
    d = _sample()
    for i in range(3):
        d[f"box_scale{i}"] = np.zeros((0, 4), np.float32)
    d["label"] = np.zeros(0, int)
    tiles = _sampler(pos=1, neg=0, hard_negative_ratio=0.0, num_samples=20)(d)
    assert {t["tile_kind"] for t in tiles} == {"negative"}


def test_small_targets_are_enlarged_about_their_centre() -> None:
    tiles = _sampler(pos=1, neg=0, level_weights=(0, 0, 1), scale_jitter=1.0, min_box_px=16)(_sample())
    for t in tiles:  # at 0.25X the 40 px lesion is 10 px: grown to 16 about its centre
        y1, x1, y2, x2 = t["box"][0]
        assert (x2 - x1, y2 - y1) == pytest.approx((16, 16))
        ox, oy = t["tile_origin_px"]
        assert ((x1 + x2) / 2 + ox, (y1 + y2) / 2 + oy) == pytest.approx((80, 55))
    kept = _sampler(pos=1, neg=0, level_weights=(0, 0, 1), scale_jitter=1.0, small_box_rule="keep")(_sample())
    assert kept[0]["box"][0, 2] - kept[0]["box"][0, 0] == pytest.approx(10)


@pytest.mark.parametrize(
    "boxes, min_px, size, expected",
    [
        ([[10, 10, 14, 30]], 8, (64, 64), [[8, 10, 16, 30]]),  # only the narrow side grows
        ([[0, 0, 2, 2]], 8, (64, 64), [[0, 0, 5, 5]]),  # grown about (1, 1), clipped at 0
        ([[60, 60, 64, 64]], 8, (64, 64), [[58, 58, 64, 64]]),  # clipped at the far edge
        ([[5, 5, 20, 20]], 8, (64, 64), [[5, 5, 20, 20]]),  # large enough: unchanged
    ],
)
def test_enlarge_small_boxes_hand_worked(boxes, min_px, size, expected) -> None:
    assert enlarge_small_boxes(np.array(boxes, np.float32), min_px, size).tolist() == expected


@pytest.mark.parametrize(
    "lo, hi, window, extent, u, expected",
    [
        (300, 340, 128, 480, 0.0, 212),  # first origin that keeps [300, 340) whole
        (300, 340, 128, 480, 0.999, 300),  # last one
        (10, 50, 128, 480, 0.0, 0),  # cannot start before the image
        (440, 470, 128, 480, 0.999, 352),  # nor end after it
        (100, 400, 128, 480, 0.5, 186),  # longer than the window: centred on it
        (10, 50, 128, 100, 0.7, 0),  # window larger than the axis: at 0 (padded)
    ],
)
def test_place_hand_worked(lo, hi, window, extent, u, expected) -> None:
    assert _place(lo, hi, window, extent, u) == expected


def test_composes_with_box_aware_flip() -> None:
    tile = _sampler(pos=1, neg=0, level_weights=(1, 0, 0), scale_jitter=1.0, num_samples=1)(_sample())[0]
    flipped = RandFlipBoxd("image", "box", "image", prob=1.0, spatial_axis=0)(tile)  # MONAI's own
    y1, y2 = flipped["box"][0, 0], flipped["box"][0, 2]
    img = torch.as_tensor(flipped["image"])[0].numpy()
    assert img[int(y1) : int(y2)].sum() == pytest.approx(40 * 40)


@pytest.mark.parametrize(
    "kwargs",
    [{"pos": 0, "neg": 0}, {"scale_jitter": 0.5}, {"small_box_rule": "drop"}, {"hard_negative_ratio": 1.5}],
)
def test_bad_arguments_raise(kwargs) -> None:
    with pytest.raises(ValueError):
        RandLesionTileSamplerd("image", "box", "label", **kwargs)
