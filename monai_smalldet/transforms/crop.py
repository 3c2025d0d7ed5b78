"""Breast crop: remove the air around the breast, never a pixel of tissue or of a lesion.

Step 1 of Rangarajan et al. (Sci Rep 2022): crop the full-resolution mammogram to the breast
before building the scale pyramid, so that no tile is spent on air. The breast is found on a
subsampled copy (about 512 px on the long side, so the cost does not grow with the image):

1. a threshold between the background level and Otsu's threshold (Otsu, *A threshold
   selection method from gray-level histograms*, IEEE SMC 1979) -- low enough to keep the
   thin, dim skin-line region;
2. bright bands along the image border are removed before labelling: on scanned film the
   film edge and the scanner's frame are bright lines that join the breast, burnt-in labels
   and markers into one component (the crop then kept the whole film). From each side
   inwards, the lines that are bright along at least 90% of their length are dropped, if
   they form a band no deeper than ``border_band_fraction`` of the image side; a breast
   against the chest-wall edge is bright along that edge too, but over far more than the
   band depth, and is kept whole;
3. connected components (:func:`scipy.ndimage.label`); the largest one is the breast, and
   any other component of at least ``min_component_fraction`` of its area is kept as well
   (a breast split by a dim band). A burnt-in label or laterality marker in the air is far
   smaller and is dropped;
4. the components' bounding box (MONAI's
   :func:`~monai.transforms.utils.generate_spatial_bounding_box`, the function behind
   ``CropForeground``), widened by one subsampling step (so sub-sampling cannot cut a row of
   tissue) plus ``margin_px``, extended to contain every given box (a lesion is never cut),
   and rounded up to a multiple of ``size_multiple_px`` (so the 0.5x and 0.25x pyramid levels
   are whole 2 x 2 / 4 x 4 block means, the fast path).

An all-dark or constant image (nothing above the background) is not cropped: the crop box is
the whole image. The crop is a view (no copy) of the input.

Boxes are ``(N, 4)`` ``(row1, col1, row2, col2)`` (MONAI's order, :mod:`~monai_smalldet.transforms.boxes`), continuous pixel coordinates;
they are shifted by the crop origin through
:func:`~monai_smalldet.transforms.frames.map_boxes`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms.transform import Transform
from monai.transforms.utils import generate_spatial_bounding_box
from monai.utils import convert_to_dst_type
from scipy import ndimage

from .frames import FrameRecord, map_boxes
from .geometry import (
    FrameStepd,
    as_boxes,
    check_boxes,
    check_finite,
    check_image,
    to_numpy_view,
    to_torch,
    update_meta,
)

__all__ = ["CropBreast", "CropBreastd", "otsu_threshold"]


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (maximum between-class variance over a ``bins`` histogram).

    Reference: N. Otsu, *A threshold selection method from gray-level histograms*,
    IEEE Trans. Syst. Man Cybern. 9(1), 1979. Returns the lower edge of the upper class.

    Raises:
        ValueError: when ``values`` is empty or not finite.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("otsu_threshold needs at least one value, got an empty array.")
    if not np.isfinite(v).all():
        raise ValueError(f"otsu_threshold got NaN or inf among {v.size} values.")
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    index = np.minimum(((v - lo) * (bins / (hi - lo))).astype(np.int64), bins - 1)
    hist = np.bincount(index, minlength=bins).astype(np.float64)
    edges = lo + (hi - lo) * np.arange(bins + 1, dtype=np.float64) / bins
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)[:-1]
    w1 = v.size - w0
    cum_mass = np.cumsum(hist * centres)[:-1]
    m0 = cum_mass / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - cum_mass) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[1 + int(np.argmax(between))])


class CropBreast(Transform):
    """Crop a ``(C, H, W)`` mammogram to the breast; boxes are shifted with it.

    See the module docstring for the algorithm. The crop box ``(x1, y1, x2, y2)`` (x = column,
    pixels, end exclusive) is returned by :meth:`compute_crop_box`, recorded in the
    :class:`~monai_smalldet.transforms.frames.FrameRecord` (``offset_x = x1``,
    ``offset_y = y1``) and, for a MetaTensor, in ``meta["crop_box_px"]`` (``affine`` updated).

    Args:
        margin_px: pixels of air kept around the breast on every side.
        threshold_fraction: threshold = background + ``threshold_fraction`` x (Otsu - background);
            lower keeps more of the dim breast edge.
        min_component_fraction: other components kept if at least this fraction of the largest.
        max_side_px: long side of the subsampled copy the breast is found on.
        size_multiple_px: round the crop's height and width up to a multiple of this (``1``: off).
        border_band_fraction: deepest film-edge band removed, as a fraction of the image side
            (``0``: off; see the module docstring).

    Returns (``__call__``):
        ``(image, boxes, frame)``: the cropped image (a view, same type), the boxes
        (``None`` if not given) and the frame record composed with the crop.

    Raises:
        ValueError: wrong rank, empty or non-finite image, or boxes outside the image.

    Example:
        .. code-block:: python

            img = np.zeros((1, 400, 300), np.float32)
            img[:, 50:350, :180] = 0.5  # breast against the chest wall (left edge)
            cropped, boxes, frame = CropBreast(margin_px=8)(img, boxes=np.array([[100., 60., 120., 80.]]))
            frame.offset_y, cropped.shape  # 41.0 (50 - 8 margin - 1 sampling step), (1, 320, 192)
    """

    def __init__(
        self,
        margin_px: int = 32,
        threshold_fraction: float = 0.5,
        min_component_fraction: float = 0.1,
        max_side_px: int = 512,
        size_multiple_px: int = 4,
        border_band_fraction: float = 0.08,
    ) -> None:
        if margin_px < 0:
            raise ValueError(f"margin_px must be >= 0, got {margin_px}.")
        if not 0.0 < threshold_fraction <= 1.0:
            raise ValueError(f"threshold_fraction must be in (0, 1], got {threshold_fraction}.")
        if not 0.0 < min_component_fraction <= 1.0:
            raise ValueError(f"min_component_fraction must be in (0, 1], got {min_component_fraction}.")
        if max_side_px < 16:
            raise ValueError(f"max_side_px must be >= 16, got {max_side_px}.")
        if size_multiple_px < 1:
            raise ValueError(f"size_multiple_px must be >= 1, got {size_multiple_px}.")
        self.margin_px = int(margin_px)
        self.threshold_fraction = float(threshold_fraction)
        self.min_component_fraction = float(min_component_fraction)
        self.max_side_px = int(max_side_px)
        self.size_multiple_px = int(size_multiple_px)
        if not 0.0 <= border_band_fraction < 0.5:
            raise ValueError(f"border_band_fraction must be in [0, 0.5), got {border_band_fraction}.")
        self.border_band_fraction = float(border_band_fraction)

    def breast_mask_lowres(self, img: NdarrayOrTensor) -> tuple[np.ndarray | None, int]:
        """The kept components on the subsampled copy (``None`` if nothing is above the
        background) and the subsampling step in pixels."""
        h, w = check_image(img)
        step = max(1, -(-max(h, w) // self.max_side_px))
        low = _subsample(img, step)
        background = float(np.partition(low.reshape(-1), low.size // 200)[low.size // 200])
        top = float(low.max())
        if not top > background + 1e-6 * max(1.0, abs(top)):
            return None, step  # constant / all-dark image
        otsu = otsu_threshold(low)
        threshold = background + self.threshold_fraction * (otsu - background)
        labels, n = ndimage.label(_drop_border_bands(low > threshold, self.border_band_fraction))
        if n == 0:
            return None, step
        areas = np.bincount(labels.reshape(-1), minlength=n + 1)[1:]
        lut = np.zeros(n + 1, dtype=bool)
        lut[1:] = areas >= self.min_component_fraction * areas.max()
        return lut[labels], step

    def compute_crop_box(
        self, img: NdarrayOrTensor, boxes: NdarrayOrTensor | None = None
    ) -> tuple[int, int, int, int]:
        """The crop box ``(x1, y1, x2, y2)`` in pixels (x = column, end exclusive).

        Contains the breast (plus margin) and every box of ``boxes``; the whole image when
        no breast is found (all-dark image).
        """
        h, w = check_image(img)
        check_finite(img)
        mask, step = self.breast_mask_lowres(img)
        if mask is None:
            start, end = [0, 0], [h, w]
        else:
            lo, hi = generate_spatial_bounding_box(mask[None], select_fn=lambda m: m > 0)
            pad = step + self.margin_px
            start = [max(0, lo[0] * step - pad), max(0, lo[1] * step - pad)]
            end = [min(h, hi[0] * step + pad), min(w, hi[1] * step + pad)]
        if boxes is not None and boxes.shape[0] > 0:
            b = check_boxes(boxes, (h, w))
            start = [min(start[0], int(np.floor(b[:, 0].min()))), min(start[1], int(np.floor(b[:, 1].min())))]
            end = [max(end[0], int(np.ceil(b[:, 2].max()))), max(end[1], int(np.ceil(b[:, 3].max())))]
        start = [max(0, s) for s in start]
        end = [min(n, e) for n, e in zip((h, w), end, strict=True)]
        for axis, full in enumerate((h, w)):
            start[axis], end[axis] = _round_up(start[axis], end[axis], full, self.size_multiple_px)
        return (start[1], start[0], end[1], end[0])

    @staticmethod
    def crop_image(img: NdarrayOrTensor, crop_box: Sequence[int]) -> tuple[NdarrayOrTensor, FrameRecord]:
        """Crop ``(C, H, W)`` to ``crop_box`` ``(x1, y1, x2, y2)``; return the view and the step record."""
        h, w = check_image(img)
        x1, y1, x2, y2 = (int(v) for v in crop_box)
        if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
            raise ValueError(
                f"crop box (x1, y1, x2, y2) = {tuple(crop_box)} is not inside the image (H, W) = ({h}, {w})."
            )
        out = img[:, y1:y2, x1:x2]
        step = FrameRecord.translation(x1, y1, h, w)
        if isinstance(out, MetaTensor):
            out = update_meta(out, step, {"crop_box_px": (x1, y1, x2, y2)})
        return out, step

    def __call__(
        self, img: NdarrayOrTensor, boxes: NdarrayOrTensor | None = None, frame: FrameRecord | None = None
    ) -> tuple[NdarrayOrTensor, NdarrayOrTensor | None, FrameRecord]:
        h, w = check_image(img)
        if boxes is not None:
            boxes = as_boxes(boxes)
        crop_box = self.compute_crop_box(img, boxes)
        out, step = self.crop_image(img, crop_box)
        boxes_out = map_boxes(boxes, step.inverse()) if boxes is not None else None
        frame = frame if frame is not None else FrameRecord.identity(h, w)
        return out, boxes_out, frame.compose(step)


def _drop_border_bands(fg: np.ndarray, max_fraction: float, fill: float = 0.9) -> np.ndarray:
    """``fg`` without its film-edge bands: per side, the run of lines from the border inwards
    that are foreground along at least ``fill`` of their length, when that run is at most
    ``max_fraction`` of the image side deep (a deeper run is tissue, not a band)."""
    if max_fraction <= 0:
        return fg
    out = fg.copy()
    h, w = fg.shape
    for axis, size in ((0, h), (1, w)):
        depth = max(1, int(max_fraction * size))
        coverage = fg.mean(axis=1 - axis)  # per row (axis 0) / per column (axis 1)
        for lines in (range(size), range(size - 1, -1, -1)):
            run = []
            for i in lines:
                if coverage[i] < fill:
                    break
                run.append(i)
                if len(run) > depth:
                    break
            if 0 < len(run) <= depth:
                if axis == 0:
                    out[run, :] = False
                else:
                    out[:, run] = False
    return out


def _subsample(img: NdarrayOrTensor, step: int) -> np.ndarray:
    """Every ``step``-th row and column, channels averaged, as a contiguous float32 numpy array."""
    a = to_numpy_view(img)
    if a is None:
        return to_torch(img)[:, ::step, ::step].float().mean(dim=0).cpu().numpy()
    sub = a[:, ::step, ::step]
    return np.ascontiguousarray(sub[0] if sub.shape[0] == 1 else sub.mean(axis=0), dtype=np.float32)


def _round_up(start: int, end: int, full: int, multiple: int) -> tuple[int, int]:
    """Grow ``[start, end)`` to a length that is a multiple of ``multiple`` inside ``[0, full)``."""
    if multiple <= 1:
        return start, end
    target = min(full, -(-(end - start) // multiple) * multiple)
    end = start + target
    if end > full:
        start, end = full - target, full
    return start, end


class CropBreastd(FrameStepd):
    """Dictionary version of :class:`CropBreast` (invertible: the inverse pads the air back with 0).

    The crop box is computed on the reference image (``box_ref_image_keys``, default the first
    image key) so that it contains the breast and every box of every ``box_keys`` entry; all
    image keys are cropped with it (views), boxes shifted, the
    :class:`~monai_smalldet.transforms.frames.FrameRecord` under ``frame_key`` updated, and the
    box written to ``d[crop_box_key]`` as ``(x1, y1, x2, y2)`` pixels (x = column).

    Args:
        image_keys: keys of the ``(C, H, W)`` images.
        box_keys: keys of ``(N, 4)`` boxes ``(row1, col1, row2, col2)`` (MONAI's order), pixels.
        box_ref_image_keys: the image the breast is found on.
        margin_px, threshold_fraction, min_component_fraction, max_side_px, size_multiple_px:
            see :class:`CropBreast`.
        crop_box_key: where to store the crop box (``None``: don't).
        frame_key: key of the travelling frame record.
        allow_missing_keys: don't raise if a key is missing.

    Example:
        .. code-block:: python

            t = Compose([NormalizeLateralityd("image", "box"), CropBreastd("image", "box")])
            out = t({"image": img, "box": boxes, "laterality": "R"})
            t.inverse(out)["box"]  # the input boxes again
    """

    def __init__(
        self,
        image_keys: KeysCollection,
        box_keys: KeysCollection = (),
        box_ref_image_keys: str | None = None,
        margin_px: int = 32,
        threshold_fraction: float = 0.5,
        min_component_fraction: float = 0.1,
        max_side_px: int = 512,
        size_multiple_px: int = 4,
        crop_box_key: str | None = "crop_box_px",
        frame_key: str = "frame",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(image_keys, box_keys, box_ref_image_keys, frame_key, allow_missing_keys)
        self.cropper = CropBreast(
            margin_px, threshold_fraction, min_component_fraction, max_side_px, size_multiple_px
        )
        self.crop_box_key = crop_box_key

    def plan(
        self, data: Mapping[Hashable, Any], ref_image: NdarrayOrTensor, boxes: list[np.ndarray]
    ) -> tuple:
        all_boxes = np.concatenate(boxes, axis=0) if boxes else None
        return self.cropper.compute_crop_box(ref_image, all_boxes)

    def apply_image(self, img: NdarrayOrTensor, plan: tuple) -> tuple[NdarrayOrTensor, FrameRecord]:
        return self.cropper.crop_image(img, plan)

    def finalize(self, data: dict[Hashable, Any], plan: tuple, step: FrameRecord) -> None:
        if self.crop_box_key is not None:
            data[self.crop_box_key] = tuple(int(v) for v in plan)

    def unfinalize(self, data: dict[Hashable, Any], step: FrameRecord) -> None:
        if self.crop_box_key is not None:
            data.pop(self.crop_box_key, None)

    def invert_image(
        self, img: NdarrayOrTensor, step: FrameRecord, info: Mapping[str, Any]
    ) -> NdarrayOrTensor:
        h, w = (int(v) for v in info["in_size"])
        x1, y1 = int(round(step.offset_x)), int(round(step.offset_y))
        t = to_torch(img)
        canvas = torch.zeros((t.shape[0], h, w), dtype=t.dtype)
        canvas[:, y1 : y1 + t.shape[1], x1 : x1 + t.shape[2]] = t
        out = convert_to_dst_type(canvas, dst=img)[0]
        if isinstance(out, MetaTensor):
            out.meta.pop("crop_box_px", None)
        return update_meta(out, step.inverse(h, w))
