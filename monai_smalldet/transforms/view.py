"""The view (CC or MLO) from the pixels, and a check of the header's laterality and view.

A mediolateral-oblique (MLO) mammogram shows the pectoral muscle: a dense, roughly triangular
region in the upper corner on the chest-wall side, bounded by a fairly straight edge that runs
down and towards the chest wall. A craniocaudal (CC) view shows none there (the corner is air
or thin breast tissue near the skin). :func:`estimate_view` looks for that triangle.

:func:`resolve_orientation` is the one place where a detector decides which laterality and
view an image has: the header's values when it gives them, else the pixel estimates
(``source == "pixels"``); a pixel estimate that disagrees with the header is reported in
:attr:`Orientation.header_checks`, never written over the header's value.

Images are channel-first ``(C, H, W)`` with MONOCHROME2 intensities (bright = dense), as
:func:`~monai_smalldet.data.dicom.read_mammogram` returns them whatever the file's
photometric interpretation; the channels are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from monai.config.type_definitions import NdarrayOrTensor

from .geometry import check_image, to_numpy_view, to_torch
from .laterality import estimate_laterality, header_text, parse_laterality

__all__ = [
    "CHECKED_VIEWS",
    "Orientation",
    "PectoralEvidence",
    "estimate_view",
    "parse_view",
    "pectoral_evidence",
    "resolve_orientation",
]

#: Header views a pixel estimate is compared with; the others (ML, LM, XCCL, ...) may show the
#: pectoral muscle or not and are taken as given.
CHECKED_VIEWS = ("CC", "MLO")

#: Corner triangle searched for the muscle: its legs as fractions of the image height (along
#: the chest wall) and of the breast's depth (along the top edge).
_TRIANGLE_HEIGHT = 0.2
_TRIANGLE_DEPTH = 0.15


class PectoralEvidence(NamedTuple):
    """What :func:`pectoral_evidence` measured in the corner triangle (see :func:`estimate_view`).

    Attributes:
        coverage: fraction of the triangle's pixels that are breast (above the tissue threshold).
        contrast: (mean of the triangle's breast pixels - median of the other breast pixels) /
            (bright level - background level); ``0.0`` for an image without breast.
    """

    coverage: float
    contrast: float


def _block_mean(img: NdarrayOrTensor, max_side_px: int) -> np.ndarray:
    """``(h, w)`` float32 block means of ``img`` (channels averaged), longer side <= ``max_side_px``
    (the last rows/columns that do not fill a block are dropped)."""
    h, w = check_image(img)
    step = max(1, -(-max(h, w) // max_side_px))
    a = to_numpy_view(img)
    a = to_torch(img).detach().cpu().numpy() if a is None else a
    rows, cols = h // step, w // step
    block = np.asarray(a[:, : rows * step, : cols * step], dtype=np.float32)
    low = block.reshape(a.shape[0], rows, step, cols, step).mean(axis=(0, 2, 4), dtype=np.float32)
    if not np.isfinite(low).all():
        raise ValueError(f"image of shape {tuple(img.shape)} contains NaN or inf values.")
    return low


def pectoral_evidence(
    img: NdarrayOrTensor,
    laterality: str | None = None,
    max_side_px: int = 256,
    tissue_fraction: float = 0.2,
) -> PectoralEvidence:
    """Measure the corner triangle where an MLO view shows the pectoral muscle.

    The image is reduced by block means to about ``max_side_px`` on its longer side and
    mirrored so that the chest wall is at column 0 (``laterality`` ``"R"``; ``None`` estimates
    it with :func:`~monai_smalldet.transforms.estimate_laterality`). Background and bright
    levels are the 0.5th and 99.5th percentiles; breast pixels are those above
    ``background + tissue_fraction * (bright - background)``. The triangle has its right angle
    in the top chest-wall corner, one leg along the chest wall (20 % of the image height), the
    other along the top edge (15 % of the breast's depth, the columns that hold breast).

    Returns:
        a :class:`PectoralEvidence`.

    Raises:
        ValueError: wrong rank, empty or non-finite image; ``laterality`` not L/R/None.
    """
    side = parse_laterality(laterality)
    if laterality is not None and side is None:
        raise ValueError(f"laterality must be 'L' or 'R' (or None), got {laterality!r}.")
    low = _block_mean(img, max_side_px)
    if (side or estimate_laterality(img)) == "R":
        low = low[:, ::-1]
    h, w = low.shape
    background, bright = (float(v) for v in np.percentile(low, (0.5, 99.5)))
    span = bright - background
    if not span > 1e-6 * max(1.0, abs(bright)):
        return PectoralEvidence(0.0, 0.0)  # a flat image: no breast, no muscle
    breast = low > background + tissue_fraction * span
    depth = int(np.flatnonzero(breast.any(axis=0))[-1]) + 1 if breast.any() else w
    rows = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / max(_TRIANGLE_HEIGHT * h, 1.0)
    cols = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / max(_TRIANGLE_DEPTH * depth, 1.0)
    triangle = rows + cols < 1.0
    inside, rest = breast & triangle, breast & ~triangle
    coverage = float(inside.sum()) / max(int(triangle.sum()), 1)
    if not inside.any() or not rest.any():
        return PectoralEvidence(coverage, 0.0)
    contrast = (float(low[inside].mean()) - float(np.median(low[rest]))) / span
    return PectoralEvidence(coverage, contrast)


def estimate_view(
    img: NdarrayOrTensor,
    laterality: str | None = None,
    max_side_px: int = 256,
    min_coverage: float = 0.5,
    min_contrast: float = 0.1,
) -> str:
    """Estimate the view from the pixels: ``"MLO"`` if a pectoral muscle shows, else ``"CC"``.

    Rule: the corner triangle of :func:`pectoral_evidence` (top chest-wall corner) must be at
    least ``min_coverage`` breast, and its mean must exceed the median of the rest of the breast
    by at least ``min_contrast`` of the image's intensity span (the muscle is denser than the
    breast tissue below it). Both hold: ``"MLO"``; otherwise ``"CC"``, also for a flat image.

    Limits: only CC and MLO are told apart (an ML or LM view shows the muscle too and reads as
    ``"MLO"``; an exaggerated CC may show it and read as ``"MLO"``). A muscle that is small
    (shorter than the triangle), faint against dense tissue, or cut away by a crop is missed; a
    dense band of tissue in the top chest-wall corner of a CC view reads as muscle. Implants,
    paddles, burnt-in labels in the chest-wall corner and images stored upside down are not
    handled. A wrong ``laterality`` puts the triangle in the nipple-side corner (air): ``"CC"``.

    Args:
        img: ``(C, H, W)`` image, numpy or torch, MONOCHROME2 intensities (bright = dense).
        laterality: ``"L"`` (chest wall at column 0) or ``"R"`` (last column); ``None``
            estimates it (:func:`~monai_smalldet.transforms.estimate_laterality`).
        max_side_px: longer side of the reduced image the rule runs on.
        min_coverage: least breast fraction of the triangle.
        min_contrast: least contrast of the triangle (see :class:`PectoralEvidence`).

    Raises:
        ValueError: wrong rank, empty or non-finite image; ``laterality`` not L/R/None.

    Example:
        >>> import numpy as np
        >>> img = np.zeros((1, 400, 300), np.float32)
        >>> img[:, :, :200] = 0.5  # a left breast, chest wall at column 0
        >>> estimate_view(img, "L")
        'CC'
        >>> img[:, :100, :40] = 0.9  # a dense triangle-like block in the top chest-wall corner
        >>> estimate_view(img, "L")
        'MLO'
    """
    evidence = pectoral_evidence(img, laterality, max_side_px)
    return "MLO" if evidence.coverage >= min_coverage and evidence.contrast >= min_contrast else "CC"


def parse_view(value: Any) -> str | None:
    """An upper-case view (``"CC"``, ``"MLO"``, ``"ML"``, ...) or ``None`` (unknown).

    Accepts strings in any case, bytes and 1-element lists (as a ``DataLoader`` collates
    strings); ``None``, ``""`` and MONAI's ``"none"`` marker give ``None``.
    """
    text = header_text(value)
    return None if text in (None, "", "NONE") else text


def _source(value: Any) -> str:
    """A given source name; ``"metadata"`` for none (``None``, ``""``, MONAI's ``"none"`` marker)."""
    text = str(value).strip() if value is not None else ""
    return text if text and text.lower() != "none" else "metadata"


@dataclass(frozen=True)
class Orientation:
    """The laterality and view a detector used for one image, where they came from, and checks.

    Attributes:
        laterality: ``"L"`` or ``"R"`` (always known: estimated when the header gives none).
        laterality_source: ``"pixels"`` (estimated) or where the header's value came from
            (e.g. ``"ImageLaterality"``, ``"Laterality"``, ``"argument"``, ``"metadata"``).
        view: the header's view (any, e.g. ``"ML"``), else ``"CC"``/``"MLO"`` from the pixels.
        view_source: ``"pixels"`` or the header's source (``"ViewPosition"``,
            ``"ViewCodeSequence"``, ``"SeriesDescription"``, ``"ProtocolName"``, ``"file name"``, ...).
        pixels: the pixel estimates, ``{"laterality": "L"|"R", "view": "CC"|"MLO"}``.
        header_checks: one entry per header value the pixels contradict:
            ``{"laterality": {"header": "L", "header_source": "ImageLaterality", "pixels": "R"},
            "view": {"header": "CC", "header_source": "ViewPosition", "pixels": "MLO"}}``
            (empty when they agree; a view outside :data:`CHECKED_VIEWS` is not checked).
    """

    laterality: str
    laterality_source: str
    view: str | None
    view_source: str | None
    pixels: dict[str, str] = field(default_factory=dict)
    header_checks: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serialisable dict (copies of the nested dicts)."""
        return {
            "laterality": self.laterality,
            "laterality_source": self.laterality_source,
            "view": self.view,
            "view_source": self.view_source,
            "pixels": dict(self.pixels),
            "header_checks": {k: dict(v) for k, v in self.header_checks.items()},
        }

    def describe_checks(self) -> str:
        """The disagreements in words (``""`` when there are none), for a log line."""
        return "; ".join(
            f"{what} is {c['header']} in the header ({c['header_source']}) but {c['pixels']} from the pixels"
            for what, c in self.header_checks.items()
        )


def resolve_orientation(
    img: NdarrayOrTensor,
    laterality: Any = None,
    view: Any = None,
    *,
    laterality_source: str | None = None,
    view_source: str | None = None,
) -> Orientation:
    """Decide the laterality and view of ``img`` from its header values and its pixels.

    Both pixel estimates are always computed: the laterality with
    :func:`~monai_smalldet.transforms.estimate_laterality`, then the view with
    :func:`estimate_view` on the side the pixels show the chest wall (so a wrong header
    laterality does not also spoil the view estimate). A header value (``laterality``
    ``L``/``R``, ``view`` any non-empty text) is kept; a missing one is replaced by the
    estimate with source ``"pixels"``. A kept laterality, or a kept ``CC``/``MLO`` view, that
    differs from the estimate is listed in :attr:`Orientation.header_checks`.

    Args:
        img: ``(C, H, W)`` image, MONOCHROME2 intensities (bright = dense).
        laterality: the header's laterality (``L``/``R``/left/right; anything else: unknown).
        view: the header's view (``None``, ``""`` or ``"none"``: unknown).
        laterality_source: where ``laterality`` came from (default ``"metadata"``).
        view_source: where ``view`` came from (default ``"metadata"``).

    Returns:
        an :class:`Orientation`.

    Raises:
        ValueError: wrong rank, empty or non-finite image.
    """
    pixel_side = estimate_laterality(img)
    pixel_view = estimate_view(img, pixel_side)
    pixels = {"laterality": pixel_side, "view": pixel_view}
    checks: dict[str, dict[str, str]] = {}
    side, given_view = parse_laterality(laterality), parse_view(view)
    if side is None:
        side, side_source = pixel_side, "pixels"
    else:
        side_source = _source(laterality_source)
        if side != pixel_side:
            checks["laterality"] = {"header": side, "header_source": side_source, "pixels": pixel_side}
    if given_view is None:
        chosen_view, chosen_source = pixel_view, "pixels"
    else:
        chosen_view, chosen_source = given_view, _source(view_source)
        if given_view in CHECKED_VIEWS and given_view != pixel_view:
            checks["view"] = {"header": given_view, "header_source": chosen_source, "pixels": pixel_view}
    return Orientation(side, side_source, chosen_view, chosen_source, pixels, checks)
