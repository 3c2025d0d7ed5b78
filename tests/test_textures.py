"""The generator's second parenchyma model, transfer curves and detector profiles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.stats import skew

from monai_smalldet.data.synthetic import (
    DETECTOR_PROFILES,
    FULL_SHAPE_PX,
    SynthConfig,
    generate_dataset,
    generate_mammogram,
    load_datalist,
    power_law_noise,
)
from monai_smalldet.data.textures import TRANSFER_CURVES, apply_transfer_curve, clustered_lumpy_noise
from monai_smalldet.transforms import LoadMammogram


def _correlation_at(field: np.ndarray, lag_px: int) -> float:
    """Mean of the row- and column-lag autocorrelation coefficients at ``lag_px``."""
    a = np.corrcoef(field[:, :-lag_px].ravel(), field[:, lag_px:].ravel())[0, 1]
    b = np.corrcoef(field[:-lag_px].ravel(), field[lag_px:].ravel())[0, 1]
    return float((a + b) / 2)


def test_clustered_lumpy_noise_is_standardised_and_skewed_unlike_the_power_law():
    lumpy = clustered_lumpy_noise((384, 320), 0.28, np.random.default_rng(0))
    gauss = power_law_noise((384, 320), 0.28, 3.0, np.random.default_rng(0))
    assert lumpy.dtype == np.float32 and lumpy.shape == (384, 320)
    assert abs(float(lumpy.mean())) < 1e-4 and abs(float(lumpy.std()) - 1.0) < 1e-3
    # lumps add up on a zero floor: a long bright tail, where the 1/f field is symmetric
    assert skew(lumpy.ravel()) > 0.6
    assert abs(skew(gauss.ravel())) < 0.3


def test_clustered_lumpy_noise_has_the_same_physical_scale_at_any_pixel_pitch():
    coarse = clustered_lumpy_noise((512, 512), 0.28, np.random.default_rng(1))
    fine = clustered_lumpy_noise((1024, 1024), 0.14, np.random.default_rng(2))
    # correlation at 1.12 mm: 4 px at 0.28 mm, 8 px at 0.14 mm
    assert _correlation_at(coarse, 4) == pytest.approx(_correlation_at(fine, 8), abs=0.04)
    assert 0.2 < _correlation_at(coarse, 4) < 0.95


def test_lumps_are_oriented_along_the_direction_from_their_cluster():
    # one cluster of many lumps: right of its centre the lumps lie along the rows, above it
    # along the columns (lag correlation higher along the lumps than across them)
    # 16 cm^2 at 1/16 cluster per cm^2: the first draw is the Poisson count; take a seed giving one
    seed = next(s for s in range(100) if np.random.default_rng(s).poisson(1.0) == 1)
    field = clustered_lumpy_noise(
        (400, 400),
        0.1,
        np.random.default_rng(seed),
        clusters_per_cm2=1 / 16.0,
        lumps_per_cluster=400,
        cluster_sigma_mm=5.0,
    )
    r0, c0 = np.unravel_index(np.argmax(ndimage.gaussian_filter(field, 20, mode="wrap")), field.shape)
    field = np.roll(field, (200 - r0, 200 - c0), axis=(0, 1))  # periodic: the cluster in the middle
    r0 = c0 = 200
    field = field - ndimage.gaussian_filter(field, 8, mode="wrap")  # the lumps, without the cluster
    right = field[r0 - 15 : r0 + 15, c0 + 40 : c0 + 90]
    above = field[r0 - 90 : r0 - 40, c0 - 15 : c0 + 15]

    def along_rows(x, lag=4):
        return np.corrcoef(x[:, :-lag].ravel(), x[:, lag:].ravel())[0, 1]

    def along_cols(x, lag=4):
        return np.corrcoef(x[:-lag].ravel(), x[lag:].ravel())[0, 1]

    assert along_rows(right) > along_cols(right) + 0.1
    assert along_cols(above) > along_rows(above) + 0.1


def test_transfer_curves_are_monotonic_and_keep_the_range():
    s = np.linspace(0.0, 1.0, 1001, dtype=np.float32)
    for curve in TRANSFER_CURVES:
        out = apply_transfer_curve(s.copy(), curve)
        assert out[0] == pytest.approx(0.0, abs=1e-6) and out[-1] == pytest.approx(1.0, abs=1e-6)
        assert (np.diff(out) > 0).all(), curve
    assert apply_transfer_curve(np.array([0.1], np.float32), "log")[0] == pytest.approx(
        np.log(1.9) / np.log(10), rel=1e-6
    )
    with pytest.raises(ValueError, match="transfer curve"):
        apply_transfer_curve(s.copy(), "gamma")


def test_config_checks_the_new_fields():
    with pytest.raises(ValueError, match="texture"):
        SynthConfig(texture="voronoi")
    with pytest.raises(ValueError, match="transfer"):
        SynthConfig(transfer="gamma")
    with pytest.raises(ValueError, match="detector_pitch_mm"):
        SynthConfig(detector_pitch_mm=0.5)


def test_detector_pitch_keeps_the_field_of_view():
    for profile in DETECTOR_PROFILES.values():
        cfg = SynthConfig(scale=0.25, **profile)
        rows, cols = cfg.shape_px
        field_mm = (rows * cfg.spacing_mm, cols * cfg.spacing_mm)
        assert field_mm == pytest.approx(
            (FULL_SHAPE_PX[0] * 0.07, FULL_SHAPE_PX[1] * 0.07), abs=cfg.spacing_mm
        )
    assert SynthConfig(scale=0.25, **DETECTOR_PROFILES["b"]).spacing_mm == pytest.approx(0.4)


@pytest.mark.parametrize("profile", ["b", "c"])
def test_profile_datasets_read_back_with_their_spacing_bits_and_grey_scale(tmp_path, profile):
    cfg = SynthConfig(p_marker=0.0, **DETECTOR_PROFILES[profile])
    datalist = generate_dataset(
        tmp_path, n_train=2, n_val=0, n_test=0, seed=4, scale=0.25, config=cfg, progress=False
    )
    expected = SynthConfig(scale=0.25, **DETECTOR_PROFILES[profile])
    for item in load_datalist(datalist):
        img = LoadMammogram()(item["image"])
        assert tuple(img.shape[1:]) == expected.shape_px
        assert np.allclose(img.meta["pixel_spacing_mm"], expected.spacing_mm)
        assert item["bits_stored"] == expected.bits_stored
        want = "MONOCHROME1" if DETECTOR_PROFILES[profile]["p_monochrome1"] == 1.0 else "MONOCHROME2"
        assert img.meta["photometric"] == item["photometric"] == want
        # bright = dense after reading, whatever the stored grey scale: the breast is brighter
        # than the air around it
        x = img[0].numpy()
        x1, y1, x2, y2 = item["breast_box"]
        inside = x[y1 + (y2 - y1) // 3 : y2 - (y2 - y1) // 3, x1 : x1 + (x2 - x1) // 3]
        air = x[:, -10:] if item["laterality"] == "L" else x[:, :10]
        assert float(np.median(inside)) > float(np.median(air)) + 0.3


@pytest.mark.parametrize("curve", TRANSFER_CURVES)
def test_transfer_curves_keep_every_lesion_brighter_than_without_it(curve):
    cfg = SynthConfig(scale=0.25, p_benign=0.0, p_marker=0.0, transfer=curve)
    with_it = generate_mammogram(21, n_lesions=2, config=cfg)
    without = generate_mammogram(21, n_lesions=2, config=cfg, render_findings=False)
    diff = with_it.image.astype(np.int64) - without.image.astype(np.int64)
    assert diff.min() >= -1  # the same noise: a monotonic curve never darkens (rounding aside)
    for x1, y1, x2, y2 in with_it.boxes:
        assert diff[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))].mean() > 1.0


def test_lumpy_texture_keeps_the_scene_and_ground_truth():
    base = generate_mammogram(11, scale=0.25, n_lesions=2)
    lumpy = generate_mammogram(11, scale=0.25, n_lesions=2, config=SynthConfig(texture="clustered_lumpy"))
    assert np.array_equal(base.boxes, lumpy.boxes)
    assert np.array_equal(base.breast_mask, lumpy.breast_mask)
    assert not np.array_equal(base.image, lumpy.image)
