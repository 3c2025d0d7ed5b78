"""The :class:`Fusion` interface and the name -> class registry (:func:`get_fusion`, :func:`register_fusion`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from .detections import (
    Detections,
    ScaleInput,
    _check_image_size,
    _clip_boxes,
    _scale_detections,
)


class Fusion(ABC):
    """Fuses the detections of several pyramid scales into one set of boxes.

    Call it with one entry per scale (index ``s`` = scale ``s``; an empty scale is an empty
    entry, never left out) and the original image size ``(H, W)``; it returns
    :class:`Detections` sorted by descending score, with boxes clipped to the image and
    ``scales`` of shape (n, S) saying which scales found each box (at least one each).

    Subclasses implement :meth:`fuse`; :meth:`__call__` converts and checks the inputs once
    (numpy/torch -> float32/int64, boxes clipped to the image, boxes empty after clipping
    dropped) and clips and sorts the result.
    """

    #: The name this class is registered under (set by :func:`register_fusion`).
    name: ClassVar[str] = ""

    def __call__(self, per_scale: Sequence[ScaleInput], image_size_hw: tuple[int, int]) -> Detections:
        """Fuse ``per_scale`` (one entry per scale) on an image of size ``image_size_hw = (H, W)``."""
        size = _check_image_size(image_size_hw)
        num_scales = len(per_scale)
        if num_scales == 0:
            raise ValueError("per_scale must hold one entry per scale, got none.")
        scale_dets = [_scale_detections(item, s, num_scales, size) for s, item in enumerate(per_scale)]
        fused = self.fuse(scale_dets, size)
        if fused.num_scales != num_scales:
            raise ValueError(
                f"{type(self).__name__}.fuse returned {fused.num_scales} scale columns, expected {num_scales}."
            )
        return Detections(_clip_boxes(fused.boxes, size), fused.scores, fused.labels, fused.scales).sorted()

    @abstractmethod
    def fuse(self, per_scale: list[Detections], image_size_hw: tuple[int, int]) -> Detections:
        """Fuse clean per-scale detections.

        Args:
            per_scale: one :class:`Detections` per scale, boxes inside the image and of
                positive area, ``scales`` of shape (n, S) with column ``s`` set for scale ``s``.
            image_size_hw: ``(H, W)`` of the original image.

        Returns:
            The fused detections, ``scales`` of shape (m, S); need not be sorted or clipped.
        """

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


#: Registered fusions, name -> class (``"wbf"``, ``"nms"``, ``"soft_nms"``, ``"concat"``, ...).
FUSIONS: dict[str, type[Fusion]] = {}

_FusionT = TypeVar("_FusionT", bound=type[Fusion])


def register_fusion(name: str) -> Callable[[_FusionT], _FusionT]:
    """Class decorator: register a :class:`Fusion` subclass under ``name`` for :func:`get_fusion`.

    Example:
        .. code-block:: python

            @register_fusion("keep_best")
            class KeepBest(Fusion):
                def fuse(self, per_scale, image_size_hw):
                    ...

            get_fusion("keep_best")
    """

    def decorator(cls: _FusionT) -> _FusionT:
        if not (isinstance(cls, type) and issubclass(cls, Fusion)):
            raise TypeError(f"@register_fusion({name!r}) needs a Fusion subclass, got {cls!r}.")
        if name in FUSIONS and FUSIONS[name] is not cls:
            raise ValueError(f"A fusion is already registered as {name!r}: {FUSIONS[name].__name__}.")
        cls.name = name
        FUSIONS[name] = cls
        return cls

    return decorator


def get_fusion(name: str, **kwargs: Any) -> Fusion:
    """The fusion registered as ``name``, built with ``kwargs`` (e.g. ``get_fusion("wbf", iou_thr=0.6)``).

    Raises:
        ValueError: when no fusion is registered under ``name``; the message lists the known names.
    """
    try:
        cls = FUSIONS[name]
    except KeyError:
        raise ValueError(f"Unknown fusion {name!r}; known fusions: {', '.join(sorted(FUSIONS))}.") from None
    return cls(**kwargs)
