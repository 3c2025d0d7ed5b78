"""The registered fusions: ``wbf``, ``nms``, ``soft_nms``, ``concat``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import ensemble_boxes
import numpy as np
from monai.data.box_utils import box_iou

from .detections import (
    Detections,
    _as_labels,
    _concat,
)
from .registry import Fusion, register_fusion
from .tile_merge import merge_overlapping_tiles
from .wbf import CONF_TYPES, _denormalise, _normalise, _scales_by_iou, weighted_boxes_fusion


@register_fusion("wbf")
class WBFFusion(Fusion):
    """Weighted Box Fusion of the scales (:func:`weighted_boxes_fusion`), the paper's choice.

    The clusters, boxes and scores of ``ensemble_boxes.weighted_boxes_fusion`` (the paper's
    implementation), computed by :func:`weighted_boxes_fusion`, which also knows each
    cluster's scales. Boxes overlapping with IoU > ``iou_thr`` (same label, any scales) form a cluster; the
    fused box is their average weighted by ``score * weight[scale]``.

    Scores with ``conf_type="avg"`` (the paper's default) and ``allows_overflow=False``: a
    cluster of ``n`` boxes scores ``sum(score_i * weight_i) / n * min(S, n) / sum(weights)``,
    with ``S`` and ``sum(weights)`` taken over **all** scales; for ``n <= S`` that is
    ``sum(score_i * weight_i) / sum(weights)``. A box found at only one of three scales
    (unit weights) therefore keeps 1/3 of its score: agreement across scales is rewarded.
    A scale that found nothing still counts: it is a model that voted "nothing", as in the
    paper's WBF over its three scale outputs. It is passed on as an empty array (no dummy
    box), so ``weights`` and the division keep all scales. Leaving empty scales out would instead divide by the weights of the non-empty
    ones only (one box at one of three scales would keep its whole score).

    Scores are capped at 1 when ``allows_overflow=False`` (with unequal weights and several
    boxes of one scale in a cluster, the formula above may exceed 1).

    Boxes whose ``score * weight`` is 0 are left out (they could only give score-0 boxes,
    and a cluster of them would divide by zero in the weighted average).

    ``scales`` of a fused box: the scales of the boxes in its cluster.

    Args:
        weights: one weight per scale (``None``: all 1).
        iou_thr: IoU above which boxes join a cluster (paper: 0.55).
        skip_box_thr: boxes scoring below it are ignored (paper: 0.0).
        conf_type: the confidence rule of ensemble-boxes (``"avg"``, ``"max"``, ``"box_and_model_avg"``,
            ``"absent_model_aware_avg"``).
        allows_overflow: let ``"avg"`` scores exceed 1 when one scale puts several boxes in a cluster.
    """

    CONF_TYPES: ClassVar[tuple[str, ...]] = CONF_TYPES

    def __init__(
        self,
        weights: Sequence[float] | None = None,
        iou_thr: float = 0.55,
        skip_box_thr: float = 0.0,
        conf_type: str = "avg",
        allows_overflow: bool = False,
    ) -> None:
        if conf_type not in self.CONF_TYPES:
            raise ValueError(f"conf_type must be one of {self.CONF_TYPES}, got {conf_type!r}.")
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.ndim != 1 or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
                raise ValueError(
                    f"weights must be finite, non-negative, one per scale, not all 0; got {weights}."
                )
            weights = [float(v) for v in w]
        self.weights = weights
        self.iou_thr = float(iou_thr)
        self.skip_box_thr = float(skip_box_thr)
        self.conf_type = conf_type
        self.allows_overflow = bool(allows_overflow)

    def fuse(self, per_scale: list[Detections], image_size_hw: tuple[int, int]) -> Detections:
        num_scales = len(per_scale)
        if self.weights is None:
            weights = np.ones(num_scales)
        elif len(self.weights) != num_scales:
            raise ValueError(f"weights has {len(self.weights)} entries, but {num_scales} scales were given.")
        else:
            weights = np.asarray(self.weights, dtype=np.float64)
        # keep every scale (empty ones as empty arrays) so that ensemble-boxes divides by all of them
        used = [
            d.select(d.scores.astype(np.float64) * w > 0) for d, w in zip(per_scale, weights, strict=True)
        ]
        if sum(len(d) for d in used) == 0:
            return Detections.empty(num_scales)
        boxes, scores, labels, scales = weighted_boxes_fusion(
            [_normalise(d.boxes, image_size_hw) for d in used],
            [d.scores.astype(np.float64) for d in used],
            [d.labels for d in used],
            weights=list(weights),
            iou_thr=self.iou_thr,
            skip_box_thr=self.skip_box_thr,
            conf_type=self.conf_type,
            allows_overflow=self.allows_overflow,
        )
        boxes_px = _denormalise(boxes, image_size_hw)
        scores_np = np.asarray(scores, dtype=np.float32)
        if not self.allows_overflow:
            scores_np = np.minimum(scores_np, np.float32(1.0))
        labels_np = _as_labels(labels, len(boxes_px))
        return Detections(boxes_px, scores_np, labels_np, scales)


@register_fusion("nms")
class NMSFusion(Fusion):
    """Class-wise greedy NMS over all scales together (MONAI ``batched_nms``).

    The kept boxes keep their box and score. ``scales`` of a kept box: its own scale plus the
    scales of the boxes it suppressed (a box is suppressed by the first kept box, by
    descending score, of its label with IoU > ``iou_thr``, exactly as greedy NMS does).

    Args:
        iou_thr: IoU above which the lower-scored box is removed.
    """

    def __init__(self, iou_thr: float = 0.5) -> None:
        self.iou_thr = float(iou_thr)

    def fuse(self, per_scale: list[Detections], image_size_hw: tuple[int, int]) -> Detections:
        allb = _concat(per_scale)
        if len(allb) == 0:
            return Detections.empty(len(per_scale))
        keep = merge_overlapping_tiles(allb.boxes, allb.scores, allb.labels, self.iou_thr)
        scales = allb.scales[keep].copy()
        # rank of every box in the NMS visiting order (stable descending score)
        rank = np.empty(len(allb), dtype=np.int64)
        rank[np.argsort(-allb.scores, kind="stable")] = np.arange(len(allb))
        suppressed = np.setdiff1d(np.arange(len(allb)), keep)
        if len(suppressed):
            iou = np.asarray(box_iou(allb.boxes[keep], allb.boxes[suppressed]), dtype=np.float64)  # (k, m)
            can = (
                (iou > self.iou_thr)
                & (allb.labels[keep][:, None] == allb.labels[suppressed][None, :])
                & (rank[keep][:, None] < rank[suppressed][None, :])
            )
            # keep is in visiting order: the first True row is the box that suppressed it
            has = can.any(axis=0)
            by = np.argmax(can, axis=0)
            for j in np.flatnonzero(has):
                scales[by[j]] |= allb.scales[suppressed[j]]
        return Detections(allb.boxes[keep], allb.scores[keep], allb.labels[keep], scales)


@register_fusion("soft_nms")
class SoftNMSFusion(Fusion):
    """Soft-NMS over all scales together (``ensemble_boxes.soft_nms``, Bodla et al., ICCV 2017).

    Boxes are visited by descending (decayed) score; the scores of the boxes left are decayed
    by ``exp(-IoU**2 / sigma)`` (``method="gaussian"``) or by ``1 - IoU`` above ``iou_thr``
    (``"linear"``); a box whose decayed score falls to ``thresh`` or below is removed.
    As ensemble-boxes 1.0.9 does it, the kept boxes are returned with their **original**
    scores: the decay only decides which boxes survive (with the defaults, hardly any).

    ``scales``: approximated by IoU matching (ensemble-boxes does not say which boxes a kept
    box stands for): scale ``s`` is marked when one of its input boxes (same label) has
    IoU >= ``iou_thr`` with the kept box, and the scale of the best-overlapping input box
    is always marked.

    Args:
        iou_thr: IoU of the linear decay and of the ``scales`` matching.
        sigma: width of the Gaussian decay.
        thresh: boxes whose decayed score is <= ``thresh`` are removed.
        method: ``"gaussian"`` or ``"linear"``.
    """

    METHODS: ClassVar[dict[str, int]] = {"linear": 1, "gaussian": 2}

    def __init__(
        self, iou_thr: float = 0.5, sigma: float = 0.5, thresh: float = 0.001, method: str = "gaussian"
    ) -> None:
        if method not in self.METHODS:
            raise ValueError(f"method must be one of {tuple(self.METHODS)}, got {method!r}.")
        self.iou_thr = float(iou_thr)
        self.sigma = float(sigma)
        self.thresh = float(thresh)
        self.method = method

    def fuse(self, per_scale: list[Detections], image_size_hw: tuple[int, int]) -> Detections:
        if sum(len(d) for d in per_scale) == 0:
            return Detections.empty(len(per_scale))
        # clean inputs: ensemble-boxes' coordinate and zero-area fixes (which print) never trigger
        boxes, scores, labels = ensemble_boxes.soft_nms(
            [_normalise(d.boxes, image_size_hw) for d in per_scale],
            [d.scores.astype(np.float64) for d in per_scale],
            [d.labels for d in per_scale],
            method=self.METHODS[self.method],
            iou_thr=self.iou_thr,
            sigma=self.sigma,
            thresh=self.thresh,
        )
        boxes_px = _denormalise(boxes, image_size_hw)
        labels_np = _as_labels(labels, len(boxes_px))
        scales = _scales_by_iou(boxes_px, labels_np, per_scale, self.iou_thr)
        return Detections(boxes_px, np.asarray(scores, dtype=np.float32), labels_np, scales)


@register_fusion("concat")
class ConcatFusion(Fusion):
    """No fusion: all scales' boxes together, each with its own scale (for ablations)."""

    def fuse(self, per_scale: list[Detections], image_size_hw: tuple[int, int]) -> Detections:
        return _concat(per_scale)
