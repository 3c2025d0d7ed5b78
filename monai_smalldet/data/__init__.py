"""Mammogram data: DICOM MG reading/writing (and PNG/TIFF/NIfTI reading)."""

from __future__ import annotations

from .dicom import (
    DEFAULT_SPACING_MM,
    MG_IMAGE_STORAGE_FOR_PRESENTATION,
    MG_IMAGE_STORAGE_FOR_PROCESSING,
    MammogramMeta,
    MammogramReadError,
    NonMammogramWarning,
    read_mammogram,
)
from .dicom_writer import SUPPORTED_VIEWS, write_mammogram_dicom

__all__ = [
    "DEFAULT_SPACING_MM",
    "MG_IMAGE_STORAGE_FOR_PRESENTATION",
    "MG_IMAGE_STORAGE_FOR_PROCESSING",
    "SUPPORTED_VIEWS",
    "MammogramMeta",
    "MammogramReadError",
    "NonMammogramWarning",
    "read_mammogram",
    "write_mammogram_dicom",
]
