"""What the app refuses to trust in a header, each refusal an :class:`InputRejected` with its
reason (the image fails with it; the other images go on).

- UIDs that would be copied into the reports (Study, Series, SOP Instance) must be valid DICOM
  UIDs: an invalid one would make every report that references it invalid.
- The recorded pixel spacing must lie in :data:`PLAUSIBLE_SPACING_MM` (mammography detectors
  sample at 0.05-0.1 mm, digitised film at up to ~0.2 mm; a site may widen it with
  ``MAMMO_DETECT_SPACING_RANGE_MM=low-high``): outside it the header, not the image, is most
  likely wrong, and resampling by it would invent finding sizes and work.
- The image the detector resamples to may hold at most ``max_pixels`` pixels: a header must
  not drive work without bound (a 1024 x 256 image with a 2.26 mm spacing once became 180
  tiles at 0.28 mm).
"""

from __future__ import annotations

import math
from typing import Any

from monai_smalldet.reports import valid_uid

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "PLAUSIBLE_SPACING_MM",
    "InputRejected",
    "check_geometry",
    "check_uids",
    "parse_spacing_range",
]

PLAUSIBLE_SPACING_MM = (0.02, 0.5)
#: 100 Mpx: a 0.05 mm, 24 x 30 cm detector image (29 Mpx) resampled to 0.035 mm, with room
DEFAULT_MAX_PIXELS = 100_000_000


class InputRejected(ValueError):
    """An image whose header the app does not trust; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_uids(ds: Any) -> None:
    """Raises :class:`InputRejected` naming the first invalid UID the reports would copy."""
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        value = ds.get(keyword)
        if not valid_uid(value):
            raise InputRejected(f"invalid {keyword} {str(value or '')!r} (not a DICOM UID)")


def parse_spacing_range(text: str) -> tuple[float, float]:
    """``"low-high"`` (mm) as ``(low, high)``, for ``MAMMO_DETECT_SPACING_RANGE_MM``.

    Raises:
        ValueError: not two positive numbers with low < high.
    """
    try:
        low, high = (float(v) for v in text.split("-"))
    except ValueError:
        raise ValueError(f"spacing range {text!r} is not 'low-high' in mm") from None
    if not (0 < low < high and math.isfinite(high)):
        raise ValueError(f"spacing range {text!r} must be two positive numbers, low < high")
    return low, high


def check_geometry(
    shape: tuple[int, int],
    spacing_mm: tuple[float, float] | None,
    target_spacing_mm: tuple[float, float] | None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    plausible_mm: tuple[float, float] = PLAUSIBLE_SPACING_MM,
) -> None:
    """Check a recorded spacing and the size the detector would resample ``shape`` to.

    Args:
        shape: (rows, columns) of the stored image.
        spacing_mm: the spacing the image will be read at (``None``: not resampled).
        target_spacing_mm: the detector's working spacing (``None``: no resampling).

    Raises:
        InputRejected: an implausible spacing, or more than ``max_pixels`` after resampling.
    """
    if spacing_mm is not None:
        low, high = plausible_mm
        if not all(low <= float(v) <= high for v in spacing_mm):
            raise InputRejected(
                f"implausible pixel spacing {tuple(round(float(v), 4) for v in spacing_mm)} mm for a mammogram "
                f"(outside {low}-{high} mm)"
            )
    rows, cols = shape
    if spacing_mm is not None and target_spacing_mm is not None:
        rows = math.ceil(rows * spacing_mm[0] / target_spacing_mm[0])
        cols = math.ceil(cols * spacing_mm[1] / target_spacing_mm[1])
    if rows * cols > max_pixels:
        raise InputRejected(
            f"image of {shape[0]} x {shape[1]} px would be processed at {rows} x {cols} px "
            f"({rows * cols / 1e6:.0f} Mpx), above the limit of {max_pixels / 1e6:.0f} Mpx"
        )
