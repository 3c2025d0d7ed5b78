"""Our transforms composed with MONAI's own box transforms, on a real DICOM file.

A right-breast mammogram (0.1 mm, so the pipeline mirrors, resamples and crops it) with one
bright lesion is written with the project's DICOM writer; its datalist box is
(x1, y1, x2, y2), x = column. After ``BoxesToSpatialOrderd`` every box is in MONAI's order, and
MONAI's ``ClipBoxToImaged``, ``MaskToBoxd``, ``SpatialCropBox`` (with ``SpatialCropd`` on the image), ``RandCropBoxByPosNegLabeld`` and
``BoxToMaskd`` must put the lesion's mask on the lesion's pixels. Without the border transform
(the datalist's order fed to MONAI) the mask misses the lesion: the test can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
from monai.apps.detection.transforms.array import SpatialCropBox
from monai.apps.detection.transforms.dictionary import (
    BoxToMaskd,
    ClipBoxToImaged,
    MaskToBoxd,
    RandCropBoxByPosNegLabeld,
)
from monai.transforms import Compose, SpatialCropd

from monai_smalldet.transforms import (
    BoxesToSpatialOrderd,
    CropBreastd,
    LoadMammogramd,
    NormalizeLateralityd,
    ResampleToSpacingd,
    from_spatial_order,
    tile_boxes_to_original,
)
from tests.fakes import write_right_breast_dicom

H, W = 600, 400  # rows, columns at 0.1 mm
LESION_XY = (280.0, 240.0, 320.0, 300.0)  # columns 280-320, rows 240-300: taller than wide


@pytest.fixture(scope="module")
def item(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = write_right_breast_dicom(
        tmp_path_factory.mktemp("composition") / "right_cc.dcm", (H, W), LESION_XY
    )
    return {"image": str(path), "box": [list(LESION_XY)], "label": np.array([1])}


def ours(border: bool = True) -> list:
    keys = {"image_keys": "image", "box_keys": "box"}
    return [
        LoadMammogramd("image"),
        *([BoxesToSpatialOrderd("box")] if border else []),
        NormalizeLateralityd(**keys),  # mirrored: chest wall on the left
        ResampleToSpacingd(**keys, target_spacing_mm=0.2),  # 300 x 200
        CropBreastd(**keys, margin_px=4),
    ]


def lesion_pixels(image) -> np.ndarray:
    return np.asarray(image)[0] > 0.8


def mask_of(d: dict) -> np.ndarray:
    """BoxToMaskd's (N, H, W) mask as one boolean image.

    The dictionary transform shifts its mask so that the background is 0 (label - (min_fg_label - 1)
    inside each box), so with ``min_fg_label=0`` the box of label 1 holds 2.
    """
    return (np.asarray(d["mask"]) > 0).any(axis=0)


def test_box_to_mask_after_our_geometry_lands_on_the_lesion(item: dict) -> None:
    t = Compose(
        [
            *ours(),
            ClipBoxToImaged(box_keys="box", label_keys="label", box_ref_image_keys="image"),
            BoxToMaskd(
                box_keys="box",
                box_mask_keys="mask",
                label_keys="label",
                box_ref_image_keys="image",
                min_fg_label=0,
            ),
        ]
    )
    d = t(dict(item))
    lesion, mask = lesion_pixels(d["image"]), mask_of(d)
    assert lesion.sum() == pytest.approx(20 * 30, rel=0.1)  # 4 x 6 mm at 0.2 mm
    assert (mask & lesion).sum() / lesion.sum() > 0.95 and (mask & ~lesion).sum() / mask.sum() < 0.1
    # and MONAI's mask-to-box gives the box back
    again = MaskToBoxd(box_keys="box2", box_mask_keys="mask", label_keys="label2", min_fg_label=0)(d)
    np.testing.assert_allclose(np.asarray(again["box2"]), np.asarray(d["box"]), atol=1.0)
    # the frame record still brings the box back to the datalist's box
    back = tile_boxes_to_original(from_spatial_order(np.asarray(d["box"])), d["frame"])
    np.testing.assert_allclose(back[0], LESION_XY, atol=1e-3)


def test_monai_crops_keep_box_and_lesion_together(item: dict) -> None:
    pre = Compose(ours())
    d = pre(dict(item))
    r1, c1, r2, c2 = np.asarray(d["box"])[0]
    centre = [int((r1 + r2) / 2), int((c1 + c2) / 2)]
    roi = {"roi_center": centre, "roi_size": [64, 48]}
    cropped = SpatialCropd("image", **roi)(d)
    cropped["box"], cropped["label"] = SpatialCropBox(**roi)(np.asarray(d["box"]), np.asarray(d["label"]))
    assert tuple(cropped["image"].shape[1:]) == (64, 48) and len(cropped["box"]) == 1
    masked = BoxToMaskd("box", "mask", "label", "image", min_fg_label=0)(cropped)
    lesion, mask = lesion_pixels(masked["image"]), mask_of(masked)
    assert (mask & lesion).sum() / lesion.sum() > 0.95 and (mask & ~lesion).sum() / mask.sum() < 0.1

    sampler = RandCropBoxByPosNegLabeld(
        image_keys="image",
        box_keys="box",
        label_keys="label",
        spatial_size=[48, 40],
        pos=1,
        neg=0,
        num_samples=4,
    )
    sampler.set_random_state(seed=0)
    for tile in sampler(d):
        assert len(tile["box"]) == 1
        masked = BoxToMaskd("box", "mask", "label", "image", min_fg_label=0)(tile)
        lesion, mask = lesion_pixels(masked["image"]), mask_of(masked)
        assert lesion.any() and (mask & lesion).sum() / lesion.sum() > 0.95
        assert (mask & ~lesion).sum() / mask.sum() < 0.1


def test_without_the_border_transform_monai_misreads_the_boxes(item: dict) -> None:
    """The datalist's (x1, y1, x2, y2) fed on as if it were MONAI's order: the mask misses."""
    t = Compose([*ours(border=False), BoxToMaskd("box", "mask", "label", "image", min_fg_label=0)])
    d = t(dict(item))
    lesion, mask = lesion_pixels(d["image"]), mask_of(d)
    assert (mask & lesion).sum() / lesion.sum() < 0.5
