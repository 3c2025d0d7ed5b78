"""The one definition of what happens to a mammogram before the network sees it.

:class:`Preprocessing` names every setting of the path from a stored image to the network's
tiles: the detector's pixel spacing, laterality normalisation, the breast crop and its margin,
the pyramid's scales, the tile size and the tiles' overlap. Everything that preprocesses builds
its transforms from one such object:

* the bundle's ``train.yaml`` (one ``preprocessing`` item): the training transforms
  (:meth:`Preprocessing.dictionary_transforms`), the validation inferer and the spec written
  into every checkpoint;
* :class:`~monai_smalldet.inference.MultiScaleDetector` (``preprocessing=``; its array
  transforms from :meth:`Preprocessing.array_transforms`), and through
  :meth:`~monai_smalldet.inference.MultiScaleDetector.from_checkpoint` the CLI, the bundle's
  inference workflow and the deploy app, which read it back from the checkpoint's spec
  (:meth:`Preprocessing.from_spec`).

So a model carries its preprocessing with it: a crop margin or laterality setting changed in
the training config reaches validation, the checkpoint and every later inference.

Example:
    .. code-block:: python

        from monai.transforms import Compose

        from monai_smalldet.transforms import Preprocessing

        prep = Preprocessing(pixel_spacing_mm=0.28, tile_size=256, crop_margin_px=16)
        train_pre = Compose(prep.dictionary_transforms("image", box_keys=["box", "benign_box"]))
        steps = prep.array_transforms()  # what the detector runs on one image
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .boxes import BoxesToSpatialOrderd
from .crop import CropBreast, CropBreastd
from .laterality import NormalizeLaterality, NormalizeLateralityd
from .loading import LoadMammogramd
from .pyramid import DEFAULT_SCALES, ResampleToSpacing, ResampleToSpacingd, ScalePyramid, ScalePyramidd

__all__ = ["PREPROCESSING_SPEC_KEYS", "Preprocessing", "PreprocessingSteps"]

PREPROCESSING_SPEC_KEYS = ("normalize_laterality", "crop_breast", "crop_margin_px", "tile_overlap")
"""The settings a checkpoint spec keeps under ``preprocessing``; spacing, scales and tile size
are the spec's own ``pixel_spacing_mm``, ``scales`` and ``tile_size_px``."""


class PreprocessingSteps(NamedTuple):
    """The array transforms of one :class:`Preprocessing`, in the order they run (``None``: off)."""

    laterality: NormalizeLaterality | None
    resample: ResampleToSpacing | None
    crop: CropBreast | None
    pyramid: ScalePyramid


@dataclass(frozen=True)
class Preprocessing:
    """Settings of the path from a stored mammogram to the network's tiles.

    Args:
        pixel_spacing_mm: the spacing the network works at; inputs are resampled to it from the
            spacing they declare. ``None``: no resampling (images used at their own spacing).
        scales: pyramid factors, the first the finest (paper: X, 0.5X, 0.25X).
        tile_size: tile side in pixels (paper: 1024).
        tile_overlap: overlap of neighbouring inference tiles, a fraction of the tile in [0, 1).
        normalize_laterality: mirror right breasts so that the chest wall is at column 0.
        crop_breast: crop away the air around the breast before the pyramid.
        crop_margin_px: air kept around the breast by the crop, in pixels at ``pixel_spacing_mm``.

    Raises:
        ValueError: a setting out of its range (the message names it).
    """

    pixel_spacing_mm: float | None = 0.07
    scales: tuple[float, ...] = DEFAULT_SCALES
    tile_size: int = 1024
    tile_overlap: float = 0.1
    normalize_laterality: bool = True
    crop_breast: bool = True
    crop_margin_px: int = 32

    def __post_init__(self) -> None:
        spacing = self.pixel_spacing_mm
        if spacing is not None and not (math.isfinite(float(spacing)) and float(spacing) > 0):
            raise ValueError(f"pixel_spacing_mm must be a positive number or None, got {spacing!r}.")
        scales = tuple(float(s) for s in self.scales)
        if not scales or not all(math.isfinite(s) and 0 < s <= 1 for s in scales):
            raise ValueError(f"scales must be factors in (0, 1], got {self.scales!r}.")
        if int(self.tile_size) != self.tile_size or self.tile_size < 1:
            raise ValueError(f"tile_size must be a positive integer, got {self.tile_size!r}.")
        if not 0.0 <= float(self.tile_overlap) < 1.0:
            raise ValueError(f"tile_overlap must lie in [0, 1), got {self.tile_overlap!r}.")
        if int(self.crop_margin_px) != self.crop_margin_px or self.crop_margin_px < 0:
            raise ValueError(f"crop_margin_px must be an integer >= 0, got {self.crop_margin_px!r}.")
        object.__setattr__(self, "pixel_spacing_mm", None if spacing is None else float(spacing))
        object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "tile_size", int(self.tile_size))
        object.__setattr__(self, "tile_overlap", float(self.tile_overlap))
        object.__setattr__(self, "normalize_laterality", bool(self.normalize_laterality))
        object.__setattr__(self, "crop_breast", bool(self.crop_breast))
        object.__setattr__(self, "crop_margin_px", int(self.crop_margin_px))

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe settings (``from_dict(to_dict())`` gives an equal object)."""
        out = dataclasses.asdict(self)
        out["scales"] = list(self.scales)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """The object of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown preprocessing settings: {sorted(unknown)}")
        return cls(**dict(data))

    def spec_fields(self) -> dict[str, Any]:
        """The keyword arguments of a checkpoint spec that name this preprocessing:
        ``pixel_spacing_mm``, ``scales``, ``tile_size_px`` and ``preprocessing`` (the rest)."""
        if self.pixel_spacing_mm is None:
            raise ValueError("a checkpoint's preprocessing needs a pixel_spacing_mm (the network's spacing).")
        rest = {key: getattr(self, key) for key in PREPROCESSING_SPEC_KEYS}
        return {
            "pixel_spacing_mm": self.pixel_spacing_mm,
            "scales": self.scales,
            "tile_size_px": self.tile_size,
            "preprocessing": rest,
        }

    @classmethod
    def from_spec(cls, spec: Any) -> Preprocessing:
        """The preprocessing a checkpoint spec (:class:`~monai_smalldet.networks.NetworkSpec`)
        names. A spec written before it kept ``preprocessing`` gets this class's defaults for
        laterality, crop, margin and overlap: what every detector ran then."""
        rest = dict(getattr(spec, "preprocessing", None) or {})
        unknown = set(rest) - set(PREPROCESSING_SPEC_KEYS)
        if unknown:
            raise ValueError(f"unknown preprocessing settings in the spec: {sorted(unknown)}")
        return cls(
            pixel_spacing_mm=spec.pixel_spacing_mm,
            scales=tuple(spec.scales),
            tile_size=spec.tile_size_px,
            **rest,
        )

    def replace(self, **changes: Any) -> Preprocessing:
        """A copy with ``changes`` (validated like the constructor)."""
        return dataclasses.replace(self, **changes)

    # -- transforms ---------------------------------------------------------------------------
    def array_transforms(self) -> PreprocessingSteps:
        """The array transforms a detector runs on one image, in order (tiling aside)."""
        return PreprocessingSteps(
            laterality=NormalizeLaterality() if self.normalize_laterality else None,
            resample=ResampleToSpacing(self.pixel_spacing_mm) if self.pixel_spacing_mm else None,
            crop=CropBreast(margin_px=self.crop_margin_px) if self.crop_breast else None,
            pyramid=ScalePyramid(self.scales),
        )

    def dictionary_transforms(
        self, image_key: str = "image", box_keys: str | Sequence[str] = (), *, load: bool = True
    ) -> list[Any]:
        """The dictionary transforms of a training or evaluation pipeline, in order.

        ``LoadMammogramd`` (with ``load``), :class:`BoxesToSpatialOrderd` on ``box_keys`` (the
        datalist's ``(x1, y1, x2, y2)`` into MONAI's order), then laterality, resampling, crop
        and pyramid with the settings of this object, exactly the steps of
        :meth:`array_transforms`. Every ``box_keys`` entry must be present (an empty list
        when an image has no such finding): a missing key raises, as the transforms do.
        """
        keys = [box_keys] if isinstance(box_keys, str) else list(box_keys)
        geo: dict[str, Any] = {"image_keys": image_key, "box_keys": keys}
        out: list[Any] = [LoadMammogramd(keys=image_key)] if load else []
        if keys:
            out.append(BoxesToSpatialOrderd(keys))
        if self.normalize_laterality:
            out.append(NormalizeLateralityd(**geo))
        if self.pixel_spacing_mm:
            out.append(ResampleToSpacingd(**geo, target_spacing_mm=self.pixel_spacing_mm))
        if self.crop_breast:
            out.append(CropBreastd(**geo, margin_px=self.crop_margin_px))
        out.append(ScalePyramidd(**geo, scales=self.scales))
        return out
