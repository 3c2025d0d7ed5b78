"""The geometric transforms composed: round trip to original pixels, MONAI Compose/Dataset/DataLoader.

The samples carry boxes as a datalist does, (x1, y1, x2, y2) with x = column; the pipeline's
first step, ``BoxesToSpatialOrderd``, puts them in MONAI's order (row1, col1, row2, col2), as
every tile and level then holds them. Detections mapped back are (x1, y1, x2, y2) again.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import DataLoader, Dataset, MetaTensor, list_data_collate
from monai.data.utils import no_collation
from monai.transforms import Compose

from monai_smalldet.transforms.boxes import BoxesToSpatialOrderd
from monai_smalldet.transforms.crop import CropBreastd
from monai_smalldet.transforms.frames import from_spatial_order, tile_boxes_to_original
from monai_smalldet.transforms.laterality import NormalizeLateralityd
from monai_smalldet.transforms.pyramid import ResampleToSpacingd, ScalePyramidd
from monai_smalldet.transforms.tiling import RandTileSamplerd, SystematicTiled


def make_sample(
    h: int, w: int, boxes: np.ndarray, laterality: str, spacing_mm: float, kind: str = "numpy"
) -> dict:
    """A breast-like image (chest wall on the laterality's side) with bright lesions at ``boxes``."""
    yy, xx = np.mgrid[0:h, 0:w]
    cx = 0 if laterality == "L" else w
    img = np.where(((xx - cx) / (0.8 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2 < 1, 0.4, 0.02)
    img = img.astype(np.float32)[None]
    for x1, y1, x2, y2 in boxes:
        img[:, int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = 1.0
    image = img
    if kind != "numpy":
        image = MetaTensor(
            torch.from_numpy(img),
            meta={"laterality": laterality, "pixel_spacing_mm": (spacing_mm, spacing_mm)},
        )
    return {
        "image": image,
        "box": boxes,
        "label": np.arange(1, len(boxes) + 1),
        "laterality": laterality,
        "pixel_spacing_mm": (spacing_mm, spacing_mm),
    }


def geometric(target_spacing_mm: float) -> list:
    return [
        BoxesToSpatialOrderd("box"),
        NormalizeLateralityd("image", "box"),
        ResampleToSpacingd("image", "box", target_spacing_mm=target_spacing_mm),
        CropBreastd("image", "box", margin_px=4),
        ScalePyramidd("image", "box"),
    ]


@st.composite
def scenes(draw):
    h, w = draw(st.integers(80, 420)), draw(st.integers(80, 420))
    n = draw(st.integers(0, 4))
    boxes = []
    for _ in range(n):
        x1, y1 = draw(st.floats(0, w - 2)), draw(st.floats(0, h - 2))
        bw, bh = draw(st.floats(0.5, min(60, w - x1))), draw(st.floats(0.5, min(60, h - y1)))
        boxes.append([x1, y1, x1 + bw, y1 + bh])
    return {
        "h": h,
        "w": w,
        "boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        "laterality": draw(st.sampled_from(["L", "R"])),
        "spacing": draw(st.sampled_from([0.05, 0.07, 0.085, 0.1])),
        "target": draw(st.sampled_from([0.07, 0.1, 0.14, 0.28])),
        "tile": draw(st.sampled_from([32, 48, 64, 100])),
        "overlap": draw(st.sampled_from([0.0, 0.1, 0.25, 0.5])),
    }


@settings(max_examples=30, deadline=None)
@given(scene=scenes())
def test_round_trip_tiles_back_to_original_within_half_a_pixel(scene: dict) -> None:
    """original boxes -> laterality -> spacing -> crop -> pyramid -> tiles -> back == input (0.5 px)."""
    boxes = scene["boxes"]
    sample = make_sample(scene["h"], scene["w"], boxes, scene["laterality"], scene["spacing"])
    out = Compose(geometric(scene["target"]))(sample)
    tiles = SystematicTiled(
        "image", "box", "label", tile_size=scene["tile"], overlap=scene["overlap"], min_visibility=0.0
    )(out)
    best = np.zeros(len(boxes))  # best IoU-free check: the largest recovered part of every box
    for t in tiles:
        h_valid, w_valid = (
            t["image"].shape[1] - t["tile_pad_px"][1],
            t["image"].shape[2] - t["tile_pad_px"][0],
        )
        region = tile_boxes_to_original(np.array([[0.0, 0.0, w_valid, h_valid]]), t["frame"])[0]
        back = tile_boxes_to_original(from_spatial_order(t["box"]), t["frame"])
        for b, label in zip(back, t["label"], strict=True):
            gt = boxes[label - 1]
            # the tile shows the part of the box inside the tile's region
            expected = [
                max(gt[0], region[0]),
                max(gt[1], region[1]),
                min(gt[2], region[2]),
                min(gt[3], region[3]),
            ]
            np.testing.assert_allclose(b, expected, atol=0.5)
            if t["tile_level"] == 0:
                best[label - 1] = max(
                    best[label - 1],
                    (b[2] - b[0]) * (b[3] - b[1]) / max((gt[2] - gt[0]) * (gt[3] - gt[1]), 1e-9),
                )
    # every box is recovered whole from at least one full-scale tile when it fits in a tile
    scale = scene["target"] / scene["spacing"]
    for i, gt in enumerate(boxes):
        fits = max(gt[2] - gt[0], gt[3] - gt[1]) / scale + 2 < scene["tile"] * max(scene["overlap"], 1e-9)
        if fits:
            assert best[i] > 0.95, (i, gt, best[i])


def test_round_trip_is_exact_without_resampling() -> None:
    boxes = np.array([[3.25, 10.5, 17.75, 30.0], [120.0, 200.0, 150.5, 230.25]])
    sample = make_sample(256, 200, boxes, "R", 0.07)
    out = Compose(geometric(0.07))(sample)
    for level in range(3):
        back = tile_boxes_to_original(
            from_spatial_order(out[f"box_scale{level}"]), out[f"frame_scale{level}"]
        )
        np.testing.assert_allclose(back, boxes, atol=1e-9)


@pytest.mark.parametrize("kind", ["numpy", "meta"])
def test_compose_inverse_undoes_the_geometric_transforms(kind: str) -> None:
    boxes = np.array([[30.0, 40.0, 50.0, 70.0], [5.0, 100.0, 25.0, 140.0]])
    sample = make_sample(240, 180, boxes, "R", 0.07, kind)
    pipeline = Compose(geometric(0.14))
    out = pipeline(sample)
    assert tuple(out["image_scale0"].shape[1:]) != (240, 180)
    assert out["crop_box_px"] is not None and out["pixel_spacing_mm"] == pytest.approx((0.14, 0.14))
    back = pipeline.inverse(out)
    np.testing.assert_allclose(back["box"], boxes, atol=1e-4)
    assert "crop_box_px" not in back and back["pixel_spacing_mm"] == pytest.approx((0.07, 0.07))
    assert tuple(back["image"].shape) == (1, 240, 180)
    frame = back["frame"]
    assert frame.scale_x == pytest.approx(1.0) and frame.offset_x == pytest.approx(0.0, abs=1e-9)
    # the image comes back where it was (up to the lost resolution and the cropped-away air)
    original = np.asarray(sample["image"])[0]
    restored = np.asarray(back["image"])[0]
    lesion = original > 0.9
    assert restored[lesion].mean() > 0.6 and restored[~lesion & (original > 0.3)].mean() == pytest.approx(
        0.4, abs=0.1
    )
    if kind == "meta":
        assert back["image"].applied_operations == []
        np.testing.assert_allclose(back["image"].affine.numpy(), np.eye(4), atol=1e-9)


def _dataset_items(kind: str) -> list[dict]:
    items = []
    for i in range(4):
        boxes = np.array([[20.0 + 5 * i, 60.0, 40.0 + 5 * i, 80.0]])
        lat = "L" if i % 2 else "R"
        if lat == "R":
            boxes = np.array([[200 - boxes[0, 2], 60.0, 200 - boxes[0, 0], 80.0]])
        items.append(make_sample(256, 200, boxes, lat, 0.07, kind))
    return items


@pytest.mark.parametrize("kind", ["numpy", "meta"])
def test_dataset_and_dataloader_with_two_workers(kind: str) -> None:
    """Inference layout: tiles (no boxes) batched by list_data_collate, frame records batched too."""
    items = _dataset_items(kind)
    tiles = SystematicTiled("image", tile_size=64, overlap=0.1)
    ds = Dataset(items, transform=Compose([*geometric(0.14), tiles]))
    first = ds[0]
    assert isinstance(first, list) and all(tuple(t["image"].shape) == (1, 64, 64) for t in first)
    loader = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=list_data_collate)
    n_tiles = 0
    for batch in loader:
        assert tuple(batch["image"].shape[1:]) == (1, 64, 64)
        records = batch["frame"].unbatch()
        n_tiles += len(records)
        whole_tiles = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
        for record in records:  # a tile maps back inside its 256 x 200 original image
            back = tile_boxes_to_original(whole_tiles, record)
            assert record.height_px == 256 and record.width_px == 200
            assert 0 <= back[0, 0] < back[0, 2] <= 200 and 0 <= back[0, 1] < back[0, 3] <= 256
    assert n_tiles == sum(len(ds[i]) for i in range(len(items)))


@pytest.mark.parametrize("kind", ["numpy", "meta"])
def test_training_tiles_with_boxes_in_dataloader(kind: str) -> None:
    """Training layout: tiles with a varying number of boxes, one list of dicts per batch."""
    items = _dataset_items(kind)
    tiles = SystematicTiled("image", "box", "label", tile_size=64, overlap=0.1)
    ds = Dataset(items, transform=Compose([*geometric(0.14), tiles]))
    loader = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=no_collation)
    found = set()
    for batch in loader:
        for tile in (t for sample_tiles in batch for t in sample_tiles):  # no_collation: one list per sample
            if len(tile["box"]):
                back = tile_boxes_to_original(from_spatial_order(tile["box"]), tile["frame"])
                found.add((int(tile["label"][0]), round(float(back[0, 1]))))
                assert back.shape == (len(tile["label"]), 4)
    assert len(found) >= 1 and all(row == 60 for _, row in found)


def test_training_sampler_in_dataloader() -> None:
    items = _dataset_items("meta")
    sampler = RandTileSamplerd("image", "box", "label", tile_size=64, num_samples=3, pos=2, neg=1)
    ds = Dataset(items, transform=Compose([*geometric(0.14), sampler]))
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=no_collation)
    tiles = [t for batch in loader for sample_tiles in batch for t in sample_tiles]
    assert len(tiles) == 12
    assert all(tuple(t["image"].shape) == (1, 64, 64) for t in tiles)
