"""Systematic tiling: coverage, SAHI-style shift-back, padding, box clipping and tile sampling.

Boxes are (x1, y1, x2, y2) with x = column, continuous pixel coordinates; tiles likewise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor

from monai_smalldet.transforms.frames import FrameRecord, from_spatial_order, tile_boxes_to_original
from monai_smalldet.transforms.pyramid import ScalePyramidd
from monai_smalldet.transforms.tiling import (
    RandTileSamplerd,
    SystematicTile,
    SystematicTiled,
    TileGrid,
    clip_boxes_to_tile,
)

GRID_CASES = [
    # (tile, overlap, (H, W), expected tiles)
    # rows start at 0, 922 (stride 1024 - 102), then 1844 is shifted back to 2000 - 1024 = 976 (as SAHI does)
    (
        1024,
        0.1,
        (2000, 1500),
        [(0, 0, 1024, 1024), (476, 0, 1500, 1024), (0, 922, 1024, 1946), (476, 922, 1500, 1946)]
        + [(0, 976, 1024, 2000), (476, 976, 1500, 2000)],
    ),
    (100, 0.0, (200, 100), [(0, 0, 100, 100), (0, 100, 100, 200)]),
    (100, 0.5, (100, 200), [(0, 0, 100, 100), (50, 0, 150, 100), (100, 0, 200, 100)]),
    (100, 0.25, (100, 210), [(0, 0, 100, 100), (75, 0, 175, 100), (110, 0, 210, 100)]),  # last shifted back
    (1024, 0.1, (700, 400), [(0, 0, 400, 700)]),  # smaller than a tile: one tile, padded later
    (1024, 0.1, (1024, 1024), [(0, 0, 1024, 1024)]),
]


@pytest.mark.parametrize("tile, overlap, size, expected", GRID_CASES)
def test_tile_grid_hand_worked(tile: int, overlap: float, size: tuple, expected: list) -> None:
    assert TileGrid(tile, overlap)(size) == expected


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(300, 6000),
    w=st.integers(300, 6000),
    tile=st.sampled_from([256, 320, 512, 640, 1024, 1333]),
    overlap=st.floats(0.0, 0.6),
)
def test_tiles_cover_every_pixel_and_stay_inside(h: int, w: int, tile: int, overlap: float) -> None:
    tiles = TileGrid(tile, overlap)((h, w))
    arr = np.asarray(tiles)
    assert (
        (arr[:, 0] >= 0).all()
        and (arr[:, 1] >= 0).all()
        and (arr[:, 2] <= w).all()
        and (arr[:, 3] <= h).all()
    )
    assert ((arr[:, 2] - arr[:, 0]) == min(tile, w)).all() and ((arr[:, 3] - arr[:, 1]) == min(tile, h)).all()
    xs = sorted({(t[0], t[2]) for t in tiles})
    ys = sorted({(t[1], t[3]) for t in tiles})
    assert len(tiles) == len(xs) * len(ys)  # a full grid: product of the per-axis intervals
    for intervals, n in ((xs, w), (ys, h)):
        covered = np.zeros(n, dtype=bool)
        for a, b in intervals:
            covered[a:b] = True
        assert covered.all()
        starts = [a for a, _ in intervals]
        assert len(set(starts)) == len(starts)  # no duplicate tile


TRIM_CASES = [
    # the last row/column stays on the regular grid and ends on the border (shorter tile)
    (
        1024,
        0.1,
        (2000, 1500),
        [(0, 0, 1024, 1024), (922, 0, 1500, 1024), (0, 922, 1024, 1946), (922, 922, 1500, 1946)]
        + [(0, 1844, 1024, 2000), (922, 1844, 1500, 2000)],
    ),
    (100, 0.25, (100, 210), [(0, 0, 100, 100), (75, 0, 175, 100), (150, 0, 210, 100)]),
    (100, 0.0, (100, 201), [(0, 0, 100, 100), (100, 0, 200, 100), (200, 0, 201, 100)]),
    (1024, 0.1, (700, 400), [(0, 0, 400, 700)]),
]


@pytest.mark.parametrize("tile, overlap, size, expected", TRIM_CASES)
def test_trimmed_tile_grid_hand_worked(tile: int, overlap: float, size: tuple, expected: list) -> None:
    assert TileGrid(tile, overlap, edge="trim")(size) == expected


def _area(tiles: list) -> int:
    return sum((t[2] - t[0]) * (t[3] - t[1]) for t in tiles)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(300, 6000),
    w=st.integers(300, 6000),
    tile=st.sampled_from([256, 320, 512, 1024, 1333]),
    overlap=st.floats(0.0, 0.6),
)
def test_trimmed_tiles_cover_every_pixel_with_the_overlap_and_fewer_pixels(
    h: int, w: int, tile: int, overlap: float
) -> None:
    shifted = TileGrid(tile, overlap)((h, w))
    trimmed = TileGrid(tile, overlap, edge="trim")((h, w))
    assert len(trimmed) == len(shifted)
    arr = np.asarray(trimmed)
    assert (arr[:, :2] >= 0).all() and (arr[:, 2] <= w).all() and (arr[:, 3] <= h).all()
    overlap_px = tile - TileGrid(tile, overlap).stride_px
    for lo, hi, n in ((0, 2, w), (1, 3, h)):
        spans = sorted({(int(a), int(b)) for a, b in arr[:, [lo, hi]]})
        covered = np.zeros(n, dtype=bool)
        for a, b in spans:
            covered[a:b] = True
        assert covered.all()
        assert spans[-1][1] == n  # the last span ends on the border
        assert all(b - a == min(tile, n) for a, b in spans[:-1])  # the others are whole tiles
        for (_, b), (a2, _) in zip(spans[:-1], spans[1:], strict=True):
            assert b - a2 == overlap_px  # neighbours share exactly the overlap
    assert _area(trimmed) <= _area(shifted)


def _rect_bbox(img: np.ndarray, thr: float = 0.5) -> tuple[float, float, float, float]:
    """(row1, col1, row2, col2) of the pixels above ``thr`` in a (C, H, W) image (MONAI's order)."""
    mask = np.asarray(img)[0] > thr
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)


@pytest.mark.parametrize("kind", ["numpy", "torch", "meta"])
def test_systematic_tile_keeps_box_on_lesion_and_pads_small_levels(kind: str) -> None:
    img = np.zeros((1, 300, 200), np.float32)
    img[:, 150:170, 90:130] = 1.0  # lesion rows 150-169, columns 90-129
    box = np.array([[150.0, 90.0, 170.0, 130.0]])  # MONAI's order (row1, col1, row2, col2)
    data = {"numpy": img, "torch": torch.from_numpy(img), "meta": MetaTensor(torch.from_numpy(img))}[kind]
    frame = FrameRecord.identity(600, 400).compose(FrameRecord.scaling(2, 2))
    tiles = SystematicTile(tile_size=128, overlap=0.25)(
        data, box, np.array([7]), frame=frame, scale=0.5, level=1
    )
    assert len(tiles) == 6  # rows 0, 96, 172 (shifted back); columns 0, 72 (shifted back)
    seen = 0
    for t in tiles:
        assert type(t.image) is type(data) and tuple(t.image.shape) == (1, 128, 128)
        assert t.pad_px == (0, 0) and t.scale == 0.5 and t.level == 1
        if t.boxes.shape[0]:
            seen += 1
            assert t.labels.tolist() == [7]
            np.testing.assert_allclose(_rect_bbox(t.image), t.boxes[0])  # the box sits on the lesion
            part = tile_boxes_to_original(
                from_spatial_order(t.boxes), t.frame
            )  # visible part, original (x, y)
            x0, y0 = t.origin_px
            expected = np.array([[max(90, x0), max(150, y0), min(130, x0 + 128), min(170, y0 + 128)]]) * 2.0
            np.testing.assert_allclose(part, expected)
    assert seen >= 1
    # a level smaller than a tile: one tile padded after the last row/column, origin unchanged
    small = SystematicTile(tile_size=512)(data, box, frame=frame)
    assert len(small) == 1 and small[0].pad_px == (312, 212) and small[0].origin_px == (0, 0)
    assert tuple(small[0].image.shape) == (1, 512, 512)
    np.testing.assert_allclose(_rect_bbox(small[0].image), small[0].boxes[0])
    if kind == "meta":
        assert small[0].image.meta["tile_pad_px"] == (312, 212)
    # padded only up to the network stride: 300 x 200 -> 320 x 224
    snug = SystematicTile(tile_size=512, pad_multiple=32)(data, box, frame=frame)
    assert tuple(snug[0].image.shape) == (1, 320, 224) and snug[0].pad_px == (24, 20)
    np.testing.assert_array_equal(np.asarray(snug[0].image)[:, :300, :200], np.asarray(img))
    assert not np.asarray(snug[0].image)[:, 300:, :].any() and not np.asarray(snug[0].image)[:, :, 200:].any()


def test_clip_boxes_to_tile_drops_below_visibility_and_keeps_labels_aligned() -> None:
    # MONAI's order (row1, col1, row2, col2); the tile window (x1, y1, x2, y2) is 100 columns, 60 rows
    boxes = np.array(
        [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 95.0, 10.0, 105.0],
            [0.0, 99.5, 10.0, 109.5],
            [50, 50, 50, 50],
            [55, 0, 65, 10],
        ]
    )
    labels = np.array([1, 2, 3, 4, 5])
    scores = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    out, (lab, sc) = clip_boxes_to_tile(boxes, (labels, scores), (0, 0, 100, 60), min_visibility=0.1)
    np.testing.assert_allclose(
        out, [[0, 0, 10, 10], [0, 95, 10, 100], [50, 50, 50, 50], [55, 0, 60, 10]]
    )  # 5% visible: dropped; rows clipped at 60, columns at 100
    assert lab.tolist() == [1, 2, 4, 5] and torch.allclose(sc, torch.tensor([0.1, 0.2, 0.4, 0.5]))


def _pyramid_sample(kind: str = "numpy") -> dict:
    img = np.zeros((1, 512, 384), np.float32)
    img[:, 300:340, 100:140] = 1.0
    image = MetaTensor(torch.from_numpy(img)) if kind == "meta" else img
    d = {"image": image, "box": np.array([[300.0, 100.0, 340.0, 140.0]]), "label": np.array([1]), "case": "a"}
    return ScalePyramidd("image", "box")(d)


def test_systematic_tiled_tiles_every_level_and_maps_back() -> None:
    d = _pyramid_sample("meta")
    tiles = SystematicTiled("image", "box", "label", tile_size=256, overlap=0.1)(d)
    levels = [t["tile_level"] for t in tiles]
    assert levels == [0] * 6 + [1] + [2]  # 512 x 384 -> 3 x 2 tiles; 256 x 192 and 128 x 96 -> 1 padded each
    for t in tiles:
        assert set(t) >= {
            "image",
            "box",
            "label",
            "frame",
            "tile_origin_px",
            "tile_pad_px",
            "tile_scale",
            "case",
        }
        assert "image_scale0" not in t and tuple(t["image"].shape) == (1, 256, 256)
        for b in t["box"]:
            back = tile_boxes_to_original(from_spatial_order(b[None]), t["frame"])[0]  # (x1, y1, x2, y2)
            assert (
                100 - 1e-6 <= back[0]
                and back[2] <= 140 + 1e-6
                and 300 - 1e-6 <= back[1]
                and back[3] <= 340 + 1e-6
            )
    assert [t["tile_scale"] for t in tiles][-2:] == [0.5, 0.25] and tiles[-1]["tile_pad_px"] == (160, 128)


def test_rand_tile_sampler_ratio() -> None:
    d = _pyramid_sample()
    only_pos = RandTileSamplerd("image", "box", "label", tile_size=128, num_samples=8, pos=1, neg=0)
    only_pos.set_random_state(0)
    assert all(t["box"].shape[0] == 1 and t["label"].tolist() == [1] for t in only_pos(d))
    only_neg = RandTileSamplerd("image", "box", "label", tile_size=128, num_samples=8, pos=0, neg=1)
    only_neg.set_random_state(0)
    samples = only_neg(d)
    assert len(samples) == 8 and all(t["box"].shape[0] == 0 and t["label"].shape == (0,) for t in samples)
    half = RandTileSamplerd("image", "box", "label", tile_size=128, num_samples=400, pos=1, neg=1)
    half.set_random_state(1)
    frac = np.mean([t["box"].shape[0] > 0 for t in half(d)])
    assert 0.4 < frac < 0.6  # about 1:1 although only a few of the tiles hold the lesion
    for t in samples:  # training tiles are copies, not views of the whole level
        assert t["image"].base is None or t["image"].base.size == t["image"].size


def test_bad_tiling_arguments() -> None:
    with pytest.raises(ValueError, match="overlap"):
        TileGrid(1024, 1.0)
    with pytest.raises(ValueError, match="tile_size"):
        TileGrid(0)
    with pytest.raises(ValueError, match="edge"):
        TileGrid(1024, 0.1, edge="pad")
    with pytest.raises(ValueError, match="pad_multiple"):
        SystematicTile(64, pad_multiple=0)
    with pytest.raises(ValueError, match=r"rank 2 and shape \(10, 10\)"):
        SystematicTile(8)(np.zeros((10, 10)))
    with pytest.raises(ValueError, match="outside"):
        SystematicTile(8)(np.zeros((1, 10, 10)), np.array([[0.0, 0.0, 12.0, 5.0]]))
    with pytest.raises(ValueError, match="do not match"):
        SystematicTile(8)(np.zeros((1, 10, 10)), np.array([[0.0, 0.0, 2.0, 5.0]]), np.array([1, 2]))
