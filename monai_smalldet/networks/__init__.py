"""The detector network: YOLOv5 (CSPDarknet + PANet + YOLO head) from ultralytics.

This subpackage is the only door to ultralytics in the project; importing it first runs
:func:`monai_smalldet.runtime.configure_offline` (through the package ``__init__``) and
switches ultralytics' telemetry off.
"""

from __future__ import annotations

from .yolo import VARIANTS, build_network

__all__ = ["VARIANTS", "build_network"]
