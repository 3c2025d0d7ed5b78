"""MONAI engines for the bundle: tile-based training, whole-image FROC validation, handlers.

:class:`DetectionTrainer` and :class:`DetectionEvaluator` are ``monai.engines`` subclasses
(``SupervisedTrainer`` / ``SupervisedEvaluator``), configured from ``bundle/configs/*.yaml``.
"""

from __future__ import annotations

from .calibrate import (
    FUSION_CANDIDATES,
    Calibration,
    calibrate_checkpoint,
    calibrate_outputs,
    threshold_at_fpi,
)
from .data import ensure_synthetic_dataset
from .detect import run_detect
from .evaluator import DetectionEvaluator, froc_metrics, whole_image_collate
from .handlers import (
    EMAHandler,
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
    "FUSION_CANDIDATES",
    "Calibration",
    "DetectionEvaluator",
    "DetectionTrainer",
    "EMAHandler",
    "EpochSummaryHandler",
    "FROCReportHandler",
    "PreciseBNHandler",
    "SpecCheckpointSaver",
    "TimeLimitHandler",
    "TrainingInfoHandler",
    "calibrate_checkpoint",
    "calibrate_outputs",
    "denormals_are_flushed",
    "detection_collate",
    "ensure_synthetic_dataset",
    "flush_denormals",
    "froc_metrics",
    "run_detect",
    "threshold_at_fpi",
    "warmup_cosine_lambda",
    "whole_image_collate",
    "yolo_param_groups",
]
