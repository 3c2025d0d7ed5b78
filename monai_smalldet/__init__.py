"""monai-smalldet: multi-scale, tiled detection of small breast cancers on mammograms.

A MONAI plugin implementing Rangarajan et al., *Ultra-high resolution, multi-scale,
context-aware approach for detection of small cancers on mammography* (Sci Rep 2022).
Importing the package only sets up the offline environment (see :mod:`.runtime`);
subpackages are imported on demand so that, e.g., the transforms never pull in torch
networks or ultralytics.
"""

from __future__ import annotations

from .runtime import configure_offline

configure_offline()

__version__ = "0.1.0"

__all__ = ["__version__", "configure_offline"]
