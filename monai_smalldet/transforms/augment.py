"""Geometric box augmentations that are correct for ``(x1, y1, x2, y2)`` boxes with x = column.

MONAI's box transforms (:mod:`monai.apps.detection.transforms.dictionary`) assume that box
coordinate ``k`` belongs to image spatial dimension ``k``. For a channel-first ``(C, H, W)``
image, spatial dimension 0 is the **row**, so MONAI reads a box as ``(row1, col1, row2, col2)``
while the project (COCO/YOLO/DICOM SCOORD, the datalists) writes ``(x1, y1, x2, y2)`` with
x = column. Used as is, ``RandFlipBoxd(spatial_axis=1)`` would flip the image left-right but
the boxes top-bottom.

The classes below are MONAI's transforms with the boxes converted to MONAI's order before and
back after (:func:`~monai_smalldet.transforms.frames.to_spatial_order`), in both
``__call__`` and ``inverse``. Their behaviour, arguments and randomness are otherwise MONAI's.
The same recipe works for any MONAI box transform::

    Compose([BoxesToSpatialOrderd("box"), <any MONAI box transform>, BoxesToSpatialOrderd("box")])

These are training augmentations applied to tiles: they do not update the
:class:`~monai_smalldet.transforms.frames.FrameRecord` (a flipped training tile is never
mapped back to the original image).

Boxes are ``(N, 4)`` ``(x1, y1, x2, y2)``, x = column, continuous pixel coordinates; the
spatial axes (``spatial_axis``, ``spatial_axes``) are MONAI's: ``0`` = rows (flip top-bottom),
``1`` = columns (flip left-right).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from monai.apps.detection.transforms.dictionary import (
    FlipBoxd,
    RandFlipBoxd,
    RandRotateBox90d,
    RandZoomBoxd,
    RotateBox90d,
    ZoomBoxd,
)
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.transforms.inverse import InvertibleTransform
from monai.utils import ensure_tuple

from .frames import to_spatial_order
from .geometry import as_boxes

__all__ = [
    "BoxesToSpatialOrderd",
    "FlipBoxXYd",
    "RandFlipBoxXYd",
    "RandRotateBox90XYd",
    "RandZoomBoxXYd",
    "RotateBox90XYd",
    "ZoomBoxXYd",
]


def _swap(d: dict[Hashable, Any], keys: tuple) -> dict[Hashable, Any]:
    for key in keys:
        if key in d:
            d[key] = to_spatial_order(as_boxes(d[key], name=f"boxes {key!r}"))
    return d


class BoxesToSpatialOrderd(MapTransform, InvertibleTransform):
    """Swap boxes between ``(x1, y1, x2, y2)`` (x = column) and MONAI's ``(y1, x1, y2, x2)``.

    Its own inverse; place it before and after any MONAI box transform.

    Example:
        .. code-block:: python

            Compose([BoxesToSpatialOrderd("box"), RandFlipBoxd("image", "box", "image", prob=0.5, spatial_axis=1),
                     BoxesToSpatialOrderd("box")])
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = to_spatial_order(as_boxes(d[key], name=f"boxes {key!r}"))
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return self(data)


class _XYBoxes:
    """Mixin: run a MONAI box transform with the boxes in MONAI's spatial order."""

    box_keys: tuple

    def __call__(self, data: Mapping[Hashable, Any]) -> Any:
        d = _swap(dict(data), ensure_tuple(self.box_keys))
        return _swap(dict(super().__call__(d)), ensure_tuple(self.box_keys))  # type: ignore[misc]

    def inverse(self, data: Mapping[Hashable, Any]) -> Any:
        d = _swap(dict(data), ensure_tuple(self.box_keys))
        return _swap(dict(super().inverse(d)), ensure_tuple(self.box_keys))  # type: ignore[misc]


class FlipBoxXYd(_XYBoxes, FlipBoxd):
    """MONAI :class:`~monai.apps.detection.transforms.dictionary.FlipBoxd` for x = column boxes.

    ``spatial_axis=1`` flips left-right (``x -> W - x``), ``0`` top-bottom.

    Example:
        .. code-block:: python

            FlipBoxXYd(image_keys="image", box_keys="box", box_ref_image_keys="image", spatial_axis=1)
    """


class RandFlipBoxXYd(_XYBoxes, RandFlipBoxd):
    """MONAI :class:`~monai.apps.detection.transforms.dictionary.RandFlipBoxd` for x = column boxes.

    Example:
        .. code-block:: python

            RandFlipBoxXYd(image_keys="image", box_keys="box", box_ref_image_keys="image", prob=0.5, spatial_axis=0)
    """


class ZoomBoxXYd(_XYBoxes, ZoomBoxd):
    """MONAI :class:`~monai.apps.detection.transforms.dictionary.ZoomBoxd` for x = column boxes.

    A single ``zoom`` number is expanded to both axes (MONAI's ``ZoomBoxd`` needs a sequence).
    As in MONAI, the inverse with ``keep_size=True`` can be off by up to about half a pixel.

    Example:
        .. code-block:: python

            ZoomBoxXYd(image_keys="image", box_keys="box", box_ref_image_keys="image", zoom=0.8, keep_size=True)
    """

    def __init__(
        self,
        image_keys: KeysCollection,
        box_keys: KeysCollection,
        box_ref_image_keys: KeysCollection,
        zoom: Sequence[float] | float,
        **kwargs: Any,
    ) -> None:
        zoom = tuple(float(z) for z in zoom) if isinstance(zoom, Sequence) else (float(zoom), float(zoom))
        super().__init__(image_keys, box_keys, box_ref_image_keys, zoom, **kwargs)


class RandZoomBoxXYd(_XYBoxes, RandZoomBoxd):
    """MONAI :class:`~monai.apps.detection.transforms.dictionary.RandZoomBoxd` for x = column boxes.

    As in MONAI, the inverse with ``keep_size=True`` can be off by up to about half a pixel.

    Example:
        .. code-block:: python

            RandZoomBoxXYd(image_keys="image", box_keys="box", box_ref_image_keys="image", prob=0.5,
                           min_zoom=0.8, max_zoom=1.2, keep_size=True)
    """


class RotateBox90XYd(_XYBoxes, RotateBox90d):
    """MONAI :class:`~monai.apps.detection.transforms.dictionary.RotateBox90d` for x = column boxes.

    Example:
        .. code-block:: python

            RotateBox90XYd(image_keys="image", box_keys="box", box_ref_image_keys="image", k=1)
    """


class RandRotateBox90XYd(_XYBoxes, RandRotateBox90d):
    """MONAI :class:`~monai.apps.detection.transforms.dictionary.RandRotateBox90d` for x = column boxes.

    Example:
        .. code-block:: python

            RandRotateBox90XYd(image_keys="image", box_keys="box", box_ref_image_keys="image", prob=0.5, max_k=3)
    """
