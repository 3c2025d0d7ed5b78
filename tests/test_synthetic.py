"""Physics and ground truth of the synthetic FFDM generator (monai_smalldet.data.synthetic)."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from monai_smalldet.data.dicom import read_mammogram
from monai_smalldet.data.synthetic import (
    FULL_SHAPE_PX,
    SynthConfig,
    generate_dataset,
    generate_mammogram,
    load_datalist,
    power_law_noise,
)

NO_DISTRACTORS = SynthConfig(p_benign=0.0, p_marker=0.0)


def radial_psd_slope(roi: np.ndarray, spacing_mm: float, band: tuple[float, float] = (0.1, 1.0)) -> float:
    """Spectral exponent beta of P(f) ~ f^-beta, the way FFDM texture is measured (Burgess 2001).

    The ROI is detrended with a 2nd-order polynomial surface (removes the thickness and density
    envelopes), Hann-windowed, and the radially averaged periodogram is fitted in log-log over
    ``band`` (cycles/mm), in log-spaced bins.
    """
    n = roi.shape[0]
    yy, xx = np.mgrid[0:n, 0:n] / n
    design = np.stack([np.ones_like(xx), xx, yy, xx * xx, yy * yy, xx * yy], -1).reshape(-1, 6)
    coef, *_ = np.linalg.lstsq(design, roi.ravel(), rcond=None)
    resid = roi - (design @ coef).reshape(n, n)
    window = np.hanning(n)
    power = np.abs(np.fft.fft2(resid * window[:, None] * window[None, :])) ** 2
    freq = np.fft.fftfreq(n, d=spacing_mm)
    radius = np.hypot(freq[:, None], freq[None, :]).ravel()
    edges = np.geomspace(*band, 16)
    which = np.digitize(radius, edges)
    f_mean = [radius[which == k].mean() for k in range(1, len(edges))]
    p_mean = [power.ravel()[which == k].mean() for k in range(1, len(edges))]
    return float(-np.polyfit(np.log(f_mean), np.log(p_mean), 1)[0])


def central_roi(m, size: int = 128) -> np.ndarray:
    """A lesion-free square of tissue next to the chest wall, away from the skin roll-off."""
    rows = np.flatnonzero(m.breast_mask[:, 0])
    centre = (rows[0] + rows[-1]) // 2 if m.view == "CC" else int(rows[-1] * 0.6)
    roi = m.to_float()[centre - size // 2 : centre + size // 2, 8 : 8 + size].astype(np.float64)
    assert m.breast_mask[centre - size // 2 : centre + size // 2, 8 : 8 + size].all()
    return roi


def test_power_law_noise_has_the_requested_exponent():
    rng = np.random.default_rng(0)
    for beta in (2.5, 3.0, 3.5):
        field = power_law_noise((256, 256), 0.1, beta, rng)
        assert field.dtype == np.float32
        assert abs(field.mean()) < 1e-4 and abs(field.std() - 1) < 1e-4
        assert radial_psd_slope(field.astype(np.float64), 0.1, band=(0.2, 3.0)) == pytest.approx(
            beta, abs=0.2
        )


def test_tissue_spectral_slope_matches_ffdm_measurements():
    measured, drawn = [], []
    for seed in range(6):
        for view in ("CC", "MLO"):
            m = generate_mammogram(seed, scale=0.25, view=view, config=NO_DISTRACTORS, n_lesions=0)
            assert not m.lesions
            slope = radial_psd_slope(central_roi(m), m.pixel_spacing_mm)
            measured.append(slope)
            drawn.append(m.beta)
            if view == "CC":
                assert 2.5 <= slope <= 3.6, (seed, view, slope)
    measured, drawn = np.array(measured), np.array(drawn)
    assert 2.5 <= np.median(measured) <= 3.6
    assert np.abs(measured - drawn).max() < 0.45  # the texture carries the exponent it was drawn with
    assert 2.9 <= drawn.mean() <= 3.5  # FFDM: 3.17 +- 0.23 (CC), 3.30 +- 0.24 (MLO)


@pytest.mark.parametrize(("view", "laterality"), [("CC", "L"), ("CC", "R"), ("MLO", "L"), ("MLO", "R")])
def test_geometry_chest_wall_side_and_pectoral_muscle(view, laterality):
    m = generate_mammogram(
        11, scale=0.25, view=view, laterality=laterality, config=NO_DISTRACTORS, n_lesions=0
    )
    rows, cols = m.image.shape
    assert (rows, cols) == (FULL_SHAPE_PX[0] // 4, FULL_SHAPE_PX[1] // 4)
    assert m.pixel_spacing_mm == pytest.approx(0.28)
    chest, nipple = (0, cols - 1) if laterality == "L" else (cols - 1, 0)
    assert m.breast_mask[:, chest].sum() > 0.3 * rows  # the breast leans on the chest-wall edge
    assert not m.breast_mask[:, nipple].any()  # and there is air on the other side
    air = m.image[~m.breast_mask]
    tissue = m.image[m.breast_mask]
    assert np.median(tissue) > np.median(air) + 500  # MONOCHROME2: tissue brighter than air
    corner = (
        m.image[: rows // 10, :][:, : cols // 10]
        if laterality == "L"
        else m.image[: rows // 10, -cols // 10 :]
    )
    corner_mask = (
        m.breast_mask[: rows // 10, : cols // 10]
        if laterality == "L"
        else m.breast_mask[: rows // 10, -cols // 10 :]
    )
    if view == "MLO":  # pectoral muscle: dense tissue reaching the top of the chest-wall edge
        assert corner_mask.mean() > 0.9
        assert np.median(corner[corner_mask]) > np.percentile(tissue, 75)


def _lesion_difference(seed, **kwargs):
    with_ = generate_mammogram(seed, render_findings=True, **kwargs)
    without = generate_mammogram(seed, render_findings=False, **kwargs)
    assert with_.lesions == without.lesions  # same plan, drawn or not
    return with_, with_.image.astype(np.int32) - without.image.astype(np.int32)


@pytest.mark.parametrize("seed", range(8))
def test_every_box_is_inside_the_breast_and_around_its_lesion(seed):
    # one finding per image, so the difference image is that finding's signal alone
    view = ("CC", "MLO")[seed % 2]
    m, diff = _lesion_difference(seed, scale=0.25, view=view, config=SynthConfig(p_benign=0.0), n_lesions=1)
    assert len(m.boxes) == 1
    rows, cols = m.image.shape
    for (x1, y1, x2, y2), kind in zip(m.boxes, m.lesion_type, strict=True):
        assert 0 <= x1 < x2 <= cols and 0 <= y1 < y2 <= rows
        c1, r1, c2, r2 = int(np.floor(x1)), int(np.floor(y1)), int(np.ceil(x2)), int(np.ceil(y2))
        assert m.breast_mask[r1:r2, c1:c2].all(), "box leaves the breast"
        # the lesion's own signal: where the image changed because of it
        pad = int(3 * max(x2 - x1, y2 - y1))
        win = diff[max(r1 - pad, 0) : r2 + pad, max(c1 - pad, 0) : c2 + pad]
        in_box = diff[r1:r2, c1:c2]
        assert in_box.max() == win.max() > 0, "the strongest lesion signal lies in its box"
        share = np.clip(in_box, 0, None).sum() / np.clip(win, 0, None).sum()
        assert share > (0.5 if kind == "spiculated_mass" else 0.85), (kind, share)
    assert not diff[~m.breast_mask].any()  # findings never leak into the air


def test_lesion_sizes_follow_the_specification():
    cfg = SynthConfig(p_normal=0.0, max_lesions=2, p_benign=0.5)
    sizes, kinds, benign = [], [], []
    for seed in range(40):
        m = generate_mammogram(seed, scale=0.08, view=("CC", "MLO")[seed % 2], config=cfg)
        sizes += m.lesion_size_mm
        kinds += m.lesion_type
        benign += [les for les in m.lesions if not les.malignant]
    sizes = np.array(sizes)
    masses = np.array([k.endswith("mass") for k in kinds])
    assert len(sizes) >= 50
    assert set(kinds) == {"circumscribed_mass", "spiculated_mass", "calcification_cluster"}
    assert sizes[masses].min() >= 3.0 and sizes.max() <= 30.0
    assert (sizes < 10).mean() >= 0.4  # a realistic share of small cancers
    assert benign and all(les.kind == "benign_mass" for les in benign)

    small = SynthConfig(p_normal=0.0, small_only=True)
    small_sizes = [
        s for seed in range(20) for s in generate_mammogram(seed, scale=0.08, config=small).lesion_size_mm
    ]
    assert small_sizes and max(small_sizes) < 10.0


def test_normals_and_determinism():
    a = generate_mammogram(5, scale=0.1, view="MLO", laterality="R")
    b = generate_mammogram(5, scale=0.1, view="MLO", laterality="R")
    c = generate_mammogram(6, scale=0.1, view="MLO", laterality="R")
    assert np.array_equal(a.image, b.image) and a.lesions == b.lesions
    assert not np.array_equal(a.image, c.image)
    normals = [len(generate_mammogram(s, scale=0.06).boxes) == 0 for s in range(40)]
    assert 0.1 <= np.mean(normals) <= 0.5  # p_normal = 0.3 by default


def test_scale_keeps_the_physics():
    """The same seed at two scales: same lesions in mm, boxes scale with the pixel pitch."""
    big = generate_mammogram(3, scale=0.25, n_lesions=1, config=NO_DISTRACTORS)
    small = generate_mammogram(3, scale=0.125, n_lesions=1, config=NO_DISTRACTORS)
    assert big.pixel_spacing_mm * 2 == pytest.approx(small.pixel_spacing_mm)
    assert big.lesions[0].kind == small.lesions[0].kind
    np.testing.assert_allclose(
        big.lesions[0].center_mm, small.lesions[0].center_mm, atol=2 * small.pixel_spacing_mm
    )
    np.testing.assert_allclose(big.boxes / 2, small.boxes, atol=2.0)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="view"):
        generate_mammogram(0, scale=0.1, view="ML")
    with pytest.raises(ValueError, match="laterality"):
        generate_mammogram(0, scale=0.1, laterality="B")
    with pytest.raises(ValueError, match="scale"):
        SynthConfig(scale=0)
    with pytest.raises(ValueError, match="bits_stored"):
        SynthConfig(bits_stored=10)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    path = generate_dataset(out, n_train=4, n_val=2, n_test=2, seed=3, scale=0.1, progress=False, workers=2)
    return out, path


def test_dataset_layout_datalist_and_dicom_tags(small_dataset):
    out, path = small_dataset
    datalist = json.loads(path.read_text())
    assert [len(datalist[k]) for k in ("training", "validation", "test")] == [4, 2, 2]
    train = load_datalist(path, "training")
    assert {(it["laterality"], it["view"]) for it in train} == {
        ("L", "CC"),
        ("L", "MLO"),
        ("R", "CC"),
        ("R", "MLO"),
    }
    study_uids = set()
    for item in train:
        ds = pydicom.dcmread(item["image"])
        assert ds.Modality == "MG" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.2"
        assert ds.ImageLaterality == item["laterality"] and ds.ViewPosition == item["view"]
        assert ds.PhotometricInterpretation == item["photometric"]
        assert (ds.Rows, ds.Columns) == tuple(item["shape"])
        assert float(ds.ImagerPixelSpacing[0]) == pytest.approx(item["pixel_spacing_mm"])
        assert ds.BitsStored == 12 and ds.PixelRepresentation == 0
        assert ds.pixel_array.max() < 2**12
        study_uids.add(ds.StudyInstanceUID)
        assert (
            len(item["box"]) == len(item["label"]) == len(item["lesion_size_mm"]) == len(item["lesion_type"])
        )
        assert all(lab == 1 for lab in item["label"])
    assert len(study_uids) == 1  # four views of one screening study


def test_dataset_is_reproducible_and_monochrome1_inverts_on_reading(small_dataset, tmp_path):
    out, path = small_dataset
    again = generate_dataset(
        tmp_path / "again", n_train=4, n_val=0, n_test=0, seed=3, scale=0.1, progress=False
    )
    first, second = load_datalist(path, "training"), load_datalist(again, "training")
    for a, b in zip(first, second, strict=True):
        assert a["box"] == b["box"]
        assert np.array_equal(
            pydicom.dcmread(a["image"]).pixel_array, pydicom.dcmread(b["image"]).pixel_array
        )

    # same seed written as MONOCHROME1: inverted stored values, same image once read
    m1 = generate_dataset(
        tmp_path / "m1",
        n_train=2,
        n_val=0,
        n_test=0,
        seed=3,
        scale=0.1,
        progress=False,
        config=SynthConfig(p_monochrome1=1.0),
    )
    m2 = generate_dataset(
        tmp_path / "m2",
        n_train=2,
        n_val=0,
        n_test=0,
        seed=3,
        scale=0.1,
        progress=False,
        config=SynthConfig(p_monochrome1=0.0),
    )
    for a, b in zip(load_datalist(m1), load_datalist(m2), strict=True):
        ds1, ds2 = pydicom.dcmread(a["image"]), pydicom.dcmread(b["image"])
        assert (
            ds1.PhotometricInterpretation == "MONOCHROME1" and ds2.PhotometricInterpretation == "MONOCHROME2"
        )
        assert np.array_equal(ds1.pixel_array.astype(int), 4095 - ds2.pixel_array.astype(int))
        img1, _ = read_mammogram(a["image"])
        img2, _ = read_mammogram(b["image"])
        np.testing.assert_allclose(img1, img2, atol=1e-3)
        breast = img2 > np.percentile(img2, 60)
        assert img1[breast].mean() > img1[~breast].mean()  # bright = dense after reading MONOCHROME1
