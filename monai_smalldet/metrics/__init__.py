"""Box-based FROC evaluation: curve, sensitivity at given FPIs, CPM, bootstrap CIs, strata.

This subpackage sees boxes only (no network, no inference code). :class:`FROCMetric`
(Ignite) and :func:`plot_froc` (matplotlib) are imported on first use.
"""

from __future__ import annotations

from typing import Any

from .froc import (
    BORDER_TOLERANCE_PX,
    CPM_FPIS,
    DEFAULT_FPIS,
    FROCBootstrap,
    FROCOptions,
    FROCResult,
    ImageMatch,
    MatchKeys,
    UndefinedSensitivityWarning,
    froc,
    froc_from_matches,
    froc_table,
    match_image,
    match_images,
    sensitivity_at_fpi,
)

__all__ = [
    "BORDER_TOLERANCE_PX",
    "CPM_FPIS",
    "DEFAULT_FPIS",
    "FROCBootstrap",
    "FROCMetric",
    "FROCOptions",
    "FROCResult",
    "ImageMatch",
    "MatchKeys",
    "UndefinedSensitivityWarning",
    "froc",
    "froc_from_matches",
    "froc_table",
    "match_image",
    "match_images",
    "plot_froc",
    "sensitivity_at_fpi",
]


def __getattr__(name: str) -> Any:
    if name == "FROCMetric":
        from .froc_metric import FROCMetric

        return FROCMetric
    if name == "plot_froc":
        from .plot import plot_froc

        return plot_froc
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
