"""Box-based FROC: hand-worked case tables, a brute-force reference, bootstrap, strata, plot."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data.box_utils import centers_in_boxes
from monai.metrics import compute_froc_curve_data, compute_froc_score

from monai_smalldet.metrics import (
    CPM_FPIS,
    UndefinedSensitivityWarning,
    froc,
    froc_table,
    match_image,
    plot_froc,
    sensitivity_at_fpi,
)
from monai_smalldet.metrics.bootstrap import _bootstrap

INF = math.inf
LESION = [0, 0, 10, 10]
FAR = [50, 50, 60, 60]  # centre (55, 55): inside no lesion of these tests


def P(boxes, scores):
    return {"box": boxes, "label_scores": scores}


def G(boxes, **kw):
    return {"box": boxes, **kw}


# --------------------------------------------------------------------------- curves

# (name, predictions, ground truth, thresholds, fpi, sensitivity), worked out by hand
CURVE_CASES = [
    (
        "second hit on a lesion is neither TP nor FP",
        [P([[4, 4, 6, 6], [3, 3, 7, 7], [20, 20, 30, 30]], [0.9, 0.8, 0.7])],
        [G([LESION])],
        [INF, 0.9, 0.8, 0.7],
        [0, 0, 0, 1],
        [0, 1, 1, 1],
    ),
    (
        "images without lesions or predictions count in the FPI denominator",
        [P([[4, 4, 6, 6]], [0.6]), P([FAR], [0.9]), P([], []), None],
        [G([LESION]), G([]), G([]), G([[50, 50, 60, 60]])],
        [INF, 0.9, 0.6],
        [0, 0.25, 0.25],
        [0, 0, 0.5],
    ),
    (
        "an image with lesions but no prediction",
        [P([], [])],
        [G([LESION, [20, 20, 30, 30]])],
        [INF],
        [0],
        [0],
    ),
    (
        "predictions sharing a score enter together",
        [P([[4, 4, 6, 6], [20, 20, 22, 22]], [0.5, 0.5]), P([[4, 4, 6, 6]], [0.8])],
        [G([LESION]), G([LESION])],
        [INF, 0.8, 0.5],
        [0, 0, 0.5],
        [0, 0.5, 1.0],
    ),
    (
        "a centre on the border (corner, edge) is a hit",
        [P([[8, 8, 12, 12], [18, 2, 22, 6], [10.5, 0, 12.5, 4]], [0.7, 0.6, 0.5])],
        [G([LESION, [20, 0, 30, 10]])],
        [INF, 0.7, 0.6, 0.5],
        [0, 0, 0, 1],
        [0, 0.5, 1, 1],
    ),
    (
        "larger box with centre inside hits; overlapping box with centre outside is a FP",
        [P([[0, 0, 30, 30], [15, 15, 35, 35]], [0.4, 0.9])],
        [G([[10, 10, 20, 20]])],
        [INF, 0.9, 0.4],
        [0, 1, 1],
        [0, 0, 1],
    ),
    (
        "a centre inside two overlapping lesions hits both",
        [P([[6, 6, 8, 8]], [0.5])],
        [G([LESION, [5, 5, 15, 15]])],
        [INF, 0.5],
        [0, 0],
        [0, 1],
    ),
    (
        "(boxes, scores) pairs and plain ground-truth boxes",
        [([[4, 4, 6, 6], FAR], [0.3, 0.2])],
        [[LESION]],
        [INF, 0.3, 0.2],
        [0, 0, 1],
        [0, 1, 1],
    ),
]


@pytest.mark.parametrize(
    "name, preds, gts, thresholds, fpi, sens", CURVE_CASES, ids=[c[0] for c in CURVE_CASES]
)
def test_curve_cases(name, preds, gts, thresholds, fpi, sens):
    r = froc(preds, gts, n_bootstrap=0)
    np.testing.assert_array_equal(r.thresholds, thresholds)
    np.testing.assert_allclose(r.fpi, fpi)
    np.testing.assert_allclose(r.sensitivity, sens)
    assert r.num_images == len(gts)


def test_torch_inputs_give_the_numpy_result():
    preds, gts = CURVE_CASES[0][1], CURVE_CASES[0][2]
    tpreds = [{"box": torch.tensor(p["box"]), "label_scores": torch.tensor(p["label_scores"])} for p in preds]
    tgts = [{"box": torch.tensor(g["box"], dtype=torch.float32)} for g in gts]
    a, b = froc(preds, gts, n_bootstrap=0), froc(tpreds, tgts, n_bootstrap=0)
    np.testing.assert_allclose(a.fpi, b.fpi)
    np.testing.assert_allclose(a.sensitivity, b.sensitivity)
    np.testing.assert_allclose(a.thresholds, b.thresholds.astype(np.float32))


def test_border_rule_differs_from_monai_default():
    centre, box = np.array([[10.0, 10.0]]), np.array([[0.0, 0.0, 10.0, 10.0]])
    assert not centers_in_boxes(centre, box)[0]  # MONAI: strictly inside by > 0.01 px
    m = match_image([[8, 8, 12, 12]], [0.5], [[0, 0, 10, 10]])  # here: closed box
    assert m.lesion_scores.tolist() == [0.5] and m.fp_scores.size == 0


def test_match_image_records():
    m = match_image(
        [[4, 4, 6, 6], [3, 3, 7, 7], FAR], [0.2, 0.7, 0.4], [LESION, [20, 20, 30, 30]], lesion_types="mass"
    )
    np.testing.assert_array_equal(m.lesion_scores, [0.7, np.nan])
    np.testing.assert_array_equal(m.fp_scores, [0.4])
    assert m.lesion_types == ("mass", "mass")
    assert np.isnan(m.lesion_sizes_mm).all()


def test_no_lesion_in_the_whole_set_is_nan_with_a_warning():
    with pytest.warns(UndefinedSensitivityWarning):
        r = froc([P([FAR], [0.5]), P([], [])], [G([]), G([])], n_bootstrap=10)
    np.testing.assert_allclose(r.fpi, [0, 0.5])
    assert np.isnan(r.sensitivity).all() and math.isnan(r.cpm)
    assert all(math.isnan(v) for v in r.sensitivity_at_fpi.values())
    assert all(math.isnan(v) for v in r.bootstrap.cpm)
    d = r.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["cpm"] is None and d["curve"]["thresholds"][0] is None


@pytest.mark.parametrize(
    "preds, gts, message",
    [
        ([], [], "at least one image"),
        ([P([], [])], [G([]), G([])], "one prediction entry per image"),
        ([P([[0, 0, 1]], [0.5])], [G([])], r"shape \(N, 4\)"),
        ([P([[0, 0, 1, 1]], [math.nan])], [G([])], "NaN"),
        ([P([[0, 0, 1, 1]], None)], [G([])], "missing"),
        ([P([[0, 0, 1, 1]], [0.5, 0.6])], [G([])], r"shape \(1,\)"),
        ([P([], [])], [G([[5, 0, 1, 1]])], "x2 >= x1"),
    ],
)
def test_invalid_inputs_raise(preds, gts, message):
    with pytest.raises(ValueError, match=message):
        froc(preds, gts, n_bootstrap=0)


# ---------------------------------------------------------- reading the curve at an FPI

# operating points (FPI, sensitivity): origin, a TP, a FP, two TPs, a FP, then 3 FPs and a
# TP sharing one score
HAND_FPI = np.array([0.0, 0.0, 0.2, 0.2, 0.4, 1.0])
HAND_SENS = np.array([0.0, 0.2, 0.2, 0.6, 0.6, 0.8])


@pytest.mark.parametrize(
    "target, interpolated, step, first_at_or_beyond",
    [
        (0.0, 0.2, 0.2, 0.2),  # top of the vertical at FPI 0
        (0.1, 0.2, 0.2, 0.2),
        (0.2, 0.6, 0.6, 0.2),  # a vertical at the target: its top (the paper's loop stops at its foot)
        (0.3, 0.6, 0.6, 0.6),
        (0.7, 0.7, 0.6, 0.8),  # halfway from (0.4, 0.6) to (1.0, 0.8); step 0.6; paper 0.8
        (2.0, 0.8, 0.8, 0.8),  # beyond the last point: flat
    ],
)
def test_sensitivity_at_fpi_modes(target, interpolated, step, first_at_or_beyond):
    for mode, expected in (
        ("interpolate", interpolated),
        ("step", step),
        ("first_at_or_beyond", first_at_or_beyond),
    ):
        got = sensitivity_at_fpi(HAND_FPI, HAND_SENS, [target], mode)[0]
        assert got == pytest.approx(expected), mode


def _hand_curve_inputs():
    """Five images with one lesion each; the curve is HAND_FPI / HAND_SENS."""
    hits = [0.9, 0.7, 0.7, 0.5, None]
    fps = [0.8, 0.6, 0.5, 0.5, 0.5]
    preds, gts = [], []
    for hit, fp in zip(hits, fps, strict=True):
        boxes, scores = [FAR], [fp]
        if hit is not None:
            boxes, scores = [[4, 4, 6, 6], FAR], [hit, fp]
        preds.append(P(boxes, scores))
        gts.append(G([LESION]))
    return preds, gts


def test_hand_worked_result_fields():
    preds, gts = _hand_curve_inputs()
    r = froc(preds, gts, fpis=(0.1, 0.2, 0.7, 2.0), n_bootstrap=0)
    np.testing.assert_allclose(r.fpi, HAND_FPI)
    np.testing.assert_allclose(r.sensitivity, HAND_SENS)
    np.testing.assert_array_equal(r.thresholds, [INF, 0.9, 0.8, 0.7, 0.6, 0.5])
    assert r.sensitivity_at_fpi == pytest.approx({0.1: 0.2, 0.2: 0.6, 0.7: 0.7, 2.0: 0.8})
    assert r.sensitivity_at_fpi_step == pytest.approx({0.1: 0.2, 0.2: 0.6, 0.7: 0.6, 2.0: 0.8})
    assert r.sensitivity_at(0.7, "first_at_or_beyond") == pytest.approx(0.8)
    # CPM: at 1/8, 1/4, 1/2, 1, 2, 4, 8 FPI -> 0.2, 0.6, 0.6 + 0.2 * 0.1 / 0.6, 0.8 x 4
    assert r.cpm == pytest.approx((0.2 + 0.6 + (0.6 + 0.2 / 6) + 4 * 0.8) / 7)
    assert (r.num_images, r.num_lesions, r.num_predictions) == (5, 5, 9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.cpm = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        r.fpi[0] = 1.0


def test_froc_table_hand_worked():
    preds, gts = _hand_curve_inputs()
    r = froc(preds, gts, fpis=(0.2, 0.7), n_bootstrap=0)
    table = froc_table({"m": r}, mode="step")
    assert table.splitlines()[0] == "| model | images | lesions | Sens@0.2 FPI | Sens@0.7 FPI | CPM |"
    assert table.splitlines()[2] == "| m | 5 | 5 | 60.0% | 60.0% | 66.2% |"
    assert "| m | 5 | 5 | 0.600 | 0.700 |" in froc_table({"m": r}, percent=False, cpm=False)


def test_monai_curve_helper_drops_the_lowest_score():
    # one TP at 0.9, one FP at 0.3, one image, one lesion: keeping both is (1 FPI, 1.0)
    fps, sens = compute_froc_curve_data(np.array([0.3]), np.array([0.9]), num_targets=1, num_images=1)
    assert 1.0 not in fps.tolist()  # MONAI's loop starts at the second lowest score
    r = froc([P([[4, 4, 6, 6], FAR], [0.9, 0.3])], [G([LESION])], n_bootstrap=0)
    np.testing.assert_allclose(r.fpi, [0, 0, 1])
    np.testing.assert_allclose(r.sensitivity, [0, 1, 1])


@settings(deadline=None, max_examples=30)
@given(st.lists(st.floats(0.01, 10.0), min_size=1, max_size=8, unique=True), st.data())
def test_cpm_equals_monai_on_strictly_increasing_curves(fp_steps, data):
    fpi = np.r_[0.0, np.cumsum(sorted(fp_steps))]
    gains = data.draw(st.lists(st.floats(0, 1), min_size=fpi.size, max_size=fpi.size))
    sens = np.cumsum(gains) / max(np.sum(gains), 1.0)
    from monai_smalldet.metrics.curve import _cpm

    assert _cpm(fpi, sens) == pytest.approx(compute_froc_score(fpi[::-1], sens[::-1], CPM_FPIS))


# ------------------------------------------------------------ brute-force reference


def _reference(preds, gts):
    """Every threshold, everything recounted from scratch."""
    scores = sorted({s for _, sc in preds for s in sc}, reverse=True)
    num_images, num_lesions = len(gts), sum(len(g) for g in gts)
    fpi, sens = [0.0], [0.0 if num_lesions else math.nan]
    for t in scores:
        tp = fp = 0
        for (boxes, sc), lesions in zip(preds, gts, strict=True):
            kept = [b for b, s in zip(boxes, sc, strict=True) if s >= t]
            centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in kept]

            def inside(c, g):
                return g[0] <= c[0] <= g[2] and g[1] <= c[1] <= g[3]

            tp += sum(any(inside(c, g) for c in centres) for g in lesions)
            fp += sum(not any(inside(c, g) for g in lesions) for c in centres)
        fpi.append(fp / num_images)
        sens.append(tp / num_lesions if num_lesions else math.nan)
    return [INF, *scores], np.array(fpi), np.array(sens)


def _reference_read(fpi, sens, t):
    """Step: best point within the budget. Interpolated: walk the segments."""
    step = max(s for f, s in zip(fpi, sens, strict=True) if f <= t)
    interp = sens[-1]
    for k in range(len(fpi) - 1):
        if fpi[k] <= t < fpi[k + 1]:
            interp = sens[k] + (sens[k + 1] - sens[k]) * (t - fpi[k]) / (fpi[k + 1] - fpi[k])
            break
    return interp, step


_coord = st.integers(0, 12)
_box = st.tuples(_coord, _coord, st.integers(0, 6), st.integers(0, 6)).map(
    lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]
)
_score = st.integers(0, 6).map(lambda k: k / 6)  # few values: many ties
_image = st.tuples(
    st.lists(st.tuples(_box, _score), max_size=6),
    st.lists(_box, max_size=3),
)


@settings(deadline=None, max_examples=100)
@given(st.lists(_image, min_size=1, max_size=6))
def test_froc_matches_brute_force_reference(images):
    preds = [([b for b, _ in p], [s for _, s in p]) for p, _ in images]
    gts = [g for _, g in images]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedSensitivityWarning)
        r = froc(preds, gts, n_bootstrap=0, fpis=(0.1, 0.3, 0.5, 1.0, 2.0))
    thresholds, fpi, sens = _reference(preds, gts)
    np.testing.assert_array_equal(r.thresholds, thresholds)
    np.testing.assert_allclose(r.fpi, fpi)
    np.testing.assert_allclose(r.sensitivity, sens)
    if r.num_lesions:
        for t in r.fpis:
            interp, step = _reference_read(fpi, sens, t)
            assert r.sensitivity_at_fpi[t] == pytest.approx(interp)
            assert r.sensitivity_at_fpi_step[t] == pytest.approx(step)


# ----------------------------------------------------------------------- bootstrap


def _synthetic(n_images, seed=0):
    """Random images: 0-2 lesions, a detection near most lesions, random false alarms."""
    rng = np.random.default_rng(seed)
    preds, gts = [], []
    for _ in range(n_images):
        m = int(rng.integers(0, 3))
        centre = rng.uniform(100, 900, size=(m, 2))
        half = rng.uniform(5, 40, size=(m, 1))
        lesions = np.c_[centre - half, centre + half]
        n = int(rng.integers(0, 6))
        pc, ph = rng.uniform(0, 1000, size=(n, 2)), rng.uniform(5, 30, size=(n, 1))
        boxes, scores = np.c_[pc - ph, pc + ph], rng.random(n) * 0.8
        found = rng.random(m) < 0.8
        boxes = np.r_[boxes, lesions[found] + rng.normal(0, 2, (int(found.sum()), 4))]
        scores = np.r_[scores, 0.3 + 0.7 * rng.random(int(found.sum()))]
        preds.append(P(boxes, scores))
        gts.append(G(lesions, lesion_size_mm=2 * half[:, 0] * 0.2, lesion_type=["mass"] * m))
    return preds, gts


def test_bootstrap_ci_contains_estimate_and_is_reproducible():
    preds, gts = _synthetic(150)
    a = froc(preds, gts, n_bootstrap=300, seed=7, stratify=False)
    b = froc(preds, gts, n_bootstrap=300, seed=7, stratify=False)
    c = froc(preds, gts, n_bootstrap=300, seed=8, stratify=False)
    for f in a.fpis:
        lo, hi = a.bootstrap.sensitivity_at_fpi[f]
        assert lo <= a.sensitivity_at_fpi[f] <= hi
        lo, hi = a.bootstrap.sensitivity_at_fpi_step[f]
        assert lo <= a.sensitivity_at_fpi_step[f] <= hi
    assert a.bootstrap.cpm[0] <= a.cpm <= a.bootstrap.cpm[1]
    assert a.bootstrap.to_dict() == b.bootstrap.to_dict()
    assert a.bootstrap.to_dict() != c.bootstrap.to_dict()
    assert a.bootstrap.n_valid == 300
    assert np.all(a.bootstrap.lower <= a.bootstrap.upper)


def test_bootstrap_ci_shrinks_with_more_images():
    def width(n):
        r = froc(*_synthetic(n, seed=1), n_bootstrap=200, seed=0, stratify=False)
        lo, hi = r.bootstrap.cpm
        slo, shi = r.bootstrap.sensitivity_at_fpi[0.3]
        return hi - lo, shi - slo

    small, large = width(40), width(640)
    assert large[0] < small[0] / 2 and large[1] < small[1] / 2


def test_bootstrap_without_resampling_reproduces_the_estimate():
    preds, gts = _synthetic(60, seed=2)
    r = froc(preds, gts, n_bootstrap=0, stratify=False)
    from monai_smalldet.metrics import match_images

    ms = match_images(preds, gts)
    lesion_scores = np.concatenate([m.lesion_scores for m in ms])
    lesion_image = np.concatenate([np.full(m.num_lesions, i) for i, m in enumerate(ms)])
    fp_scores = np.concatenate([m.fp_scores for m in ms])
    fp_image = np.concatenate([np.full(m.fp_scores.size, i) for i, m in enumerate(ms)])
    fpis = np.asarray(r.fpis)
    interp, step, cpm, _ = _bootstrap(
        lesion_scores,
        lesion_image,
        fp_scores,
        fp_image,
        [np.ones(lesion_scores.size, bool)],
        len(ms),
        fpis,
        np.array([0.0]),
        [np.ones((1, len(ms)))],
    )
    np.testing.assert_allclose(interp[0, 0], [r.sensitivity_at_fpi[f] for f in r.fpis])
    np.testing.assert_allclose(step[0, 0], [r.sensitivity_at_fpi_step[f] for f in r.fpis])
    assert cpm[0, 0] == pytest.approx(r.cpm)


def test_bootstrap_500_images_1000_resamples_is_fast():
    preds, gts = _synthetic(500, seed=3)
    start = time.perf_counter()
    r = froc(preds, gts, n_bootstrap=1000)
    assert time.perf_counter() - start < 20.0  # about 1 s on one free core
    assert set(r.strata) == {"size<10mm", "size>=10mm", "type=mass"}
    assert r.strata["size<10mm"].bootstrap.n_valid == 1000


# ------------------------------------------------------------------------- strata


def _strata_inputs(gt_kw=None):
    """Image 0: a 5 mm mass hit at 0.9, a 15 mm calcification hit at 0.6, a FP at 0.8.
    Image 1: an 8 mm calcification hit at 0.7. Image 2: no lesion, a FP at 0.5."""
    gt_kw = gt_kw or {}
    preds = [
        P([[4, 4, 6, 6], [29, 29, 31, 31], FAR], [0.9, 0.6, 0.8]),
        P([[4, 4, 6, 6]], [0.7]),
        P([FAR], [0.5]),
    ]
    gts = [
        G([LESION, [20, 20, 40, 40]], lesion_type=["mass", "calcification"], **gt_kw.get(0, {})),
        G([LESION], lesion_type=["calcification"], **gt_kw.get(1, {})),
        G([], **gt_kw.get(2, {})),
    ]
    return preds, gts


# thresholds inf, 0.9, 0.8, 0.7, 0.6, 0.5; the FPI is that of all images in every stratum
STRATA_FPI = [0, 0, 1 / 3, 1 / 3, 1 / 3, 2 / 3]
STRATA_SENS = {
    "all": [0, 1 / 3, 1 / 3, 2 / 3, 1, 1],
    "size<10mm": [0, 0.5, 0.5, 1, 1, 1],
    "size>=10mm": [0, 0, 0, 0, 1, 1],  # the hit on the 5 mm mass is not a FP here
    "type=calcification": [0, 0, 0, 0.5, 1, 1],
    "type=mass": [0, 1, 1, 1, 1, 1],
}


@pytest.mark.parametrize(
    "gt_kw, froc_kw",
    [
        ({0: {"lesion_size_mm": [5.0, 15.0]}, 1: {"lesion_size_mm": [8.0]}}, {}),
        ({}, {"pixel_spacing_mm": 0.5}),  # 10 px -> 5 mm, 20 px -> 10 mm (>= 10)
        ({0: {"pixel_spacing_mm": [0.5, 0.5]}, 1: {"pixel_spacing_mm": 0.8}}, {}),  # 10 px -> 8 mm
    ],
)
def test_strata_hand_worked(gt_kw, froc_kw):
    r = froc(*_strata_inputs(gt_kw), n_bootstrap=0, **froc_kw)
    assert set(r.strata) == set(STRATA_SENS) - {"all"}
    np.testing.assert_allclose(r.sensitivity, STRATA_SENS["all"])
    for name, res in r.strata.items():
        np.testing.assert_allclose(res.fpi, STRATA_FPI)
        np.testing.assert_allclose(res.sensitivity, STRATA_SENS[name], err_msg=name)
        assert res.num_images == 3
    assert r.strata["size<10mm"].num_lesions == 2
    json.dumps(r.to_dict(), allow_nan=False)


def test_size_from_anisotropic_spacing_and_missing_sizes():
    # box 10 columns x 30 rows, spacing (row 0.2, column 0.5) mm -> max(5, 6) = 6 mm
    m = match_image([], [], [[0, 0, 10, 30]], pixel_spacing_mm=(0.2, 0.5))
    assert m.lesion_sizes_mm.tolist() == pytest.approx([6.0])
    # a given size wins over the box; unknown sizes are in neither size stratum
    m = match_image(
        [], [], [[0, 0, 10, 30], [0, 0, 1, 1]], lesion_sizes_mm=[12.0, None], pixel_spacing_mm=None
    )
    assert m.lesion_sizes_mm[0] == 12.0 and np.isnan(m.lesion_sizes_mm[1])
    with pytest.warns(UndefinedSensitivityWarning, match="size<10mm"):
        r = froc([P([], []), P([], [])], [G([LESION], lesion_size_mm=[12.0]), G([LESION])], n_bootstrap=0)
    assert r.strata["size>=10mm"].num_lesions == 1 and r.num_lesions == 2
    assert math.isnan(r.strata["size<10mm"].cpm)
    assert froc([P([], [])], [G([LESION])], n_bootstrap=0).strata == {}


def test_to_dict_is_json():
    r = froc(*_strata_inputs(), n_bootstrap=20, pixel_spacing_mm=0.5)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["num_images"] == 3 and d["num_lesions"] == 3
    assert d["sensitivity_at_fpi"]["0.3"] == pytest.approx(r.sensitivity_at_fpi[0.3])
    assert d["curve"]["thresholds"][0] is None and len(d["curve"]["fpi"]) == 6
    assert set(d["strata"]) == set(r.strata)
    assert set(d["bootstrap"]["sensitivity_at_fpi"]) == {"0.1", "0.15", "0.2", "0.3", "0.5", "1"}


# --------------------------------------------------------------------------- plot


@pytest.mark.parametrize("log_x", [False, True])
def test_plot_froc_writes_png_of_requested_size(tmp_path, log_x):
    import matplotlib.image as mpimg

    preds, gts = _synthetic(80, seed=4)
    r = froc(preds, gts, n_bootstrap=50)
    out = tmp_path / "sub" / "froc.png"
    written = plot_froc(
        {"model": r, "< 10 mm": r.strata["size<10mm"]}, out, title="FROC", log_x=log_x, size_px=(640, 480)
    )
    assert written == out and out.stat().st_size > 1000
    assert mpimg.imread(out).shape[:2] == (480, 640)
    assert os.listdir(out.parent) == ["froc.png"]  # no temporary file left behind


def test_keys_and_options_objects_are_the_one_definition_of_froc_settings():
    """``froc``, ``match_images`` and ``FROCMetric`` take the same MatchKeys / FROCOptions (or
    their fields by name); a name that is neither's field is a TypeError, not ignored."""
    from monai_smalldet.metrics import FROCMetric, FROCOptions, MatchKeys, froc, match_images

    preds = [{"p": [[10, 10, 20, 20], [50, 50, 60, 60]], "s": [0.9, 0.8]}, {"p": [[0, 0, 5, 5]], "s": [0.7]}]
    gts = [{"b": [[8, 8, 22, 22]]}, {"b": []}]
    keys = MatchKeys(pred_box_key="p", pred_score_key="s", gt_box_key="b", pixel_spacing_mm=0.1)
    by_object = froc(preds, gts, keys=keys, options=FROCOptions(n_bootstrap=0))
    by_name = froc(
        preds, gts, pred_box_key="p", pred_score_key="s", gt_box_key="b", pixel_spacing_mm=0.1, n_bootstrap=0
    )
    assert by_object.to_dict() == by_name.to_dict()
    assert by_object.sensitivity.tolist() == [0.0, 1.0, 1.0, 1.0]
    assert [m.lesion_sizes_mm.tolist() for m in match_images(preds, gts, keys)] == [[pytest.approx(1.4)], []]
    metric = FROCMetric("sensitivity@0.5", keys=keys, stratify=False)
    assert metric.keys == keys and metric.options == FROCOptions(n_bootstrap=0, stratify=False)
    with pytest.raises(TypeError, match="pred_scores_key"):
        froc(preds, gts, pred_scores_key="s")
    with pytest.raises(TypeError, match="n_boot"):
        FROCMetric("cpm", n_boot=10)
