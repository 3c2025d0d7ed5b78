"""One level's duplicates from overlapping tiles: merged by IoU / IoS, or where a box was cut by a shared tile border."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.data.box_utils import batched_nms, box_iou

from .detections import (
    ArrayLike,
    _as_boxes,
    _as_labels,
    _as_scores,
)


def box_ios(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Intersection over the smaller box's area, (N, M), of (x1, y1, x2, y2) boxes (any axis order).

    SAHI's ``"IOS"`` match metric: a box cut off by a tile border lies inside the whole box
    found by the neighbouring tile, so their IOS is 1 while their IoU may be well below 0.5.
    """
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).clamp(min=0).prod(dim=-1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).clamp(min=0).prod(dim=-1)
    smaller = torch.minimum(area1[:, None], area2[None, :])
    return inter / smaller.clamp(min=torch.finfo(inter.dtype).eps)


#: Overlap measures for :func:`merge_overlapping_tiles`.
MATCH_METRICS: dict[str, Callable[..., Any]] = {"iou": box_iou, "ios": box_ios}


def merge_overlapping_tiles(
    boxes: ArrayLike,
    scores: ArrayLike,
    labels: ArrayLike,
    iou_thr: float = 0.5,
    match_metric: str = "iou",
) -> np.ndarray:
    """Indices of the boxes kept by class-wise NMS: one scale's de-duplication across tiles.

    Neighbouring tiles overlap, so a lesion in the overlap is found by both; mapped back to
    original-image pixels the two boxes nearly coincide and the lower-scored one is removed.
    Greedy NMS (MONAI :func:`monai.data.box_utils.batched_nms`, adapted from nnDetection):
    boxes are visited by descending score and a box is removed when its IoU with a kept box
    of the same label is ``> iou_thr``. Equal scores are visited in input order (stable sort),
    so on a tie the box given first wins.

    A lesion cut by a tile border gives a truncated box in one tile and a whole one in the
    next; their IoU can fall below ``iou_thr``. ``match_metric="ios"`` (intersection over
    the smaller box, SAHI's ``"IOS"``) merges those too.

    Args:
        boxes: (N, 4) ``(x1, y1, x2, y2)`` in original-image pixels (``x`` = column). MONAI's
            box utilities assume coordinate ``k`` is spatial dim ``k`` (``StandardMode``);
            IoU, and so NMS, are the same whichever axis comes first, so (column, row)
            boxes can be passed as they are.
        scores: (N,) confidences.
        labels: (N,) integer labels; boxes of different labels never suppress each other.
        iou_thr: overlap above which the lower-scored box is removed.
        match_metric: ``"iou"`` (intersection over union) or ``"ios"`` (intersection over
            the smaller box).

    Returns:
        (K,) int64 indices into the input, by descending score.

    Example:
        .. code-block:: python

            keep = merge_overlapping_tiles([[0, 0, 10, 10], [1, 0, 11, 10]], [0.6, 0.8], [1, 1])
            # array([1])
    """
    if match_metric not in MATCH_METRICS:
        raise ValueError(f"match_metric must be one of {tuple(MATCH_METRICS)}, got {match_metric!r}.")
    boxes_np = _as_boxes(boxes)
    n = boxes_np.shape[0]
    scores_np = _as_scores(scores, n)
    labels_np = _as_labels(labels, n)
    if n == 0:
        return np.zeros((0,), dtype=np.int64)
    # batched_nms sorts with torch.argsort(..., stable=True): ties keep input order.
    keep = batched_nms(
        torch.from_numpy(boxes_np),
        torch.from_numpy(scores_np),
        torch.from_numpy(labels_np),
        iou_thr,
        box_overlap_metric=MATCH_METRICS[match_metric],
    )
    return np.asarray(keep, dtype=np.int64)


def merge_tile_duplicates(
    boxes: ArrayLike,
    scores: ArrayLike,
    labels: ArrayLike,
    tile_ids: ArrayLike | None = None,
    cut: ArrayLike | None = None,
    thr: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy non-maximum *merging* of one scale's boxes across overlapping tiles.

    Neighbouring tiles overlap, so a lesion in the overlap band is found twice, and a lesion
    cut by a tile border gives a truncated box in one tile and the whole box in the next.
    Boxes are visited by descending score (stable on ties); each unvisited box absorbs the
    unvisited boxes of its label *from other tiles* that are duplicates of it, and becomes
    their union with the highest score. Two boxes are duplicates when

    - their IoU exceeds ``thr`` (the same lesion seen by two tiles), or
    - their intersection over the smaller box exceeds ``thr`` *and* the smaller box was cut
      by a border of its tile (``cut``): the truncated part of a lesion lies inside the
      whole box found by the neighbouring tile;
    - both were cut and they abut: side by side along one axis, with a gap (or overlap) of
      at most half the narrower box, and sharing more than ``thr`` of the shorter extent
      along the other axis; the two parts of a lesion on either side of a border of tiles
      that do not overlap (``overlap=0``).

    Boxes of one tile never merge with each other (the network's own NMS already chose
    among them), and a small box inside a large one is not swallowed unless it was cut.
    Merging every pair whose intersection over the smaller box is high (SAHI's GREEDYNMM
    with ``IOS``) instead grows small findings into the large, low-scored boxes around
    them, until their centres leave the lesions they were found on.

    Args:
        boxes: (N, 4) ``(x1, y1, x2, y2)`` original-image pixels, x = column.
        scores: (N,) confidences.
        labels: (N,) integer labels.
        tile_ids: (N,) the tile each box came from; ``None``: each box from its own tile.
        cut: (N,) bool, the box touches a border its tile shares with another tile (see
            :func:`~monai_smalldet.inference.cut_by_tile_border`); ``None``: no box is cut, so
            only IoU duplicates merge.
        thr: overlap above which boxes merge, in ``[0, 1]``.

    Returns:
        ``(boxes, scores, labels)`` of the merged set, by descending score.

    Example:
        .. code-block:: python

            # the right part of a lesion, cut by tile 0's left border, and the whole lesion
            merge_tile_duplicates(
                [[5, 0, 10, 10], [0, 0, 10, 10]], [0.8, 0.7], [1, 1], tile_ids=[0, 1], cut=[True, False]
            )
            # (array([[0., 0., 10., 10.]]), array([0.8]), array([1]))
    """
    boxes_np = _as_boxes(boxes)
    n = boxes_np.shape[0]
    scores_np = _as_scores(scores, n)
    labels_np = _as_labels(labels, n)
    ids = np.arange(n) if tile_ids is None else np.asarray(tile_ids, dtype=np.int64).reshape(-1)
    cut_np = np.zeros(n, dtype=bool) if cut is None else np.asarray(cut, dtype=bool).reshape(-1)
    if ids.shape[0] != n or cut_np.shape[0] != n:
        raise ValueError(
            f"tile_ids ({ids.shape[0]}) and cut ({cut_np.shape[0]}) need one entry per box ({n})."
        )
    if not 0.0 <= thr <= 1.0:
        raise ValueError(f"thr must lie in [0, 1], got {thr}.")
    i, j = _duplicate_pairs(boxes_np, labels_np, ids, cut_np, thr)
    return _greedy_union(boxes_np, scores_np, labels_np, i, j)


def _greedy_union(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, i: np.ndarray, j: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """By descending score (stable), each unvisited box absorbs its unvisited duplicates
    (pairs ``i[k], j[k]``) and becomes their union with its own score and label."""
    n = boxes.shape[0]
    # partners of every box as CSR arrays (each pair both ways)
    ends = np.concatenate([i, j])
    others = np.concatenate([j, i])
    by_box = np.argsort(ends, kind="stable")
    partners = others[by_box]
    start = np.searchsorted(ends[by_box], np.arange(n + 1))
    open_ = np.ones(n, dtype=bool)
    out_boxes, out_scores, out_labels = [], [], []
    for k in np.argsort(-scores, kind="stable").tolist():
        if not open_[k]:
            continue
        open_[k] = False
        box = boxes[k]
        found = partners[start[k] : start[k + 1]]
        found = found[open_[found]]
        if len(found):
            open_[found] = False
            members = boxes[found]
            box = np.concatenate(
                [np.minimum(box[:2], members[:, :2].min(0)), np.maximum(box[2:], members[:, 2:].max(0))]
            )
        out_boxes.append(box)
        out_scores.append(scores[k])
        out_labels.append(labels[k])
    return (
        np.asarray(out_boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(out_scores, dtype=np.float32),
        np.asarray(out_labels, dtype=np.int64),
    )


def _duplicate_pairs(
    boxes: np.ndarray, labels: np.ndarray, ids: np.ndarray, cut: np.ndarray, thr: float, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs ``(i, j)``, ``i < j``, of duplicate boxes (the rules of :func:`merge_tile_duplicates`).

    Only pairs that can qualify are scored: same label, different tiles, and boxes that
    intersect, or, when both were cut, that intersect once each is grown by half its size on
    every side (an abutting half lies within half the narrower box). Boxes go by their left
    edge, so each chunk of rows is compared with the boxes that start before its rightmost
    edge only, and memory stays ``O(chunk * n)`` for the thousands of low-scored boxes a level
    decodes.
    """
    n = boxes.shape[0]
    half = 0.5 * (boxes[:, 2:] - boxes[:, :2])
    grown = np.concatenate([boxes[:, :2] - half, boxes[:, 2:] + half], axis=1)
    reach = np.where(cut[:, None], grown, boxes)
    order = np.argsort(reach[:, 0], kind="stable")
    reach, lab, tid = reach[order], labels[order], ids[order]
    rows, cols = [], []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        r = reach[start:stop]
        # boxes after this chunk that start (left edge) before its rightmost right edge
        end = int(np.searchsorted(reach[:, 0], r[:, 2].max(), side="left"))
        c = reach[start:end]
        near = (
            (c[None, :, 0] < r[:, None, 2])
            & (r[:, None, 0] < c[None, :, 2])
            & (r[:, None, 1] < c[None, :, 3])
            & (c[None, :, 1] < r[:, None, 3])
            & (lab[start:stop, None] == lab[None, start:end])
            & (tid[start:stop, None] != tid[None, start:end])
        )
        ri, ci = np.nonzero(near)
        keep = ci > ri  # each unordered pair once
        rows.append(order[ri[keep] + start])
        cols.append(order[ci[keep] + start])
    a = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    b = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    i, j = np.minimum(a, b), np.maximum(a, b)
    if not len(i):
        return i, j
    p, q = boxes[i], boxes[j]
    lt = np.maximum(p[:, :2], q[:, :2])
    rb = np.minimum(p[:, 2:], q[:, 2:])
    dup = np.zeros(len(i), dtype=bool)
    meet = (rb > lt).all(axis=1)  # IoU and intersection over the smaller box need an intersection
    if meet.any():
        pm, qm, im, jm = p[meet], q[meet], i[meet], j[meet]
        inter = np.prod(rb[meet] - lt[meet], axis=1)
        area_p = np.prod(pm[:, 2:] - pm[:, :2], axis=1)
        area_q = np.prod(qm[:, 2:] - qm[:, :2], axis=1)
        eps = np.finfo(np.float32).eps
        iou = inter / np.maximum(area_p + area_q - inter, eps)
        ios = inter / np.maximum(np.minimum(area_p, area_q), eps)
        smaller_cut = np.where(area_q <= area_p, cut[jm], cut[im])
        dup[meet] = (iou > thr) | ((ios > thr) & smaller_cut)
    both_cut = cut[i] & cut[j] & ~dup
    if both_cut.any():
        dup[both_cut] = _abutting(p[both_cut], q[both_cut], thr)
    return i[dup], j[dup]


def _abutting(a: np.ndarray, b: np.ndarray, thr: float) -> np.ndarray:
    """(M,) bool: boxes ``a[k]`` and ``b[k]`` lie side by side along x or y, close and
    aligned (see :func:`merge_tile_duplicates`)."""
    out = np.zeros(len(a), dtype=bool)
    for axis in (0, 1):  # side by side along x (axis 0) or along y (axis 1)
        lo, hi = axis, axis + 2
        olo, ohi = 1 - axis, 3 - axis  # the other axis
        gap = np.maximum(b[:, lo] - a[:, hi], a[:, lo] - b[:, hi])
        narrow = np.minimum(a[:, hi] - a[:, lo], b[:, hi] - b[:, lo])
        shared = np.minimum(a[:, ohi], b[:, ohi]) - np.maximum(a[:, olo], b[:, olo])
        shorter = np.minimum(a[:, ohi] - a[:, olo], b[:, ohi] - b[:, olo])
        out |= (np.abs(gap) <= 0.5 * narrow) & (shared > thr * np.maximum(shorter, 1e-6))
    return out
