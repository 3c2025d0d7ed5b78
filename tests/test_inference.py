"""MultiScaleDetector end to end: boxes come back at the right original pixels.

A fake network "detects" the bright square in each input (the bounding box of pixels above
half the input's maximum, score 0.9) and answers in the YOLO head's eval format. Whatever the
laterality flip, spacing resample, breast crop, pyramid level, tile origin and overlap, the
fused box must land on the square drawn in the original image.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_smalldet.inference import MultiScaleDetector
from monai_smalldet.networks import build_network
from tests.fakes import BrightSquareNet, mammogram_with_square

CASES = [
    # laterality, square (x1, y1, x2, y2) in original pixels, tile size, mode
    ("L", (120, 500, 184, 564), 256, "tiled"),
    ("R", (700, 420, 764, 484), 256, "tiled"),
    ("R", (640, 600, 704, 664), 256, "whole"),
    ("L", (200, 300, 264, 364), 128, "tiled"),
]


@pytest.mark.parametrize("crop", [False, True])
@pytest.mark.parametrize("edge", ["trim", "shift"])
@pytest.mark.parametrize("overlap", [0.25, 0.0])
@pytest.mark.parametrize(("laterality", "square", "tile", "mode"), CASES)
def test_boxes_come_back_to_original_pixels(laterality, square, tile, mode, overlap, edge, crop):
    img = mammogram_with_square(laterality, square)
    image = MetaTensor(
        torch.from_numpy(img[None]), meta={"laterality": laterality, "pixel_spacing_mm": (0.1, 0.1)}
    )
    net = BrightSquareNet()
    detector = MultiScaleDetector(
        net,
        tile_size=tile,
        overlap=overlap,
        tile_edge=edge,
        mode=mode,
        batch_size=3,
        device="cpu",
        crop_tiles_to_breast=crop,
    )
    out = detector.predict(image)
    assert out.image_size_hw == img.shape
    for level, (scale, found) in enumerate(zip(out.scales, out.per_scale, strict=True)):
        assert len(found) == 1, f"level {level}: {found.boxes}"  # overlapping tiles merged
        np.testing.assert_allclose(found.boxes[0], square, atol=1.0 / scale + 0.5)
        assert found.scales[0].tolist() == [i == level for i in range(3)]
    assert len(out.fused) == 1
    np.testing.assert_allclose(out.fused.boxes[0], square, atol=2.5)
    assert out.fused.scales[0].all()  # found at every scale
    # paper's WBF (conf_type avg over the 3 scales): a box found at all three keeps its score
    assert out.fused.scores[0] == pytest.approx(0.9, abs=1e-5)
    if mode == "tiled" and crop:  # tiles across the half-disc's rim run on their breast part
        assert all(0 < s <= tile and s % 32 == 0 for shape in net.calls for s in shape[2:])
        assert any(shape[2:] != (tile, tile) for shape in net.calls)
    elif mode == "tiled" and edge == "shift":
        assert all(shape[2:] == (tile, tile) for shape in net.calls)
    elif mode == "tiled" and edge == "trim":  # edge tiles and the smallest level run at their size
        assert all(0 < s <= tile and s % 32 == 0 for shape in net.calls for s in shape[2:])
        assert any(shape[2:] != (tile, tile) for shape in net.calls)
    if mode == "tiled":
        assert sum(out.tiles_per_scale) == sum(shape[0] for shape in net.calls)
        assert out.tiles_per_scale[0] > out.tiles_per_scale[2] >= 1
    else:
        assert out.tiles_per_scale == [1, 1, 1]


def test_numpy_input_with_explicit_laterality_and_resampling():
    square = (650, 500, 714, 564)
    img = mammogram_with_square("R", square)
    detector = MultiScaleDetector(
        BrightSquareNet(), tile_size=256, target_spacing_mm=0.2, scales=(1.0, 0.5), device="cpu"
    )
    found = detector(img, laterality="R", pixel_spacing_mm=0.1)  # resampled 2x down first
    assert len(found) == 1
    np.testing.assert_allclose(found.boxes[0], square, atol=3.0)


@pytest.mark.parametrize(
    ("meta", "why"),
    [
        ({}, "no pixel spacing"),
        ({"pixel_spacing_mm": (-1.0, -1.0)}, "invalid pixel spacing"),
        ({"pixel_spacing_mm": (0.07, 0.07), "spacing_source": "default"}, "no pixel spacing"),
    ],
)
def test_a_resampling_detector_never_guesses_the_spacing(meta, why):
    """Unknown spacing: a typed error naming the image, or the caller's assumption, recorded."""
    from monai_smalldet.transforms import SpacingError

    square = (650, 500, 714, 564)
    image = MetaTensor(torch.from_numpy(mammogram_with_square("R", square)[None]), meta=meta)
    detector = MultiScaleDetector(
        BrightSquareNet(), tile_size=256, target_spacing_mm=0.2, scales=(1.0, 0.5), device="cpu"
    )
    with pytest.raises(SpacingError, match=f"{why}.*assume_spacing_mm") as info:
        detector.predict(image, laterality="R")
    assert str(tuple(image.shape)) in str(info.value)
    out = detector.predict(image, laterality="R", assume_spacing_mm=0.1)
    assert (out.spacing_source, out.pixel_spacing_mm) == ("assumed", (0.1, 0.1))
    assert out.to_dict()["spacing_source"] == "assumed"
    np.testing.assert_allclose(out.fused.boxes[0], square, atol=3.0)  # run at 0.1 mm: resampled 2x down
    assert (
        out.tiles_per_scale == detector.predict(image, laterality="R", pixel_spacing_mm=0.1).tiles_per_scale
    )
    with pytest.raises(SpacingError, match="positive"):
        detector.predict(image, laterality="R", pixel_spacing_mm=-1)  # a given spacing must be valid
    # a detector that does not resample needs no spacing: boxes in pixels, none in mm
    plain = MultiScaleDetector(BrightSquareNet(), tile_size=256, scales=(1.0, 0.5), device="cpu")
    out = plain.predict(image, laterality="R")
    assert out.spacing_source is None and "box_mm" not in out.to_dict()["findings"][0]


def test_no_detection_and_bad_input():
    img = mammogram_with_square("L", (0, 0, 0, 0))  # no square
    detector = MultiScaleDetector(BrightSquareNet(), tile_size=256, device="cpu")
    found = detector(img, laterality="L")
    assert len(found) == 0 and found.boxes.shape == (0, 4) and found.scales.shape == (0, 3)
    with pytest.raises(ValueError, match="shape"):
        detector(np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match="mode"):
        MultiScaleDetector(BrightSquareNet(), mode="sliced")
    with pytest.raises(ValueError, match="multiple"):
        MultiScaleDetector(BrightSquareNet(), tile_size=100)
    with pytest.raises(ValueError, match="tile_iou_thr"):
        MultiScaleDetector(BrightSquareNet(), tile_iou_thr=-0.1)


def test_real_network_is_deterministic_on_cpu():
    torch.manual_seed(0)
    net = build_network("n")
    img = mammogram_with_square("L", (120, 500, 184, 564), shape=(600, 480))
    detector = MultiScaleDetector(net, tile_size=256, device="cpu", conf_thres=0.0)
    a = detector.predict(img, laterality="L")
    b = detector.predict(img, laterality="L")
    assert len(a.fused) > 0
    np.testing.assert_array_equal(a.fused.boxes, b.fused.boxes)
    np.testing.assert_array_equal(a.fused.scores, b.fused.scores)
    h, w = img.shape
    assert (a.fused.boxes[:, 0] >= 0).all() and (a.fused.boxes[:, 2] <= w).all()
    assert (a.fused.boxes[:, 1] >= 0).all() and (a.fused.boxes[:, 3] <= h).all()


def test_inferer_in_a_batch_of_metatensors():
    from monai.data import list_data_collate

    from monai_smalldet.inferers import MultiScaleInferer

    squares = [(120, 500, 184, 564), (700, 420, 764, 484)]
    items = []
    for side, square in zip("LR", squares, strict=True):
        img = MetaTensor(
            torch.from_numpy(mammogram_with_square(side, square)[None]), meta={"laterality": side}
        )
        items.append({"image": img})
    batch = list_data_collate(items)
    inferer = MultiScaleInferer(per_scale=True, tile_size=256, overlap=0.25)
    net = BrightSquareNet()
    preds = inferer(batch["image"], net)
    assert len(preds) == 2
    for pred, square in zip(preds, squares, strict=True):
        assert set(pred) >= {"box", "label", "label_scores", "scales", "box_scale0", "label_scores_scale2"}
        np.testing.assert_allclose(pred["box"][0].numpy(), square, atol=2.5)
        assert pred["label"].tolist() == [1]
