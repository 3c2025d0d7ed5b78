"""Box-based free-response ROC (FROC) for lesion detection on mammograms.

The evaluation protocol is the one of Rangarajan et al., *Ultra-high resolution,
multi-scale, context-aware approach for detection of small cancers on mammography*
(Sci Rep 2022), made explicit:

* **Hit.** A prediction hits a lesion when the centre of the predicted box lies inside
  the lesion's ground-truth box. The box is *closed*: a centre exactly on the border is a
  hit. MONAI's :func:`monai.data.box_utils.centers_in_boxes` tests ``min distance to the
  border > eps`` (strict, with ``eps=0.01`` px by default, so the border and a 0.01 px band
  inside it do not count); it is called here with ``eps=-BORDER_TOLERANCE_PX``, i.e. a centre
  on the border, or outside it by no more than float rounding (1e-6 px), is inside.
  A prediction whose centre lies in two overlapping lesions hits both.
* **One lesion counts once.** A lesion's score is the maximum score of the predictions
  hitting it; at a threshold ``t`` the lesion is detected when that score is ``>= t``.
  Further hits on a lesion that is already hit are neither true nor false positives.
* **False positive.** A prediction whose centre lies inside no lesion of its image.
* **Denominators.** Sensitivity = detected lesions / all lesions; FPI = false positives /
  all images, images without lesions included.
* **Sweep.** The operating points are all distinct prediction scores (not a fixed grid),
  from the highest to the lowest, plus the origin ``(0, 0)`` (threshold ``+inf``). All
  predictions sharing a score enter together (``score >= threshold``), so ties never split.

Reading the curve at a false-positive rate ``f``:

* ``"interpolate"`` (the headline value, also used for the CPM): linear in FPI between the
  two consecutive operating points around ``f`` -- the value read off the plotted curve.
  On a vertical segment (several points at FPI ``f``) the top is taken; beyond the last
  operating point the last sensitivity is kept (as ``numpy.interp`` in LUNA16 / MONAI).
* ``"step"`` (conservative): the largest sensitivity of an operating point whose FPI does
  not exceed ``f`` -- an operating point a threshold can actually reach within the budget.
* ``"first_at_or_beyond"``: the sensitivity of the first operating point (from the highest
  threshold down) whose FPI is ``>= f``. This is what the paper's evaluation script
  reported; it is optimistic, because that operating point usually already spends more
  than ``f`` false positives per image. It is provided only to compare with the paper.

CPM (competition performance metric, LUNA16 convention): the mean of the interpolated
sensitivities at 1/8, 1/4, 1/2, 1, 2, 4 and 8 FPI.

MONAI's :func:`monai.metrics.compute_froc_curve_data` is not reused for the sweep: its
threshold loop starts at the *second* lowest score (``all_probs[1:]``), because its
CAMELYON input marks missed lesions with probability 0 and the lowest "score" must not
count them as hits. Here missed lesions carry no score, and the lowest prediction score is a
genuine operating point (the one keeping every prediction), which that loop would drop;
the loop is also O(thresholds x predictions), too slow for a bootstrap. Nor is
:func:`monai.metrics.compute_froc_score` reused: it is ``numpy.interp`` over the reversed
curve, and ``numpy.interp`` is only defined for strictly increasing FPIs, whereas an FROC
curve has repeated FPIs (vertical segments) wherever only true positives enter. The sweep
below counts with ``searchsorted`` and reads the curve with the rule stated above; on curves
with strictly increasing FPIs its CPM equals ``compute_froc_score`` (tested).

Bootstrap confidence intervals resample *images* with replacement (a lesion and the false
positives of its image stay together), seeded by ``numpy.random.default_rng(seed)``; the
interval is the percentile interval of the resampled statistic.

Stratification (by lesion size, by lesion type): the sensitivity of a stratum counts only
that stratum's lesions; the false positives remain those of all images, and predictions
hitting a lesion of another stratum are neither TP nor FP. This is standard practice for
per-size FROC (the FPI axis is the reader's false-alarm budget, whatever the lesion).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
from monai.config import NdarrayOrTensor

from .bootstrap import _bootstrap, _counts_blocks, _percentile_ci, _strata_masks
from .curve import (
    CPM_FPIS,
    DEFAULT_FPIS,
    SensitivityMode,
    UndefinedSensitivityWarning,
    _cpm,
    _curve,
    sensitivity_at_fpi,
)
from .matching import BORDER_TOLERANCE_PX, ImageMatch, MatchKeys, match_image, match_images

__all__ = [
    "BORDER_TOLERANCE_PX",
    "CPM_FPIS",
    "DEFAULT_FPIS",
    "FROCBootstrap",
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
    "sensitivity_at_fpi",
]


def _json_float(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _json_array(a: np.ndarray) -> list[float | None]:
    return [_json_float(v) for v in np.asarray(a, dtype=np.float64).tolist()]


def _fpi_key(f: float) -> str:
    return f"{float(f):g}"


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class FROCBootstrap:
    """Percentile bootstrap confidence intervals (images resampled with replacement).

    Attributes:
        n_resamples: number of resamples drawn.
        seed: seed of ``numpy.random.default_rng``.
        level: coverage of the intervals (0.95: 2.5th and 97.5th percentiles).
        sensitivity_at_fpi: ``{fpi: (lower, upper)}`` of the interpolated sensitivity.
        sensitivity_at_fpi_step: ``{fpi: (lower, upper)}`` of the step sensitivity.
        cpm: ``(lower, upper)`` of the CPM.
        fpi_grid: FPIs at which the band of the curve is given.
        lower: lower band of the interpolated sensitivity on ``fpi_grid``.
        upper: upper band on ``fpi_grid``.
        n_valid: resamples that contained at least one lesion (the others are left out).
    """

    n_resamples: int
    seed: int
    level: float
    sensitivity_at_fpi: dict[float, tuple[float, float]]
    sensitivity_at_fpi_step: dict[float, tuple[float, float]]
    cpm: tuple[float, float]
    fpi_grid: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n_valid: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dictionary (non-finite numbers become ``None``)."""
        return {
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "level": self.level,
            "n_valid": self.n_valid,
            "sensitivity_at_fpi": {_fpi_key(k): _json_array(v) for k, v in self.sensitivity_at_fpi.items()},
            "sensitivity_at_fpi_step": {
                _fpi_key(k): _json_array(v) for k, v in self.sensitivity_at_fpi_step.items()
            },
            "cpm": _json_array(self.cpm),
            "fpi_grid": _json_array(self.fpi_grid),
            "lower": _json_array(self.lower),
            "upper": _json_array(self.upper),
        }


@dataclass(frozen=True)
class FROCResult:
    """An FROC curve and the values read from it.

    Attributes:
        fpi: (P,) false positives per image of the operating points, the origin first.
        sensitivity: (P,) sensitivity of the operating points (NaN when there is no lesion).
        thresholds: (P,) score thresholds (kept: ``score >= threshold``), ``+inf`` first
            (the origin), then every distinct prediction score, descending.
        num_images: images evaluated (with and without lesions).
        num_lesions: lesions counted in the sensitivity.
        num_predictions: predictions over all images.
        fpis: FPIs at which sensitivities are reported.
        sensitivity_at_fpi: ``{fpi: value}``, interpolated (headline value).
        sensitivity_at_fpi_step: ``{fpi: value}``, conservative step value.
        cpm: mean interpolated sensitivity at :data:`CPM_FPIS`.
        bootstrap: confidence intervals, when requested.
        strata: results of the lesion strata (``"size<10mm"``, ``"type=mass"``, ...).
    """

    fpi: np.ndarray
    sensitivity: np.ndarray
    thresholds: np.ndarray
    num_images: int
    num_lesions: int
    num_predictions: int
    fpis: tuple[float, ...]
    sensitivity_at_fpi: dict[float, float]
    sensitivity_at_fpi_step: dict[float, float]
    cpm: float
    bootstrap: FROCBootstrap | None = None
    strata: dict[str, FROCResult] = field(default_factory=dict)

    def sensitivity_at(self, fpi: float, mode: SensitivityMode = "interpolate") -> float:
        """Sensitivity at one FPI, read with ``mode`` (see the module docstring)."""
        return float(sensitivity_at_fpi(self.fpi, self.sensitivity, [fpi], mode)[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dictionary: FPI keys as strings, non-finite numbers as ``None``
        (threshold ``+inf`` of the origin, NaN sensitivities)."""
        return {
            "num_images": self.num_images,
            "num_lesions": self.num_lesions,
            "num_predictions": self.num_predictions,
            "fpis": [float(f) for f in self.fpis],
            "sensitivity_at_fpi": {_fpi_key(k): _json_float(v) for k, v in self.sensitivity_at_fpi.items()},
            "sensitivity_at_fpi_step": {
                _fpi_key(k): _json_float(v) for k, v in self.sensitivity_at_fpi_step.items()
            },
            "cpm": _json_float(self.cpm),
            "curve": {
                "fpi": _json_array(self.fpi),
                "sensitivity": _json_array(self.sensitivity),
                "thresholds": _json_array(self.thresholds),
            },
            "bootstrap": None if self.bootstrap is None else self.bootstrap.to_dict(),
            "strata": {name: s.to_dict() for name, s in self.strata.items()},
        }


class _Pooled(NamedTuple):
    """Every image's lesions and false positives in one set of arrays."""

    lesion_scores: np.ndarray
    lesion_image: np.ndarray
    sizes: np.ndarray
    types: list[Any]
    fp_scores: np.ndarray
    fp_image: np.ndarray
    pred_scores: np.ndarray


def _pooled(matches: Sequence[ImageMatch]) -> _Pooled:
    def image_index(counts: list[int]) -> np.ndarray:
        return np.concatenate([np.full(n, i) for i, n in enumerate(counts)]).astype(np.int64)

    return _Pooled(
        lesion_scores=np.concatenate([m.lesion_scores for m in matches]),
        lesion_image=image_index([m.num_lesions for m in matches]),
        sizes=np.concatenate([m.lesion_sizes_mm for m in matches]),
        types=[t for m in matches for t in m.lesion_types],
        fp_scores=np.concatenate([m.fp_scores for m in matches]),
        fp_image=image_index([m.fp_scores.shape[0] for m in matches]),
        pred_scores=np.concatenate([m.pred_scores for m in matches]),
    )


def _stratum_curve(
    name: str, mask: np.ndarray, pooled: _Pooled, thresholds: np.ndarray, num_images: int, fpis: np.ndarray
) -> dict[str, Any]:
    """FROC curve, sensitivities at ``fpis`` (interpolated and step) and CPM of one stratum."""
    n_les = int(mask.sum())
    if n_les == 0:
        label = "the evaluated set" if name == "all" else f"stratum {name!r}"
        warnings.warn(
            f"{label} has no lesion: sensitivity is undefined (NaN).",
            UndefinedSensitivityWarning,
            stacklevel=4,
        )
    scores = pooled.lesion_scores[mask]
    fpi, sens = _curve(scores[~np.isnan(scores)], pooled.fp_scores, thresholds, n_les, num_images)
    keys = tuple(float(f) for f in fpis)
    return {
        "fpi": fpi,
        "sensitivity": sens,
        "num_lesions": n_les,
        "interp": dict(zip(keys, sensitivity_at_fpi(fpi, sens, fpis, "interpolate").tolist(), strict=True)),
        "step": dict(zip(keys, sensitivity_at_fpi(fpi, sens, fpis, "step").tolist(), strict=True)),
        "cpm": _cpm(fpi, sens),
    }


def _bootstrap_intervals(
    pooled: _Pooled,
    masks: dict[str, np.ndarray],
    num_images: int,
    fpis: np.ndarray,
    fmax: float,
    n_bootstrap: int,
    seed: int,
    ci_level: float,
) -> dict[str, FROCBootstrap]:
    """Percentile intervals per stratum from ``n_bootstrap`` image resamples."""
    grid = np.unique(
        np.concatenate(
            [np.linspace(0.0, fmax, 121), np.geomspace(fmax * 1e-3, fmax, 61) if fmax > 0 else [], fpis]
        )
    )
    interp, step, cpm, band = _bootstrap(
        pooled.lesion_scores,
        pooled.lesion_image,
        pooled.fp_scores,
        pooled.fp_image,
        list(masks.values()),
        num_images,
        fpis,
        grid,
        _counts_blocks(np.random.default_rng(seed), n_bootstrap, num_images),
    )
    keys = tuple(float(f) for f in fpis)
    boot: dict[str, FROCBootstrap] = {}
    for s, name in enumerate(masks):
        lo_i, hi_i = _percentile_ci(interp[s], ci_level)
        lo_s, hi_s = _percentile_ci(step[s], ci_level)
        lo_c, hi_c = _percentile_ci(cpm[s][:, None], ci_level)
        lo_g, hi_g = _percentile_ci(band[s], ci_level)
        boot[name] = FROCBootstrap(
            n_resamples=n_bootstrap,
            seed=seed,
            level=ci_level,
            sensitivity_at_fpi={f: (float(a), float(b)) for f, a, b in zip(keys, lo_i, hi_i, strict=True)},
            sensitivity_at_fpi_step={
                f: (float(a), float(b)) for f, a, b in zip(keys, lo_s, hi_s, strict=True)
            },
            cpm=(float(lo_c[0]), float(hi_c[0])),
            fpi_grid=_readonly(grid),
            lower=_readonly(lo_g),
            upper=_readonly(hi_g),
            n_valid=int(np.sum(~np.isnan(cpm[s]))),
        )
    return boot


@dataclass(frozen=True)
class FROCOptions:
    """How the FROC of matched images is summarised (one definition for :func:`froc`,
    :func:`froc_from_matches` and :class:`~monai_smalldet.metrics.FROCMetric`).

    Attributes:
        size_threshold_mm: size strata are ``< threshold`` and ``>= threshold``.
        stratify: compute the size strata (when any lesion size is known) and the type
            strata (one per lesion type given).
        n_bootstrap: bootstrap resamples of the images (0: no confidence intervals).
        seed: seed of ``numpy.random.default_rng`` for the bootstrap.
        ci_level: coverage of the percentile intervals.
    """

    size_threshold_mm: float = 10.0
    stratify: bool = True
    n_bootstrap: int = 1000
    seed: int = 0
    ci_level: float = 0.95


_KEY_FIELDS = frozenset(f.name for f in dataclasses.fields(MatchKeys))
_OPTION_FIELDS = frozenset(f.name for f in dataclasses.fields(FROCOptions))


def split_froc_fields(fields: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``fields`` as (:class:`MatchKeys` fields, :class:`FROCOptions` fields).

    Raises:
        TypeError: a name that is a field of neither.
    """
    unknown = set(fields) - _KEY_FIELDS - _OPTION_FIELDS
    if unknown:
        raise TypeError(f"unknown FROC option(s) {sorted(unknown)}: not a field of MatchKeys or FROCOptions")
    keys = {k: v for k, v in fields.items() if k in _KEY_FIELDS}
    return keys, {k: v for k, v in fields.items() if k in _OPTION_FIELDS}


def froc_from_matches(
    matches: Sequence[ImageMatch],
    *,
    fpis: Sequence[float] = DEFAULT_FPIS,
    options: FROCOptions | None = None,
    **fields: Any,
) -> FROCResult:
    """FROC of already matched images (see :func:`froc`); ``fields``: fields of
    :class:`FROCOptions` that replace those of ``options``."""
    opts = dataclasses.replace(options or FROCOptions(), **fields)
    size_threshold_mm, stratify, n_bootstrap = opts.size_threshold_mm, opts.stratify, opts.n_bootstrap
    seed, ci_level = opts.seed, opts.ci_level
    num_images = len(matches)
    if num_images == 0:
        raise ValueError("FROC needs at least one image (the FPI denominator is the number of images).")
    fpis_t = tuple(float(f) for f in fpis)
    fpis_arr = np.asarray(fpis_t, dtype=np.float64)
    if np.any(fpis_arr < 0) or np.any(np.isnan(fpis_arr)):
        raise ValueError(f"fpis must be >= 0, got {fpis_t}.")
    if n_bootstrap < 0 or not 0.0 < ci_level < 1.0:
        raise ValueError(f"need n_bootstrap >= 0 and 0 < ci_level < 1, got {n_bootstrap}, {ci_level}.")
    pooled = _pooled(matches)
    thresholds = np.r_[np.inf, np.unique(pooled.pred_scores)[::-1]]
    masks = {"all": np.ones(pooled.lesion_scores.shape[0], dtype=bool)}
    if stratify:
        masks.update(_strata_masks(pooled.sizes, pooled.types, size_threshold_mm))
    results = {
        name: _stratum_curve(name, mask, pooled, thresholds, num_images, fpis_arr)
        for name, mask in masks.items()
    }
    boot: dict[str, FROCBootstrap] = {}
    if n_bootstrap > 0:
        fmax = max(float(results["all"]["fpi"][-1]), float(fpis_arr.max(initial=0.0)))
        boot = _bootstrap_intervals(pooled, masks, num_images, fpis_arr, fmax, n_bootstrap, seed, ci_level)

    def build(name: str, strata: dict[str, FROCResult]) -> FROCResult:
        r = results[name]
        return FROCResult(
            fpi=_readonly(r["fpi"]),
            sensitivity=_readonly(r["sensitivity"]),
            thresholds=_readonly(thresholds),
            num_images=num_images,
            num_lesions=r["num_lesions"],
            num_predictions=int(pooled.pred_scores.shape[0]),
            fpis=fpis_t,
            sensitivity_at_fpi=r["interp"],
            sensitivity_at_fpi_step=r["step"],
            cpm=r["cpm"],
            bootstrap=boot.get(name),
            strata=strata,
        )

    return build("all", {name: build(name, {}) for name in masks if name != "all"})


def froc(
    predictions: Sequence[Mapping[str, Any] | Sequence[Any]],
    ground_truth: Sequence[Mapping[str, Any] | NdarrayOrTensor],
    *,
    fpis: Sequence[float] = DEFAULT_FPIS,
    keys: MatchKeys | None = None,
    options: FROCOptions | None = None,
    **fields: Any,
) -> FROCResult:
    """Box-based FROC over a set of images (rules in the module docstring).

    Args:
        predictions: one entry per image: a mapping with ``pred_box_key`` -> (N, 4) boxes
            ``(x1, y1, x2, y2)`` in pixels (x = column, y = row) and ``pred_score_key`` ->
            (N,) scores (the keys of MONAI's detectors, ``box`` / ``label_scores``, by
            default), or a ``(boxes, scores)`` pair, or None (no prediction). Numpy or torch.
        ground_truth: one entry per image: a mapping with ``gt_box_key`` -> (M, 4) lesion
            boxes (same convention; M may be 0) and optionally ``size_key`` -> (M,) sizes in
            mm, ``type_key`` -> (M,) types (or one string), ``spacing_key`` -> pixel spacing;
            or just the (M, 4) boxes.
        fpis: FPIs at which sensitivity is reported.
        keys: where the entries keep boxes, scores, sizes, types, spacing (:class:`MatchKeys`).
        options: strata, bootstrap and intervals (:class:`FROCOptions`).
        fields: any field of :class:`MatchKeys` or :class:`FROCOptions` (e.g.
            ``pred_score_key="scores"``, ``n_bootstrap=0``), replacing that of ``keys`` /
            ``options``.

    Returns:
        the :class:`FROCResult`. Over a set without any lesion the sensitivities are NaN and
        an :class:`UndefinedSensitivityWarning` is issued (likewise for an empty stratum).

    Raises:
        ValueError: no image, mismatched lengths, malformed boxes or NaN scores.
        TypeError: a keyword that is a field of neither :class:`MatchKeys` nor
            :class:`FROCOptions`.

    Example:
        >>> preds = [{"box": [[10, 10, 20, 20], [50, 50, 60, 60]], "label_scores": [0.9, 0.8]},
        ...          {"box": [[0, 0, 5, 5]], "label_scores": [0.7]}]
        >>> gts = [{"box": [[8, 8, 22, 22]], "lesion_size_mm": [5.0]}, {"box": []}]
        >>> r = froc(preds, gts, n_bootstrap=0)
        >>> r.fpi.tolist(), r.sensitivity.tolist()
        ([0.0, 0.0, 0.5, 1.0], [0.0, 1.0, 1.0, 1.0])
    """
    key_fields, option_fields = split_froc_fields(fields)
    matches = match_images(predictions, ground_truth, keys, **key_fields)
    return froc_from_matches(matches, fpis=fpis, options=options, **option_fields)


def froc_table(
    results: Mapping[str, FROCResult],
    fpis: Sequence[float] | None = None,
    *,
    mode: Literal["interpolate", "step"] = "interpolate",
    ci: bool = True,
    cpm: bool = True,
    percent: bool = True,
) -> str:
    """Markdown table: one row per result, sensitivity at each FPI (and CPM).

    Args:
        results: ``{name: FROCResult}``; strata can be listed as their own rows
            (``{"model, <10 mm": r.strata["size<10mm"]}``).
        fpis: columns; default the ``fpis`` of the first result.
        mode: ``"interpolate"`` (headline) or ``"step"`` (conservative).
        ci: append ``[lower, upper]`` where a bootstrap interval is available.
        cpm: add a CPM column.
        percent: print percentages (one decimal) rather than fractions (three decimals).

    Example:
        >>> print(froc_table({"model": r}, fpis=(0.3,)))  # doctest: +SKIP
        | model | images | lesions | Sens@0.3 FPI | CPM |
        |---|---:|---:|---:|---:|
        | model | 200 | 97 | 87.2% [80.1, 93.0] | 81.0% [75.3, 86.1] |
    """
    if not results:
        raise ValueError("results is empty.")
    cols = tuple(float(f) for f in (fpis if fpis is not None else next(iter(results.values())).fpis))

    def fmt(v: float, interval: tuple[float, float] | None) -> str:
        if not math.isfinite(v):
            return "n/a"
        text = f"{100 * v:.1f}%" if percent else f"{v:.3f}"
        if ci and interval is not None and all(math.isfinite(x) for x in interval):
            lo, hi = interval
            text += f" [{100 * lo:.1f}, {100 * hi:.1f}]" if percent else f" [{lo:.3f}, {hi:.3f}]"
        return text

    header = ["model", "images", "lesions"] + [f"Sens@{f:g} FPI" for f in cols] + (["CPM"] if cpm else [])
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, r in results.items():
        values = r.sensitivity_at_fpi if mode == "interpolate" else r.sensitivity_at_fpi_step
        boot = r.bootstrap
        intervals = None
        if boot is not None:
            intervals = boot.sensitivity_at_fpi if mode == "interpolate" else boot.sensitivity_at_fpi_step
        cells = [name, str(r.num_images), str(r.num_lesions)]
        for f in cols:
            v = values[f] if f in values else r.sensitivity_at(f, mode)
            cells.append(fmt(v, intervals.get(f) if intervals else None))
        if cpm:
            cells.append(fmt(r.cpm, boot.cpm if boot is not None else None))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
