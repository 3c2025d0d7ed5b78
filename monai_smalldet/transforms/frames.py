"""One frame of reference: the record of every geometric step and the one function that undoes it.

Every geometric transform of :mod:`monai_smalldet.transforms` (laterality flip, breast crop,
resampling to a pixel spacing, scale pyramid, tiling, padding) is an *axis-aligned* map of
continuous pixel coordinates. Such a map is fully described by a per-axis scale and offset,
so the whole chain from a tile of any scale back to the original image is again one such
map. :class:`FrameRecord` stores it; :func:`map_boxes` applies it; :func:`tile_boxes_to_original`
is the function every caller (fusion, metrics, export) uses to bring detections back to
original-image pixels. Nobody re-derives crop offsets, scale factors or tile origins elsewhere.

Coordinate conventions:

* images are channel-first ``(C, H, W)`` = (channels, rows, columns);
* **inside MONAI pipelines** (the data dict between transforms, the ``boxes`` of every array
  transform), boxes are ``(N, 4)`` in MONAI's order: coordinate ``k`` along image spatial
  dimension ``k``, i.e. ``(row1, col1, row2, col2)`` for ``(C, H, W)``, as
  :mod:`monai.data.box_utils` and :mod:`monai.apps.detection.transforms` assume
  (``BOX_ORDER = "spatial"``); every MONAI box transform composes with ours;
* **outside** (datalists, detections, JSON, DICOM SR, overlays, the network's targets and
  outputs), boxes are ``(x1, y1, x2, y2)`` with **x = column, y = row** (COCO/YOLO/DICOM
  SCOORD, ``"xy"``). :func:`to_spatial_order` / :func:`from_spatial_order` convert between the
  two (the transform :class:`~monai_smalldet.transforms.boxes.BoxesToSpatialOrderd` at a
  pipeline's entry, :class:`~monai_smalldet.transforms.boxes.BoxesToXYOrderd` at its exit);
* both in continuous pixel coordinates: pixel ``i`` spans ``[i, i + 1)``, so a box covering
  exactly pixel ``(row 3, column 5)`` is ``(3, 5, 4, 6)`` in spatial order and ``(5, 3, 6, 4)``
  in xy order.

A record maps coordinates of the *current* frame (a cropped, rescaled or tiled image) to the
*original* frame (the image as it was read, before any geometric step)::

    x_original = scale_x * x_current + offset_x
    y_original = scale_y * y_current + offset_y

``scale_x`` is negative when a horizontal flip is part of the chain. A single geometric step
is itself a :class:`FrameRecord` that maps the step's output frame to its input frame; the
record of a chain is the composition :meth:`FrameRecord.compose`. Because the record is a
:class:`~typing.NamedTuple` of numbers it is immutable, picklable, and batched by
``torch.utils.data.default_collate`` / MONAI's ``list_data_collate`` into a record whose
fields are ``(B,)`` tensors (:meth:`FrameRecord.unbatch` splits it again).

:func:`map_boxes` maps boxes of either order (``order="spatial"``, the default, or ``"xy"``);
:func:`tile_boxes_to_original` and :func:`original_boxes_to_frame` take detections, so ``"xy"``.

Example:
    .. code-block:: python

        import numpy as np
        from monai_smalldet.transforms.frames import FrameRecord, tile_boxes_to_original

        original = FrameRecord.identity(height_px=4096, width_px=3328)
        crop = FrameRecord.translation(offset_x=120.0, offset_y=40.0)  # crop started at (x=120, y=40)
        half = FrameRecord.scaling(2.0, 2.0)  # a 0.5x pyramid level: 1 px there = 2 px before
        tile = FrameRecord.translation(922.0, 0.0)  # tile origin inside the 0.5x level
        record = original.compose(crop).compose(half).compose(tile)
        tile_boxes_to_original(np.array([[10.0, 20.0, 30.0, 40.0]]), record)
        # -> [[1984., 80., 2024., 120.]]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from monai.config.type_definitions import NdarrayOrTensor
from monai.data.box_utils import clip_boxes_to_image
from monai.utils import convert_data_type, convert_to_dst_type

__all__ = [
    "BOX_ORDER",
    "BOX_ORDERS",
    "FrameRecord",
    "from_spatial_order",
    "map_boxes",
    "original_boxes_to_frame",
    "tile_boxes_to_original",
    "to_spatial_order",
]


BOX_ORDER = "spatial"
"""Box order inside MONAI pipelines: coordinate ``k`` along spatial dim ``k`` (row, column)."""
BOX_ORDERS = ("spatial", "xy")
"""``"spatial"``: ``(row1, col1, row2, col2)``; ``"xy"``: ``(x1, y1, x2, y2)``, x = column."""


class _FrameFields(NamedTuple):
    scale_x: float = 1.0
    offset_x: float = 0.0
    scale_y: float = 1.0
    offset_y: float = 0.0
    height_px: int = 0
    width_px: int = 0


def _is_number(value: Any) -> bool:
    """A scalar field value (a number, or a 0-d/1-element-per-batch tensor or array field)."""
    if isinstance(value, torch.Tensor | np.ndarray):
        return value.ndim <= 1
    return not isinstance(value, Iterable) or isinstance(value, str | bytes)


class FrameRecord(_FrameFields):
    """Axis-aligned map from the current frame's pixel coordinates to the original image's.

    ``x_original = scale_x * x + offset_x`` and ``y_original = scale_y * y + offset_y``, with
    x = column and y = row in continuous pixel coordinates (pixel ``i`` spans ``[i, i + 1)``).
    ``height_px`` / ``width_px`` are the size of the image the record maps *into* (the original
    image); :func:`tile_boxes_to_original` clips to it. For a single step, they are the size of
    the step's input image (``0`` when unknown).

    The homogeneous 3 x 3 form is :meth:`matrix` (x, y order) or :meth:`spatial_affine`
    (MONAI's row, column order).

    Args:
        scale_x: original columns per current column (negative when flipped left-right).
        offset_x: original column of the current frame's ``x = 0``.
        scale_y: original rows per current row (negative when flipped top-bottom).
        offset_y: original row of the current frame's ``y = 0``.
        height_px: rows of the image the record maps into.
        width_px: columns of the image the record maps into.

    A tuple of six numbers, so ``default_collate`` / ``list_data_collate`` batch it and
    ``CacheDataset``, ``PersistentDataset``, ``copy.deepcopy`` and pickling keep it (MONAI's
    ``convert_to_contiguous`` rebuilds it from one iterable, which the constructor accepts).

    Example:
        .. code-block:: python

            flip = FrameRecord.flip_x(width_px=3328)  # a right breast mirrored to chest wall left
            flip.map_points([[0.0, 10.0]])  # -> [[3328., 10.]]
    """

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> FrameRecord:
        # one iterable of the six fields: how MONAI rebuilds a tuple it walks through
        # (``type(data)(generator)`` in CacheDataset's ``convert_to_contiguous``)
        if len(args) == 1 and not kwargs and not _is_number(args[0]):
            args = tuple(args[0])
        return super().__new__(cls, *args, **kwargs)

    # -- constructors ------------------------------------------------------------------------
    @classmethod
    def identity(cls, height_px: int = 0, width_px: int = 0) -> FrameRecord:
        """The record of an image that no geometric step has touched yet."""
        return cls(1.0, 0.0, 1.0, 0.0, int(height_px), int(width_px))

    @classmethod
    def translation(
        cls, offset_x: float, offset_y: float, height_px: int = 0, width_px: int = 0
    ) -> FrameRecord:
        """A crop or tile whose top-left corner sits at ``(offset_x, offset_y)`` of its source."""
        return cls(1.0, float(offset_x), 1.0, float(offset_y), int(height_px), int(width_px))

    @classmethod
    def scaling(cls, scale_x: float, scale_y: float, height_px: int = 0, width_px: int = 0) -> FrameRecord:
        """A resize: one output pixel spans ``scale_x`` source columns and ``scale_y`` source rows."""
        return cls(float(scale_x), 0.0, float(scale_y), 0.0, int(height_px), int(width_px))

    @classmethod
    def flip_x(cls, width_px: int, height_px: int = 0) -> FrameRecord:
        """A left-right flip of an image ``width_px`` columns wide: ``x -> width_px - x``."""
        return cls(-1.0, float(width_px), 1.0, 0.0, int(height_px), int(width_px))

    @classmethod
    def from_any(cls, record: Any) -> FrameRecord:
        """Build a record from a :class:`FrameRecord`, a sequence of its 6 (or 4) numbers, or a
        collated record of batch size 1 (fields are 1-element tensors)."""
        if isinstance(record, Sequence) and not isinstance(record, str | bytes):
            values = [_scalar(v) for v in record]
        elif isinstance(record, np.ndarray | torch.Tensor):
            values = [float(v) for v in np.asarray(convert_data_type(record, np.ndarray)[0]).reshape(-1)]
        else:
            raise ValueError(f"cannot read a FrameRecord from an object of type {type(record).__name__}.")
        if len(values) not in (4, 6):
            raise ValueError(f"a FrameRecord has 4 or 6 numbers, got {len(values)}: {values}.")
        if len(values) == 4:
            values += [0, 0]
        return cls(values[0], values[1], values[2], values[3], int(values[4]), int(values[5]))

    def unbatch(self) -> list[FrameRecord]:
        """Split a record collated by a ``DataLoader`` (fields are ``(B,)`` tensors) into B records."""
        columns = [
            np.atleast_1d(np.asarray(convert_data_type(f, np.ndarray)[0], dtype=np.float64)) for f in self
        ]
        size = max(len(c) for c in columns)
        columns = [np.broadcast_to(c, (size,)) for c in columns]
        return [
            FrameRecord(float(a), float(b), float(c), float(d), int(e), int(f))
            for a, b, c, d, e, f in zip(*columns, strict=True)
        ]

    # -- algebra -----------------------------------------------------------------------------
    def compose(self, step: FrameRecord) -> FrameRecord:
        """Record of ``self`` followed by ``step``: maps ``step``'s output frame to ``self``'s target.

        ``step`` maps a new frame to the current one; the result maps the new frame to the
        original image (size fields are kept from ``self``).
        """
        return FrameRecord(
            self.scale_x * step.scale_x,
            self.scale_x * step.offset_x + self.offset_x,
            self.scale_y * step.scale_y,
            self.scale_y * step.offset_y + self.offset_y,
            self.height_px,
            self.width_px,
        )

    def inverse(self, height_px: int = 0, width_px: int = 0) -> FrameRecord:
        """The map from the original frame back to the current one (``height_px``, ``width_px``:
        size of the current image, used only for clipping)."""
        if self.scale_x == 0 or self.scale_y == 0:
            raise ValueError(f"a FrameRecord with a zero scale cannot be inverted: {self}.")
        return FrameRecord(
            1.0 / self.scale_x,
            -self.offset_x / self.scale_x,
            1.0 / self.scale_y,
            -self.offset_y / self.scale_y,
            int(height_px),
            int(width_px),
        )

    @property
    def flipped_x(self) -> bool:
        """Whether the chain contains an odd number of left-right flips."""
        return self.scale_x < 0

    def matrix(self) -> np.ndarray:
        """Homogeneous 3 x 3 matrix acting on ``(x, y, 1)`` (x = column)."""
        return np.array(
            [[self.scale_x, 0.0, self.offset_x], [0.0, self.scale_y, self.offset_y], [0.0, 0.0, 1.0]],
            dtype=np.float64,
        )

    def spatial_affine(self) -> np.ndarray:
        """Homogeneous 3 x 3 matrix acting on MONAI's ``(row, column, 1)`` order."""
        return np.array(
            [[self.scale_y, 0.0, self.offset_y], [0.0, self.scale_x, self.offset_x], [0.0, 0.0, 1.0]],
            dtype=np.float64,
        )

    def map_points(self, points_xy: Any) -> np.ndarray:
        """Map ``(N, 2)`` points ``(x, y)`` of the current frame to the original frame."""
        p = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        return np.stack(
            [p[:, 0] * self.scale_x + self.offset_x, p[:, 1] * self.scale_y + self.offset_y], axis=1
        )


def _scalar(value: Any) -> float:
    """A Python number from a number or a 1-element array/tensor."""
    if isinstance(value, torch.Tensor | np.ndarray):
        size = value.numel() if isinstance(value, torch.Tensor) else value.size
        if size != 1:
            raise ValueError(
                f"a FrameRecord field must be one number, got shape {tuple(value.shape)} "
                "(a batched record: use FrameRecord.unbatch() first)."
            )
        return float(value.reshape(-1)[0])
    return float(value)


def to_spatial_order(boxes: NdarrayOrTensor) -> NdarrayOrTensor:
    """Swap ``(x1, y1, x2, y2)`` (x = column) to MONAI's spatial order ``(y1, x1, y2, x2)`` and back.

    MONAI's box functions take coordinate ``k`` along image spatial dimension ``k``; for a
    ``(C, H, W)`` image that is ``(row, column)``, the reverse of COCO/YOLO. The swap is its own
    inverse, so the same call converts back. Returns a new array/tensor of the same type.

    Args:
        boxes: ``(N, 4)`` numpy array or torch tensor.

    Example:
        .. code-block:: python

            to_spatial_order(np.array([[1.0, 2.0, 3.0, 4.0]]))  # -> [[2., 1., 4., 3.]]
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) (x1, y1, x2, y2), got shape {tuple(boxes.shape)}.")
    return boxes[:, [1, 0, 3, 2]]


from_spatial_order = to_spatial_order
"""Alias of :func:`to_spatial_order` for readability when converting MONAI boxes back."""


def map_boxes(
    boxes: NdarrayOrTensor, record: FrameRecord | Sequence[float], order: str = BOX_ORDER
) -> NdarrayOrTensor:
    """Map ``(N, 4)`` boxes through ``record``.

    The single place where box coordinates change frames: a flip reverses the column pair, a
    scale multiplies, an offset adds. It is MONAI's
    :func:`~monai.apps.detection.transforms.box_ops.apply_affine_to_boxes` with the
    :meth:`FrameRecord.spatial_affine` matrix (corners re-ordered after a flip), computed in
    float64 so that chains of steps stay exact to well below a pixel (MONAI computes in float32).
    Same type and dtype as ``boxes`` out (integer boxes come back as float32).

    Args:
        boxes: ``(N, 4)`` numpy array or torch tensor in the record's current frame.
        record: the :class:`FrameRecord` (or its numbers).
        order: ``"spatial"`` (MONAI's ``(row1, col1, row2, col2)``, inside pipelines) or ``"xy"``
            (``(x1, y1, x2, y2)``, x = column: detections).

    Raises:
        ValueError: when ``boxes`` is not ``(N, 4)`` or holds NaN/inf, or ``order`` is unknown.
    """
    record = record if isinstance(record, FrameRecord) else FrameRecord.from_any(record)
    if order not in BOX_ORDERS:
        raise ValueError(f"order must be one of {BOX_ORDERS}, got {order!r}.")
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got shape {tuple(boxes.shape)}.")
    b = np.asarray(convert_data_type(boxes, np.ndarray)[0], dtype=np.float64)
    if not np.isfinite(b).all():
        raise ValueError(f"boxes of shape {tuple(boxes.shape)} contain NaN or inf values.")
    cx, cy = ((1, 3), (0, 2)) if order == "spatial" else ((0, 2), (1, 3))
    x = b[:, cx] * record.scale_x + record.offset_x
    y = b[:, cy] * record.scale_y + record.offset_y
    lo_x, hi_x, lo_y, hi_y = x.min(axis=1), x.max(axis=1), y.min(axis=1), y.max(axis=1)
    corners = (lo_y, lo_x, hi_y, hi_x) if order == "spatial" else (lo_x, lo_y, hi_x, hi_y)
    out = np.stack(corners, axis=1)
    floating = (
        boxes.is_floating_point()
        if isinstance(boxes, torch.Tensor)
        else np.issubdtype(boxes.dtype, np.floating)
    )
    dtype = boxes.dtype if floating else (torch.float32 if isinstance(boxes, torch.Tensor) else np.float32)
    return convert_to_dst_type(out, dst=boxes, dtype=dtype)[0]


def tile_boxes_to_original(
    boxes: NdarrayOrTensor, record: FrameRecord | Sequence[float], clip: bool = True
) -> NdarrayOrTensor:
    """Map boxes found on a tile (of any pyramid scale) back to original-image pixels.

    This is the one function every caller uses to undo the preprocessing chain
    (laterality flip, breast crop, spacing resample, pyramid scale, tile origin, padding):
    ``record`` is the tile's :class:`FrameRecord` as produced by
    :class:`~monai_smalldet.transforms.tiling.SystematicTile` (key ``frame`` of each tile of
    :class:`~monai_smalldet.transforms.tiling.SystematicTiled`).

    Args:
        boxes: ``(N, 4)`` ``(x1, y1, x2, y2)`` boxes, x = column, in tile pixels (continuous).
        record: the tile's record.
        clip: clip to the original image ``[0, width_px] x [0, height_px]`` when the record
            knows that size (boxes are never removed; a box lying in a tile's padding clips to
            zero width).

    Returns:
        ``(N, 4)`` boxes in original-image pixels, same type as ``boxes``.

    Example:
        .. code-block:: python

            tiles = SystematicTile(tile_size=1024)(image_scale1, frame=frame_scale1)
            boxes = tile_boxes_to_original(pred_boxes, tiles[3].frame)
    """
    record = record if isinstance(record, FrameRecord) else FrameRecord.from_any(record)
    out = map_boxes(boxes, record, order="xy")
    if clip and record.height_px > 0 and record.width_px > 0 and out.shape[0] > 0:
        clipped, _ = clip_boxes_to_image(
            to_spatial_order(out), (record.height_px, record.width_px), remove_empty=False
        )
        out = from_spatial_order(clipped)
    return out


def original_boxes_to_frame(
    boxes: NdarrayOrTensor, record: FrameRecord | Sequence[float], height_px: int = 0, width_px: int = 0
) -> NdarrayOrTensor:
    """Map original-image ``(x1, y1, x2, y2)`` boxes into the record's current frame (the
    inverse of :func:`tile_boxes_to_original`).

    Useful to place ground truth on a tile for inspection; ``height_px``/``width_px`` (the
    current frame's size) are passed to :meth:`FrameRecord.inverse` for later clipping.
    """
    record = record if isinstance(record, FrameRecord) else FrameRecord.from_any(record)
    return map_boxes(boxes, record.inverse(height_px, width_px), order="xy")
