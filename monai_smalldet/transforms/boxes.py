"""The two box orders and the transforms at a pipeline's borders that convert between them.

Inside a MONAI pipeline (the data dict between transforms, and the ``boxes`` of every array
transform of this package) a box is ``(N, 4)`` in MONAI's order: coordinate ``k`` along image
spatial dimension ``k``, i.e. ``(row1, col1, row2, col2)`` for a ``(C, H, W)`` mammogram. This
is what :mod:`monai.data.box_utils` and :mod:`monai.apps.detection.transforms` assume, so
``ClipBoxToImaged``, ``SpatialCropBox``, ``RandCropBoxByPosNegLabeld``, ``BoxToMaskd``,
``RandFlipBoxd``, ``RandZoomBoxd``, ... compose with ours without any adapter.

Outside, the project speaks the order of COCO, YOLO and DICOM SCOORD: ``(x1, y1, x2, y2)``
with x = column. That is the order of the datalists (``"box": [[x1, y1, x2, y2]]``), of the
detections (:class:`~monai_smalldet.fusion.Detections`, JSON, SR, overlays) and of the
network's targets and outputs. A pipeline converts once at each border:

* :class:`BoxesToSpatialOrderd` after loading, for the datalist's boxes;
* :class:`BoxesToXYOrderd` before the network (training targets), or before writing boxes out.

Both swap the two coordinate pairs (:func:`~monai_smalldet.transforms.frames.to_spatial_order`);
each is the other's inverse, so ``Compose.inverse`` undoes them.

Example:
    .. code-block:: python

        from monai.apps.detection.transforms.dictionary import ClipBoxToImaged, RandFlipBoxd
        from monai.transforms import Compose

        from monai_smalldet.transforms import BoxesToSpatialOrderd, BoxesToXYOrderd, CropBreastd, LoadMammogramd

        train = Compose([
            LoadMammogramd("image"),
            BoxesToSpatialOrderd(["box", "benign_box"]),  # datalist (x1, y1, x2, y2) -> MONAI's order
            CropBreastd("image", ["box", "benign_box"]),
            ClipBoxToImaged("box", "label", "image"),  # MONAI's own, composes directly
            RandFlipBoxd("image", "box", "image", prob=0.5, spatial_axis=0),
            BoxesToXYOrderd(["box", "benign_box"]),  # -> the network's (x1, y1, x2, y2) targets
        ])
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.transforms.inverse import InvertibleTransform

from .frames import from_spatial_order, to_spatial_order
from .geometry import as_boxes

__all__ = ["BoxesToSpatialOrderd", "BoxesToXYOrderd"]


class _SwapBoxOrderd(MapTransform, InvertibleTransform):
    """Swap the coordinate pairs of every ``keys`` entry (lists accepted, ``(0, 4)`` when empty)."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = to_spatial_order(as_boxes(d[key], name=f"boxes {key!r}"))
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = from_spatial_order(as_boxes(d[key], name=f"boxes {key!r}"))
        return d


class BoxesToSpatialOrderd(_SwapBoxOrderd):
    """Datalist boxes ``(x1, y1, x2, y2)`` (x = column) into MONAI's ``(row1, col1, row2, col2)``.

    The entry of a pipeline: place it after loading, before any box-aware transform.

    Example:
        .. code-block:: python

            BoxesToSpatialOrderd("box")({"box": [[5.0, 3.0, 6.0, 4.0]]})["box"]  # [[3., 5., 4., 6.]]
    """


class BoxesToXYOrderd(_SwapBoxOrderd):
    """Boxes in MONAI's ``(row1, col1, row2, col2)`` out to ``(x1, y1, x2, y2)`` (x = column).

    The exit of a pipeline: before the network's targets
    (:func:`~monai_smalldet.engines.detection_collate`, :class:`~monai_smalldet.networks.DetectionLoss`)
    or before boxes are written for people and other tools.

    Example:
        .. code-block:: python

            BoxesToXYOrderd("box")({"box": [[3.0, 5.0, 4.0, 6.0]]})["box"]  # [[5., 3., 6., 4.]]
    """
