"""The detections container of one scale or of a fusion, and the input checks all fusion code uses (conventions: :mod:`monai_smalldet.fusion`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.utils import convert_data_type

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
