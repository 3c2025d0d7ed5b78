"""Shared low-level helpers of the geometric transforms: input checks, resizing, metadata.

Nothing here moves a box by itself: every box change goes through
:func:`monai_smalldet.transforms.frames.map_boxes` with a
:class:`~monai_smalldet.transforms.frames.FrameRecord`. The helpers below check inputs
(raising :class:`ValueError` that name the problem and the shape), resample images in a way
whose geometry is exactly one :class:`FrameRecord`, and keep MONAI ``MetaTensor`` metadata
(``affine``, ``pixel_spacing_mm``) in step with the pixels.

Conventions: images ``(C, H, W)`` (channels, rows, columns); boxes ``(N, 4)`` in MONAI's
spatial order ``(row1, col1, row2, col2)`` (:data:`~monai_smalldet.transforms.frames.BOX_ORDER`),
continuous pixel coordinates (pixel ``i`` spans ``[i, i + 1)``).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.transforms.inverse import InvertibleTransform
from monai.utils import convert_data_type, convert_to_dst_type, ensure_tuple
from monai.utils.enums import TraceKeys

from ..spacing import SpacingError, read_spacing_mm
from .frames import FrameRecord, map_boxes

__all__ = [
    "BOX_TOLERANCE_PX",
    "FrameStepd",
    "SpacingError",
    "as_boxes",
    "check_boxes",
    "check_finite",
    "check_image",
    "downscale_factor_is_integer",
    "frame_of",
    "read_spacing_mm",
    "resample_image",
    "to_numpy_view",
    "to_torch",
    "update_meta",
]

BOX_TOLERANCE_PX: float = 0.01
"""How far (pixels) a box may stick out of its image before it is an error (float round-off)."""


def check_image(img: Any, name: str = "image") -> tuple[int, int]:
    """Check that ``img`` is a non-empty channel-first 2D image ``(C, H, W)``; return ``(H, W)``.

    Raises:
        ValueError: wrong type, wrong rank or an empty dimension, naming the shape.
    """
    if not isinstance(img, np.ndarray | torch.Tensor):
        raise ValueError(f"{name} must be a numpy array or torch tensor (C, H, W), got {type(img).__name__}.")
    if img.ndim != 3:
        raise ValueError(
            f"{name} must be channel-first (C, H, W) with rank 3, got rank {img.ndim} and shape {tuple(img.shape)}."
        )
    if min(img.shape) == 0:
        raise ValueError(f"{name} is empty: shape {tuple(img.shape)} (C, H, W) has a zero-sized dimension.")
    return int(img.shape[1]), int(img.shape[2])


def check_finite(img: NdarrayOrTensor, name: str = "image") -> None:
    """Raise :class:`ValueError` if ``img`` holds NaN or inf (one reduction pass over the pixels)."""
    a = to_numpy_view(img)
    if a is None:
        t = to_torch(img)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} of shape {tuple(img.shape)} contains NaN or inf values.")
        return
    if not np.issubdtype(a.dtype, np.floating):
        return
    with np.errstate(over="ignore", invalid="ignore"):
        if math.isfinite(float(a.sum())):
            return
    n_nan, n_inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    if n_nan or n_inf:
        raise ValueError(f"{name} of shape {tuple(img.shape)} contains {n_nan} NaN and {n_inf} inf values.")


def to_numpy_view(img: NdarrayOrTensor) -> np.ndarray | None:
    """A numpy view of a CPU image (no copy), or ``None`` for a tensor on another device.

    Reductions, strided subsampling, flips and block means run in numpy on CPU: single-threaded,
    they are as fast as torch's two threads on an idle 2-core machine and several times faster
    when the cores are shared.
    """
    if isinstance(img, np.ndarray):
        return img
    t = img.as_tensor() if isinstance(img, MetaTensor) else img
    if t.device.type != "cpu" or t.requires_grad:
        return None
    return t.numpy()


def to_torch(img: NdarrayOrTensor) -> torch.Tensor:
    """A plain ``torch.Tensor`` view of ``img`` (no copy for numpy or MetaTensor input)."""
    if isinstance(img, MetaTensor):
        return img.as_tensor()
    if isinstance(img, torch.Tensor):
        return img
    arr = np.asarray(img)
    if arr.dtype.byteorder not in ("=", "|") or not arr.flags.writeable or any(st < 0 for st in arr.strides):
        arr = np.array(arr, dtype=arr.dtype.newbyteorder("="))  # native, writable, positive strides
    if arr.dtype == np.uint16:  # torch has limited uint16 support
        return torch.from_numpy(arr.astype(np.int32))
    return torch.from_numpy(arr)


def as_boxes(boxes: Any, name: str = "boxes") -> NdarrayOrTensor:
    """Accept boxes as an array/tensor or a (nested) list as in a datalist; return ``(N, 4)``.

    Lists become float32 numpy arrays; an empty list becomes ``(0, 4)``.
    """
    if isinstance(boxes, np.ndarray | torch.Tensor):
        out = boxes
    else:
        out = np.asarray(boxes, dtype=np.float32)
    if out.ndim == 1 and out.shape[0] == 0:
        out = out.reshape(0, 4)
    if out.ndim != 2 or out.shape[1] != 4:
        raise ValueError(
            f"{name} must have shape (N, 4) (row1, col1, row2, col2), got shape {tuple(out.shape)}."
        )
    return out


def check_boxes(boxes: NdarrayOrTensor, spatial_size: Sequence[int], name: str = "boxes") -> np.ndarray:
    """Check ``(N, 4)`` boxes ``(row1, col1, row2, col2)`` (MONAI's order) against an image of ``(H, W)``.

    Returns the boxes as a float64 numpy array.

    Raises:
        ValueError: wrong shape, NaN/inf, ``row2 < row1`` or ``col2 < col1``, or a box outside
            ``[0, H] x [0, W]`` (by more than :data:`BOX_TOLERANCE_PX`), naming the shapes.
    """
    b = np.asarray(convert_data_type(boxes, np.ndarray)[0], dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(
            f"{name} must have shape (N, 4) (row1, col1, row2, col2), got shape {tuple(b.shape)}."
        )
    if b.shape[0] == 0:
        return b
    if not np.isfinite(b).all():
        raise ValueError(f"{name} of shape {tuple(b.shape)} contain NaN or inf values.")
    if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        bad = np.flatnonzero((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))
        raise ValueError(
            f"{name} must satisfy row2 >= row1 and col2 >= col1 (MONAI's order); rows {bad.tolist()} do not."
        )
    h, w = int(spatial_size[0]), int(spatial_size[1])
    tol = BOX_TOLERANCE_PX
    outside = (b[:, 0] < -tol) | (b[:, 1] < -tol) | (b[:, 2] > h + tol) | (b[:, 3] > w + tol)
    if outside.any():
        rows = np.flatnonzero(outside)
        raise ValueError(
            f"{name} rows {rows.tolist()} lie outside the image of (H, W) = ({h}, {w}) "
            f"(boxes are row1, col1, row2, col2, MONAI's order; datalist boxes x1, y1, x2, y2 enter "
            f"through BoxesToSpatialOrderd): {b[rows].tolist()}."
        )
    return b


def frame_of(data: Mapping[Hashable, Any], frame_key: Hashable, spatial_size: Sequence[int]) -> FrameRecord:
    """The :class:`FrameRecord` travelling under ``frame_key``; identity of ``spatial_size`` if absent."""
    record = data.get(frame_key)
    if record is None:
        return FrameRecord.identity(int(spatial_size[0]), int(spatial_size[1]))
    return record if isinstance(record, FrameRecord) else FrameRecord.from_any(record)


def downscale_factor_is_integer(factor: float, tol: float = 1e-6) -> int:
    """``k`` if ``factor`` is ``1 / k`` for an integer ``k >= 1`` (within ``tol``), else ``0``."""
    if factor <= 0 or factor > 1 + tol:
        return 0
    k = round(1.0 / factor)
    return int(k) if k >= 1 and abs(1.0 / k - factor) <= tol * factor else 0


def _block_mean(t: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over non-overlapping ``k x k`` blocks of ``(C, H, W)``; output ``ceil(H / k) x ceil(W / k)``.

    A last, partial block (``H % k`` rows or ``W % k`` columns) is the mean of the pixels it
    has, so no pixel is lost. Sizes divisible by a power-of-two ``k`` use strided adds (fast on
    views); others ``avg_pool2d(ceil_mode=True)``.
    """
    if k == 1:
        return t
    h, w = t.shape[-2], t.shape[-1]
    if k & (k - 1) == 0 and h % k == 0 and w % k == 0:
        # numpy (one thread) on CPU: as fast as torch on an idle machine, far steadier under load
        out = t.numpy() if t.device.type == "cpu" and not t.requires_grad else t
        while k > 1:
            acc = out[..., 0::2, 0::2] + out[..., 1::2, 0::2]
            acc += out[..., 0::2, 1::2]
            acc += out[..., 1::2, 1::2]
            acc *= 0.25
            out = acc
            k //= 2
        return torch.from_numpy(out) if isinstance(out, np.ndarray) else out
    return F.avg_pool2d(t.unsqueeze(0), kernel_size=k, stride=k, ceil_mode=True).squeeze(0)


def resample_image(
    img: NdarrayOrTensor, factor_y: float, factor_x: float, mode: str = "auto"
) -> tuple[NdarrayOrTensor, FrameRecord]:
    """Resample ``(C, H, W)`` by ``factor_y`` (rows) and ``factor_x`` (columns); anti-aliased.

    * ``factor`` = ``1 / k`` with integer ``k`` on both axes (``mode="auto"``): exact block mean
      (box filter, i.e. area interpolation) over ``k x k`` pixels; output
      ``(ceil(H / k), ceil(W / k))``, a last partial block averages the pixels it has. One
      output pixel spans exactly ``k`` input pixels (the last one may reach past the border).
    * otherwise: ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)``
      (PIL-style triangle filter widened by the factor when downsampling, plain bilinear when
      upsampling) to ``(round(H * factor_y), round(W * factor_x))``; one output pixel spans
      ``H / H_out`` input rows, as in MONAI ``ResizeBox`` / ``ZoomBox(keep_size=False)``.

    (Their speed against MONAI ``Resize(anti_aliasing=True)``: ``benchmarks/transforms.py``.)
    Integer images are computed in float32 and cast back.

    Returns:
        the resampled image (same type as ``img``; a ``MetaTensor`` keeps its metadata, see
        :func:`update_meta`) and the step :class:`FrameRecord` (output pixels -> input pixels).

    Raises:
        ValueError: a non-positive factor, or an output with a zero-sized dimension.
    """
    h, w = check_image(img)
    if not (factor_y > 0 and factor_x > 0 and math.isfinite(factor_y) and math.isfinite(factor_x)):
        raise ValueError(
            f"resampling factors must be positive, got (rows, columns) = ({factor_y}, {factor_x})."
        )
    if factor_y == 1.0 and factor_x == 1.0:
        return img, FrameRecord.identity(h, w)
    t = to_torch(img)
    src_dtype = t.dtype
    if not t.is_floating_point():
        t = t.float()
    ky, kx = downscale_factor_is_integer(factor_y), downscale_factor_is_integer(factor_x)
    if mode == "auto" and ky and kx and ky == kx:
        out = _block_mean(t, ky)
        step = FrameRecord.scaling(float(kx), float(ky), h, w)
    else:
        out_h, out_w = round(h * factor_y), round(w * factor_x)
        if out_h == 0 or out_w == 0:
            raise ValueError(
                f"resampling (C, H, W) = {tuple(img.shape)} by (rows, columns) = ({factor_y}, {factor_x}) "
                "gives an empty image."
            )
        out = F.interpolate(
            t.unsqueeze(0), size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=True
        ).squeeze(0)
        step = FrameRecord.scaling(w / out_w, h / out_h, h, w)
    if not src_dtype.is_floating_point:
        out = out.round().to(src_dtype)
    result = convert_to_dst_type(out, dst=img)[0]
    return result, step


def update_meta(
    img_out: NdarrayOrTensor, step: FrameRecord, extra: Mapping[str, Any] | None = None
) -> NdarrayOrTensor:
    """Keep a ``MetaTensor``'s ``affine`` and ``pixel_spacing_mm`` in step with a geometric step.

    ``step`` maps the output's pixel coordinates to the input's. MONAI's affine maps pixel
    *indices* (pixel centres) in ``(row, column)`` order to world coordinates, so it is
    right-multiplied by the step written for indices (``i_in = s * (i_out + 0.5) + t - 0.5``).
    ``pixel_spacing_mm`` ``(row, col)`` is multiplied by ``|scale|``. ``extra`` entries are
    written into ``meta`` as given. Non-MetaTensor images are returned unchanged.
    """
    if not isinstance(img_out, MetaTensor):
        return img_out
    meta = img_out.meta
    affine = meta.get("affine")
    if affine is not None:
        a = convert_data_type(affine, torch.Tensor, dtype=torch.float64)[0]
        r = a.shape[-1]
        if a.ndim == 2 and r >= 3:
            m = torch.eye(r, dtype=torch.float64)
            sy, sx = step.scale_y, step.scale_x
            m[0, 0], m[0, r - 1] = sy, step.offset_y + 0.5 * sy - 0.5
            m[1, 1], m[1, r - 1] = sx, step.offset_x + 0.5 * sx - 0.5
            img_out.affine = convert_to_dst_type(a @ m, dst=affine)[0]
    spacing = meta.get("pixel_spacing_mm")
    if spacing is not None:
        sp_row, sp_col = read_spacing_mm(spacing)
        meta["pixel_spacing_mm"] = (sp_row * abs(step.scale_y), sp_col * abs(step.scale_x))
    if extra:
        meta.update(dict(extra))
    return img_out


class FrameStepd(MapTransform, InvertibleTransform):
    """Base of the dictionary transforms that apply one geometric step to images and boxes.

    A subclass plans the step on the reference image (:meth:`plan`), applies it to one image
    (:meth:`apply_image`, returning the step :class:`FrameRecord`) and undoes it
    (:meth:`invert_image`). This base then, for every sample:

    * transforms every ``image_keys`` entry and records the step with ``push_transform``
      (in ``MetaTensor.applied_operations``, or ``d["<key>_transforms"]`` for numpy input);
    * maps every ``box_keys`` entry with :func:`~monai_smalldet.transforms.frames.map_boxes`
      (the one box-mapping function) after checking it lies in the reference image;
    * composes the step onto the :class:`FrameRecord` under ``frame_key`` (created as identity
      of the reference image's size when absent), so that it maps the new frame to the
      original image.

    :meth:`inverse` uses the same recorded step: boxes go back through ``map_boxes(boxes, step)``,
    images through :meth:`invert_image`, and the frame record through ``step.inverse()``.

    Args:
        image_keys: keys of the ``(C, H, W)`` images to transform (all share one geometry).
        box_keys: keys of ``(N, 4)`` boxes ``(row1, col1, row2, col2)`` (MONAI's order), pixels (lists accepted).
        box_ref_image_keys: the single key of the image the boxes are attached to and the step
            is planned on; default: the first of ``image_keys``.
        frame_key: key of the travelling :class:`FrameRecord`.
        allow_missing_keys: don't raise if a key is missing.

    Example:
        .. code-block:: python

            class MyStepd(FrameStepd):  # a subclass implements the three hooks
                def plan(self, data, ref_image, boxes): ...
                def apply_image(self, img, plan): ...  # -> (image, FrameRecord step)
                def invert_image(self, img, step, info): ...
    """

    def __init__(
        self,
        image_keys: KeysCollection,
        box_keys: KeysCollection = (),
        box_ref_image_keys: str | None = None,
        frame_key: str = "frame",
        allow_missing_keys: bool = False,
    ) -> None:
        self.image_keys = ensure_tuple(image_keys)
        self.box_keys = ensure_tuple(box_keys) if box_keys is not None else ()
        if not self.image_keys:
            raise ValueError("at least one image key is required.")
        super().__init__(self.image_keys + self.box_keys, allow_missing_keys)
        ref = ensure_tuple(box_ref_image_keys) if box_ref_image_keys is not None else (self.image_keys[0],)
        if len(ref) != 1:
            raise ValueError(f"box_ref_image_keys must be a single key, got {ref}.")
        self.box_ref_image_keys = ref[0]
        self.frame_key = frame_key

    # -- to implement -----------------------------------------------------------------------
    def plan(self, data: Mapping[Hashable, Any], ref_image: NdarrayOrTensor, boxes: list[np.ndarray]) -> Any:
        """Decide the step from the reference image (and the boxes, already checked)."""
        raise NotImplementedError

    def apply_image(self, img: NdarrayOrTensor, plan: Any) -> tuple[NdarrayOrTensor, FrameRecord]:
        """Apply the planned step to one image; return it and the step record (output -> input)."""
        raise NotImplementedError

    def invert_image(
        self, img: NdarrayOrTensor, step: FrameRecord, info: Mapping[str, Any]
    ) -> NdarrayOrTensor:
        """Undo the step on one image (``info``: what was pushed, with ``in_size``)."""
        raise NotImplementedError

    def finalize(self, data: dict[Hashable, Any], plan: Any, step: FrameRecord) -> None:
        """Hook run at the end of :meth:`__call__` with the plan and the reference step."""

    def unfinalize(self, data: dict[Hashable, Any], step: FrameRecord) -> None:
        """Hook run at the end of :meth:`inverse` with the undone step (undo :meth:`finalize`)."""

    # -- shared machinery -------------------------------------------------------------------
    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref_key = self.box_ref_image_keys
        if ref_key not in d:
            if self.allow_missing_keys:
                return d
            raise ValueError(f"reference image key {ref_key!r} is missing; keys present: {list(d.keys())}.")
        ref = d[ref_key]
        ref_size = check_image(ref, name=f"image {ref_key!r}")
        boxes, checked = {}, []
        for key in self.box_keys:
            if key in d:
                boxes[key] = as_boxes(d[key], name=f"boxes {key!r}")
                checked.append(check_boxes(boxes[key], ref_size, name=f"boxes {key!r}"))
            elif not self.allow_missing_keys:
                raise ValueError(f"box key {key!r} is missing; keys present: {list(d.keys())}.")
        plan = self.plan(d, ref, checked)
        ref_step: FrameRecord | None = None
        ref_out_size: tuple[int, ...] = ()
        for key in self.key_iterator(d):
            if key not in self.image_keys:
                continue
            in_size = check_image(d[key], name=f"image {key!r}")
            d[key], step = self.apply_image(d[key], plan)
            if key == ref_key:
                ref_step, ref_out_size = step, tuple(d[key].shape[1:])
            self.push_transform(
                d,
                key,
                extra_info={"step": [float(v) for v in step], "in_size": list(in_size), "type": "image_key"},
            )
        if ref_step is None:  # the reference image is not among image_keys: plan its step alone
            ref_out, ref_step = self.apply_image(ref, plan)
            ref_out_size = tuple(ref_out.shape[1:])
        for key, b in boxes.items():
            d[key] = _clip_to(map_boxes(b, ref_step.inverse()), ref_out_size)
            self.push_transform(d, key, extra_info={"step": [float(v) for v in ref_step], "type": "box_key"})
        d[self.frame_key] = frame_of(d, self.frame_key, ref_size).compose(ref_step)
        self.finalize(d, plan, ref_step)
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        frame_step: FrameRecord | None = None
        for key in self.key_iterator(d):
            xform = self.get_most_recent_transform(d, key)
            info = xform[TraceKeys.EXTRA_INFO]
            step = FrameRecord.from_any(info["step"])
            if info.get("type") == "box_key":
                d[key] = map_boxes(as_boxes(d[key]), step)
                frame_step = step
            else:
                d[key] = self.invert_image(d[key], step, info)
                if frame_step is None or key == self.box_ref_image_keys:
                    frame_step = step
            self.pop_transform(d, key)
        if frame_step is not None and self.frame_key in d:
            current = FrameRecord.from_any(d[self.frame_key])
            d[self.frame_key] = current.compose(frame_step.inverse(current.height_px, current.width_px))
        if frame_step is not None:
            self.unfinalize(d, frame_step)
        return d


def _clip_to(boxes: NdarrayOrTensor, size: Sequence[float]) -> NdarrayOrTensor:
    """Clip ``(row1, col1, row2, col2)`` boxes to ``[0, H] x [0, W]`` (round-off only; nothing removed)."""
    if boxes.shape[0] == 0:
        return boxes
    b = np.asarray(convert_data_type(boxes, np.ndarray)[0], dtype=np.float64)
    b[:, [0, 2]] = b[:, [0, 2]].clip(0.0, size[0])
    b[:, [1, 3]] = b[:, [1, 3]].clip(0.0, size[1])
    return convert_to_dst_type(b, dst=boxes, dtype=boxes.dtype)[0]
