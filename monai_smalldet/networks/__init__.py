"""The detector network: YOLOv5 (CSPDarknet + PANet + YOLO head) from ultralytics.

This subpackage is the only door to ultralytics in the project; it runs offline (see
:mod:`monai_smalldet.runtime`) and knows nothing of data or transforms.
"""

from __future__ import annotations

from .backends import (
    BACKENDS,
    PRECISIONS,
    NetworkRunner,
    cpu_supports_bf16,
    head_output_only,
    resolve_precision,
)
from .checkpoint import (
    CheckpointError,
    NetworkSpec,
    load_checkpoint,
    load_weights,
    read_spec,
    save_checkpoint,
    write_spec,
)
from .decode import decode
from .ema import WeightEMA
from .loss import DetectionLoss
from .yolo import VARIANTS, build_network

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "NetworkRunner",
    "cpu_supports_bf16",
    "head_output_only",
    "resolve_precision",
    "VARIANTS",
    "WeightEMA",
    "CheckpointError",
    "DetectionLoss",
    "NetworkSpec",
    "build_network",
    "decode",
    "load_checkpoint",
    "load_weights",
    "read_spec",
    "save_checkpoint",
    "write_spec",
]
