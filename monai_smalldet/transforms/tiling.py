"""Systematic tiling of every pyramid level, and tile sampling for training.

Rangarajan et al. (Sci Rep 2022) cut every scale of the cropped mammogram into fixed-size
crops (1024 px) so that no pixel is left out, and run one detector on all of them. Geometry
follows SAHI's ``get_slice_bboxes`` (Akyon et al., *Slicing Aided Hyper Inference*, ICIP 2022):
tiles on a regular grid with a fractional overlap, the last row/column shifted back inside
the image instead of padded. It is computed by MONAI's
:func:`~monai.data.utils.dense_patch_slices`, which does exactly that; a level smaller than a
tile along an axis gets one tile spanning that axis, padded up to the tile size after the
last row/column (the padding is recorded, the origin is unchanged).

Default overlap 0.1 of the tile (102 px of 1024): that is SAHI's order of magnitude and
large enough that any object up to 102 px lies whole in at least one tile, i.e. up to
7 mm at X (0.07 mm), 14 mm at 0.5X and 29 mm at 0.25X: every cancer under 1 cm is seen
whole at 0.5X and 0.25X, and the fusion (WBF) merges the parts seen at X.
``benchmarks/transforms.py`` measures tile count and whole-lesion coverage against the
overlap on synthetic data (see ``benchmarks/results/transforms.json``).

Boxes are ``(N, 4)`` ``(row1, col1, row2, col2)`` (MONAI's order, :mod:`~monai_smalldet.transforms.boxes`), continuous pixel coordinates.
Tile rectangles are given the same way (integers, end exclusive). For training, boxes are
clipped to each tile and dropped below ``min_visibility`` of their area (SAHI's default 0.1),
labels kept aligned (MONAI ``select_labels``).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from monai.apps.detection.transforms.box_ops import select_labels
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.box_utils import clip_boxes_to_image
from monai.data.utils import dense_patch_slices
from monai.transforms import MapTransform
from monai.transforms.transform import Randomizable, Transform
from monai.utils import convert_data_type, convert_to_dst_type, ensure_tuple

from .frames import FrameRecord, map_boxes
from .geometry import as_boxes, check_boxes, check_image, frame_of, to_numpy_view, to_torch, update_meta
from .pyramid import pyramid_key

__all__ = ["RandTileSamplerd", "SystematicTile", "SystematicTiled", "Tile", "TileGrid", "clip_boxes_to_tile"]


class TileGrid:
    """The tiles of an image: pure geometry, SAHI ``get_slice_bboxes`` style.

    ``TileGrid(tile_size, overlap)((height, width))`` returns the tiles as ``(x1, y1, x2, y2)``
    integer pixel boxes (x = column, end exclusive), row by row. Consecutive tiles start
    ``tile_size - round(overlap * tile_size)`` pixels apart; the last row/column is shifted
    back so that it ends on the image border (``edge="shift"``); along an axis shorter than a
    tile there is one tile spanning the whole axis (shorter than ``tile_size``: pad it, see
    :class:`SystematicTile`). Every pixel is covered; no tile leaves the image.

    ``edge="trim"`` keeps the last row/column on the regular grid and ends it on the border
    instead: a shorter tile, overlapping its neighbour by exactly the overlap. Same number of
    tiles, fewer pixels to compute: the shifted last tile repeats up to a whole tile of
    pixels its neighbour already saw (on the five full-size synthetic mammograms of
    ``benchmarks/speed.py`` the detector computes 12.3 whole tiles' worth of pixels per image
    trimmed, 16.8 shifted).
    Inference uses it; training samples whole tiles.

    Args:
        tile_size: tile side in pixels.
        overlap: overlap of neighbouring tiles as a fraction of the tile, in ``[0, 1)``.
        edge: ``"shift"`` (SAHI, MONAI ``dense_patch_slices``) or ``"trim"``.

    Example:
        .. code-block:: python

            TileGrid(1024, 0.1)((2000, 1500))
            # [(0, 0, 1024, 1024), (476, 0, 1500, 1024), (0, 922, 1024, 1946), (476, 922, 1500, 1946),
            #  (0, 976, 1024, 2000), (476, 976, 1500, 2000)]  # rows 0, 922, then 1844 shifted back to 976
            TileGrid(1024, 0.1, edge="trim")((2000, 1500))
            # [(0, 0, 1024, 1024), (922, 0, 1500, 1024), (0, 922, 1024, 1946), (922, 922, 1500, 1946),
            #  (0, 1844, 1024, 2000), (922, 1844, 1500, 2000)]  # the last row and column are shorter
    """

    EDGES = ("shift", "trim")

    def __init__(self, tile_size: int = 1024, overlap: float = 0.1, edge: str = "shift") -> None:
        if int(tile_size) != tile_size or tile_size < 1:
            raise ValueError(f"tile_size must be a positive integer, got {tile_size}.")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be a fraction in [0, 1), got {overlap}.")
        if edge not in self.EDGES:
            raise ValueError(f"edge must be one of {self.EDGES}, got {edge!r}.")
        self.tile_size = int(tile_size)
        self.overlap = float(overlap)
        self.edge = edge

    @property
    def stride_px(self) -> int:
        """Distance between the starts of neighbouring tiles."""
        return max(1, self.tile_size - int(round(self.overlap * self.tile_size)))

    def __call__(self, spatial_size: Sequence[int]) -> list[tuple[int, int, int, int]]:
        if len(spatial_size) != 2:
            raise ValueError(f"spatial_size must be (height, width), got {tuple(spatial_size)}.")
        h, w = (int(v) for v in spatial_size)
        if h < 1 or w < 1:
            raise ValueError(f"cannot tile an empty image of (height, width) = ({h}, {w}).")
        stride = self.stride_px
        if self.edge == "trim":
            rows, cols = self._trimmed(h), self._trimmed(w)
            return [(x1, y1, x2, y2) for y1, y2 in rows for x1, x2 in cols]
        slices = dense_patch_slices((h, w), (self.tile_size, self.tile_size), (stride, stride))
        return [(int(sx.start), int(sy.start), int(sx.stop), int(sy.stop)) for sy, sx in slices]

    def _trimmed(self, length: int) -> list[tuple[int, int]]:
        """``(start, stop)`` along one axis: the regular grid, the last span ending on the border."""
        spans, start = [], 0
        while start + self.tile_size < length:
            spans.append((start, start + self.tile_size))
            start += self.stride_px
        spans.append((start, length))
        return spans


class Tile(NamedTuple):
    """One tile: the image ``(C, tile, tile)``, its boxes ``(N, 4)`` ``(row1, col1, row2, col2)``
    (MONAI's order) in tile pixels and labels (``None`` if none given), the
    :class:`~monai_smalldet.transforms.frames.FrameRecord` mapping tile pixels to the original
    image, its origin ``(x, y)`` in the level's pixels, the padding ``(x, y)`` added after the
    last column/row, the pyramid factor and level index.

    Example:
        .. code-block:: python

            tile = SystematicTile(1024)(level_image, frame=level_frame)[0]
            tile.origin_px, tile.pad_px, tile_boxes_to_original(pred_boxes, tile.frame)
    """

    image: Any
    boxes: Any
    labels: Any
    frame: FrameRecord
    origin_px: tuple[int, int]
    pad_px: tuple[int, int]
    scale: float
    level: int


def clip_boxes_to_tile(
    boxes: NdarrayOrTensor,
    labels: Sequence[NdarrayOrTensor] | NdarrayOrTensor | None,
    tile_box: Sequence[int],
    min_visibility: float = 0.1,
) -> tuple[NdarrayOrTensor, Any]:
    """Boxes of a level cut to one tile, in tile pixels, with their labels kept aligned.

    Boxes ``(row1, col1, row2, col2)`` (MONAI's order) are shifted to the tile origin with
    :func:`~monai_smalldet.transforms.frames.map_boxes`, clipped with MONAI
    :func:`~monai.data.box_utils.clip_boxes_to_image` and kept
    when the visible part is at least ``min_visibility`` of the box area (a zero-area box is
    kept when it lies in the tile). Labels are selected with MONAI's ``select_labels``.
    """
    x1, y1, x2, y2 = (int(v) for v in tile_box)
    shifted = map_boxes(boxes, FrameRecord.translation(-x1, -y1))
    if shifted.shape[0] == 0:
        return shifted, (select_labels(labels, np.zeros(0, dtype=bool)) if labels is not None else None)
    clipped, _ = clip_boxes_to_image(shifted, (y2 - y1, x2 - x1), remove_empty=False)
    s = np.asarray(convert_data_type(shifted, np.ndarray)[0], dtype=np.float64)
    c = np.asarray(convert_data_type(clipped, np.ndarray)[0], dtype=np.float64)
    area = (s[:, 2] - s[:, 0]) * (s[:, 3] - s[:, 1])
    visible = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
    inside = (s[:, 0] < y2 - y1) & (s[:, 2] > 0) & (s[:, 1] < x2 - x1) & (s[:, 3] > 0)
    keep = np.where(area > 0, visible >= min_visibility * np.maximum(area, 1e-12), inside) & inside
    keep_t = convert_to_dst_type(
        keep, dst=clipped, dtype=torch.bool if isinstance(clipped, torch.Tensor) else bool
    )[0]
    out = clipped[keep_t]
    return out, (select_labels(labels, keep_t) if labels is not None else None)


class SystematicTile(Transform):
    """Cut one ``(C, H, W)`` pyramid level into tiles that cover every pixel.

    Tiles come from :class:`TileGrid`; a tile shorter than ``tile_size`` (a level smaller than
    one tile, or a trimmed last row/column) is padded with ``pad_value`` after its last
    row/column, up to ``tile_size`` or, with ``pad_multiple``, only up to the next multiple of
    it (a fully convolutional network takes any size divisible by its stride: inference then
    computes no more padding than it must). Unpadded tiles are views
    of the level (no copy) unless ``copy=True``. Boxes (training; ``(N, 4)``
    ``(row1, col1, row2, col2)`` (MONAI's order), continuous pixels) are clipped to each tile with
    :func:`clip_boxes_to_tile`, labels kept aligned. Each tile carries its frame record (tile pixels ->
    original image), origin, padding, scale and level; a MetaTensor tile also carries them in
    ``meta`` (``tile_origin_px``, ``tile_pad_px``, ``pyramid_scale``, ``pyramid_level``).

    Args:
        tile_size: tile side in pixels (paper: 1024).
        overlap: fraction of the tile shared by neighbours, default 0.1 (see module docstring).
        min_visibility: keep a box on a tile when at least this fraction of it is visible.
        pad_value: value of the padding of tiles at levels smaller than a tile.
        copy: return contiguous copies instead of views.
        edge: last row/column of tiles ``"shift"``-ed back inside the level or ``"trim"``-med
            at its border (:class:`TileGrid`).
        pad_multiple: pad short tiles only up to a multiple of this (``None``: to ``tile_size``).

    Returns (``__call__``):
        a list of :class:`Tile`.

    Example:
        .. code-block:: python

            tiles = SystematicTile(tile_size=1024, overlap=0.1)(level_image, frame=level_frame, scale=0.5, level=1)
            boxes_in_original = tile_boxes_to_original(pred_boxes, tiles[0].frame)
    """

    def __init__(
        self,
        tile_size: int = 1024,
        overlap: float = 0.1,
        min_visibility: float = 0.1,
        pad_value: float = 0.0,
        copy: bool = False,
        edge: str = "shift",
        pad_multiple: int | None = None,
    ) -> None:
        self.grid = TileGrid(tile_size, overlap, edge)
        if not 0.0 <= min_visibility <= 1.0:
            raise ValueError(f"min_visibility must be in [0, 1], got {min_visibility}.")
        if pad_multiple is not None and (int(pad_multiple) != pad_multiple or pad_multiple < 1):
            raise ValueError(f"pad_multiple must be a positive integer or None, got {pad_multiple}.")
        self.min_visibility = float(min_visibility)
        self.pad_value = float(pad_value)
        self.copy = copy
        self.pad_multiple = int(pad_multiple) if pad_multiple is not None else None

    @property
    def tile_size(self) -> int:
        return self.grid.tile_size

    def _padded(self, extent: int) -> int:
        """Side a tile of ``extent`` pixels is padded to."""
        if self.pad_multiple is None:
            return max(extent, self.tile_size)
        return -(-extent // self.pad_multiple) * self.pad_multiple

    def cut(self, img: NdarrayOrTensor, tile_box: Sequence[int]) -> tuple[NdarrayOrTensor, tuple[int, int]]:
        """The image of one tile (padded to the tile size if needed) and the padding ``(x, y)``."""
        x1, y1, x2, y2 = (int(v) for v in tile_box)
        size_x, size_y = self._padded(x2 - x1), self._padded(y2 - y1)
        pad_x, pad_y = max(0, size_x - (x2 - x1)), max(0, size_y - (y2 - y1))
        if pad_x == 0 and pad_y == 0:
            out = img[:, y1:y2, x1:x2]
            if self.copy:
                out = out.copy() if isinstance(out, np.ndarray) else out.clone()
            return out, (0, 0)
        a = to_numpy_view(img)
        if a is not None:
            part = a[:, y1:y2, x1:x2]
            padded_np = np.full((part.shape[0], size_y, size_x), self.pad_value, dtype=part.dtype)
            padded_np[:, : part.shape[1], : part.shape[2]] = part
            return convert_to_dst_type(padded_np, dst=img)[0], (pad_x, pad_y)
        t = to_torch(img)[:, y1:y2, x1:x2]
        padded = torch.full((t.shape[0], size_y, size_x), self.pad_value, dtype=t.dtype, device=t.device)
        padded[:, : t.shape[1], : t.shape[2]] = t
        return convert_to_dst_type(padded, dst=img)[0], (pad_x, pad_y)

    def __call__(
        self,
        img: NdarrayOrTensor,
        boxes: NdarrayOrTensor | None = None,
        labels: Sequence[NdarrayOrTensor] | NdarrayOrTensor | None = None,
        frame: FrameRecord | None = None,
        scale: float = 1.0,
        level: int = 0,
    ) -> list[Tile]:
        h, w = check_image(img)
        if boxes is not None:
            boxes = as_boxes(boxes)
            check_boxes(boxes, (h, w))
            if labels is not None:
                _check_labels(labels, boxes.shape[0])
        frame = frame if frame is not None else FrameRecord.identity(h, w)
        tiles = []
        for tile_box in self.grid((h, w)):
            tile_img, pad = self.cut(img, tile_box)
            step = FrameRecord.translation(tile_box[0], tile_box[1], h, w)
            if isinstance(tile_img, MetaTensor):
                update_meta(
                    tile_img,
                    step,
                    {
                        "tile_origin_px": (tile_box[0], tile_box[1]),
                        "tile_pad_px": pad,
                        "pyramid_scale": float(scale),
                        "pyramid_level": int(level),
                    },
                )
            tile_boxes, tile_labels = None, None
            if boxes is not None:
                tile_boxes, tile_labels = clip_boxes_to_tile(boxes, labels, tile_box, self.min_visibility)
            tiles.append(
                Tile(
                    tile_img,
                    tile_boxes,
                    tile_labels,
                    frame.compose(step),
                    (tile_box[0], tile_box[1]),
                    pad,
                    float(scale),
                    int(level),
                )
            )
        return tiles


def _check_labels(labels: Any, n: int) -> None:
    for item in (
        ensure_tuple(labels, True) if not isinstance(labels, np.ndarray | torch.Tensor) else (labels,)
    ):
        if len(item) != n:
            raise ValueError(f"labels of length {len(item)} do not match {n} boxes.")


def _label_values(value: Any) -> NdarrayOrTensor:
    """A sample's per-box values (labels) as an array or tensor, kept as they are (no checks:
    the fusion's ``_as_labels`` validates detector labels; these travel with the boxes)."""
    return value if isinstance(value, np.ndarray | torch.Tensor) else np.asarray(value).reshape(-1)


_LEVEL_KEY = re.compile(r"_scale\d+$")
"""Keys of whole pyramid levels (``image_scale0``, ``box_scale2``, ...): never copied into tiles."""


class _TileLevels:
    """Find the levels of a sample: ``<key>_scale<i>`` written by ``ScalePyramidd``, else the key itself."""

    def __init__(self, image_keys: tuple, box_key: str | None, frame_key: str, scales_key: str) -> None:
        self.image_keys, self.box_key, self.frame_key, self.scales_key = (
            image_keys,
            box_key,
            frame_key,
            scales_key,
        )

    def __call__(self, d: Mapping[Hashable, Any]) -> list[dict[str, Any]]:
        first = self.image_keys[0]
        levels = []
        if pyramid_key(first, 0) in d:
            scales = d.get(self.scales_key)
            i = 0
            while pyramid_key(first, i) in d:
                scale = float(_scalar(scales[i])) if scales is not None else 1.0
                levels.append(
                    {
                        "images": {
                            k: d[pyramid_key(k, i)] for k in self.image_keys if pyramid_key(k, i) in d
                        },
                        "boxes": d.get(pyramid_key(self.box_key, i)) if self.box_key is not None else None,
                        "frame_key": pyramid_key(self.frame_key, i),
                        "scale": scale,
                        "level": i,
                    }
                )
                i += 1
        elif first in d:
            levels.append(
                {
                    "images": {k: d[k] for k in self.image_keys if k in d},
                    "boxes": d.get(self.box_key) if self.box_key is not None else None,
                    "frame_key": self.frame_key,
                    "scale": 1.0,
                    "level": 0,
                }
            )
        else:
            raise ValueError(
                f"image key {first!r} (or its pyramid levels) is missing; keys present: {list(d.keys())}."
            )
        return levels

    def consumed(self, d: Mapping[Hashable, Any], n_levels: int, label_keys: tuple) -> set:
        """Keys replaced by the tile entries (not copied into the tile dicts)."""
        keys = {self.scales_key, self.frame_key, *self.image_keys, *label_keys}
        if self.box_key is not None:
            keys.add(self.box_key)
        for base in (*self.image_keys, self.box_key, self.frame_key):
            if base is None:
                continue
            for i in range(n_levels):
                keys.add(pyramid_key(base, i))
        return {
            k
            for k in d
            if k in keys
            or (isinstance(k, str) and (k.endswith("_transforms") or _LEVEL_KEY.search(k) is not None))
        }


def _scalar(value: Any) -> float:
    if isinstance(value, torch.Tensor | np.ndarray):
        return float(np.asarray(convert_data_type(value, np.ndarray)[0]).reshape(-1)[0])
    return float(value)


class SystematicTiled(MapTransform):
    """Dictionary version of :class:`SystematicTile`: one sample in, a list of tile samples out.

    Tiles every level written by :class:`~monai_smalldet.transforms.pyramid.ScalePyramidd`
    (``image_scale0``, ``image_scale1``, ...; or ``image`` itself when there is no pyramid),
    and returns one dict per tile, all levels together, like MONAI's
    ``RandCropByPosNegLabeld`` (a ``monai.data.Dataset`` flattens the list and
    ``list_data_collate`` batches it). Each tile dict holds, under the *base* keys:
    ``image_keys`` (the tile), ``box_keys`` (boxes in tile pixels, ``(row1, col1, row2, col2)``,
    MONAI's order), ``label_keys`` (aligned), ``frame_key`` (the
    :class:`~monai_smalldet.transforms.frames.FrameRecord` to pass to
    :func:`~monai_smalldet.transforms.frames.tile_boxes_to_original`), plus ``tile_origin_px``
    ``(x, y)``, ``tile_pad_px`` ``(x, y)``, ``tile_scale``, ``tile_level`` and every other key
    of the sample (whole-level keys ``*_scale<i>`` and trace lists are not copied). Not
    invertible: the frame record is the way back.

    Args:
        image_keys: base keys of the images (all tiled alike).
        box_keys: the single base key of the boxes (optional).
        label_keys: keys of the labels aligned with the boxes.
        tile_size, overlap, min_visibility, pad_value, copy, edge, pad_multiple: see
            :class:`SystematicTile`.
        frame_key: base key of the frame records.
        scales_key: key of the pyramid factors.
        allow_missing_keys: don't raise if a key is missing.

    Example:
        .. code-block:: python

            pipeline = Compose([CropBreastd("image", "box"), ScalePyramidd("image", "box"),
                                SystematicTiled("image", "box", "label", tile_size=1024)])
            tiles = pipeline(sample)  # list of dicts
            boxes = tile_boxes_to_original(pred_boxes_of_tile_7, tiles[7]["frame"])
    """

    def __init__(
        self,
        image_keys: KeysCollection,
        box_keys: KeysCollection | None = None,
        label_keys: KeysCollection = (),
        tile_size: int = 1024,
        overlap: float = 0.1,
        min_visibility: float = 0.1,
        pad_value: float = 0.0,
        copy: bool = False,
        frame_key: str = "frame",
        scales_key: str = "pyramid_scales",
        allow_missing_keys: bool = False,
        edge: str = "shift",
        pad_multiple: int | None = None,
    ) -> None:
        self.image_keys = ensure_tuple(image_keys)
        if not self.image_keys:
            raise ValueError("at least one image key is required.")
        boxes = ensure_tuple(box_keys) if box_keys is not None else ()
        if len(boxes) > 1:
            raise ValueError(f"provide a single box key (labels attach to it), got {boxes}.")
        self.box_key = boxes[0] if boxes else None
        self.label_keys = ensure_tuple(label_keys)
        super().__init__(self.image_keys + boxes + self.label_keys, allow_missing_keys)
        self.tiler = SystematicTile(tile_size, overlap, min_visibility, pad_value, copy, edge, pad_multiple)
        self.frame_key = frame_key
        self.scales_key = scales_key
        self.levels = _TileLevels(self.image_keys, self.box_key, frame_key, scales_key)

    def tile_boxes(self, d: Mapping[Hashable, Any]) -> list[tuple[dict[str, Any], tuple[int, int, int, int]]]:
        """All ``(level, tile box)`` pairs of a sample (geometry only)."""
        out = []
        for level in self.levels(d):
            img = next(iter(level["images"].values()))
            for tile_box in self.tiler.grid(check_image(img)):
                out.append((level, tile_box))
        return out

    def make_tile(
        self, d: Mapping[Hashable, Any], level: dict[str, Any], tile_box: Sequence[int], rest: dict
    ) -> dict[Hashable, Any]:
        """Build the tile dict of one tile of one level."""
        out: dict[Hashable, Any] = dict(rest)
        ref = next(iter(level["images"].values()))
        h, w = check_image(ref)
        pad = (0, 0)
        step = FrameRecord.translation(tile_box[0], tile_box[1], h, w)
        for key, img in level["images"].items():
            check_image(img, name=f"image {key!r}")
            tile_img, pad = self.tiler.cut(img, tile_box)
            if isinstance(tile_img, MetaTensor):
                update_meta(
                    tile_img,
                    step,
                    {
                        "tile_origin_px": (tile_box[0], tile_box[1]),
                        "tile_pad_px": pad,
                        "pyramid_scale": level["scale"],
                        "pyramid_level": level["level"],
                    },
                )
            out[key] = tile_img
        if self.box_key is not None and level["boxes"] is not None:
            boxes = as_boxes(level["boxes"], name=f"boxes {self.box_key!r}")
            labels = tuple(_label_values(d[k]) for k in self.label_keys if k in d)
            for item in labels:
                if len(item) != boxes.shape[0]:
                    raise ValueError(f"labels of length {len(item)} do not match {boxes.shape[0]} boxes.")
            tile_boxes, tile_labels = clip_boxes_to_tile(
                boxes, labels if labels else None, tile_box, self.tiler.min_visibility
            )
            out[self.box_key] = tile_boxes
            for key, value in zip([k for k in self.label_keys if k in d], tile_labels or (), strict=False):
                out[key] = value
        frame = frame_of(d, level["frame_key"], (h, w))
        out[self.frame_key] = frame.compose(step)
        out["tile_origin_px"] = (int(tile_box[0]), int(tile_box[1]))
        out["tile_pad_px"] = (int(pad[0]), int(pad[1]))
        out["tile_scale"] = float(level["scale"])
        out["tile_level"] = int(level["level"])
        return out

    def _rest(self, d: Mapping[Hashable, Any], n_levels: int) -> dict:
        consumed = self.levels.consumed(d, n_levels, self.label_keys)
        return {k: v for k, v in d.items() if k not in consumed}

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        levels = self.levels(d)
        rest = self._rest(d, len(levels))
        out = []
        for level in levels:
            img = next(iter(level["images"].values()))
            for tile_box in self.tiler.grid(check_image(img)):
                out.append(self.make_tile(d, level, tile_box, rest))
        return out


class RandTileSamplerd(Randomizable, SystematicTiled):
    """Draw training tiles from all pyramid levels with a positive:negative ratio.

    The systematic tiles of every level (as :class:`SystematicTiled` makes them) are split
    into *positive* tiles (at least one box of ``box_keys``, ``(row1, col1, row2, col2)`` in
    MONAI's order, visible by ``min_visibility``) and
    *negative* ones; ``num_samples`` tiles are drawn, each positive with probability
    ``pos / (pos + neg)`` (MONAI ``RandCropByPosNegLabeld`` semantics), uniformly within its
    pool (with replacement); when a pool is empty the other one is used. Without this, the
    few lesion tiles are drowned among the many empty ones. Returns a list of tile dicts
    (``Dataset`` flattens it); tiles are contiguous copies (no reference to the whole level).

    Args:
        image_keys, box_keys, label_keys, tile_size, overlap, min_visibility, pad_value,
            frame_key, scales_key, allow_missing_keys: see :class:`SystematicTiled`.
        num_samples: tiles drawn per sample.
        pos: weight of positive tiles.
        neg: weight of negative tiles.

    Example:
        .. code-block:: python

            sampler = RandTileSamplerd("image", "box", "label", tile_size=512, num_samples=4, pos=1, neg=1)
            sampler.set_random_state(seed=0)
            tiles = sampler(pyramid_sample)  # 4 tile dicts, about half of them with a lesion
    """

    def __init__(
        self,
        image_keys: KeysCollection,
        box_keys: KeysCollection,
        label_keys: KeysCollection = (),
        tile_size: int = 1024,
        overlap: float = 0.1,
        num_samples: int = 4,
        pos: float = 1.0,
        neg: float = 1.0,
        min_visibility: float = 0.1,
        pad_value: float = 0.0,
        frame_key: str = "frame",
        scales_key: str = "pyramid_scales",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(
            image_keys,
            box_keys,
            label_keys,
            tile_size,
            overlap,
            min_visibility,
            pad_value,
            True,
            frame_key,
            scales_key,
            allow_missing_keys,
        )
        if self.box_key is None:
            raise ValueError("RandTileSamplerd needs a box key to tell positive tiles.")
        if pos < 0 or neg < 0 or pos + neg == 0:
            raise ValueError(f"pos and neg must be >= 0 and not both 0, got pos={pos}, neg={neg}.")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        self.num_samples = int(num_samples)
        self.pos_ratio = pos / (pos + neg)
        self._choices: list[int] = []

    def randomize(self, positive: Sequence[bool]) -> None:  # type: ignore[override]
        pos_idx = [i for i, p in enumerate(positive) if p]
        neg_idx = [i for i, p in enumerate(positive) if not p]
        self._choices = []
        for _ in range(self.num_samples):
            want_pos = self.R.rand() < self.pos_ratio
            pool = pos_idx if (want_pos and pos_idx) or not neg_idx else neg_idx
            self._choices.append(int(pool[self.R.randint(len(pool))]))

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        candidates = self.tile_boxes(d)
        positive = []
        for level, tile_box in candidates:
            boxes = level["boxes"]
            if boxes is None:
                positive.append(False)
                continue
            kept, _ = clip_boxes_to_tile(as_boxes(boxes), None, tile_box, self.tiler.min_visibility)
            positive.append(kept.shape[0] > 0)
        self.randomize(positive)
        rest = self._rest(d, len(self.levels(d)))
        return [self.make_tile(d, candidates[i][0], candidates[i][1], rest) for i in self._choices]
