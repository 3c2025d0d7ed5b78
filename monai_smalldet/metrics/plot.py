"""FROC curves as a PNG (matplotlib, Agg canvas: no display and no pyplot state)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..files import atomic_write
from .froc import DEFAULT_FPIS, FROCResult

__all__ = ["plot_froc"]


def plot_froc(
    curves: Mapping[str, FROCResult],
    out_png: str | os.PathLike[str],
    fpis: Sequence[float] = DEFAULT_FPIS,
    *,
    ci: bool = True,
    title: str | None = None,
    log_x: bool = False,
    max_fpi: float | None = None,
    size_px: tuple[int, int] = (800, 600),
    dpi: int = 100,
) -> Path:
    """Plot FROC curves, with bootstrap bands, to a PNG.

    Each curve is drawn through its operating points (so it is the curve that the
    interpolated sensitivity reads); its band is the pointwise bootstrap interval of the
    interpolated sensitivity (when ``ci`` and the result has a bootstrap). The requested
    FPIs are marked with dashed vertical lines. The file is written under a temporary name
    in the target directory, then moved into place with ``os.replace``.

    Args:
        curves: ``{legend name: FROCResult}``.
        out_png: output path.
        fpis: FPIs to mark.
        ci: draw the bootstrap bands.
        title: figure title.
        log_x: logarithmic FPI axis (the origin, FPI 0, is then left out).
        max_fpi: right end of the FPI axis; default twice the largest of ``fpis``.
        size_px: (width, height) of the PNG in pixels.
        dpi: resolution used to lay out fonts.

    Returns:
        the path written.

    Example:
        >>> plot_froc({"multi-scale": r1, "baseline": r0}, "froc.png", log_x=True)  # doctest: +SKIP
    """
    if not curves:
        raise ValueError("curves is empty.")
    out = Path(out_png)
    width, height = size_px
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    marks = [float(f) for f in fpis]
    x_max = max_fpi if max_fpi is not None else 2.0 * max(marks, default=1.0)
    x_min = min([f for f in marks if f > 0], default=x_max / 100.0) / 2.0 if log_x else 0.0

    for name, result in curves.items():
        fpi, sens = np.asarray(result.fpi), np.asarray(result.sensitivity)
        # extend the last operating point flat to the axis end, as the interpolation does
        if fpi[-1] < x_max:
            fpi, sens = np.r_[fpi, x_max], np.r_[sens, sens[-1]]
        keep = fpi > 0 if log_x else np.ones(fpi.shape, dtype=bool)
        (line,) = ax.plot(fpi[keep], sens[keep], lw=1.8, label=f"{name} (CPM {result.cpm:.3f})")
        boot = result.bootstrap
        if ci and boot is not None:
            grid = np.asarray(boot.fpi_grid)
            lower, upper = np.asarray(boot.lower), np.asarray(boot.upper)
            if grid[-1] < x_max:
                grid, lower, upper = np.r_[grid, x_max], np.r_[lower, lower[-1]], np.r_[upper, upper[-1]]
            band = grid > 0 if log_x else np.ones(grid.shape, dtype=bool)
            ax.fill_between(grid[band], lower[band], upper[band], color=line.get_color(), alpha=0.2, lw=0)

    for f in marks:
        ax.axvline(f, color="0.5", ls="--", lw=0.8)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlim(x_min, x_max)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("false positives per image (FPI)")
    ax.set_ylabel("sensitivity")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()

    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi), suffix=".png")
    return out
