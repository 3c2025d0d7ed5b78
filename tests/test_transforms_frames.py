"""FrameRecord algebra, the one box-mapping function and the MONAI axis-order helper.

Hand-worked cases are written as (x1, y1, x2, y2) with x = column (detections, ``order="xy"``);
inside pipelines the same boxes are in MONAI's order (row1, col1, row2, col2), the default.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from monai.apps.detection.transforms.box_ops import apply_affine_to_boxes
from monai.data import CacheDataset, PersistentDataset, list_data_collate
from monai.transforms import Compose, EnsureTyped
from torch.utils.data import default_collate

from monai_smalldet.data.synthetic import generate_dataset, load_datalist
from monai_smalldet.transforms import Preprocessing
from monai_smalldet.transforms.frames import (
    FrameRecord,
    from_spatial_order,
    map_boxes,
    original_boxes_to_frame,
    tile_boxes_to_original,
    to_spatial_order,
)

BOX = np.array([[10.0, 20.0, 30.0, 60.0]])

# (record, expected mapping of BOX): hand-worked
CASES = [
    (FrameRecord.identity(100, 80), [[10, 20, 30, 60]]),
    (FrameRecord.translation(5, 7), [[15, 27, 35, 67]]),
    (FrameRecord.scaling(2.0, 4.0), [[20, 80, 60, 240]]),
    (FrameRecord.flip_x(100), [[70, 20, 90, 60]]),  # x -> 100 - x, corners re-ordered
    (FrameRecord.flip_x(100).compose(FrameRecord.translation(5, 7)), [[65, 27, 85, 67]]),
    (FrameRecord.translation(5, 7).compose(FrameRecord.scaling(2, 2)), [[25, 47, 65, 127]]),
]


@pytest.mark.parametrize("record, expected", CASES)
def test_map_boxes_hand_worked(record: FrameRecord, expected: list) -> None:
    np.testing.assert_allclose(map_boxes(BOX, record, order="xy"), expected)
    # the same boxes in MONAI's (row, column) order, the default inside pipelines
    rc = [1, 0, 3, 2]
    np.testing.assert_allclose(map_boxes(BOX[:, rc], record), np.asarray(expected)[:, rc])
    # torch in, torch out, same dtype
    out = map_boxes(torch.as_tensor(BOX, dtype=torch.float32), record, order="xy")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="order"):
        map_boxes(BOX, record, order="yx")


@pytest.mark.parametrize("record, expected", CASES)
def test_map_boxes_equals_monai_affine_in_spatial_order(record: FrameRecord, expected: list) -> None:
    """map_boxes on pipeline boxes is MONAI's apply_affine_to_boxes with the record's spatial affine."""
    spatial = to_spatial_order(BOX)
    monai_out = apply_affine_to_boxes(spatial, record.spatial_affine())
    np.testing.assert_allclose(map_boxes(spatial, record), monai_out, rtol=1e-6)
    np.testing.assert_allclose(from_spatial_order(monai_out), expected, rtol=1e-6)


def test_compose_and_inverse_round_trip() -> None:
    rng = np.random.default_rng(0)
    chain = FrameRecord.identity(4096, 3328)
    for step in (
        FrameRecord.flip_x(3328),
        FrameRecord.scaling(4.0, 4.0),
        FrameRecord.translation(17, 33),
        FrameRecord.scaling(2.0, 2.0),
        FrameRecord.translation(922, 0),
    ):
        chain = chain.compose(step)
    boxes = np.sort(rng.uniform(0, 200, size=(20, 4)), axis=1)[:, [0, 2, 1, 3]]
    back = original_boxes_to_frame(map_boxes(boxes, chain, order="xy"), chain)
    np.testing.assert_allclose(back, boxes, atol=1e-9)
    np.testing.assert_allclose(chain.matrix() @ chain.inverse().matrix(), np.eye(3), atol=1e-12)
    assert chain.flipped_x and chain.height_px == 4096 and chain.width_px == 3328


def test_to_spatial_order_swaps_and_is_its_own_inverse() -> None:
    np.testing.assert_array_equal(to_spatial_order(np.array([[1.0, 2.0, 3.0, 4.0]])), [[2.0, 1.0, 4.0, 3.0]])
    t = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert torch.equal(from_spatial_order(to_spatial_order(t)), t)
    with pytest.raises(ValueError, match=r"\(N, 4\).*\(4,\)"):
        to_spatial_order(np.zeros(4))


def test_tile_boxes_to_original_clips_to_original_image() -> None:
    record = FrameRecord.identity(100, 80).compose(FrameRecord.translation(60, 90))
    out = tile_boxes_to_original(np.array([[0.0, 0.0, 40.0, 40.0]]), record)
    np.testing.assert_allclose(out, [[60, 90, 80, 100]])
    np.testing.assert_allclose(
        tile_boxes_to_original(np.array([[0.0, 0.0, 40.0, 40.0]]), record, clip=False), [[60, 90, 100, 130]]
    )
    assert tile_boxes_to_original(np.zeros((0, 4)), record).shape == (0, 4)


def test_bad_boxes_raise() -> None:
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        map_boxes(np.zeros((3, 3)), FrameRecord())
    with pytest.raises(ValueError, match="NaN"):
        map_boxes(np.array([[0.0, np.nan, 1.0, 1.0]]), FrameRecord())
    with pytest.raises(ValueError, match="4 or 6 numbers"):
        FrameRecord.from_any([1.0, 2.0])


@pytest.mark.parametrize("collate", [default_collate, list_data_collate])
def test_record_is_batched_by_dataloader_collate_and_unbatched(collate) -> None:
    records = [FrameRecord.identity(10, 20).compose(FrameRecord.translation(i, 2 * i)) for i in range(3)]
    batch = collate([{"frame": r} for r in records])["frame"]
    assert isinstance(batch, FrameRecord) and tuple(batch.offset_x.shape) == (3,)
    assert batch.unbatch() == records
    # a batch of one is read directly
    one = collate([{"frame": records[1]}])["frame"]
    assert FrameRecord.from_any(one) == records[1]


def _pipeline_items(tmp_path) -> tuple[list[dict], Compose]:
    """Two synthetic mammograms (a left and a right breast) and the deterministic training steps."""
    datalist = generate_dataset(
        tmp_path / "data", n_train=2, n_val=0, n_test=0, seed=5, scale=0.08, progress=False
    )
    items = load_datalist(datalist, "training")
    prep = Preprocessing(pixel_spacing_mm=0.875, scales=(1.0, 0.5), tile_size=64)
    return items, Compose(prep.dictionary_transforms("image", ["box", "benign_box"]))


@pytest.mark.parametrize("dataset", ["cache", "persistent"])
def test_records_survive_monai_datasets_with_their_defaults(tmp_path, dataset: str) -> None:
    """CacheDataset rebuilds every tuple from a generator (``convert_to_contiguous``),
    PersistentDataset pickles: the records come back as equal FrameRecords."""
    items, pre = _pipeline_items(tmp_path)
    plain = [pre(dict(item)) for item in items]
    if dataset == "cache":
        ds = CacheDataset(items, pre, cache_rate=1.0, num_workers=0, progress=False)
    else:
        ds = PersistentDataset(items, pre, cache_dir=tmp_path / "cache")
    for i, expected in enumerate(plain):
        got = ds[i]
        for key in ("frame", "frame_scale0", "frame_scale1"):
            assert type(got[key]) is FrameRecord and got[key] == expected[key]
            assert all(isinstance(v, float | int) for v in got[key])


def test_ensure_typed_record_is_read_back(tmp_path) -> None:
    """EnsureTyped on a record key gives a 6-number tensor, which every consumer reads back."""
    items, pre = _pipeline_items(tmp_path)
    d = pre(dict(items[0]))
    typed = EnsureTyped(keys=["frame", "frame_scale1"])(d)
    assert isinstance(typed["frame_scale1"], torch.Tensor)
    assert FrameRecord.from_any(typed["frame_scale1"]) == d["frame_scale1"]
    boxes = np.asarray(d["box_scale1"])[:, [1, 0, 3, 2]]  # MONAI order -> detections' xy
    np.testing.assert_allclose(
        tile_boxes_to_original(boxes, typed["frame_scale1"]), tile_boxes_to_original(boxes, d["frame_scale1"])
    )


def test_record_constructor_accepts_one_iterable_and_survives_copies() -> None:
    record = FrameRecord(-2.0, 100.0, 0.5, 3.0, 40, 50)
    assert FrameRecord(v for v in record) == record == FrameRecord(list(record))
    assert copy.deepcopy(record) == record and pickle.loads(pickle.dumps(record)) == record
    assert FrameRecord(2.0) == FrameRecord(scale_x=2.0)  # one number: the first field, as before
