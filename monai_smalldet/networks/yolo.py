"""Build YOLOv5 networks from ultralytics' bundled model definitions, offline.

Grayscale mammograms enter through a 1-channel stem (``in_channels=1``): no ImageNet weights
are ever loaded (nothing is downloaded), so repeating the channel three times would only
triple the cost of the first convolution.
"""

from __future__ import annotations

import contextlib
import io
import logging

import torch

from ..runtime import configure_ultralytics_settings

__all__ = ["VARIANTS", "build_network"]

VARIANTS: tuple[str, ...] = ("n", "s", "m", "l", "x")


def build_network(variant: str = "n", num_classes: int = 1, in_channels: int = 1) -> torch.nn.Module:
    """Return a randomly initialised YOLOv5 ``DetectionModel`` (anchor-free "YOLOv5u" head).

    Args:
        variant: model scale, one of ``n``, ``s``, ``m``, ``l``, ``x``.
        num_classes: number of object classes.
        in_channels: image channels (1 for mammograms).

    Example:
        >>> net = build_network("n", num_classes=1)
        >>> sum(p.numel() for p in net.parameters()) > 1e6
        True
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}.")
    configure_ultralytics_settings()
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)  # "Overriding model.yaml nc=80 with nc=1" is expected, not news
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return DetectionModel(cfg=f"yolov5{variant}.yaml", ch=in_channels, nc=num_classes, verbose=False)
    finally:
        LOGGER.setLevel(level)
