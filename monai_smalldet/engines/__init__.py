"""MONAI engines for the bundle: tile-based training, whole-image FROC validation, handlers.

:class:`DetectionTrainer` and :class:`DetectionEvaluator` are ``monai.engines`` subclasses
(``SupervisedTrainer`` / ``SupervisedEvaluator``), configured from ``bundle/configs/*.yaml``.
"""

from __future__ import annotations

from .data import ensure_synthetic_dataset
from .detect import run_detect
from .evaluator import DetectionEvaluator, froc_metrics, whole_image_collate
from .handlers import (
    EpochSummaryHandler,
    FROCReportHandler,
    PreciseBNHandler,
    SpecCheckpointSaver,
    TimeLimitHandler,
    TrainingInfoHandler,
)
from .trainer import (
    DetectionTrainer,
    denormals_are_flushed,
    detection_collate,
    flush_denormals,
    warmup_cosine_lambda,
    yolo_param_groups,
)

__all__ = [
    "DetectionEvaluator",
    "DetectionTrainer",
    "EpochSummaryHandler",
    "FROCReportHandler",
    "PreciseBNHandler",
    "SpecCheckpointSaver",
    "TimeLimitHandler",
    "TrainingInfoHandler",
    "denormals_are_flushed",
    "detection_collate",
    "ensure_synthetic_dataset",
    "flush_denormals",
    "froc_metrics",
    "run_detect",
    "warmup_cosine_lambda",
    "whole_image_collate",
    "yolo_param_groups",
]
