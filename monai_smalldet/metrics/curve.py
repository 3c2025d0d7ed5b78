"""FROC curve maths: the sweep over prediction scores, sensitivity read at an FPI, CPM (the rules of
:mod:`monai_smalldet.metrics.froc`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

#: FPIs reported by default (the paper's 0.1 / 0.2 / 0.3 among them).
DEFAULT_FPIS: tuple[float, ...] = (0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
#: FPIs of the CPM (LUNA16): 1/8 ... 8.
CPM_FPIS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

SensitivityMode = Literal["interpolate", "step", "first_at_or_beyond"]
_MODES = ("interpolate", "step", "first_at_or_beyond")


class UndefinedSensitivityWarning(RuntimeWarning):
    """Sensitivity was asked for over a set without lesions: it is NaN."""


def sensitivity_at_fpi(
    fpi: np.ndarray, sensitivity: np.ndarray, targets: Sequence[float] | np.ndarray, mode: SensitivityMode
) -> np.ndarray:
    """Read an FROC curve at false-positive rates ``targets``.

    Args:
        fpi: (P,) non-decreasing FPI of the operating points, first point at FPI 0.
        sensitivity: (P,) their (non-decreasing) sensitivities.
        targets: FPIs to read at (>= 0).
        mode: ``"interpolate"``, ``"step"`` or ``"first_at_or_beyond"`` (module docstring).

    Returns:
        (T,) sensitivities.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
    t = np.asarray(targets, dtype=np.float64).reshape(-1)
    if np.any(t < 0) or np.any(np.isnan(t)):
        raise ValueError("target FPIs must be >= 0.")
    last = fpi.shape[0] - 1
    if mode == "first_at_or_beyond":
        # operating points only (not the origin), as a loop over the thresholds would find them
        k = np.searchsorted(fpi[1:], t, side="left") + 1
        return sensitivity[np.minimum(k, last)]
    i = np.searchsorted(fpi, t, side="right") - 1  # last point with fpi <= t (the top of a vertical)
    i = np.maximum(i, 0)
    if mode == "step":
        return sensitivity[i]
    j = np.minimum(i + 1, last)  # first point with fpi > t, if any
    dx = fpi[j] - fpi[i]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(dx > 0, (t - fpi[i]) / np.where(dx > 0, dx, 1.0), 0.0)
    return sensitivity[i] + frac * (sensitivity[j] - sensitivity[i])


def _cpm(fpi: np.ndarray, sensitivity: np.ndarray) -> float:
    return float(np.mean(sensitivity_at_fpi(fpi, sensitivity, CPM_FPIS, "interpolate")))


def _count_ge(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of ``sorted_values`` (ascending) are ``>= thresholds``."""
    return sorted_values.shape[0] - np.searchsorted(sorted_values, thresholds, side="left")


def _curve(
    tp_scores: np.ndarray, fp_scores: np.ndarray, thresholds: np.ndarray, num_lesions: int, num_images: int
) -> tuple[np.ndarray, np.ndarray]:
    """FPI and sensitivity at each threshold (``score >= threshold`` kept)."""
    tp = _count_ge(np.sort(tp_scores), thresholds)
    fp = _count_ge(np.sort(fp_scores), thresholds)
    fpi = fp / float(num_images)
    sens = tp / float(num_lesions) if num_lesions else np.full(thresholds.shape, np.nan)
    return fpi, sens
