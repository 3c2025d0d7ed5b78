"""FROC bootstrap: images resampled with replacement (a lesion and its image's false positives
stay together), percentile intervals; and the masks of lesion strata."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .curve import CPM_FPIS, sensitivity_at_fpi

# resamples generated and evaluated together; fixed so that the random stream, hence the
# interval, does not depend on the data size
_BOOTSTRAP_BLOCK = 50


def _strata_masks(
    sizes: np.ndarray, types: list[str | None], size_threshold_mm: float
) -> dict[str, np.ndarray]:
    masks: dict[str, np.ndarray] = {}
    known = ~np.isnan(sizes)
    if known.any():
        masks[f"size<{size_threshold_mm:g}mm"] = known & (sizes < size_threshold_mm)
        masks[f"size>={size_threshold_mm:g}mm"] = known & (sizes >= size_threshold_mm)
    type_arr = np.array(["" if t is None else t for t in types], dtype=object)
    for t in sorted({t for t in types if t is not None}):
        masks[f"type={t}"] = type_arr == t
    return masks


def _bootstrap(
    lesion_scores: np.ndarray,
    lesion_image: np.ndarray,
    fp_scores: np.ndarray,
    fp_image: np.ndarray,
    lesion_masks: list[np.ndarray],
    num_images: int,
    fpis: np.ndarray,
    grid: np.ndarray,
    counts_blocks: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Resampled statistics, one stratum per entry of ``lesion_masks``.

    ``counts_blocks`` yields (b, num_images) arrays: how many times each image is drawn.
    Returns, for each stratum: interpolated sensitivity at ``fpis`` (S, B, F), step
    sensitivity (S, B, F), CPM (S, B), interpolated sensitivity on ``grid`` (S, B, G).
    """
    hit = ~np.isnan(lesion_scores)
    score = np.concatenate([lesion_scores[hit], fp_scores])
    image = np.concatenate([lesion_image[hit], fp_image]).astype(np.int64)
    is_tp = np.concatenate([np.ones(int(hit.sum()), bool), np.zeros(fp_scores.shape[0], bool)])
    order = np.argsort(-score, kind="stable")
    score, image, is_tp = score[order], image[order], is_tp[order]
    # one operating point per distinct score: every event sharing the score enters at once
    ends = np.flatnonzero(np.r_[score[1:] != score[:-1], True]) if score.size else np.zeros(0, np.int64)
    tp_masks = [
        is_tp & np.concatenate([m[hit], np.zeros(fp_scores.shape[0], bool)])[order] for m in lesion_masks
    ]
    lesions_per_image = [np.bincount(lesion_image[m], minlength=num_images) for m in lesion_masks]
    is_fp = ~is_tp
    targets = np.concatenate([fpis, np.asarray(CPM_FPIS), grid])
    nf, nc = fpis.shape[0], len(CPM_FPIS)

    out_interp, out_step, out_cpm, out_grid = [], [], [], []
    for counts in counts_blocks:
        b = counts.shape[0]
        weights = counts[:, image]  # (b, E)
        fpi = np.zeros((b, ends.shape[0] + 1))
        fpi[:, 1:] = np.cumsum(weights * is_fp, axis=1)[:, ends] / float(num_images)
        block_interp = np.full((len(lesion_masks), b, nf), np.nan)
        block_step = np.full_like(block_interp, np.nan)
        block_cpm = np.full((len(lesion_masks), b), np.nan)
        block_grid = np.full((len(lesion_masks), b, grid.shape[0]), np.nan)
        for s, (tp_mask, per_image) in enumerate(zip(tp_masks, lesions_per_image, strict=True)):
            n_les = counts @ per_image
            sens = np.zeros_like(fpi)
            sens[:, 1:] = np.cumsum(weights * tp_mask, axis=1)[:, ends]
            for r in np.flatnonzero(n_les > 0):
                row = sens[r] / float(n_les[r])
                vals = sensitivity_at_fpi(fpi[r], row, targets, "interpolate")
                block_interp[s, r] = vals[:nf]
                block_cpm[s, r] = vals[nf : nf + nc].mean()
                block_grid[s, r] = vals[nf + nc :]
                block_step[s, r] = sensitivity_at_fpi(fpi[r], row, fpis, "step")
        out_interp.append(block_interp)
        out_step.append(block_step)
        out_cpm.append(block_cpm)
        out_grid.append(block_grid)
    return (
        np.concatenate(out_interp, axis=1),
        np.concatenate(out_step, axis=1),
        np.concatenate(out_cpm, axis=1),
        np.concatenate(out_grid, axis=1),
    )


def _percentile_ci(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along axis 0, ignoring NaN (resamples without lesions)."""
    q = 100.0 * np.array([(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    if values.shape[0] == 0 or np.all(np.isnan(values)):
        nan = np.full(values.shape[1:], np.nan)
        return nan, nan.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        lo, hi = np.nanpercentile(values, q, axis=0)
    return lo, hi


def _counts_blocks(rng: np.random.Generator, n_resamples: int, num_images: int):
    done = 0
    while done < n_resamples:
        b = min(_BOOTSTRAP_BLOCK, n_resamples - done)
        draws = rng.integers(0, num_images, size=(b, num_images))
        offsets = (np.arange(b)[:, None] * num_images + draws).reshape(-1)
        yield np.bincount(offsets, minlength=b * num_images).reshape(b, num_images).astype(np.float64)
        done += b
