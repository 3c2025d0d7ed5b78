"""MONAI Deploy app: detect small breast cancers on DICOM mammograms (see :mod:`.app`)."""

from .app import SELECTION_RULES, MammoDetectApp, main

__all__ = ["SELECTION_RULES", "MammoDetectApp", "main"]
