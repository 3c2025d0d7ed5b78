"""MONAI array and dictionary transforms for mammograms.

Images are channel-first ``(C, H, W)``. Boxes inside pipelines are in MONAI's order
``(row1, col1, row2, col2)``, so MONAI's box transforms compose with these; datalists and
detections use ``(x1, y1, x2, y2)`` with x = column, converted at a pipeline's borders by
:class:`BoxesToSpatialOrderd` and :class:`BoxesToXYOrderd`.
Every geometric step records what it did in a :class:`FrameRecord`; one function,
:func:`tile_boxes_to_original`, maps boxes of any tile or scale back to original pixels.
See ``docs/transforms.md`` for a pipeline.
"""

from __future__ import annotations

from ..spacing import SpacingError, read_spacing_mm
from .boxes import BoxesToSpatialOrderd, BoxesToXYOrderd
from .crop import CropBreast, CropBreastd, otsu_threshold
from .frames import (
    BOX_ORDER,
    FrameRecord,
    from_spatial_order,
    map_boxes,
    original_boxes_to_frame,
    tile_boxes_to_original,
    to_spatial_order,
)
from .geometry import FrameStepd
from .laterality import NormalizeLaterality, NormalizeLateralityd, estimate_laterality, parse_laterality
from .loading import LoadMammogram, LoadMammogramd
from .preprocessing import Preprocessing, PreprocessingSteps
from .pyramid import (
    DEFAULT_SCALES,
    DegradeResolution,
    DegradeResolutiond,
    ResampleToSpacing,
    ResampleToSpacingd,
    ScaleLevel,
    ScalePyramid,
    ScalePyramidd,
    pyramid_key,
)
from .sampling import RandLesionTileSamplerd, enlarge_small_boxes
from .tiling import RandTileSamplerd, SystematicTile, SystematicTiled, Tile, TileGrid, clip_boxes_to_tile
from .view import Orientation, estimate_view, parse_view, resolve_orientation

__all__ = [
    "BOX_ORDER",
    "DEFAULT_SCALES",
    "BoxesToSpatialOrderd",
    "BoxesToXYOrderd",
    "CropBreast",
    "CropBreastd",
    "DegradeResolution",
    "DegradeResolutiond",
    "FrameRecord",
    "FrameStepd",
    "LoadMammogram",
    "LoadMammogramd",
    "NormalizeLaterality",
    "NormalizeLateralityd",
    "Orientation",
    "Preprocessing",
    "PreprocessingSteps",
    "RandLesionTileSamplerd",
    "RandTileSamplerd",
    "ResampleToSpacing",
    "ResampleToSpacingd",
    "ScaleLevel",
    "ScalePyramid",
    "ScalePyramidd",
    "SpacingError",
    "SystematicTile",
    "SystematicTiled",
    "Tile",
    "TileGrid",
    "clip_boxes_to_tile",
    "enlarge_small_boxes",
    "estimate_laterality",
    "estimate_view",
    "from_spatial_order",
    "map_boxes",
    "read_spacing_mm",
    "resolve_orientation",
    "original_boxes_to_frame",
    "otsu_threshold",
    "parse_laterality",
    "parse_view",
    "pyramid_key",
    "tile_boxes_to_original",
    "to_spatial_order",
]
