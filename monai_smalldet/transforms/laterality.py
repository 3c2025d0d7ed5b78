"""Laterality normalisation: every breast with its chest wall on the left edge.

Convention of most FFDM (and of the project's synthetic data): a left breast (DICOM
ImageLaterality ``L``) is displayed with the chest wall at column 0, a right breast (``R``)
with the chest wall at the last column. Mirroring right breasts left-right gives the detector
one orientation to learn (as in Rangarajan et al., Sci Rep 2022, and most mammography CAD).
When the laterality is unknown it is estimated from the intensity mass: the chest-wall half
of a mammogram holds most of the tissue.

Boxes are ``(N, 4)`` ``(row1, col1, row2, col2)`` (MONAI's order, :mod:`~monai_smalldet.transforms.boxes`), continuous pixel coordinates;
the flip maps column ``c -> W - c`` (and swaps ``col1``/``col2``) through the project's one box-mapping
function, :func:`~monai_smalldet.transforms.frames.map_boxes`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms.transform import Transform
from monai.utils import convert_to_dst_type

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

__all__ = ["NormalizeLaterality", "NormalizeLateralityd", "estimate_laterality", "parse_laterality"]

_LEFT = {"L", "LEFT"}
_RIGHT = {"R", "RIGHT"}


def header_text(value: Any) -> str | None:
    """A header-like value as stripped upper-case text, or ``None``: accepts strings, bytes and
    1-element lists (as a ``DataLoader`` collates strings); ``None`` gives ``None``."""
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode(errors="ignore")
    return str(value).strip().upper()


def parse_laterality(value: Any) -> str | None:
    """``"L"``, ``"R"`` or ``None`` (unknown) from a DICOM ImageLaterality-like value.

    Accepts ``L``/``R``/``left``/``right`` in any case, bytes, and 1-element lists (as a
    ``DataLoader`` collates strings); ``None``, ``""``, ``"U"`` (unknown) and ``"B"`` (both)
    give ``None``.
    """
    text = header_text(value)
    if text in _LEFT:
        return "L"
    if text in _RIGHT:
        return "R"
    return None


def estimate_laterality(img: NdarrayOrTensor, max_side_px: int = 512) -> str:
    """Estimate which side the chest wall is on: ``"L"`` (left edge) or ``"R"`` (right edge).

    The image (bright = dense) is subsampled to about ``max_side_px`` on its long side; the
    background level (0.5th percentile) is subtracted and the tissue mass of the left and
    right halves compared: the chest-wall half is the heavier one. Ties give ``"L"``.

    Raises:
        ValueError: wrong rank, empty, or non-finite image.
    """
    h, w = check_image(img)
    step = max(1, -(-max(h, w) // max_side_px))
    a = to_numpy_view(img)
    sub = to_torch(img)[:, ::step, ::step].cpu().numpy() if a is None else a[:, ::step, ::step]
    low = np.asarray(sub, dtype=np.float32).mean(axis=0)
    if not np.isfinite(low).all():
        raise ValueError(f"image of shape {tuple(img.shape)} contains NaN or inf values.")
    background = float(np.partition(low.reshape(-1), low.size // 200)[low.size // 200])
    mass = np.clip(low - background, 0.0, None).sum(axis=0)
    half = mass.shape[0] // 2
    left, right = float(mass[:half].sum()), float(mass[mass.shape[0] - half :].sum())
    return "R" if right > left else "L"


class NormalizeLaterality(Transform):
    """Mirror right breasts so that the chest wall is on the left edge; boxes follow.

    The laterality comes from, in this order: the ``laterality`` argument of the call, the
    constructor's ``laterality``, ``img.meta["laterality"]`` of a ``MetaTensor`` (DICOM
    ImageLaterality as written by the project's reader), and, if still unknown and
    ``estimate=True``, :func:`estimate_laterality`. ``R`` is flipped along the columns
    (``x -> W - x``), ``L`` is left as is (no copy).

    Images are ``(C, H, W)``, numpy or torch/MetaTensor, same type out; a MetaTensor's
    ``affine`` is updated and ``meta["laterality_flipped"]`` set. Boxes are ``(N, 4)``
    ``(row1, col1, row2, col2)`` (MONAI's order), continuous pixels.

    Args:
        laterality: force ``"L"``/``"R"`` for every image (``None``: read or estimate).
        estimate: estimate an unknown laterality from the intensity mass; if ``False`` an
            unknown laterality raises ``ValueError``.

    Returns (``__call__``):
        ``(image, boxes, frame)``: the image, the boxes (``None`` if not given) and the
        :class:`~monai_smalldet.transforms.frames.FrameRecord` composed with the flip.

    Example:
        .. code-block:: python

            img = MetaTensor(torch.rand(1, 4096, 3328), meta={"laterality": "R"})
            img2, boxes2, frame = NormalizeLaterality()(img, boxes=np.array([[3000., 10., 3100., 90.]]))
            boxes2  # [[228., 10., 328., 90.]]; frame.flipped_x is True
    """

    def __init__(self, laterality: str | None = None, estimate: bool = True) -> None:
        self.laterality = parse_laterality(laterality)
        if laterality is not None and self.laterality is None:
            raise ValueError(f"laterality must be 'L' or 'R' (or None), got {laterality!r}.")
        self.estimate = estimate

    def resolve(self, img: NdarrayOrTensor, laterality: Any = None) -> str:
        """The laterality to use for ``img`` (see the class docstring for the order)."""
        for candidate in (laterality, self.laterality):
            side = parse_laterality(candidate)
            if side is not None:
                return side
        if isinstance(img, MetaTensor):
            side = parse_laterality(img.meta.get("laterality"))
            if side is not None:
                return side
        if not self.estimate:
            raise ValueError(
                f"laterality of the image of shape {tuple(img.shape)} is unknown and estimate=False; "
                "give laterality='L'/'R' or meta['laterality']."
            )
        check_finite(img)
        return estimate_laterality(img)

    @staticmethod
    def flip_image(img: NdarrayOrTensor) -> tuple[NdarrayOrTensor, FrameRecord]:
        """Mirror ``(C, H, W)`` along the columns; return it and the step record ``x -> W - x``."""
        h, w = check_image(img)
        a = to_numpy_view(img)
        flipped = torch.flip(to_torch(img), dims=(-1,)) if a is None else np.ascontiguousarray(a[..., ::-1])
        out = convert_to_dst_type(flipped, dst=img)[0]
        step = FrameRecord.flip_x(w, h)
        return update_meta(out, step), step

    def __call__(
        self,
        img: NdarrayOrTensor,
        boxes: NdarrayOrTensor | None = None,
        frame: FrameRecord | None = None,
        laterality: str | None = None,
    ) -> tuple[NdarrayOrTensor, NdarrayOrTensor | None, FrameRecord]:
        h, w = check_image(img)
        if boxes is not None:
            boxes = as_boxes(boxes)
            check_boxes(boxes, (h, w))
        frame = frame if frame is not None else FrameRecord.identity(h, w)
        if self.resolve(img, laterality) == "L":
            return img, boxes, frame
        out, step = self.flip_image(img)
        if isinstance(out, MetaTensor):
            out.meta["laterality_flipped"] = True
        boxes_out = map_boxes(boxes, step.inverse(h, w)) if boxes is not None else None
        return out, boxes_out, frame.compose(step)


class NormalizeLateralityd(FrameStepd):
    """Dictionary version of :class:`NormalizeLaterality` (invertible).

    The laterality is read from ``d[laterality_key]`` (e.g. the datalist's or reader's
    ``"laterality"`` entry), else from the reference image's ``meta["laterality"]``, else
    estimated from the reference image (``box_ref_image_keys``, default the first image key).
    Every image key is flipped the same way, boxes follow, the
    :class:`~monai_smalldet.transforms.frames.FrameRecord` under ``frame_key`` is updated and
    the step is pushed for :meth:`inverse` (``Compose.inverse`` undoes it exactly).

    Args:
        image_keys: keys of the ``(C, H, W)`` images.
        box_keys: keys of ``(N, 4)`` boxes ``(row1, col1, row2, col2)`` (MONAI's order), pixels.
        box_ref_image_keys: the image the boxes belong to and the laterality is estimated on.
        laterality_key: data key holding ``"L"``/``"R"`` (missing or ``None``: look further).
        estimate: estimate an unknown laterality (else raise ``ValueError``).
        frame_key: key of the travelling frame record.
        allow_missing_keys: don't raise if a key is missing.

    Example:
        .. code-block:: python

            t = NormalizeLateralityd(image_keys="image", box_keys="box")
            out = t({"image": np.zeros((1, 64, 48), np.float32), "box": [[2, 40, 10, 48]], "laterality": "R"})
            out["box"]  # [[2, 0, 10, 8]] (row1, col1, row2, col2)
            t.inverse(out)["box"]  # [[2, 40, 10, 48]]
    """

    def __init__(
        self,
        image_keys: KeysCollection,
        box_keys: KeysCollection = (),
        box_ref_image_keys: str | None = None,
        laterality_key: str | None = "laterality",
        estimate: bool = True,
        frame_key: str = "frame",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(image_keys, box_keys, box_ref_image_keys, frame_key, allow_missing_keys)
        self.laterality_key = laterality_key
        self.normalizer = NormalizeLaterality(estimate=estimate)

    def plan(self, data: Mapping[Hashable, Any], ref_image: NdarrayOrTensor, boxes: list[np.ndarray]) -> bool:
        given = data.get(self.laterality_key) if self.laterality_key is not None else None
        return self.normalizer.resolve(ref_image, given) == "R"

    def apply_image(self, img: NdarrayOrTensor, plan: bool) -> tuple[NdarrayOrTensor, FrameRecord]:
        h, w = check_image(img)
        if not plan:
            return img, FrameRecord.identity(h, w)
        out, step = self.normalizer.flip_image(img)
        if isinstance(out, MetaTensor):
            out.meta["laterality_flipped"] = True
        return out, step

    def invert_image(
        self, img: NdarrayOrTensor, step: FrameRecord, info: Mapping[str, Any]
    ) -> NdarrayOrTensor:
        if not step.flipped_x:
            return img
        out, _ = self.normalizer.flip_image(img)
        if isinstance(out, MetaTensor):
            out.meta["laterality_flipped"] = False
        return out
