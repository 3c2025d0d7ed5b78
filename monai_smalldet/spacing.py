"""Pixel spacing: the package's one reader of "(row, column) mm" values, and its error.

Every layer that takes a spacing (the DICOM/NIfTI readers, the transforms, the detector, FROC's
mm strata) reads it with :func:`read_spacing_mm`, so a spacing is valid or rejected the same way
everywhere: one or two positive finite numbers in mm, ``(row, column)`` order (DICOM's
PixelSpacing order); one number means square pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SpacingError", "read_spacing_mm"]


class SpacingError(ValueError):
    """An image's pixel spacing is missing or is not one or two positive finite numbers (mm)."""


def read_spacing_mm(spacing: Any, pair: bool = False) -> tuple[float, float]:
    """``(row, col)`` pixel spacing in mm from a number, a pair, an array or a (collated) tensor.

    Args:
        spacing: the value.
        pair: require exactly two numbers (a DICOM PixelSpacing), no scalar.

    Raises:
        SpacingError: (a ``ValueError``) when it is not one (``pair=False``) or two positive
            finite numbers.
    """
    try:
        if spacing is None or isinstance(spacing, str | bytes):
            raise TypeError("not a number")
        if hasattr(spacing, "detach"):  # a torch tensor, without importing torch here
            spacing = spacing.detach().cpu().numpy()
        values = np.asarray(spacing, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise SpacingError(f"pixel_spacing_mm must be (row, col) in mm, got {spacing!r}.") from err
    if values.size == 1 and not pair:
        values = np.repeat(values, 2)
    if values.size != 2 or not np.isfinite(values).all() or (values <= 0).any():
        raise SpacingError(f"pixel_spacing_mm must be (row, col) positive numbers in mm, got {spacing!r}.")
    return float(values[0]), float(values[1])
