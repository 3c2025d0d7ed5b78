"""Weighted Box Fusion with ensemble-boxes' arithmetic (results to the bit), faster, with each cluster's scales."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.data.box_utils import box_iou

from .detections import (
    Detections,
    _clip_boxes,
)

#: The score rules of ensemble-boxes' WBF (``conf_type``).
CONF_TYPES: tuple[str, ...] = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")


def _normalise(boxes: np.ndarray, image_size_hw: tuple[int, int]) -> np.ndarray:
    """Pixel boxes -> [0, 1] (divided by W, H), float64, as ensemble-boxes requires.

    IoU is unchanged by scaling x and y by different factors, so clustering in normalised
    coordinates groups exactly the boxes that pixel coordinates would.
    """
    height, width = image_size_hw
    scale = np.array([width, height, width, height], dtype=np.float64)
    return np.clip(boxes.astype(np.float64) / scale, 0.0, 1.0)


def _denormalise(boxes: np.ndarray, image_size_hw: tuple[int, int]) -> np.ndarray:
    height, width = image_size_hw
    scale = np.array([width, height, width, height], dtype=np.float64)
    return _clip_boxes(
        (np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale).astype(np.float32), image_size_hw
    )


def weighted_boxes_fusion(
    boxes_list: Sequence[np.ndarray],
    scores_list: Sequence[np.ndarray],
    labels_list: Sequence[np.ndarray],
    weights: Sequence[float] | None = None,
    iou_thr: float = 0.55,
    skip_box_thr: float = 0.0,
    conf_type: str = "avg",
    allows_overflow: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted Box Fusion with ``ensemble_boxes.weighted_boxes_fusion``'s arithmetic, and its clusters.

    The clustering, the fused boxes and the scores of ensemble-boxes 1.0.9 (Solovyev et al.,
    2021), to the bit (tested against it): per label, boxes go by descending ``score *
    weight``; each joins the cluster whose current fused box it overlaps most with IoU
    ``> iou_thr`` (the first such cluster on a tie), or starts a cluster; a cluster's box is
    the ``score * weight``-weighted average of its boxes, accumulated in float32 as
    ensemble-boxes does; its score is rescaled by ``conf_type`` at the end. Two differences,
    neither in the results:

    - each box is matched against all clusters with a few whole-array operations on
      preallocated arrays, and a cluster's average is updated by its new box alone (the same
      running float32 sum ensemble-boxes recomputes over all members each time);
    - the models (scales) of each cluster's boxes are returned, which ensemble-boxes does not.

    Args:
        boxes_list: one (N_m, 4) array per model, ``(x1, y1, x2, y2)`` normalised to
            ``[0, 1]`` with ``x1 <= x2`` and ``y1 <= y2`` (ensemble-boxes clips and swaps bad
            coordinates with a warning; here they are an error).
        scores_list: one (N_m,) array per model.
        labels_list: one (N_m,) array per model, integer labels.
        weights, iou_thr, skip_box_thr, conf_type, allows_overflow: as in ensemble-boxes;
            boxes scoring below ``skip_box_thr`` and boxes of zero area are left out.

    Returns:
        ``(boxes, scores, labels, models)``: (m, 4) float64 boxes, (m,) scores, (m,) float64
        labels by descending score (ensemble-boxes' order), and (m, M) bool, the models whose
        boxes each cluster holds.
    """
    num_models = len(boxes_list)
    w = np.ones(num_models) if weights is None else np.array(weights, dtype=np.float64)
    if len(scores_list) != num_models or len(labels_list) != num_models or len(w) != num_models:
        raise ValueError(
            f"boxes ({num_models}), scores ({len(scores_list)}), labels ({len(labels_list)}) and weights "
            f"({len(w)}) need one entry per model."
        )
    if conf_type not in CONF_TYPES:
        raise ValueError(f"conf_type must be one of {CONF_TYPES}, got {conf_type!r}.")
    if not 0.0 <= iou_thr <= 1.0:
        raise ValueError(f"iou_thr must lie in [0, 1], got {iou_thr}.")
    rows = _wbf_rows(boxes_list, scores_list, labels_list, w, skip_box_thr)
    if len(rows) == 0:
        return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0,)), np.zeros((0, num_models), dtype=bool)
    _, first = np.unique(rows[:, 0], return_index=True)
    fused, models = [], []
    for label in rows[np.sort(first), 0]:  # labels in order of first appearance, as ensemble-boxes
        boxes = rows[rows[:, 0] == label]
        boxes = boxes[boxes[:, 1].argsort()[::-1]]
        clusters, members = _wbf_clusters(boxes, iou_thr, conf_type)
        for i, member in enumerate(members):
            clusters[i, 1] = _rescaled_score(clusters[i], boxes[member], w, conf_type, allows_overflow)
            found = np.zeros(num_models, dtype=bool)
            found[boxes[member, 3].astype(np.int64)] = True
            models.append(found)
        fused.append(clusters)
    out = np.concatenate(fused)
    order = out[:, 1].argsort()[::-1]
    return out[order, 4:], out[order, 1], out[order, 0], np.stack(models)[order]


def _wbf_rows(
    boxes_list: Sequence[np.ndarray],
    scores_list: Sequence[np.ndarray],
    labels_list: Sequence[np.ndarray],
    w: np.ndarray,
    skip_box_thr: float,
) -> np.ndarray:
    """ensemble-boxes' rows ``[label, score * weight, weight, model, x1, y1, x2, y2]`` of every
    box kept (score not below ``skip_box_thr``, area not zero), inputs checked."""
    parts = []
    for m in range(len(boxes_list)):
        boxes = np.asarray(boxes_list[m], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores_list[m], dtype=np.float64).reshape(-1)
        labels = np.asarray(labels_list[m]).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"model {m}: {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels differ in number."
            )
        inside = (boxes >= 0.0) & (boxes <= 1.0)
        if not (inside.all() and (boxes[:, 2:] >= boxes[:, :2]).all()):
            raise ValueError(
                f"model {m}: boxes must be (x1, y1, x2, y2) normalised to [0, 1] with x1 <= x2, y1 <= y2."
            )
        keep = ~(scores < skip_box_thr) & ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) != 0.0)
        rows = np.empty((int(keep.sum()), 8))
        rows[:, 0] = labels[keep].astype(np.int64)
        rows[:, 1] = scores[keep] * w[m]
        rows[:, 2] = w[m]
        rows[:, 3] = m
        rows[:, 4:] = boxes[keep]
        parts.append(rows)
    return np.concatenate(parts) if parts else np.zeros((0, 8))


def _rescaled_score(
    cluster: np.ndarray, clustered: np.ndarray, w: np.ndarray, conf_type: str, allows_overflow: bool
) -> float:
    """A cluster's final score by ``conf_type``, as ensemble-boxes computes it (``cluster``: the
    fused row, ``clustered``: the rows of its boxes, ``w``: the model weights)."""
    n, num_models, score = len(clustered), len(w), cluster[1]
    if conf_type == "box_and_model_avg":
        score = score * n / cluster[2]
        _, idx = np.unique(clustered[:, 3], return_index=True)
        return score * clustered[idx, 2].sum() / w.sum()
    if conf_type == "absent_model_aware_avg":
        absent = np.ones(num_models, dtype=bool)
        absent[np.unique(clustered[:, 3]).astype(int)] = False
        return score * n / (cluster[2] + w[absent].sum())
    if conf_type == "max":
        return score / w.max()
    if not allows_overflow:
        return score * min(num_models, n) / w.sum()
    return score * n / w.sum()


def _wbf_clusters(boxes: np.ndarray, iou_thr: float, conf_type: str) -> tuple[np.ndarray, list[list[int]]]:
    """One label's clusters: (k, 8) ensemble-boxes rows and the boxes (row indices) of each.

    ``boxes``: (n, 8) rows of one label by descending weighted score. The arithmetic is
    ensemble-boxes' ``find_matching_box_fast`` and ``get_weighted_box``, in the same dtypes
    and order of operations.
    """
    n = len(boxes)
    clusters = np.empty((n, 8))  # the first k rows are the clusters so far
    area = np.empty(n)
    acc = np.zeros((n, 4), dtype=np.float32)  # running float32 sum of score * box
    conf: list[Any] = []  # float64 sums of scores (ensemble-boxes' ``conf``)
    weight: list[Any] = []
    best_score: list[Any] = []
    members: list[list[int]] = []
    box = np.zeros(8, dtype=np.float32)
    k = 0
    for r in range(n):
        row = boxes[r]
        match = -1
        if k:
            x1, y1, x2, y2 = row[4], row[5], row[6], row[7]
            c = clusters[:k]
            iw = np.minimum(c[:, 6], x2) - np.maximum(c[:, 4], x1)
            ih = np.minimum(c[:, 7], y2) - np.maximum(c[:, 5], y1)
            np.maximum(iw, 0, out=iw)
            np.maximum(ih, 0, out=ih)
            inter = iw * ih
            iou = inter / (area[:k] + (x2 - x1) * (y2 - y1) - inter)
            q = int(iou.argmax())
            if iou[q] > iou_thr:
                match = q
        acc_row = acc[k if match == -1 else match]
        acc_row += row[1] * row[4:]
        if match == -1:  # a new cluster: the box itself, in float64
            clusters[k] = row
            area[k] = (row[6] - row[4]) * (row[7] - row[5])
            conf.append(0 + row[1])
            weight.append(0 + row[2])
            best_score.append(row[1])
            members.append([r])
            k += 1
            continue
        q = match
        members[q].append(r)
        conf[q] = conf[q] + row[1]
        weight[q] = weight[q] + row[2]
        best_score[q] = max(best_score[q], row[1])
        box[0] = row[0]
        box[1] = best_score[q] if conf_type == "max" else conf[q] / len(members[q])
        box[2] = weight[q]
        box[3] = -1
        box[4:] = acc_row
        box[4:] /= conf[q]
        clusters[q] = box
        area[q] = (clusters[q, 6] - clusters[q, 4]) * (clusters[q, 7] - clusters[q, 5])
    return clusters[:k], members


def _scales_by_iou(
    boxes: np.ndarray, labels: np.ndarray, per_scale: Sequence[Detections], iou_thr: float
) -> np.ndarray:
    """(m, S) membership of fused boxes, approximated by overlap with each scale's inputs.

    Scale ``s`` is marked for a fused box when one of scale ``s``'s input boxes with the same
    label has IoU >= ``iou_thr`` with it; the scale of the best-overlapping input box (same
    label) is always marked, so every box has at least one scale.
    """
    num_scales = len(per_scale)
    scales = np.zeros((len(boxes), num_scales), dtype=bool)
    if len(boxes) == 0:
        return scales
    best_iou = np.full(len(boxes), -1.0)
    best_scale = np.zeros(len(boxes), dtype=np.int64)
    for s, dets in enumerate(per_scale):
        if len(dets) == 0:
            continue
        iou = np.asarray(box_iou(boxes, dets.boxes), dtype=np.float64)  # (m, n_s)
        iou[labels[:, None] != dets.labels[None, :]] = -1.0
        scale_best = iou.max(axis=1)
        scales[:, s] = scale_best >= iou_thr
        better = scale_best > best_iou
        best_iou[better] = scale_best[better]
        best_scale[better] = s
    scales[np.arange(len(boxes)), best_scale] = True
    return scales
