"""Cross-scale fusion: hand-worked case tables for wbf / nms / soft_nms / concat, tile merging,
the registry, and hypothesis properties.

Boxes are (x1, y1, x2, y2) in original-image pixels, x = column; image sizes are (H, W).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_smalldet.fusion import (
    FUSIONS,
    ConcatFusion,
    Detections,
    Fusion,
    NMSFusion,
    SoftNMSFusion,
    WBFFusion,
    box_ios,
    get_fusion,
    merge_overlapping_tiles,
    register_fusion,
    weighted_boxes_fusion,
)

HW = (1000, 800)  # (H, W): not square
EMPTY = (np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=int))


def one(box, score, label=1):
    """One scale's input with a single box."""
    return ([box], [score], [label])


# A = (100, 100, 200, 200), B = A shifted by 10 px: inter 90 * 90 = 8100, union 11900, IoU 0.68 > 0.55.
A = [100, 100, 200, 200]
B = [110, 110, 210, 210]
FAR = [500, 500, 600, 600]  # overlaps nothing above


def run_quiet(fusion, per_scale, image_size_hw=HW):
    """Call ``fusion`` with every warning turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fusion(per_scale, image_size_hw)


def check(result, boxes, scores, labels, scales):
    np.testing.assert_allclose(result.boxes, np.asarray(boxes, dtype=np.float32).reshape(-1, 4), atol=1e-3)
    np.testing.assert_allclose(result.scores, scores, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(result.labels, labels)
    np.testing.assert_array_equal(result.scales, scales)
    assert result.boxes.dtype == np.float32 and result.scores.dtype == np.float32
    assert result.labels.dtype == np.int64 and result.scales.dtype == bool


# ---------------------------------------------------------------- wbf ---------------------------------------------------------------

WBF_CASES = [
    # (name, kwargs, per-scale inputs, expected boxes, scores, labels, scales)
    (
        # weighted average by score: x1 = (0.9 * 100 + 0.6 * 110) / 1.5 = 104, x2 = (0.9 * 200 + 0.6 * 210) / 1.5 = 204;
        # score (avg) = (0.9 + 0.6) / 2 scales = 0.75
        "two_scales_fuse",
        {},
        [one(A, 0.9), one(B, 0.6)],
        [[104, 104, 204, 204]],
        [0.75],
        [1],
        [[True, True]],
    ),
    (
        # the same pair with a third, empty scale: it still votes, score = 1.5 / 3 = 0.5
        "third_scale_empty_still_counts",
        {},
        [one(A, 0.9), one(B, 0.6), EMPTY],
        [[104, 104, 204, 204]],
        [0.5],
        [1],
        [[True, True, False]],
    ),
    (
        # weights (2, 1): box weights 0.9 * 2 = 1.8 and 0.6; x1 = (1.8 * 100 + 0.6 * 110) / 2.4 = 102.5;
        # score = (1.8 + 0.6) / (2 + 1) = 0.8
        "per_scale_weights",
        {"weights": [2, 1]},
        [one(A, 0.9), one(B, 0.6)],
        [[102.5, 102.5, 202.5, 202.5]],
        [0.8],
        [1],
        [[True, True]],
    ),
    (
        # found at 1 of 3 scales: 0.75 / 3 = 0.25 (exact in float32)
        "one_of_three_scales",
        {},
        [EMPTY, one(A, 0.75), EMPTY],
        [A],
        [0.25],
        [1],
        [[False, True, False]],
    ),
    (
        # no overlap: both stay, each divided by the 2 scales
        "non_overlapping_stay_apart",
        {},
        [one(A, 0.9), one(FAR, 0.6)],
        [A, FAR],
        [0.45, 0.3],
        [1, 1],
        [[True, False], [False, True]],
    ),
    (
        # same place, different labels: never fused
        "labels_apart",
        {},
        [one(A, 0.9, 1), one(A, 0.6, 2)],
        [A, A],
        [0.45, 0.3],
        [1, 2],
        [[True, False], [False, True]],
    ),
    (
        # scales membership: A + B fuse to (104, 104, 204, 204), score (0.9 + 0.6) / 3 = 0.5; C = (150, 100, 250, 200)
        # has IoU 5184 / 14816 = 0.35 with it, stays alone, 0.5 / 3; IoU(A, fused) = 9216 / 10784 = 0.85 and
        # IoU(B, fused) = 8836 / 11164 = 0.79 >= 0.55 mark scales 0 and 1; C marks only scale 2
        "scales_membership",
        {},
        [one(A, 0.9), one(B, 0.6), one([150, 100, 250, 200], 0.5)],
        [[104, 104, 204, 204], [150, 100, 250, 200]],
        [0.5, 0.5 / 3],
        [1, 1],
        [[True, True, False], [False, False, True]],
    ),
    (
        # conf_type="max": the best score, not divided
        "conf_type_max",
        {"conf_type": "max"},
        [one(A, 0.9), one(B, 0.6), EMPTY],
        [[104, 104, 204, 204]],
        [0.9],
        [1],
        [[True, True, False]],
    ),
]


@pytest.mark.parametrize(
    "kwargs, per_scale, boxes, scores, labels, scales",
    [c[1:] for c in WBF_CASES],
    ids=[c[0] for c in WBF_CASES],
)
def test_wbf_cases(kwargs, per_scale, boxes, scores, labels, scales):
    check(run_quiet(WBFFusion(**kwargs), per_scale), boxes, scores, labels, scales)


def test_wbf_one_of_three_scales_keeps_a_third_of_the_score():
    result = run_quiet(WBFFusion(), [one(A, 0.9), EMPTY, EMPTY])
    assert result.scores[0] == pytest.approx(0.9 / 3, rel=1e-6)


def test_wbf_pixel_boxes_on_non_square_image():
    """Boxes come back in pixels (not [0, 1]); boxes at the bottom-right corner of a 3328 x 4096 image survive."""
    hw = (4096, 3328)
    corner = [3300, 4060, 3328, 4096]
    outside = [3310, 4080, 3340, 4110]  # partly outside: clipped to (3310, 4080, 3328, 4096)
    per_scale = [one(corner, 0.8), one(corner, 0.8), ([corner, [10, 20, 30, 40]], [0.8, 0.6], [1, 1])]
    result = run_quiet(WBFFusion(), per_scale, hw)
    check(result, [corner, [10, 20, 30, 40]], [0.8, 0.2], [1, 1], [[True, True, True], [False, False, True]])
    result = run_quiet(WBFFusion(), [one(outside, 0.9)], hw)
    check(result, [[3310, 4080, 3328, 4096]], [0.9], [1], [[True]])


def test_wbf_agrees_with_ensemble_boxes_on_all_scales():
    """Empty scales passed as empty arrays give exactly ensemble-boxes' own call on all three lists."""
    import ensemble_boxes

    boxes, scores, labels = ensemble_boxes.weighted_boxes_fusion(
        [
            np.array([[0.1, 0.1, 0.2, 0.2]]),
            np.zeros((0, 4)),
            np.array([[0.11, 0.1, 0.21, 0.2], [0.5, 0.5, 0.6, 0.6]]),
        ],
        [np.array([0.9]), np.zeros(0), np.array([0.7, 0.4])],
        [np.array([1]), np.zeros(0), np.array([1, 1])],
        iou_thr=0.55,
        skip_box_thr=0.0,
    )
    hw = (100, 100)
    result = run_quiet(
        WBFFusion(),
        [one([10, 10, 20, 20], 0.9), EMPTY, ([[11, 10, 21, 20], [50, 50, 60, 60]], [0.7, 0.4], [1, 1])],
        hw,
    )
    np.testing.assert_allclose(result.boxes, boxes * 100, atol=1e-3)
    np.testing.assert_allclose(result.scores, scores, rtol=1e-6)
    np.testing.assert_allclose(result.scores, [(0.9 + 0.7) / 3, 0.4 / 3], rtol=1e-6)


def _wbf_scene(rng, num_models, n, grid):
    """Random normalised boxes, clustered around a few centres so that clusters of several boxes
    form; on a coarse ``grid`` coordinates and scores repeat (ties in the sort and the matching)."""
    boxes, scores, labels = [], [], []
    centres = rng.uniform(0.1, 0.9, size=(max(n // 4, 1), 2))
    for _ in range(num_models):
        c = centres[rng.integers(0, len(centres), size=n)] + rng.normal(0, 0.02, size=(n, 2))
        half = rng.uniform(0.005, 0.08, size=(n, 2))
        b = np.clip(np.concatenate([c - half, c + half], axis=1), 0, 1)
        s = rng.uniform(0, 1, size=n)
        if grid:
            b, s = np.round(b * grid) / grid, np.round(s * 4) / 4
        boxes.append(b)
        scores.append(s)
        labels.append(rng.integers(1, 3, size=n))
    return boxes, scores, labels


@pytest.mark.parametrize("conf_type", WBFFusion.CONF_TYPES)
@pytest.mark.parametrize("seed", range(4))
def test_weighted_boxes_fusion_is_ensemble_boxes_to_the_bit(conf_type, seed):
    """Same boxes, scores, labels and order as ensemble-boxes itself, exactly, for every confidence rule,
    with unequal weights, several labels, overflow allowed or not, ties in scores and boxes,
    zero-area and below-threshold boxes, empty models."""
    import ensemble_boxes

    rng = np.random.default_rng(seed)
    num_models = int(rng.integers(1, 4))
    boxes, scores, labels = _wbf_scene(
        rng, num_models, n=int(rng.integers(20, 120)), grid=50 if seed % 2 else 0
    )
    boxes[0][:3, 2] = boxes[0][:3, 0]  # zero area: skipped by both
    if num_models > 1:
        boxes[1], scores[1], labels[1] = np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=int)
    weights = list(rng.uniform(0.5, 2.0, size=num_models))
    kwargs = dict(
        weights=weights,
        iou_thr=float(rng.uniform(0.3, 0.7)),
        skip_box_thr=0.1,
        conf_type=conf_type,
        allows_overflow=bool(seed % 2),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ensemble-boxes warns about the zero-area boxes
        expected = ensemble_boxes.weighted_boxes_fusion(boxes, scores, labels, **kwargs)
    got = weighted_boxes_fusion(boxes, scores, labels, **kwargs)
    assert (
        len(got[0]) > 0 and len(got[0]) < sum(len(b) for b in boxes) - 3
    )  # clusters of several boxes formed
    for e, g in zip(expected, got[:3], strict=True):
        assert e.dtype == g.dtype
        np.testing.assert_array_equal(g, e)


def test_weighted_boxes_fusion_iou_at_the_threshold_does_not_join():
    """IoU exactly ``iou_thr`` starts a new cluster (ensemble-boxes matches on IoU > thr); binary
    fractions make the IoU exactly 0.5: (1/64) / (1/32 + 1/64 - 1/64)."""
    import ensemble_boxes

    args = ([np.array([[0, 0, 0.25, 0.125]]), np.array([[0, 0, 0.125, 0.125]])], [[0.9], [0.8]], [[1], [1]])
    got = weighted_boxes_fusion(*args, iou_thr=0.5)
    assert len(got[0]) == len(ensemble_boxes.weighted_boxes_fusion(*args, iou_thr=0.5)[0]) == 2
    assert len(weighted_boxes_fusion(*args, iou_thr=0.49)[0]) == 1


def test_weighted_boxes_fusion_knows_each_clusters_models():
    """A cluster's models are those of its boxes: recomputed here by assigning every input box to the
    fused box it lies nearest to (the clusters below are far apart, so that assignment is unambiguous)."""
    rng = np.random.default_rng(7)
    centres = np.array([[0.2, 0.2], [0.5, 0.7], [0.8, 0.3]])
    present = [[0, 1], [1, 2], [0, 1, 2]]  # models that saw each lesion
    boxes, scores, labels = [[] for _ in range(3)], [[] for _ in range(3)], [[] for _ in range(3)]
    for centre, models in zip(centres, present, strict=True):
        for m in models:
            c = centre + rng.normal(0, 0.003, size=2)
            boxes[m].append([*(c - 0.05), *(c + 0.05)])
            scores[m].append(rng.uniform(0.3, 0.9))
            labels[m].append(1)
    fused, _, _, models = weighted_boxes_fusion(
        [np.asarray(b).reshape(-1, 4) for b in boxes], [np.asarray(s) for s in scores], labels
    )
    assert len(fused) == 3
    for box, found in zip(fused, models, strict=True):
        lesion = int(np.argmin(np.linalg.norm(centres - (box[:2] + box[2:]) / 2, axis=1)))
        np.testing.assert_array_equal(np.flatnonzero(found), present[lesion])


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (([[[0, 0, 1.2, 1]]], [[0.5]], [[1]]), {}, "normalised"),
        (([[[0.5, 0, 0.4, 1]]], [[0.5]], [[1]]), {}, "x1 <= x2"),
        (([[[0, 0, 1, 1]]], [[0.5, 0.4]], [[1]]), {}, "1 boxes, 2 scores"),
        (([[[0, 0, 1, 1]]], [[0.5]], [[1]]), {"weights": [1, 1]}, "one entry per model"),
        (([[[0, 0, 1, 1]]], [[0.5]], [[1]]), {"iou_thr": 1.5}, "iou_thr"),
        (([[[0, 0, 1, 1]]], [[0.5]], [[1]]), {"conf_type": "mean"}, "conf_type"),
    ],
)
def test_weighted_boxes_fusion_input_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        weighted_boxes_fusion(*args, **kwargs)


@pytest.mark.parametrize("name", ["wbf", "nms", "soft_nms", "concat"])
def test_empty_scales_work_without_warnings(name, capsys):
    result = run_quiet(get_fusion(name), [EMPTY, EMPTY, one(A, 0.75)])
    assert len(result) == 1
    np.testing.assert_array_equal(result.scales, [[False, False, True]])
    assert capsys.readouterr().out == ""  # ensemble-boxes prints some of its warnings


@pytest.mark.parametrize("name", ["wbf", "nms", "soft_nms", "concat"])
def test_all_empty_gives_empty_detections(name):
    result = run_quiet(
        get_fusion(name), [EMPTY, ([], [], []), (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0))]
    )
    assert len(result) == 0
    assert result.boxes.shape == (0, 4) and result.boxes.dtype == np.float32
    assert result.scores.shape == (0,) and result.scores.dtype == np.float32
    assert result.labels.shape == (0,) and result.labels.dtype == np.int64
    assert result.scales.shape == (0, 3) and result.scales.dtype == bool


def test_wbf_drops_zero_area_and_zero_score_boxes_quietly(capsys):
    per_scale = [([[5, 5, 5, 9], [900, 900, 950, 950], A], [0.9, 0.9, 0.0], [1, 1, 1]), one(A, 0.6)]
    result = run_quiet(WBFFusion(), per_scale, (100, 100))  # 2nd box lies outside a 100 x 100 image
    assert len(result) == 0  # A is outside too; the degenerate and the zero-score boxes are gone
    result = run_quiet(WBFFusion(), [([[5, 5, 5, 9], A], [0.9, 0.0], [1, 1]), one(A, 0.6)])
    check(result, [A], [0.3], [1], [[False, True]])
    assert capsys.readouterr().out == ""


def test_wbf_weights_must_match_scales():
    with pytest.raises(ValueError, match="weights has 2 entries, but 3 scales"):
        WBFFusion(weights=[1, 1])([EMPTY, EMPTY, EMPTY], HW)
    with pytest.raises(ValueError, match="weights"):
        WBFFusion(weights=[1, -1])
    with pytest.raises(ValueError, match="conf_type"):
        WBFFusion(conf_type="mean")


# ------------------------------------------------------------ nms / soft_nms / concat ---------------------------------------------------

# K1 = (0, 0, 100, 100) 0.9 at scale 0; K2 = (60, 0, 160, 100) 0.8 at scale 1: IoU 4000 / 16000 = 0.25, both kept;
# X = (30, 0, 130, 100) 0.7 at scale 2: IoU 7000 / 13000 = 0.54 > 0.5 with both K1 and K2 -> suppressed by K1
# (visited first), so K1 gets scales {0, 2} and K2 only {1}.
K1, K2, X = [0, 0, 100, 100], [60, 0, 160, 100], [30, 0, 130, 100]

OTHER_CASES = [
    (
        "nms_suppressor_takes_scales",
        NMSFusion(),
        [one(K1, 0.9), one(K2, 0.8), one(X, 0.7)],
        [K1, K2],
        [0.9, 0.8],
        [1, 1],
        [[True, False, True], [False, True, False]],
    ),
    (
        # A suppresses B (IoU 0.68); same box with label 2 kept; scores unchanged
        "nms_classwise",
        NMSFusion(),
        [one(A, 0.6), one(B, 0.9), one(A, 0.7, 2)],
        [B, A],
        [0.9, 0.7],
        [1, 2],
        [[True, True, False], [False, False, True]],
    ),
    (
        # iou_thr 0.7 > IoU(A, B) = 0.68: nothing suppressed
        "nms_threshold",
        NMSFusion(iou_thr=0.7),
        [one(A, 0.6), one(B, 0.9)],
        [B, A],
        [0.9, 0.6],
        [1, 1],
        [[False, True], [True, False]],
    ),
    (
        # Gaussian decay of the twin: 0.8 * exp(-1 / 0.5) = 0.108 > 0.001: both kept, with their original scores
        # (ensemble-boxes' behaviour); both overlap each other fully, so both carry both scales
        "soft_nms_keeps_twin",
        SoftNMSFusion(),
        [one(A, 0.9), one(A, 0.8), one(FAR, 0.3)],
        [A, A, FAR],
        [0.9, 0.8, 0.3],
        [1, 1, 1],
        [[True, True, False], [True, True, False], [False, False, True]],
    ),
    (
        # thresh 0.2 > 0.108: the twin goes; FAR (IoU 0, no decay) stays
        "soft_nms_threshold_removes_twin",
        SoftNMSFusion(thresh=0.2),
        [one(A, 0.9), one(A, 0.8), one(FAR, 0.3)],
        [A, FAR],
        [0.9, 0.3],
        [1, 1],
        [[True, True, False], [False, False, True]],
    ),
    (
        # linear decay: 0.8 * (1 - 1) = 0 <= thresh: removed
        "soft_nms_linear",
        SoftNMSFusion(method="linear"),
        [one(A, 0.9), one(A, 0.8)],
        [A],
        [0.9],
        [1],
        [[True, True]],
    ),
    (
        # no fusion: everything, by descending score, each with its own scale; equal scores keep scale order
        "concat",
        ConcatFusion(),
        [([A, FAR], [0.5, 0.9], [1, 1]), one(B, 0.5)],
        [FAR, A, B],
        [0.9, 0.5, 0.5],
        [1, 1, 1],
        [[True, False], [True, False], [False, True]],
    ),
]


@pytest.mark.parametrize(
    "fusion, per_scale, boxes, scores, labels, scales",
    [c[1:] for c in OTHER_CASES],
    ids=[c[0] for c in OTHER_CASES],
)
def test_other_fusion_cases(fusion, per_scale, boxes, scores, labels, scales):
    check(run_quiet(fusion, per_scale), boxes, scores, labels, scales)


# --------------------------------------------------------------- tiles ---------------------------------------------------------------

# (1, 0, 11, 10) vs (0, 0, 10, 10): inter 9 * 10 = 90, union 110, IoU 0.82
TILE_CASES = [
    ("duplicate_keeps_higher", [[0, 0, 10, 10], [1, 0, 11, 10]], [0.6, 0.8], [1, 1], 0.5, [1]),
    (
        "different_labels_kept",
        [[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10]],
        [0.6, 0.8, 0.5],
        [1, 1, 2],
        0.5,
        [1, 2],
    ),
    ("tie_first_wins", [[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.5], [1, 1], 0.5, [0]),
    ("below_threshold_kept", [[0, 0, 10, 10], [1, 0, 11, 10]], [0.6, 0.8], [1, 1], 0.9, [1, 0]),
    ("empty", np.zeros((0, 4)), [], [], 0.5, []),
]


@pytest.mark.parametrize(
    "boxes, scores, labels, iou_thr, expected", [c[1:] for c in TILE_CASES], ids=[c[0] for c in TILE_CASES]
)
def test_merge_overlapping_tiles(boxes, scores, labels, iou_thr, expected):
    keep = merge_overlapping_tiles(boxes, scores, labels, iou_thr=iou_thr)
    assert keep.dtype == np.int64
    np.testing.assert_array_equal(keep, expected)


def test_merge_overlapping_tiles_truncated_box_needs_ios():
    # a box cut by a tile border, (156, 500, 184, 540), inside the whole one, (120, 500, 184, 540):
    # IoU = 28 * 40 / (64 * 40) = 0.44 keeps both; IOS = 1 merges them
    boxes, scores, labels = [[120, 500, 184, 540], [156, 500, 184, 540]], [0.8, 0.9], [1, 1]
    np.testing.assert_array_equal(merge_overlapping_tiles(boxes, scores, labels), [1, 0])
    np.testing.assert_array_equal(merge_overlapping_tiles(boxes, scores, labels, match_metric="ios"), [1])
    with pytest.raises(ValueError, match="match_metric"):
        merge_overlapping_tiles(boxes, scores, labels, match_metric="giou")


def test_box_ios():
    ios = box_ios(
        torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[5.0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 20, 20]])
    )
    torch.testing.assert_close(ios, torch.tensor([[1.0, 0.0, 1.0]]))


def test_merge_overlapping_tiles_accepts_torch():
    keep = merge_overlapping_tiles(
        torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10]]), torch.tensor([0.6, 0.8]), torch.tensor([1, 1])
    )
    np.testing.assert_array_equal(keep, [1])


# ------------------------------------------------------------ Detections ---------------------------------------------------------------


def test_detections_helpers():
    dets = Detections(
        torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 1, 1]]),
        np.array([0.5, 0.9, 0.5], dtype=np.float64),
        [1.0, 2.0, 1.0],
        [[True, False, False], [False, True, True], [False, False, True]],
    )
    assert len(dets) == 3 and dets.num_scales == 3
    assert (
        dets.boxes.dtype == np.float32 and dets.scores.dtype == np.float32 and dets.labels.dtype == np.int64
    )
    ordered = dets.sorted()
    np.testing.assert_array_equal(
        ordered.boxes, [[5, 6, 7, 8], [1, 2, 3, 4], [0, 0, 1, 1]]
    )  # stable on the tie
    as_dict = ordered.to_dict(scale_factors=(1.0, 0.5, 0.25))
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["num_scales"] == 3
    assert as_dict["detections"][0] == {
        "box": [5.0, 6.0, 7.0, 8.0],
        "score": pytest.approx(0.9),
        "label": 2,
        "scales": [0.5, 0.25],
    }
    assert ordered.to_dict()["detections"][1]["scales"] == [0]
    empty = Detections.empty(3)
    assert (
        len(empty) == 0
        and empty.scales.shape == (0, 3)
        and empty.to_dict() == {"num_scales": 3, "detections": []}
    )
    assert Detections([A], [0.5], [1]).scales.shape == (1, 1)


@pytest.mark.parametrize(
    "args, match",
    [
        (([[0, 0, 1]], [0.5], [1]), r"boxes must have shape \(N, 4\)"),
        (([[0, 0, 1, 1]], [0.5, 0.6], [1]), r"scores must have shape \(1,\)"),
        (([[0, 0, 1, 1]], [0.5], [1.5]), "labels must be integers"),
        (([[0, 0, 1, 1]], [0.5], [1], [True]), r"scales must have shape \(1, num_scales\)"),
    ],
)
def test_detections_validation(args, match):
    with pytest.raises(ValueError, match=match):
        Detections(*args)


def test_fusion_accepts_detections_and_mappings():
    per_scale = [
        Detections([A], [0.9], [1]),
        {"boxes": torch.tensor([B]), "scores": torch.tensor([0.6]), "labels": torch.tensor([1])},
    ]
    check(run_quiet(WBFFusion(), per_scale), [[104, 104, 204, 204]], [0.75], [1], [[True, True]])


@pytest.mark.parametrize(
    "per_scale, image_size_hw, match",
    [
        ([], HW, "one entry per scale"),
        ([one([10, 0, 5, 5], 0.5)], HW, "x1 <= x2"),
        ([one([0, 0, np.nan, 5], 0.5)], HW, "finite"),
        ([one(A, 0.5)], (0, 10), "positive"),
        ([object()], HW, "triple"),
    ],
)
def test_fusion_input_errors(per_scale, image_size_hw, match):
    with pytest.raises(ValueError, match=match):
        NMSFusion()(per_scale, image_size_hw)


# -------------------------------------------------------------- registry --------------------------------------------------------------


def test_registry():
    assert {"wbf", "nms", "soft_nms", "concat"} <= set(FUSIONS)
    fusion = get_fusion("wbf", iou_thr=0.6)
    assert isinstance(fusion, WBFFusion) and fusion.iou_thr == 0.6 and fusion.name == "wbf"
    assert "iou_thr=0.6" in repr(fusion)
    with pytest.raises(ValueError, match="known fusions: concat, nms, soft_nms, wbf"):
        get_fusion("weighted")


def test_register_custom_fusion():
    try:

        @register_fusion("keep_best_test")
        class KeepBest(Fusion):
            def fuse(self, per_scale, image_size_hw):
                allb = ConcatFusion().fuse(per_scale, image_size_hw)
                return allb.select(np.argsort(-allb.scores, kind="stable")[:1])

        fusion = get_fusion("keep_best_test")
        assert isinstance(fusion, KeepBest)
        result = fusion([one(A, 0.2), one(FAR, 0.9)], HW)
        check(result, [FAR], [0.9], [1], [[False, True]])
        with pytest.raises(ValueError, match="already registered"):
            register_fusion("keep_best_test")(type("Other", (ConcatFusion,), {}))
        with pytest.raises(TypeError, match="Fusion subclass"):
            register_fusion("not_a_fusion")(dict)
    finally:
        FUSIONS.pop("keep_best_test", None)


# ------------------------------------------------------------- properties -------------------------------------------------------------


@st.composite
def scenes(draw):
    """An image size and 1-3 scales of random boxes (some partly or wholly outside, some tiny)."""
    height = draw(st.integers(50, 400))
    width = draw(st.integers(50, 400))
    num_scales = draw(st.integers(1, 3))
    per_scale = []
    for _ in range(num_scales):
        n = draw(st.integers(0, 6))
        x1 = draw(st.lists(st.floats(-40, width + 10), min_size=n, max_size=n))
        y1 = draw(st.lists(st.floats(-40, height + 10), min_size=n, max_size=n))
        bw = draw(st.lists(st.floats(0.0, 120), min_size=n, max_size=n))
        bh = draw(st.lists(st.floats(0.0, 120), min_size=n, max_size=n))
        scores = draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
        labels = draw(st.lists(st.integers(1, 2), min_size=n, max_size=n))
        boxes = [[x, y, x + w, y + h] for x, y, w, h in zip(x1, y1, bw, bh, strict=True)]
        per_scale.append(
            (np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(scores), np.asarray(labels))
        )
    return (height, width), per_scale


@settings(max_examples=60, deadline=None)
@given(scene=scenes())
def test_fusion_properties(scene):
    (height, width), per_scale = scene
    num_inputs = sum(len(s[1]) for s in per_scale)
    for name in ("wbf", "nms", "soft_nms", "concat"):
        result = run_quiet(get_fusion(name), per_scale, (height, width))
        boxes, scores = result.boxes, result.scores
        assert result.scales.shape == (len(result), len(per_scale))
        assert (
            (boxes[:, [0, 1]] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        )
        assert (boxes[:, [2, 3]] >= boxes[:, [0, 1]]).all()
        assert ((scores >= 0) & (scores <= 1)).all()
        assert (np.diff(scores) <= 0).all()
        assert result.scales.any(axis=1).all()
        assert len(result) <= num_inputs


@pytest.mark.parametrize(
    ("boxes", "scores", "tile_ids", "cut", "expected_boxes", "expected_scores"),
    [
        # a lesion cut by a tile border: the truncated box joins the whole one of the next tile
        (
            [[156, 500, 184, 540], [120, 500, 184, 540]],
            [0.9, 0.9],
            [0, 1],
            [True, False],
            [[120, 500, 184, 540]],
            [0.9],
        ),
        # truncated first and scored higher: the union is still the whole lesion
        (
            [[120, 500, 184, 540], [156, 500, 184, 540]],
            [0.9, 0.95],
            [1, 0],
            [False, True],
            [[120, 500, 184, 540]],
            [0.95],
        ),
        # the same lesion seen whole by two tiles (IoU > 0.5): one box, the union
        ([[10, 10, 20, 20], [11, 10, 21, 20]], [0.6, 0.8], [0, 1], [False, False], [[10, 10, 21, 20]], [0.8]),
        # a small finding inside a large low-scored box of another tile, not cut: both stay
        (
            [[40, 40, 50, 50], [0, 0, 100, 100]],
            [0.8, 0.1],
            [0, 1],
            [False, False],
            [[40, 40, 50, 50], [0, 0, 100, 100]],
            [0.8, 0.1],
        ),
        # ... and the same pair from one tile: the network's NMS kept both, so do we
        (
            [[40, 40, 50, 50], [0, 0, 100, 100]],
            [0.8, 0.1],
            [0, 0],
            [True, True],
            [[40, 40, 50, 50], [0, 0, 100, 100]],
            [0.8, 0.1],
        ),
        # tiles without overlap: the two halves of a lesion abut at the border, both cut
        (
            [[120, 500, 150, 540], [150, 502, 184, 541]],
            [0.7, 0.8],
            [0, 1],
            [True, True],
            [[120, 500, 184, 541]],
            [0.8],
        ),
        # ... a pixel apart (the network's box falls short of the border)
        (
            [[120, 500, 149, 540], [151, 500, 184, 540]],
            [0.7, 0.8],
            [0, 1],
            [True, True],
            [[120, 500, 184, 540]],
            [0.8],
        ),
        # ... but not when only one was cut, or they do not line up along the border
        (
            [[120, 500, 150, 540], [150, 500, 184, 540]],
            [0.7, 0.8],
            [0, 1],
            [True, False],
            [[150, 500, 184, 540], [120, 500, 150, 540]],
            [0.8, 0.7],
        ),
        (
            [[120, 500, 150, 540], [150, 530, 184, 570]],
            [0.7, 0.8],
            [0, 1],
            [True, True],
            [[150, 530, 184, 570], [120, 500, 150, 540]],
            [0.8, 0.7],
        ),
        # the large box is the cut one: the small one inside it is not a part of it
        (
            [[40, 40, 50, 50], [0, 0, 100, 100]],
            [0.8, 0.1],
            [0, 1],
            [False, True],
            [[40, 40, 50, 50], [0, 0, 100, 100]],
            [0.8, 0.1],
        ),
        ([], [], [], [], np.zeros((0, 4)), []),
    ],
)
def test_merge_tile_duplicates(boxes, scores, tile_ids, cut, expected_boxes, expected_scores):
    from monai_smalldet.fusion import merge_tile_duplicates

    out_boxes, out_scores, out_labels = merge_tile_duplicates(
        boxes, scores, [1] * len(scores), tile_ids=tile_ids, cut=cut
    )
    np.testing.assert_allclose(out_boxes, np.asarray(expected_boxes, dtype=np.float32).reshape(-1, 4))
    np.testing.assert_allclose(out_scores, expected_scores)
    assert len(out_labels) == len(out_scores)


def test_merge_tile_duplicates_labels_and_defaults():
    from monai_smalldet.fusion import merge_tile_duplicates

    # different labels never merge, even when identical
    out_boxes, _, out_labels = merge_tile_duplicates([[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.6], [1, 2])
    assert sorted(out_labels.tolist()) == [1, 2]
    # no tile information: every box its own tile, none cut, so only IoU duplicates merge
    out_boxes, _, _ = merge_tile_duplicates(
        [[0, 0, 10, 10], [0, 0, 10, 11], [2, 2, 4, 4]], [0.9, 0.8, 0.7], [1, 1, 1]
    )
    np.testing.assert_allclose(out_boxes, [[0, 0, 10, 11], [2, 2, 4, 4]])
    with pytest.raises(ValueError, match="one entry per box"):
        merge_tile_duplicates([[0, 0, 10, 10]], [0.5], [1], tile_ids=[0, 1])
    with pytest.raises(ValueError, match=r"thr must lie in \[0, 1\], got 1.5"):
        merge_tile_duplicates([[0, 0, 10, 10]], [0.5], [1], thr=1.5)


@pytest.mark.parametrize(
    ("origin", "box", "expected"),
    [
        ((0, 0), [0, 0, 10, 10], False),  # the level's own corner: no neighbour there
        ((100, 0), [0, 20, 10, 30], True),  # left border shared with the tile before
        ((100, 0), [30, 30, 40, 40], False),  # well inside
        ((0, 0), [20, 20, 64, 30], True),  # right border, a tile follows
        ((192, 0), [20, 20, 64, 30], False),  # right border is the level's edge
        ((0, 200), [20, 50, 30, 64], False),  # bottom in the padding past the level's last row
    ],
)
def test_cut_by_tile_border(origin, box, expected):
    from monai_smalldet.inference import cut_by_tile_border

    assert cut_by_tile_border(np.asarray([box]), origin, 64, (230, 256)).tolist() == [expected]


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ([0, 5, 8, 15], True),  # left border: the previous tile overlaps it
        ([30, 5, 40, 15], False),  # right border of a trimmed last column is the level's edge
        ([10, 55, 20, 64], True),  # bottom border: a tile row follows
        ([10, 30, 20, 40], False),  # 40 is the width, not the height: not near the bottom
    ],
)
def test_cut_by_tile_border_of_a_trimmed_tile(box, expected):
    """The last column of a 256-wide level, trimmed to 40 x 64 columns x rows at x = 216."""
    from monai_smalldet.inference import cut_by_tile_border

    got = cut_by_tile_border(np.asarray([box]), (216, 0), (64, 40), (230, 256))
    assert got.tolist() == [expected]


def _merge_reference(boxes, scores, tile_ids, cut, thr=0.5):
    """The rules of merge_tile_duplicates written out pair by pair (slow, obviously right)."""
    boxes = np.asarray(boxes, dtype=np.float64)

    def area(b):
        return max(b[2] - b[0], 0) * max(b[3] - b[1], 0)

    def dup(a, b, cut_a, cut_b):
        iw = min(a[2], b[2]) - max(a[0], b[0])
        ih = min(a[3], b[3]) - max(a[1], b[1])
        inter = max(iw, 0) * max(ih, 0)
        iou = inter / max(area(a) + area(b) - inter, 1e-7)
        ios = inter / max(min(area(a), area(b)), 1e-7)
        smaller_cut = cut_b if area(b) <= area(a) else cut_a
        abut = False
        for lo, hi, olo, ohi in ((0, 2, 1, 3), (1, 3, 0, 2)):
            gap = max(b[lo] - a[hi], a[lo] - b[hi])
            narrow = min(a[hi] - a[lo], b[hi] - b[lo])
            shared = min(a[ohi], b[ohi]) - max(a[olo], b[olo])
            shorter = min(a[ohi] - a[olo], b[ohi] - b[olo])
            abut |= abs(gap) <= 0.5 * narrow and shared > thr * max(shorter, 1e-6)
        return iou > thr or (ios > thr and smaller_cut) or (cut_a and cut_b and abut)

    order = np.argsort(-np.asarray(scores), kind="stable")
    open_ = [True] * len(boxes)
    out = []
    for i in order:
        if not open_[i]:
            continue
        group = [i] + [
            j
            for j in range(len(boxes))
            if open_[j] and j != i and tile_ids[j] != tile_ids[i] and dup(boxes[i], boxes[j], cut[i], cut[j])
        ]
        for j in group:
            open_[j] = False
        m = boxes[group]
        out.append([m[:, 0].min(), m[:, 1].min(), m[:, 2].max(), m[:, 3].max(), scores[i]])
    return np.asarray(out).reshape(-1, 5)


@pytest.mark.parametrize("seed", range(5))
def test_merge_tile_duplicates_matches_the_pairwise_rules(seed):
    """Random boxes on a 2 x 2 grid of overlapping tiles, many near the borders."""
    from monai_smalldet.fusion import merge_tile_duplicates

    rng = np.random.default_rng(seed)
    n = 300
    centre = rng.choice([100.0, 200.0, 300.0], size=(n, 2)) + rng.normal(0, 30, (n, 2))
    size = rng.uniform(4, 60, (n, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    tile_ids = rng.integers(0, 4, n)
    cut = rng.uniform(size=n) < 0.4
    out_boxes, out_scores, _ = merge_tile_duplicates(
        boxes, scores, np.ones(n, int), tile_ids=tile_ids, cut=cut
    )
    expected = _merge_reference(boxes, scores, tile_ids, cut)
    assert len(out_boxes) < n  # the scene has duplicates to merge
    np.testing.assert_allclose(out_boxes, expected[:, :4], atol=1e-4)
    np.testing.assert_allclose(out_scores, expected[:, 4], atol=1e-6)
