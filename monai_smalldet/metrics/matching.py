"""FROC matching: which lesions each image's predictions hit, and which predictions are false
positives (the rules of :mod:`monai_smalldet.metrics.froc`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from monai.config import NdarrayOrTensor
from monai.data.box_utils import box_centers, centers_in_boxes
from monai.utils import convert_to_numpy

from ..spacing import read_spacing_mm

#: How far outside a lesion box (pixels) a centre may lie and still hit it: float rounding only.
BORDER_TOLERANCE_PX = 1e-6


@dataclass(frozen=True)
class ImageMatch:
    """Predictions of one image matched against its lesions.

    Attributes:
        lesion_scores: (M,) for each lesion the maximum score of the predictions hitting it,
            NaN when no prediction hits it.
        fp_scores: (K,) scores of the predictions whose centre lies inside no lesion.
        pred_scores: (N,) scores of all predictions (the thresholds of the sweep).
        lesion_sizes_mm: (M,) lesion sizes in mm, NaN where unknown.
        lesion_types: (M,) lesion types, ``None`` where unknown.
    """

    lesion_scores: np.ndarray
    fp_scores: np.ndarray
    pred_scores: np.ndarray
    lesion_sizes_mm: np.ndarray
    lesion_types: tuple[str | None, ...]

    @property
    def num_lesions(self) -> int:
        return int(self.lesion_scores.shape[0])


def _boxes(x: Any, name: str) -> np.ndarray:
    """(N, 4) float64 boxes ``(x1, y1, x2, y2)`` from None, a list, an array or a tensor."""
    if x is None:
        return np.zeros((0, 4))
    arr = np.asarray(convert_to_numpy(x, dtype=np.float64, wrap_sequence=True), dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4))
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) as (x1, y1, x2, y2), got {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite.")
    if np.any(arr[:, 2] < arr[:, 0]) or np.any(arr[:, 3] < arr[:, 1]):
        raise ValueError(f"{name} must satisfy x2 >= x1 and y2 >= y1 (StandardMode xyxy).")
    return arr


def _vector(x: Any, n: int, name: str) -> np.ndarray:
    """(n,) float64 vector; None -> all NaN; None entries -> NaN."""
    if x is None:
        return np.full(n, np.nan)
    if isinstance(x, (list, tuple)):
        x = [np.nan if v is None else v for v in x]
    arr = np.asarray(convert_to_numpy(x, dtype=np.float64, wrap_sequence=True), dtype=np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}.")
    return arr


def _spacing(spacing: Any) -> tuple[float, float] | None:
    """``(row, column)`` pixel spacing in mm from a scalar or a pair (DICOM order); ``None`` if absent."""
    return None if spacing is None else read_spacing_mm(spacing)


def match_image(
    pred_boxes: NdarrayOrTensor | None,
    pred_scores: NdarrayOrTensor | None,
    gt_boxes: NdarrayOrTensor | None,
    *,
    lesion_sizes_mm: NdarrayOrTensor | Sequence[float | None] | None = None,
    lesion_types: str | Sequence[str | None] | None = None,
    pixel_spacing_mm: float | Sequence[float] | None = None,
) -> ImageMatch:
    """Match the predictions of one image against its lesions (box-centre hit rule).

    Args:
        pred_boxes: (N, 4) predicted boxes ``(x1, y1, x2, y2)`` in pixels, x = column,
            y = row (MONAI ``StandardMode``); numpy or torch.
        pred_scores: (N,) prediction scores (any real, not NaN).
        gt_boxes: (M, 4) lesion boxes, same convention.
        lesion_sizes_mm: (M,) lesion sizes in mm (None/NaN entries: unknown).
        lesion_types: (M,) lesion types, or one type for all lesions of the image.
        pixel_spacing_mm: used only where a size is unknown: the size is then the longer
            side of the lesion box in mm; a scalar or ``(row_mm, column_mm)`` (DICOM
            ``PixelSpacing`` / ``ImagerPixelSpacing`` order).

    Returns:
        the :class:`ImageMatch`.

    Example:
        >>> m = match_image([[0, 0, 4, 4], [10, 10, 12, 12]], [0.9, 0.4], [[1, 1, 3, 3]])
        >>> m.lesion_scores.tolist(), m.fp_scores.tolist()
        ([0.9], [0.4])
    """
    pb = _boxes(pred_boxes, "pred_boxes")
    gb = _boxes(gt_boxes, "gt_boxes")
    n, m = pb.shape[0], gb.shape[0]
    if pred_scores is None and n:
        raise ValueError(f"pred_scores are missing for {n} predicted boxes.")
    ps = _vector(pred_scores, n, "pred_scores") if n or pred_scores is not None else np.zeros(0)
    if np.any(np.isnan(ps)):
        raise ValueError("pred_scores must not be NaN.")

    if n and m:
        # all (prediction, lesion) pairs: centers_in_boxes compares row i with row i
        centers = np.repeat(np.asarray(box_centers(pb)), m, axis=0)
        boxes = np.tile(gb, (n, 1))
        hit = np.asarray(centers_in_boxes(centers, boxes, eps=-BORDER_TOLERANCE_PX)).reshape(n, m)
    else:
        hit = np.zeros((n, m), dtype=bool)
    lesion_scores = np.where(hit, ps[:, None], -np.inf).max(axis=0, initial=-np.inf)
    lesion_scores[~hit.any(axis=0)] = np.nan
    fp_scores = ps[~hit.any(axis=1)]

    sizes = _vector(lesion_sizes_mm, m, "lesion_sizes_mm")
    spacing = _spacing(pixel_spacing_mm)
    unknown = np.isnan(sizes)
    if spacing is not None and unknown.any():
        row_mm, col_mm = spacing
        long_side = np.maximum((gb[:, 2] - gb[:, 0]) * col_mm, (gb[:, 3] - gb[:, 1]) * row_mm)
        sizes = np.where(unknown, long_side, sizes)

    if lesion_types is None or isinstance(lesion_types, str):
        types: tuple[str | None, ...] = (lesion_types,) * m
    else:
        types = tuple(None if t is None else str(t) for t in lesion_types)
        if len(types) != m:
            raise ValueError(f"lesion_types must have length {m}, got {len(types)}.")

    return ImageMatch(
        lesion_scores=lesion_scores,
        fp_scores=fp_scores,
        pred_scores=ps,
        lesion_sizes_mm=sizes,
        lesion_types=types,
    )


@dataclass(frozen=True)
class MatchKeys:
    """Where each image's entries keep what FROC matching reads (one definition for
    :func:`match_images`, :func:`~monai_smalldet.metrics.froc` and
    :class:`~monai_smalldet.metrics.FROCMetric`).

    Attributes:
        pred_box_key, pred_score_key: keys of a prediction mapping: (N, 4) boxes ``(x1, y1,
            x2, y2)`` in pixels (x = column) and (N,) scores; MONAI's detectors' ``box`` /
            ``label_scores`` by default.
        gt_box_key, size_key, type_key, spacing_key: keys of a ground-truth mapping: (M, 4)
            lesion boxes, (M,) sizes in mm, (M,) types (or one string), pixel spacing.
        pixel_spacing_mm: spacing (scalar or ``(row_mm, column_mm)``) to compute a lesion's
            size (longer box side in mm) where the ground truth gives none.
    """

    pred_box_key: str = "box"
    pred_score_key: str = "label_scores"
    gt_box_key: str = "box"
    size_key: str = "lesion_size_mm"
    type_key: str = "lesion_type"
    spacing_key: str = "pixel_spacing_mm"
    pixel_spacing_mm: float | Sequence[float] | None = None


def match_images(
    predictions: Sequence[Mapping[str, Any] | Sequence[Any]],
    ground_truth: Sequence[Mapping[str, Any] | NdarrayOrTensor],
    keys: MatchKeys | None = None,
    **fields: Any,
) -> list[ImageMatch]:
    """Match a set of images (see :func:`froc` for the accepted per-image formats).

    Args:
        keys: where the entries keep boxes, scores, sizes, types (default :class:`MatchKeys`).
        fields: fields of :class:`MatchKeys` that replace those of ``keys``.

    Raises:
        TypeError: a field :class:`MatchKeys` does not have.
    """
    k = dataclasses.replace(keys or MatchKeys(), **fields)
    if len(predictions) != len(ground_truth):
        raise ValueError(
            f"one prediction entry per image is needed: got {len(predictions)} predictions "
            f"and {len(ground_truth)} ground truths."
        )
    matches = []
    for pred, gt in zip(predictions, ground_truth, strict=True):
        if isinstance(pred, Mapping):
            pb, ps = pred.get(k.pred_box_key), pred.get(k.pred_score_key)
        elif pred is None:
            pb, ps = None, None
        else:
            pb, ps = pred
        if isinstance(gt, Mapping):
            gb = gt.get(k.gt_box_key)
            sizes, types = gt.get(k.size_key), gt.get(k.type_key)
            spacing = gt.get(k.spacing_key, k.pixel_spacing_mm)
        else:
            gb, sizes, types, spacing = gt, None, None, k.pixel_spacing_mm
        matches.append(
            match_image(pb, ps, gb, lesion_sizes_mm=sizes, lesion_types=types, pixel_spacing_mm=spacing)
        )
    return matches
