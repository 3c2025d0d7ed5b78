"""Cross-scale fusion of detections in original-image pixels.

Step 5 of Rangarajan et al., *Ultra-high resolution, multi-scale, context-aware approach
for detection of small cancers on mammography* (Sci Rep 2022): every scale of the pyramid
(X, 0.5X, 0.25X) yields boxes that are already mapped back to original-image pixels; the
boxes found twice in overlapping tiles of one scale are de-duplicated
(:func:`merge_overlapping_tiles`), then the scales are fused, by default with Weighted
Box Fusion (Solovyev et al., *Weighted boxes fusion: ensembling boxes from different
object detection models*, Image and Vision Computing 2021) as the paper did, through the
``ensemble-boxes`` package (``iou_thr=0.55, skip_box_thr=0.0, conf_type='avg'``): here
:func:`weighted_boxes_fusion` gives ensemble-boxes' results to the bit, faster, with the
scales of every cluster.

The fusion strategies sit behind one callable interface and a name -> class registry,
as in SAHI's ``sahi/postprocess/combine.py``, so that a config can choose one by name::

    fusion = get_fusion("wbf", iou_thr=0.55)
    fused = fusion([dets_x, dets_half, dets_quarter], image_size_hw=(4096, 3328))

Conventions of this module (it sees boxes only: no network, inference or transform code):

- a box is ``(x1, y1, x2, y2)`` in **original-image pixels**, ``x`` = column, ``y`` = row,
  ``x2``/``y2`` exclusive edges, so a box lies inside an image of size ``(H, W)`` when
  ``0 <= x1 <= x2 <= W`` and ``0 <= y1 <= y2 <= H``;
- ``image_size_hw`` is ``(H, W)`` = (rows, columns), the order of the image array's shape;
- scores are detector confidences in ``[0, 1]``; labels are dataset labels (e.g.
  ``1`` = malignant), integers;
- numpy or torch goes in, numpy ``float32`` boxes/scores and ``int64`` labels come out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import ensemble_boxes
import numpy as np
import torch
from monai.data.box_utils import batched_nms, box_iou
from monai.utils import convert_data_type

__all__ = [
    "FUSIONS",
    "MATCH_METRICS",
    "ConcatFusion",
    "Detections",
    "Fusion",
    "NMSFusion",
    "SoftNMSFusion",
    "WBFFusion",
    "box_ios",
    "get_fusion",
    "merge_overlapping_tiles",
    "merge_tile_duplicates",
    "register_fusion",
    "weighted_boxes_fusion",
]

ArrayLike = np.ndarray | torch.Tensor | Sequence[Any]


def _to_numpy(data: Any) -> np.ndarray:
    """numpy view of a numpy array, torch tensor (any device) or nested sequence."""
    if isinstance(data, torch.Tensor | np.ndarray):
        return convert_data_type(data, np.ndarray)[0]
    return np.asarray(data)


def _as_boxes(boxes: Any) -> np.ndarray:
    """(N, 4) float32 boxes; an empty input of any shape is (0, 4)."""
    arr = _to_numpy(boxes)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) as (x1, y1, x2, y2), got {arr.shape}.")
    return arr.astype(np.float32, copy=False)


def _as_scores(scores: Any, n: int) -> np.ndarray:
    arr = _to_numpy(scores)
    if arr.size == 0:
        arr = arr.reshape(-1)
    if arr.shape != (n,):
        raise ValueError(f"scores must have shape ({n},) to match the boxes, got {arr.shape}.")
    return arr.astype(np.float32, copy=False)


def _as_labels(labels: Any, n: int) -> np.ndarray:
    arr = _to_numpy(labels)
    if arr.size == 0:
        arr = arr.reshape(-1)
    if arr.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the boxes, got {arr.shape}.")
    if arr.dtype.kind == "f":
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            raise ValueError(f"labels must be integers, got {arr}.")
        arr = rounded
    return arr.astype(np.int64, copy=False)


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections on one image: boxes in original-image pixels and the scales that found them.

    Args:
        boxes: (n, 4) ``(x1, y1, x2, y2)`` in original-image pixels, ``x`` = column; float32.
        scores: (n,) confidences; float32.
        labels: (n,) dataset labels (e.g. 1 = malignant); int64.
        scales: (n, S) bool, ``scales[i, s]`` tells whether pyramid scale ``s`` (index into
            the scale list, e.g. ``(1.0, 0.5, 0.25)``) found box ``i``. ``None`` means one
            scale that found every box, shape (n, 1).

    Inputs may be numpy arrays, torch tensors or sequences; they are converted once, here.

    Example:
        .. code-block:: python

            dets = Detections([[10, 20, 30, 40]], [0.9], [1], [[True, False, True]])
            dets.to_dict(scale_factors=(1.0, 0.5, 0.25))
            # {'num_scales': 3, 'detections': [{'box': [10.0, 20.0, 30.0, 40.0],
            #   'score': 0.9..., 'label': 1, 'scales': [1.0, 0.25]}]}
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    scales: np.ndarray = None  # type: ignore[assignment]  # None -> one scale, (n, 1) all True

    def __post_init__(self) -> None:
        boxes = _as_boxes(self.boxes)
        n = boxes.shape[0]
        scores = _as_scores(self.scores, n)
        labels = _as_labels(self.labels, n)
        if self.scales is None:
            scales = np.ones((n, 1), dtype=bool)
        else:
            scales = _to_numpy(self.scales)
            if scales.ndim != 2 or scales.shape[0] != n:
                raise ValueError(f"scales must have shape ({n}, num_scales), got {scales.shape}.")
            scales = scales.astype(bool, copy=False)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "scales", scales)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def num_scales(self) -> int:
        """Number of pyramid scales ``S`` (columns of :attr:`scales`)."""
        return int(self.scales.shape[1])

    @classmethod
    def empty(cls, num_scales: int) -> Detections:
        """No detections: boxes (0, 4), scores (0,), labels (0,), scales (0, num_scales)."""
        if num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {num_scales}.")
        return cls(
            np.zeros((0, 4), dtype=np.float32),
            np.zeros((0,), dtype=np.float32),
            np.zeros((0,), dtype=np.int64),
            np.zeros((0, num_scales), dtype=bool),
        )

    def select(self, index: Any) -> Detections:
        """The detections at ``index`` (integer indices or a boolean mask), in that order."""
        index = _to_numpy(index)
        if index.dtype.kind not in "biu":
            index = index.astype(np.int64)
        return Detections(self.boxes[index], self.scores[index], self.labels[index], self.scales[index])

    def sorted(self) -> Detections:
        """The detections by descending score; equal scores keep their current order."""
        return self.select(np.argsort(-self.scores, kind="stable"))

    def to_dict(self, scale_factors: Sequence[float] | None = None) -> dict[str, Any]:
        """JSON-safe dict: ``{"num_scales": S, "detections": [{"box", "score", "label", "scales"}, ...]}``.

        ``box`` is ``[x1, y1, x2, y2]`` in original-image pixels (``x`` = column). ``scales``
        lists the indices of the scales that found the box, or, when ``scale_factors`` (one
        per scale, e.g. ``(1.0, 0.5, 0.25)``) is given, their factors.
        """
        if scale_factors is not None and len(scale_factors) != self.num_scales:
            raise ValueError(
                f"scale_factors must have one factor per scale ({self.num_scales}), got {len(scale_factors)}."
            )
        items = []
        for box, score, label, found in zip(self.boxes, self.scores, self.labels, self.scales, strict=True):
            idx = [int(s) for s in np.flatnonzero(found)]
            items.append(
                {
                    "box": [float(v) for v in box],
                    "score": float(score),
                    "label": int(label),
                    "scales": idx if scale_factors is None else [float(scale_factors[s]) for s in idx],
                }
            )
        return {"num_scales": self.num_scales, "detections": items}


#: What one scale may be given as: :class:`Detections` (its ``scales`` column is ignored),
#: an object with ``boxes``/``scores``/``labels`` attributes, a mapping with those keys, or a
#: ``(boxes, scores, labels)`` triple.
ScaleInput = Detections | Mapping[str, Any] | Sequence[Any]


def _scale_detections(item: Any, scale: int, num_scales: int, image_size_hw: tuple[int, int]) -> Detections:
    """One scale's input as :class:`Detections` marked with ``scale``, clipped to the image.

    Boxes that are empty once clipped (outside the image or of zero width/height) are dropped:
    they carry no location, and ensemble-boxes would warn about them.
    """
    if isinstance(item, Mapping):
        boxes, scores, labels = item["boxes"], item["scores"], item["labels"]
    elif all(hasattr(item, k) for k in ("boxes", "scores", "labels")):
        boxes, scores, labels = item.boxes, item.scores, item.labels
    elif isinstance(item, Sequence) and len(item) == 3:
        boxes, scores, labels = item
    else:
        raise ValueError(
            f"scale {scale}: expected Detections, a mapping with 'boxes', 'scores', 'labels' "
            f"or a (boxes, scores, labels) triple, got {type(item).__name__}."
        )
    boxes_np = _as_boxes(boxes)
    n = boxes_np.shape[0]
    scores_np = _as_scores(scores, n)
    labels_np = _as_labels(labels, n)
    if not (np.isfinite(boxes_np).all() and np.isfinite(scores_np).all()):
        raise ValueError(f"scale {scale}: boxes and scores must be finite.")
    if (boxes_np[:, 2] < boxes_np[:, 0]).any() or (boxes_np[:, 3] < boxes_np[:, 1]).any():
        raise ValueError(f"scale {scale}: boxes must be (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2.")
    boxes_np = _clip_boxes(boxes_np, image_size_hw)
    keep = (boxes_np[:, 2] > boxes_np[:, 0]) & (boxes_np[:, 3] > boxes_np[:, 1])
    scales = np.zeros((n, num_scales), dtype=bool)
    scales[:, scale] = True
    return Detections(boxes_np[keep], scores_np[keep], labels_np[keep], scales[keep])


def _clip_boxes(boxes: np.ndarray, image_size_hw: tuple[int, int]) -> np.ndarray:
    """Clip (x1, y1, x2, y2) pixel boxes to an image of size (H, W): x to [0, W], y to [0, H]."""
    height, width = image_size_hw
    upper = np.array([width, height, width, height], dtype=np.float32)
    return np.clip(boxes, 0.0, upper).astype(np.float32, copy=False)


def _check_image_size(image_size_hw: Sequence[int]) -> tuple[int, int]:
    if len(image_size_hw) != 2:
        raise ValueError(f"image_size_hw must be (H, W), got {image_size_hw}.")
    height, width = (int(v) for v in image_size_hw)
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size_hw must be positive, got {image_size_hw}.")
    return height, width


def _concat(per_scale: Sequence[Detections]) -> Detections:
    """All scales' detections in one :class:`Detections`, scale by scale, input order kept."""
    return Detections(
        np.concatenate([d.boxes for d in per_scale]),
        np.concatenate([d.scores for d in per_scale]),
        np.concatenate([d.labels for d in per_scale]),
        np.concatenate([d.scales for d in per_scale]),
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
    # partners of every box as CSR arrays (each pair both ways)
    ends = np.concatenate([i, j])
    others = np.concatenate([j, i])
    by_box = np.argsort(ends, kind="stable")
    partners = others[by_box]
    start = np.searchsorted(ends[by_box], np.arange(n + 1))
    order = np.argsort(-scores_np, kind="stable")
    open_ = np.ones(n, dtype=bool)
    out_boxes, out_scores, out_labels = [], [], []
    for k in order.tolist():
        if not open_[k]:
            continue
        open_[k] = False
        box = boxes_np[k]
        if start[k + 1] > start[k]:
            found = partners[start[k] : start[k + 1]]
            found = found[open_[found]]
            if len(found):
                open_[found] = False
                members = boxes_np[found]
                box = np.concatenate(
                    [np.minimum(box[:2], members[:, :2].min(0)), np.maximum(box[2:], members[:, 2:].max(0))]
                )
        out_boxes.append(box)
        out_scores.append(scores_np[k])
        out_labels.append(labels_np[k])
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


class Fusion(ABC):
    """Fuses the detections of several pyramid scales into one set of boxes.

    Call it with one entry per scale (index ``s`` = scale ``s``; an empty scale is an empty
    entry, never left out) and the original image size ``(H, W)``; it returns
    :class:`Detections` sorted by descending score, with boxes clipped to the image and
    ``scales`` of shape (n, S) saying which scales found each box (at least one each).

    Subclasses implement :meth:`fuse`; :meth:`__call__` converts and checks the inputs once
    (numpy/torch -> float32/int64, boxes clipped to the image, boxes empty after clipping
    dropped) and clips and sorts the result.
    """

    #: The name this class is registered under (set by :func:`register_fusion`).
    name: ClassVar[str] = ""

    def __call__(self, per_scale: Sequence[ScaleInput], image_size_hw: tuple[int, int]) -> Detections:
        """Fuse ``per_scale`` (one entry per scale) on an image of size ``image_size_hw = (H, W)``."""
        size = _check_image_size(image_size_hw)
        num_scales = len(per_scale)
        if num_scales == 0:
            raise ValueError("per_scale must hold one entry per scale, got none.")
        scale_dets = [_scale_detections(item, s, num_scales, size) for s, item in enumerate(per_scale)]
        fused = self.fuse(scale_dets, size)
        if fused.num_scales != num_scales:
            raise ValueError(
                f"{type(self).__name__}.fuse returned {fused.num_scales} scale columns, expected {num_scales}."
            )
        return Detections(_clip_boxes(fused.boxes, size), fused.scores, fused.labels, fused.scales).sorted()

    @abstractmethod
    def fuse(self, per_scale: list[Detections], image_size_hw: tuple[int, int]) -> Detections:
        """Fuse clean per-scale detections.

        Args:
            per_scale: one :class:`Detections` per scale, boxes inside the image and of
                positive area, ``scales`` of shape (n, S) with column ``s`` set for scale ``s``.
            image_size_hw: ``(H, W)`` of the original image.

        Returns:
            The fused detections, ``scales`` of shape (m, S); need not be sorted or clipped.
        """

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


#: Registered fusions, name -> class (``"wbf"``, ``"nms"``, ``"soft_nms"``, ``"concat"``, ...).
FUSIONS: dict[str, type[Fusion]] = {}

_FusionT = TypeVar("_FusionT", bound=type[Fusion])


def register_fusion(name: str) -> Callable[[_FusionT], _FusionT]:
    """Class decorator: register a :class:`Fusion` subclass under ``name`` for :func:`get_fusion`.

    Example:
        .. code-block:: python

            @register_fusion("keep_best")
            class KeepBest(Fusion):
                def fuse(self, per_scale, image_size_hw):
                    ...

            get_fusion("keep_best")
    """

    def decorator(cls: _FusionT) -> _FusionT:
        if not (isinstance(cls, type) and issubclass(cls, Fusion)):
            raise TypeError(f"@register_fusion({name!r}) needs a Fusion subclass, got {cls!r}.")
        if name in FUSIONS and FUSIONS[name] is not cls:
            raise ValueError(f"A fusion is already registered as {name!r}: {FUSIONS[name].__name__}.")
        cls.name = name
        FUSIONS[name] = cls
        return cls

    return decorator


def get_fusion(name: str, **kwargs: Any) -> Fusion:
    """The fusion registered as ``name``, built with ``kwargs`` (e.g. ``get_fusion("wbf", iou_thr=0.6)``).

    Raises:
        ValueError: when no fusion is registered under ``name``; the message lists the known names.
    """
    try:
        cls = FUSIONS[name]
    except KeyError:
        raise ValueError(f"Unknown fusion {name!r}; known fusions: {', '.join(sorted(FUSIONS))}.") from None
    return cls(**kwargs)


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
    if conf_type not in WBFFusion.CONF_TYPES:
        raise ValueError(f"conf_type must be one of {WBFFusion.CONF_TYPES}, got {conf_type!r}.")
    if not 0.0 <= iou_thr <= 1.0:
        raise ValueError(f"iou_thr must lie in [0, 1], got {iou_thr}.")
    # ensemble-boxes' rows: [label, score * weight, weight, model, x1, y1, x2, y2]
    parts = []
    for m in range(num_models):
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
    rows = np.concatenate(parts) if parts else np.zeros((0, 8))
    if len(rows) == 0:
        return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0,)), np.zeros((0, num_models), dtype=bool)
    _, first = np.unique(rows[:, 0], return_index=True)
    fused, models = [], []
    for label in rows[np.sort(first), 0]:  # labels in order of first appearance, as ensemble-boxes
        boxes = rows[rows[:, 0] == label]
        boxes = boxes[boxes[:, 1].argsort()[::-1]]
        clusters, members = _wbf_clusters(boxes, iou_thr, conf_type)
        for i, member in enumerate(members):
            n = len(member)
            if conf_type == "box_and_model_avg":
                clustered = boxes[member]
                clusters[i, 1] = clusters[i, 1] * n / clusters[i, 2]
                _, idx = np.unique(clustered[:, 3], return_index=True)
                clusters[i, 1] = clusters[i, 1] * clustered[idx, 2].sum() / w.sum()
            elif conf_type == "absent_model_aware_avg":
                absent = np.ones(num_models, dtype=bool)
                absent[np.unique(boxes[member, 3]).astype(int)] = False
                clusters[i, 1] = clusters[i, 1] * n / (clusters[i, 2] + w[absent].sum())
            elif conf_type == "max":
                clusters[i, 1] = clusters[i, 1] / w.max()
            elif not allows_overflow:
                clusters[i, 1] = clusters[i, 1] * min(num_models, n) / w.sum()
            else:
                clusters[i, 1] = clusters[i, 1] * n / w.sum()
            found = np.zeros(num_models, dtype=bool)
            found[boxes[member, 3].astype(np.int64)] = True
            models.append(found)
        fused.append(clusters)
    out = np.concatenate(fused)
    order = out[:, 1].argsort()[::-1]
    return out[order, 4:], out[order, 1], out[order, 0], np.stack(models)[order]


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

    CONF_TYPES: ClassVar[tuple[str, ...]] = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")

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
