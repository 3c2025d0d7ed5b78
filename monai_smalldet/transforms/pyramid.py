"""Pixel-spacing resampling, the scale pyramid (X, 0.5X, 0.25X) and resolution degradation.

Rangarajan et al. (Sci Rep 2022) detect on three scales of the cropped full-resolution
mammogram: X (fine detail), 0.5X and 0.25X (whole-breast context). Downsampling is
anti-aliased: a factor ``1 / k`` (integer ``k``, the default pyramid's 0.5 and 0.25) is an
exact ``k x k`` block mean (area interpolation, a box filter), any other factor uses
``torch.nn.functional.interpolate(mode="bilinear", antialias=True)``; see
:func:`~monai_smalldet.transforms.geometry.resample_image`. Their speed against
``interpolate(mode="area")`` and MONAI ``Resize(anti_aliasing=True)`` is measured by
``benchmarks/transforms.py`` (``benchmarks/results/``).

Boxes are ``(N, 4)`` ``(row1, col1, row2, col2)`` (MONAI's order, :mod:`~monai_smalldet.transforms.boxes`), continuous pixel coordinates,
rescaled with the exact ratio of the output to the input size per axis (MONAI
``ResizeBox`` / ``ZoomBox(keep_size=False)`` semantics) through
:func:`~monai_smalldet.transforms.frames.map_boxes`.

Pyramid key names: level ``i`` (in the order of ``scales``) of the data key ``image`` is
``image_scale0``, ``image_scale1``, ...; likewise boxes ``box_scale<i>`` and frame records
``frame_scale<i>``, and the factors themselves are stored under ``pyramid_scales``. Index
names, not factor names, so that keys stay valid Python/config identifiers whatever the
factors. Each level is a separate key, so a ``DataLoader`` batches a level across samples
whenever its sizes agree (tiles always do).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.transforms.inverse import InvertibleTransform
from monai.transforms.transform import Transform
from monai.utils import convert_to_dst_type, ensure_tuple
from monai.utils.enums import TraceKeys

from .frames import FrameRecord, map_boxes
from .geometry import (
    FrameStepd,
    _clip_to,
    as_boxes,
    check_boxes,
    check_finite,
    check_image,
    downscale_factor_is_integer,
    frame_of,
    read_spacing_mm,
    resample_image,
    to_torch,
    update_meta,
)

__all__ = [
    "DEFAULT_SCALES",
    "DegradeResolution",
    "DegradeResolutiond",
    "ResampleToSpacing",
    "ResampleToSpacingd",
    "ScaleLevel",
    "ScalePyramid",
    "ScalePyramidd",
    "pyramid_key",
]

DEFAULT_SCALES: tuple[float, ...] = (1.0, 0.5, 0.25)
"""The paper's pyramid: X, 0.5X, 0.25X."""


def pyramid_key(key: Hashable, level: int) -> str:
    """Data key of pyramid level ``level`` of ``key``: ``"image"`` -> ``"image_scale0"``, ..."""
    return f"{key}_scale{int(level)}"


def _resize_to(img: NdarrayOrTensor, size_hw: Sequence[int]) -> NdarrayOrTensor:
    """Bilinear (anti-aliased when shrinking) resize of ``(C, H, W)`` to exactly ``size_hw``."""
    t = to_torch(img)
    src_dtype = t.dtype
    if not t.is_floating_point():
        t = t.float()
    out = F.interpolate(
        t.unsqueeze(0),
        size=(int(size_hw[0]), int(size_hw[1])),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    ).squeeze(0)
    if not src_dtype.is_floating_point:
        out = out.round().to(src_dtype)
    return convert_to_dst_type(out, dst=img)[0]


# -- resampling to a pixel spacing ---------------------------------------------------------------
class ResampleToSpacing(Transform):
    """Resample a ``(C, H, W)`` image to the detector's pixel spacing; boxes scaled with it.

    The input spacing ``(row, col)`` in mm comes from the call's ``pixel_spacing_mm`` or the
    MetaTensor's ``meta["pixel_spacing_mm"]`` (as the project's reader writes it; vendors
    range 0.05-0.1 mm). The factor per axis is ``input / target`` spacing; a factor of
    ``1 / k`` (e.g. 0.07 -> 0.28 mm) is an exact block mean, others are anti-aliased bilinear
    (see :func:`~monai_smalldet.transforms.geometry.resample_image`). Within ``tolerance``
    (relative) of the target nothing is done. The MetaTensor's ``pixel_spacing_mm`` and
    ``affine`` are updated to the exact achieved values.

    Args:
        target_spacing_mm: detector spacing, one number or ``(row, col)``; 0.07 mm is the
            paper's full resolution, the CPU-quick profile uses 0.28 mm.
        tolerance: relative spacing difference below which the image is left as is.

    Returns (``__call__``):
        ``(image, boxes, frame)``; boxes ``(N, 4)`` ``(row1, col1, row2, col2)`` (MONAI's order), pixels.

    Example:
        .. code-block:: python

            img = MetaTensor(torch.rand(1, 4096, 3328), meta={"pixel_spacing_mm": (0.07, 0.07)})
            out, boxes, frame = ResampleToSpacing(0.28)(img, boxes=np.array([[400., 800., 440., 840.]]))
            out.shape, boxes  # (1, 1024, 832), [[100., 200., 110., 210.]]
    """

    def __init__(self, target_spacing_mm: float | Sequence[float] = 0.07, tolerance: float = 1e-3) -> None:
        self.target_spacing_mm = read_spacing_mm(target_spacing_mm)
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}.")
        self.tolerance = float(tolerance)

    def input_spacing(self, img: NdarrayOrTensor, pixel_spacing_mm: Any = None) -> tuple[float, float]:
        """The image's ``(row, col)`` spacing in mm (argument first, then ``meta``)."""
        if pixel_spacing_mm is not None:
            return read_spacing_mm(pixel_spacing_mm)
        if isinstance(img, MetaTensor) and img.meta.get("pixel_spacing_mm") is not None:
            return read_spacing_mm(img.meta["pixel_spacing_mm"])
        raise ValueError(
            f"the pixel spacing of the image of shape {tuple(img.shape)} is unknown: pass pixel_spacing_mm "
            "or give a MetaTensor with meta['pixel_spacing_mm'] = (row, col) in mm."
        )

    def factors(self, spacing_mm: tuple[float, float]) -> tuple[float, float]:
        """``(rows, columns)`` resampling factors, 1.0 where within tolerance."""
        out = []
        for have, want in zip(spacing_mm, self.target_spacing_mm, strict=True):
            f = have / want
            out.append(1.0 if abs(f - 1.0) <= self.tolerance else f)
        return out[0], out[1]

    def resample(
        self, img: NdarrayOrTensor, spacing_mm: tuple[float, float]
    ) -> tuple[NdarrayOrTensor, FrameRecord]:
        """Resample ``img`` of ``spacing_mm`` to the target; return it and the step record."""
        check_image(img)
        fy, fx = self.factors(spacing_mm)
        out, step = resample_image(img, fy, fx)
        # NaN/inf propagate through the resampling: check the smaller of input and output
        smaller = out if out.shape[1] * out.shape[2] <= img.shape[1] * img.shape[2] else img
        check_finite(smaller, name=f"image of shape {tuple(img.shape)}")
        if isinstance(out, MetaTensor) and out is not img:
            update_meta(
                out, step, {"pixel_spacing_mm": (spacing_mm[0] * step.scale_y, spacing_mm[1] * step.scale_x)}
            )
        return out, step

    def __call__(
        self,
        img: NdarrayOrTensor,
        boxes: NdarrayOrTensor | None = None,
        frame: FrameRecord | None = None,
        pixel_spacing_mm: Any = None,
    ) -> tuple[NdarrayOrTensor, NdarrayOrTensor | None, FrameRecord]:
        h, w = check_image(img)
        if boxes is not None:
            boxes = as_boxes(boxes)
            check_boxes(boxes, (h, w))
        out, step = self.resample(img, self.input_spacing(img, pixel_spacing_mm))
        frame = frame if frame is not None else FrameRecord.identity(h, w)
        boxes_out = None
        if boxes is not None:
            boxes_out = _clip_to(map_boxes(boxes, step.inverse()), out.shape[1:])
        return out, boxes_out, frame.compose(step)


class ResampleToSpacingd(FrameStepd):
    """Dictionary version of :class:`ResampleToSpacing` (invertible: the inverse resizes back).

    The input spacing is ``d[pixel_spacing_key]`` if present (a datalist entry), else the
    reference image's ``meta["pixel_spacing_mm"]``; ``d[pixel_spacing_key]`` is updated to the
    achieved spacing when it was given.

    Args:
        image_keys: keys of the ``(C, H, W)`` images.
        box_keys: keys of ``(N, 4)`` boxes ``(row1, col1, row2, col2)`` (MONAI's order), pixels.
        box_ref_image_keys: the image the boxes belong to.
        target_spacing_mm, tolerance: see :class:`ResampleToSpacing`.
        pixel_spacing_key: data key with ``(row, col)`` spacing in mm (``None``: use meta only).
        frame_key: key of the travelling frame record.
        allow_missing_keys: don't raise if a key is missing.

    Example:
        .. code-block:: python

            t = ResampleToSpacingd("image", "box", target_spacing_mm=0.28)
            out = t({"image": np.zeros((1, 4096, 3328), np.float32), "box": [[400, 800, 440, 840]],
                     "pixel_spacing_mm": (0.07, 0.07)})
            out["image"].shape, out["box"]  # (1, 1024, 832), [[100, 200, 110, 210]]
    """

    def __init__(
        self,
        image_keys: KeysCollection,
        box_keys: KeysCollection = (),
        box_ref_image_keys: str | None = None,
        target_spacing_mm: float | Sequence[float] = 0.07,
        tolerance: float = 1e-3,
        pixel_spacing_key: str | None = "pixel_spacing_mm",
        frame_key: str = "frame",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(image_keys, box_keys, box_ref_image_keys, frame_key, allow_missing_keys)
        self.resampler = ResampleToSpacing(target_spacing_mm, tolerance)
        self.pixel_spacing_key = pixel_spacing_key

    def plan(self, data: Mapping[Hashable, Any], ref_image: NdarrayOrTensor, boxes: list[np.ndarray]) -> Any:
        given = data.get(self.pixel_spacing_key) if self.pixel_spacing_key is not None else None
        return self.resampler.input_spacing(ref_image, given)

    def apply_image(self, img: NdarrayOrTensor, plan: Any) -> tuple[NdarrayOrTensor, FrameRecord]:
        return self.resampler.resample(img, plan)

    def finalize(self, data: dict[Hashable, Any], plan: Any, step: FrameRecord) -> None:
        if self.pixel_spacing_key is not None and data.get(self.pixel_spacing_key) is not None:
            data[self.pixel_spacing_key] = (plan[0] * abs(step.scale_y), plan[1] * abs(step.scale_x))

    def unfinalize(self, data: dict[Hashable, Any], step: FrameRecord) -> None:
        if self.pixel_spacing_key is not None and data.get(self.pixel_spacing_key) is not None:
            sp_row, sp_col = read_spacing_mm(data[self.pixel_spacing_key])
            data[self.pixel_spacing_key] = (sp_row / abs(step.scale_y), sp_col / abs(step.scale_x))

    def invert_image(
        self, img: NdarrayOrTensor, step: FrameRecord, info: Mapping[str, Any]
    ) -> NdarrayOrTensor:
        h, w = (int(v) for v in info["in_size"])
        if (h, w) == tuple(img.shape[1:]) and step.scale_x == 1.0 and step.scale_y == 1.0:
            return img
        return update_meta(_resize_to(img, (h, w)), step.inverse(h, w))


# -- the scale pyramid ---------------------------------------------------------------------------
class ScaleLevel(NamedTuple):
    """One pyramid level: image ``(C, H, W)``, boxes ``(N, 4)`` ``(row1, col1, row2, col2)`` (MONAI's order)
    in this level's pixels (``None`` if none given), the level's
    :class:`~monai_smalldet.transforms.frames.FrameRecord`, the factor and the level index.

    Example:
        .. code-block:: python

            level = ScalePyramid()(img)[1]
            level.scale, level.level, level.frame.scale_x  # 0.5, 1, 2.0
    """

    image: Any
    boxes: Any
    frame: FrameRecord
    scale: float
    level: int


def _check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(s) for s in ensure_tuple(scales))
    if not values:
        raise ValueError("scales must name at least one factor, got an empty sequence.")
    if any(not (math.isfinite(s) and s > 0) for s in values):
        raise ValueError(f"scales must be positive finite factors, got {values}.")
    if len(set(values)) != len(values):
        raise ValueError(f"scales must be distinct, got {values}.")
    return values


class ScalePyramid(Transform):
    """Make the multi-scale pyramid of a ``(C, H, W)`` image; boxes rescaled per level.

    Levels are computed from the largest factor down; a level whose factor is ``1 / k`` of an
    already computed level (0.25 from 0.5) is a block mean of it, so the default
    ``(1.0, 0.5, 0.25)`` costs one pass over the full image plus one over the 0.5X level.
    The 1.0 level is the input itself (no copy). A block-mean level has ``ceil(H / k)`` rows,
    its last partial block averaging the pixels it has (``CropBreast`` rounds the crop to a
    multiple of 4 so that the default levels take the fast, whole-block path).
    NaN/inf in the input are detected on the coarsest level (one cheap reduction). Boxes are
    ``(N, 4)`` ``(row1, col1, row2, col2)`` (MONAI's order), continuous pixels, mapped to each level with
    the exact size ratio.

    Args:
        scales: the factors, any positive values (> 1 upsamples bilinearly); output order
            follows this sequence. Default: the paper's ``(1.0, 0.5, 0.25)``.

    Returns (``__call__``):
        a list of :class:`ScaleLevel` ``(image, boxes, frame, scale, level)`` in ``scales`` order.
        Each level's frame record maps its pixels to the original image (composed onto
        ``frame``); a MetaTensor level carries ``meta["pyramid_scale"]``,
        ``meta["pyramid_level"]`` and updated ``pixel_spacing_mm``/``affine``.

    Example:
        .. code-block:: python

            levels = ScalePyramid()(np.zeros((1, 4096, 3328), np.float32), boxes=np.array([[400., 800., 440., 840.]]))
            [lv.image.shape for lv in levels]  # [(1, 4096, 3328), (1, 2048, 1664), (1, 1024, 832)]
            levels[2].boxes  # [[100., 200., 110., 210.]]
    """

    def __init__(self, scales: Sequence[float] = DEFAULT_SCALES) -> None:
        self.scales = _check_scales(scales)

    def build(self, img: NdarrayOrTensor) -> list[tuple[NdarrayOrTensor, FrameRecord]]:
        """The level images and their step records (level pixels -> input pixels), in ``scales`` order."""
        h, w = check_image(img)
        done: dict[float, tuple[NdarrayOrTensor, FrameRecord]] = {}
        for s in sorted(self.scales, reverse=True):
            source, source_step, rel = img, FrameRecord.identity(h, w), s
            for s_prev in sorted(done):  # smallest computed level of which s is 1/k
                if downscale_factor_is_integer(s / s_prev):
                    source, source_step = done[s_prev]
                    rel = s / s_prev
                    break
            out, step = resample_image(source, rel, rel)
            full_step = source_step.compose(step)
            full_step = FrameRecord(*full_step[:4], h, w)
            done[s] = (out, full_step)
        coarsest = done[min(done)][0]
        check_finite(coarsest, name=f"image of shape {tuple(img.shape)} (seen at scale {min(done)})")
        result = []
        for level, s in enumerate(self.scales):
            out, step = done[s]
            if isinstance(out, MetaTensor):
                if out is img:
                    out = convert_to_dst_type(to_torch(img), dst=img)[0]  # same pixels, own meta
                else:
                    update_meta(out, FrameRecord(*step[:4]))
                out.meta["pyramid_scale"] = s
                out.meta["pyramid_level"] = level
            result.append((out, step))
        return result

    def __call__(
        self, img: NdarrayOrTensor, boxes: NdarrayOrTensor | None = None, frame: FrameRecord | None = None
    ) -> list[ScaleLevel]:
        h, w = check_image(img)
        if boxes is not None:
            boxes = as_boxes(boxes)
            check_boxes(boxes, (h, w))
        frame = frame if frame is not None else FrameRecord.identity(h, w)
        levels = []
        for level, ((out, step), s) in enumerate(zip(self.build(img), self.scales, strict=True)):
            b = None
            if boxes is not None:
                b = _clip_to(map_boxes(boxes, step.inverse()), out.shape[1:])
            levels.append(ScaleLevel(out, b, frame.compose(step), s, level))
        return levels


class ScalePyramidd(MapTransform, InvertibleTransform):
    """Dictionary version of :class:`ScalePyramid` (invertible).

    For every image key ``k`` writes ``k_scale0``, ``k_scale1``, ... (level order = ``scales``);
    for every box key ``b`` writes ``b_scale<i>`` (``(N, 4)`` ``(row1, col1, row2, col2)``, MONAI's order,
    in level-``i`` pixels); writes the frame record of each level to ``<frame_key>_scale<i>``
    and the factors to ``scales_key``. Labels are unchanged (no box is dropped). The input keys
    are removed unless ``keep_input=True``. :meth:`inverse` rebuilds the input keys from level 0
    (resized back when its factor is not 1) and removes the level keys.

    Args:
        image_keys: keys of the ``(C, H, W)`` images.
        box_keys: keys of ``(N, 4)`` boxes.
        box_ref_image_keys: the image the boxes belong to (default: first image key).
        scales: pyramid factors (default ``(1.0, 0.5, 0.25)``).
        frame_key: key of the travelling frame record.
        scales_key: where the factors are stored.
        keep_input: keep the input image/box keys next to the levels.
        allow_missing_keys: don't raise if a key is missing.

    Example:
        .. code-block:: python

            out = ScalePyramidd("image", "box")({"image": img, "box": boxes})
            out["image_scale2"].shape, out["box_scale2"], out["frame_scale2"], out["pyramid_scales"]
    """

    def __init__(
        self,
        image_keys: KeysCollection,
        box_keys: KeysCollection = (),
        box_ref_image_keys: str | None = None,
        scales: Sequence[float] = DEFAULT_SCALES,
        frame_key: str = "frame",
        scales_key: str = "pyramid_scales",
        keep_input: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        self.image_keys = ensure_tuple(image_keys)
        self.box_keys = ensure_tuple(box_keys) if box_keys is not None else ()
        if not self.image_keys:
            raise ValueError("at least one image key is required.")
        super().__init__(self.image_keys + self.box_keys, allow_missing_keys)
        self.box_ref_image_keys = box_ref_image_keys if box_ref_image_keys is not None else self.image_keys[0]
        self.pyramid = ScalePyramid(scales)
        self.frame_key = frame_key
        self.scales_key = scales_key
        self.keep_input = keep_input

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref_key = self.box_ref_image_keys
        if ref_key not in d:
            if self.allow_missing_keys:
                return d
            raise ValueError(f"reference image key {ref_key!r} is missing; keys present: {list(d.keys())}.")
        ref_size = check_image(d[ref_key], name=f"image {ref_key!r}")
        frame = frame_of(d, self.frame_key, ref_size)
        steps: list[FrameRecord] | None = None
        sizes: list[tuple] = []
        image_keys, box_keys = self._present(d, self.image_keys), self._present(d, self.box_keys)
        for key in image_keys:
            in_size = check_image(d[key], name=f"image {key!r}")
            built = self.pyramid.build(d[key])
            for level, (out, _) in enumerate(built):
                d[pyramid_key(key, level)] = out
            if key == ref_key or steps is None:
                steps = [step for _, step in built]
                sizes = [tuple(out.shape[1:]) for out, _ in built]
            levels0 = pyramid_key(key, 0)
            self.push_transform(
                d,
                levels0,
                extra_info={
                    "step": [float(v) for v in built[0][1]],
                    "in_size": list(in_size),
                    "type": "image_key",
                },
            )
            if not self.keep_input:
                del d[key]
        if steps is None:
            built = self.pyramid.build(d[ref_key])
            steps, sizes = [step for _, step in built], [tuple(out.shape[1:]) for out, _ in built]
        for key in box_keys:
            boxes = as_boxes(d[key], name=f"boxes {key!r}")
            check_boxes(boxes, ref_size, name=f"boxes {key!r}")
            for level, (step, size) in enumerate(zip(steps, sizes, strict=True)):
                d[pyramid_key(key, level)] = _clip_to(map_boxes(boxes, step.inverse()), size)
            self.push_transform(
                d, pyramid_key(key, 0), extra_info={"step": [float(v) for v in steps[0]], "type": "box_key"}
            )
            if not self.keep_input:
                del d[key]
        for level, step in enumerate(steps):
            d[pyramid_key(self.frame_key, level)] = frame.compose(step)
        d[self.scales_key] = list(self.pyramid.scales)
        return d

    def _present(self, d: Mapping[Hashable, Any], keys: tuple) -> list:
        missing = [k for k in keys if k not in d]
        if missing and not self.allow_missing_keys:
            raise ValueError(
                f"keys {missing} are missing and allow_missing_keys=False; keys present: {list(d.keys())}."
            )
        return [k for k in keys if k in d]

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        n = len(self.pyramid.scales)
        frame_step: FrameRecord | None = None
        for key in (*self.image_keys, *self.box_keys):
            key0 = pyramid_key(key, 0)
            if key0 not in d:
                if self.allow_missing_keys:
                    continue
                raise ValueError(f"pyramid level key {key0!r} is missing; keys present: {list(d.keys())}.")
            xform = self.pop_transform(d, key0)
            info = xform[TraceKeys.EXTRA_INFO]
            step = FrameRecord.from_any(info["step"])
            if info.get("type") == "box_key":
                d[key] = map_boxes(as_boxes(d[key0]), step)
            else:
                h, w = (int(v) for v in info["in_size"])
                img = d[key0]
                if tuple(img.shape[1:]) != (h, w):
                    img = update_meta(_resize_to(img, (h, w)), step.inverse(h, w))
                if isinstance(img, MetaTensor):
                    img.meta.pop("pyramid_scale", None)
                    img.meta.pop("pyramid_level", None)
                d[key] = img
                if frame_step is None or key == self.box_ref_image_keys:
                    frame_step = step
            for level in range(n):
                d.pop(pyramid_key(key, level), None)
                d.pop(f"{pyramid_key(key, level)}{TraceKeys.KEY_SUFFIX}", None)
        frame0 = d.get(pyramid_key(self.frame_key, 0))
        if frame0 is not None and frame_step is not None:
            current = FrameRecord.from_any(frame0)
            d[self.frame_key] = current.compose(frame_step.inverse(current.height_px, current.width_px))
        for level in range(n):
            d.pop(pyramid_key(self.frame_key, level), None)
        d.pop(self.scales_key, None)
        return d


# -- resolution degradation (ablation) -----------------------------------------------------------
class DegradeResolution(Transform):
    """Downsample a ``(C, H, W)`` image by ``factor`` and upsample it back to its size.

    The paper's resolution ablation (crops from true full resolution vs. upsampled low
    resolution): detail finer than ``1 / factor`` pixels is lost while the geometry is
    unchanged, so boxes and frame records stay valid as they
    are. Down: anti-aliased bilinear to ``round(H * factor)``; up: bilinear to ``(H, W)``
    (both with ``align_corners=False``, so the composition maps every point to itself).

    Args:
        factor: downsampling factor in ``(0, 1]`` (``1``: no change).

    Example:
        .. code-block:: python

            low = DegradeResolution(0.25)(img)  # same shape as img, 4x less detail
    """

    def __init__(self, factor: float = 0.25) -> None:
        if not 0.0 < factor <= 1.0:
            raise ValueError(f"factor must be in (0, 1], got {factor}.")
        self.factor = float(factor)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        h, w = check_image(img)
        if self.factor == 1.0:
            return img
        low, _ = resample_image(img, self.factor, self.factor, mode="interpolate")
        return _resize_to(low, (h, w))


class DegradeResolutiond(MapTransform):
    """Dictionary version of :class:`DegradeResolution` on ``keys``.

    Boxes and frame records need no change.

    Example:
        .. code-block:: python

            DegradeResolutiond(keys="image", factor=0.5)({"image": img})["image"].shape == img.shape
    """

    def __init__(self, keys: KeysCollection, factor: float = 0.25, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.degrader = DegradeResolution(factor)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.degrader(d[key])
        return d
