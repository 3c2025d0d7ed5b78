"""Training tiles drawn around lesions: per-level quotas, random offsets, scale jitter, hard negatives.

:class:`RandLesionTileSamplerd` replaces the fixed inference grid at training time. A tile of a
pyramid level is a window of ``tile_size / zoom`` level pixels resized to ``tile_size``, placed

* for a *positive* tile: at a uniformly random offset that keeps one chosen lesion whole in it
  (a lesion is seen at a new position of the tile every time it is drawn, not at the one to
  three offsets the systematic grid gives it);
* for a *hard negative*: the same around a benign finding (``hard_negative_key``, e.g. the
  datalist's ``benign_box``), which the network must learn not to report;
* for a *negative*: at a uniformly random position of the level.

The level of each tile is drawn with ``level_weights`` (positives and hard negatives) or
``neg_level_weights`` (negatives); ``zoom`` is log-uniform in ``[1 / scale_jitter,
scale_jitter]``. Every malignant box visible in the window (by ``min_visibility``) is a target
of the tile. A target whose shorter side is below ``min_box_px`` after resizing is handled by
``small_box_rule``: ``"enlarge"`` grows it about its centre to ``min_box_px`` (the network's
finest stride is 8 px: a box narrower than that holds about one anchor point, and the
task-aligned assigner then gives it a target score near zero), ``"keep"`` leaves it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable
from monai.utils import ensure_tuple

from .frames import FrameRecord
from .geometry import as_boxes, frame_of
from .pyramid import pyramid_key
from .tiling import _label_values, _TileLevels, clip_boxes_to_tile

__all__ = ["SMALL_BOX_RULES", "RandLesionTileSamplerd", "enlarge_small_boxes"]

SMALL_BOX_RULES = ("enlarge", "keep")


def enlarge_small_boxes(boxes: np.ndarray, min_px: float, size_hw: Sequence[int]) -> np.ndarray:
    """Grow each side of ``(N, 4)`` boxes ``(row1, col1, row2, col2)`` (MONAI's order) shorter
    than ``min_px`` to ``min_px`` about the box centre, then clip to an image of ``size_hw``
    ``(rows, columns)``. Longer sides are unchanged.

    Example:
        >>> enlarge_small_boxes(np.array([[10.0, 10.0, 14.0, 30.0]]), 8, (64, 64)).tolist()
        [[8.0, 10.0, 16.0, 30.0]]
    """
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    for lo, hi, limit in ((0, 2, size_hw[0]), (1, 3, size_hw[1])):
        centre = (b[:, lo] + b[:, hi]) / 2
        grow = (b[:, hi] - b[:, lo]) < min_px
        b[grow, lo] = centre[grow] - min_px / 2
        b[grow, hi] = centre[grow] + min_px / 2
        b[:, lo] = np.clip(b[:, lo], 0, limit)
        b[:, hi] = np.clip(b[:, hi], 0, limit)
    return b


def _weights(values: Sequence[float] | None, n: int, name: str) -> np.ndarray:
    """Normalised per-level weights for ``n`` levels (uniform when ``values`` is ``None``)."""
    w = np.ones(n) if values is None else np.asarray(list(values)[:n], dtype=np.float64)
    if w.size < n:
        w = np.concatenate([w, np.zeros(n - w.size)])
    if np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"{name} must be finite, >= 0 and not all 0, got {values}.")
    return w / w.sum()


def _place(lo: float, hi: float, window: int, extent: int, u: float) -> int:
    """Origin of a ``window`` on an axis of ``extent`` pixels that holds ``[lo, hi)`` whole and
    stays inside the axis; ``u`` in [0, 1) picks uniformly among such origins. When none
    exists (a finding longer than the window), the window is centred on the finding."""
    inside_hi = max(extent - window, 0)
    a, b = max(math.ceil(hi) - window, 0), min(math.floor(lo), inside_hi)
    if a > b:
        return min(max(int(round((lo + hi - window) / 2)), 0), inside_hi)
    return int(a + math.floor(u * (b - a + 1)))


class RandLesionTileSamplerd(Randomizable, MapTransform):
    """Draw ``num_samples`` training tiles from the pyramid levels of one sample (see module).

    Reads what :class:`~monai_smalldet.transforms.ScalePyramidd` writes (``<key>_scale<i>``
    images and boxes, ``frame_scale<i>``, ``pyramid_scales``) or a single image. Boxes are
    ``(row1, col1, row2, col2)`` level pixels (MONAI's order). Returns a list of tile dicts with ``image_keys``
    ``(C, tile_size, tile_size)``, ``box_key`` ``(N, 4)`` float32 tile pixels, the aligned
    ``label_keys``, ``frame_key`` (tile -> original image), ``tile_level``, ``tile_scale``,
    ``tile_zoom`` and ``tile_kind`` (``"positive"``, ``"hard_negative"``, ``"negative"``).

    Args:
        image_keys: base keys of the images (all cut alike).
        box_keys: the single base key of the malignant boxes.
        label_keys: keys of the labels aligned with the boxes.
        tile_size: side of the tiles in pixels.
        num_samples: tiles drawn per sample.
        pos, neg: weights of positive : negative tiles (a sample without lesions gives negatives).
        level_weights: per-level weights of positive and hard-negative tiles (level 0 = 1X).
        neg_level_weights: per-level weights of negative tiles (``None``: uniform).
        hard_negative_key: base key of boxes of benign findings (``None``: no hard negatives).
        hard_negative_ratio: share of negative tiles placed around a benign finding when the
            sample has one.
        scale_jitter: largest zoom factor (``1.0``: no jitter).
        min_box_px: shortest target side after resizing (``small_box_rule``).
        small_box_rule: ``"enlarge"`` or ``"keep"``.
        min_visibility: share of a box that must be in the window to make it a target.
        frame_key, scales_key: base key of the frame records; key of the pyramid factors.
        allow_missing_keys: don't raise if a key is missing.

    Example:
        .. code-block:: python

            sampler = RandLesionTileSamplerd("image", "box", "label", tile_size=256, num_samples=4,
                                             level_weights=(0.5, 0.3, 0.2), hard_negative_key="benign_box")
            sampler.set_random_state(seed=0)
            tiles = sampler(pyramid_sample)
    """

    def __init__(
        self,
        image_keys: KeysCollection,
        box_keys: KeysCollection,
        label_keys: KeysCollection = (),
        tile_size: int = 1024,
        num_samples: int = 4,
        pos: float = 1.0,
        neg: float = 1.0,
        level_weights: Sequence[float] | None = (0.5, 0.3, 0.2),
        neg_level_weights: Sequence[float] | None = None,
        hard_negative_key: str | None = None,
        hard_negative_ratio: float = 0.5,
        scale_jitter: float = 1.25,
        min_box_px: float = 12.0,
        small_box_rule: str = "enlarge",
        min_visibility: float = 0.3,
        frame_key: str = "frame",
        scales_key: str = "pyramid_scales",
        allow_missing_keys: bool = False,
    ) -> None:
        self.image_keys = ensure_tuple(image_keys)
        boxes = ensure_tuple(box_keys)
        if len(boxes) != 1:
            raise ValueError(f"provide a single box key (labels attach to it), got {boxes}.")
        self.box_key = boxes[0]
        self.label_keys = ensure_tuple(label_keys)
        super().__init__(self.image_keys + boxes + self.label_keys, allow_missing_keys)
        if pos < 0 or neg < 0 or pos + neg == 0:
            raise ValueError(f"pos and neg must be >= 0 and not both 0, got pos={pos}, neg={neg}.")
        if num_samples < 1 or tile_size < 1:
            raise ValueError(f"num_samples and tile_size must be >= 1, got {num_samples}, {tile_size}.")
        if scale_jitter < 1.0:
            raise ValueError(f"scale_jitter must be >= 1, got {scale_jitter}.")
        if small_box_rule not in SMALL_BOX_RULES:
            raise ValueError(f"small_box_rule must be one of {SMALL_BOX_RULES}, got {small_box_rule!r}.")
        if not 0.0 <= hard_negative_ratio <= 1.0:
            raise ValueError(f"hard_negative_ratio must lie in [0, 1], got {hard_negative_ratio}.")
        self.tile_size, self.num_samples = int(tile_size), int(num_samples)
        self.pos_ratio = pos / (pos + neg)
        self.level_weights, self.neg_level_weights = level_weights, neg_level_weights
        self.hard_negative_key, self.hard_negative_ratio = hard_negative_key, float(hard_negative_ratio)
        self.scale_jitter, self.min_box_px = float(scale_jitter), float(min_box_px)
        self.small_box_rule, self.min_visibility = small_box_rule, float(min_visibility)
        self.frame_key, self.scales_key = frame_key, scales_key
        self.levels = _TileLevels(self.image_keys, self.box_key, frame_key, scales_key)

    def randomize(self, data: Any = None) -> None:  # draws happen per tile in __call__
        pass

    # -- one tile ----------------------------------------------------------------------------
    def _level_boxes(self, d: Mapping[Hashable, Any], level: dict, key: str | None) -> np.ndarray:
        if key is None:
            return np.zeros((0, 4), np.float32)
        name = pyramid_key(key, level["level"]) if pyramid_key(self.image_keys[0], 0) in d else key
        value = d.get(name)
        if value is None or len(value) == 0:
            return np.zeros((0, 4), np.float32)
        return np.asarray(as_boxes(value), dtype=np.float32).reshape(-1, 4)

    def _draw(self, d: Mapping[Hashable, Any], levels: list[dict]) -> tuple[str, int, np.ndarray | None]:
        """(kind, level index, box to hold or None) of one tile."""
        n = len(levels)
        lesions = [self._level_boxes(d, lv, self.box_key) for lv in levels]
        benign = [self._level_boxes(d, lv, self.hard_negative_key) for lv in levels]
        if lesions[0].shape[0] and self.R.rand() < self.pos_ratio:
            i = int(self.R.choice(n, p=_weights(self.level_weights, n, "level_weights")))
            return "positive", i, lesions[i][self.R.randint(lesions[i].shape[0])]
        if benign[0].shape[0] and self.R.rand() < self.hard_negative_ratio:
            i = int(self.R.choice(n, p=_weights(self.level_weights, n, "level_weights")))
            return "hard_negative", i, benign[i][self.R.randint(benign[i].shape[0])]
        return (
            "negative",
            int(self.R.choice(n, p=_weights(self.neg_level_weights, n, "neg_level_weights"))),
            None,
        )

    def _cut(self, img: Any, x0: int, y0: int, window: int) -> torch.Tensor:
        """``window`` x ``window`` pixels of ``img`` from ``(x0, y0)`` (zero beyond its border),
        resized to ``tile_size`` (area-weighted when shrinking)."""
        t = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(np.asarray(img))
        t = t.float()
        part = t[:, y0 : y0 + window, x0 : x0 + window]
        if part.shape[1] != window or part.shape[2] != window:
            padded = part.new_zeros((t.shape[0], window, window))
            padded[:, : part.shape[1], : part.shape[2]] = part
            part = padded
        if window != self.tile_size:
            part = F.interpolate(
                part[None], size=(self.tile_size,) * 2, mode="bilinear", align_corners=False, antialias=True
            )[0]
        return part.contiguous()

    def _tile(self, d: Mapping[Hashable, Any], level: dict, hold: np.ndarray | None, kind: str) -> dict:
        ref = next(iter(level["images"].values()))
        h, w = int(ref.shape[-2]), int(ref.shape[-1])
        zoom = (
            math.exp(self.R.uniform(-1.0, 1.0) * math.log(self.scale_jitter))
            if self.scale_jitter > 1
            else 1.0
        )
        window = max(int(round(self.tile_size / zoom)), 8)
        if hold is None:
            x0 = int(self.R.randint(max(w - window, 0) + 1))
            y0 = int(self.R.randint(max(h - window, 0) + 1))
        else:
            x0 = _place(float(hold[1]), float(hold[3]), window, w, self.R.rand())
            y0 = _place(float(hold[0]), float(hold[2]), window, h, self.R.rand())
        step = self.tile_size / window  # tile pixels per level pixel
        out: dict[Hashable, Any] = {k: self._cut(img, x0, y0, window) for k, img in level["images"].items()}
        boxes = self._level_boxes(d, level, self.box_key)
        labels = tuple(_label_values(d[k]) for k in self.label_keys if k in d)
        kept, kept_labels = clip_boxes_to_tile(
            boxes, labels if labels else None, (x0, y0, x0 + window, y0 + window), self.min_visibility
        )
        kept = np.asarray(kept, dtype=np.float32).reshape(-1, 4) * np.float32(step)
        if self.small_box_rule == "enlarge" and kept.shape[0]:
            kept = enlarge_small_boxes(kept, self.min_box_px, (self.tile_size, self.tile_size))
        out[self.box_key] = kept
        for key, value in zip([k for k in self.label_keys if k in d], kept_labels or (), strict=False):
            out[key] = np.asarray(value).reshape(-1)
        frame = frame_of(d, level["frame_key"], (h, w))
        out[self.frame_key] = frame.compose(FrameRecord.translation(x0, y0)).compose(
            FrameRecord.scaling(1.0 / step, 1.0 / step)
        )
        out.update(
            tile_origin_px=(x0, y0),
            tile_level=int(level["level"]),
            tile_scale=float(level["scale"]),
            tile_zoom=float(step),
            tile_kind=kind,
        )
        return out

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        levels = self.levels(d)
        rest_keys = self.levels.consumed(d, len(levels), self.label_keys)
        if self.hard_negative_key is not None:
            rest_keys |= {
                k for k in d if isinstance(k, str) and k.startswith(self.hard_negative_key + "_scale")
            }
        rest = {
            k: v for k, v in d.items() if k not in rest_keys and not isinstance(v, torch.Tensor | np.ndarray)
        }
        tiles = []
        for _ in range(self.num_samples):
            kind, i, hold = self._draw(d, levels)
            tile = dict(rest)
            tile.update(self._tile(d, levels[i], hold, kind))
            tiles.append(tile)
        return tiles
