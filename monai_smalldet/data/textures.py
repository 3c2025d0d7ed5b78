"""Parenchyma textures and detector transfer curves of the synthetic mammogram generator.

Two independent texture models, so that a detector trained on one can be tested on the other:

* :func:`~monai_smalldet.data.synthetic.power_law_noise`: Gaussian noise with a ``f^-beta``
  radial power spectrum (the generator's default, beta measured on FFDM);
* :func:`clustered_lumpy_noise`: a *clustered lumpy background* after Bochud, Abbey &
  Eckstein, "Statistical texture synthesis of mammographic images with clustered lumpy
  backgrounds", Optics Express 4(1):33-43 (1999): clusters placed uniformly at random, each
  holding a Poisson number of anisotropic lumps scattered around its centre with a Gaussian
  spread and oriented along the direction from the centre, each lump the generalised
  exponential profile ``exp(-alpha * r'^beta)`` with ``r'`` the radius in units of the lump's
  length (along its axis) and width (across). The field is non-Gaussian (fibrous strands
  radiating from dense clusters), which a 1/f model cannot give. The form is theirs; the
  lengths here are in millimetres and were chosen for this generator (strands of a few mm
  around clusters of about a centimetre), not fitted to their data.

The transfer curves map the detected signal (about 0-1, bright = dense) to the stored values
before quantisation: ``linear`` (proportional), ``log`` (logarithmic, as raw detector data
brought to a log scale) and ``sigmoid`` (an S-shaped, contrast-enhancing presentation curve).
All are monotonic, so a lesion stays brighter than its surroundings; what changes is how the
contrast of dense and fatty regions is distributed over the grey levels.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sp_fft

__all__ = ["TRANSFER_CURVES", "apply_transfer_curve", "clustered_lumpy_noise"]

TRANSFER_CURVES: tuple[str, ...] = ("linear", "log", "sigmoid")
"""Names accepted by :func:`apply_transfer_curve`."""


def _lump_kernel(
    shape: tuple[int, int],
    spacing_mm: float,
    theta: float,
    length_mm: float,
    width_mm: float,
    alpha: float,
    beta: float,
) -> np.ndarray:
    """The real FFT of one lump profile centred on pixel (0, 0) of a periodic field."""
    rows, cols = shape
    y = (np.fft.fftfreq(rows) * rows).astype(np.float32)[:, None] * np.float32(spacing_mm)
    x = (np.fft.fftfreq(cols) * cols).astype(np.float32)[None, :] * np.float32(spacing_mm)
    c, s = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    along = (x * c + y * s) / np.float32(length_mm)
    across = (-x * s + y * c) / np.float32(width_mm)
    radius = np.sqrt(along * along + across * across)
    kernel = np.exp(np.float32(-alpha) * radius ** np.float32(beta))
    return sp_fft.rfft2(kernel, workers=-1)


def clustered_lumpy_noise(
    shape: tuple[int, int],
    spacing_mm: float,
    rng: np.random.Generator,
    *,
    clusters_per_cm2: float = 2.5,
    lumps_per_cluster: float = 20.0,
    cluster_sigma_mm: float = 3.0,
    lump_length_mm: float = 1.2,
    lump_width_mm: float = 0.45,
    alpha: float = 2.1,
    beta: float = 0.5,
    orientations: int = 8,
) -> np.ndarray:
    """Zero-mean, unit-variance clustered lumpy background (see the module docstring).

    Lump positions are rounded to the pixel grid and their orientations to ``orientations``
    directions over 180 degrees; each direction's lumps are one sum of impulses convolved with
    that direction's lump (by FFT, periodic), so the cost is ``orientations`` FFTs whatever
    the number of lumps. Lengths are in mm: the texture has the same physical scale at any
    pixel pitch.

    Args:
        shape: (rows, columns).
        spacing_mm: pixel pitch in mm.
        rng: the random generator.
        clusters_per_cm2: mean number of clusters per cm^2 (Poisson).
        lumps_per_cluster: mean number of lumps per cluster (Poisson).
        cluster_sigma_mm: standard deviation of a lump's offset from its cluster's centre.
        lump_length_mm, lump_width_mm: lengths of a lump along and across its axis.
        alpha, beta: the lump profile ``exp(-alpha * r'^beta)``.
        orientations: number of discrete lump directions.

    Returns:
        float32 array of ``shape``.
    """
    rows, cols = shape
    area_cm2 = rows * cols * spacing_mm * spacing_mm / 100.0
    n_clusters = int(rng.poisson(clusters_per_cm2 * area_cm2))
    centres = rng.uniform(0.0, 1.0, (n_clusters, 2)) * np.array([rows, cols], np.float64)
    counts = rng.poisson(lumps_per_cluster, n_clusters)
    offsets = rng.standard_normal((int(counts.sum()), 2)) * (cluster_sigma_mm / spacing_mm)
    positions = np.repeat(centres, counts, axis=0) + offsets
    angle = np.mod(np.arctan2(offsets[:, 0], offsets[:, 1]), math.pi)
    direction = np.minimum((angle / math.pi * orientations).astype(np.int64), orientations - 1)
    # each impulse split over its four nearest pixels (bilinear): sub-pixel positions
    r0, c0 = np.floor(positions[:, 0]), np.floor(positions[:, 1])
    fr, fc = (positions[:, 0] - r0).astype(np.float32), (positions[:, 1] - c0).astype(np.float32)
    r0, c0 = r0.astype(np.int64), c0.astype(np.int64)
    spectrum = np.zeros((rows, cols // 2 + 1), np.complex64)
    for k in range(orientations):
        sel = direction == k
        impulses = np.zeros(rows * cols, np.float32)
        for dr, dc, w in (
            (0, 0, (1 - fr) * (1 - fc)),
            (0, 1, (1 - fr) * fc),
            (1, 0, fr * (1 - fc)),
            (1, 1, fr * fc),
        ):
            idx = np.mod(r0[sel] + dr, rows) * cols + np.mod(c0[sel] + dc, cols)
            impulses += np.bincount(idx, weights=w[sel], minlength=rows * cols).astype(np.float32)
        theta = (k + 0.5) * math.pi / orientations
        kernel = _lump_kernel(shape, spacing_mm, theta, lump_length_mm, lump_width_mm, alpha, beta)
        spectrum += sp_fft.rfft2(impulses.reshape(rows, cols), workers=-1) * kernel
    # the detector pixel integrates over its area (box aperture), as a sampled continuous field
    spectrum *= (np.sinc(np.fft.fftfreq(rows))[:, None] * np.sinc(np.fft.rfftfreq(cols))[None, :]).astype(
        np.float32
    )
    field_ = sp_fft.irfft2(spectrum, s=(rows, cols), workers=-1).astype(np.float32, copy=False)
    field_ -= field_.mean()
    field_ /= max(float(field_.std()), 1e-12)
    return field_


def apply_transfer_curve(signal: np.ndarray, curve: str) -> np.ndarray:
    """Map a detected signal (about 0-1) through one of :data:`TRANSFER_CURVES`, in place
    where it can; values are clipped to [0, 1] first.

    Raises:
        ValueError: for an unknown curve name.
    """
    if curve not in TRANSFER_CURVES:
        raise ValueError(f"transfer curve must be one of {TRANSFER_CURVES}, got {curve!r}.")
    np.clip(signal, 0.0, 1.0, out=signal)
    if curve == "log":  # log(1 + 9 s) / log(10): 0 -> 0, 1 -> 1, fatty regions expanded
        signal *= np.float32(9.0)
        np.log1p(signal, out=signal)
        signal *= np.float32(1.0 / math.log(10.0))
    elif curve == "sigmoid":  # S-curve about mid-grey, rescaled to map 0 -> 0 and 1 -> 1
        lo, hi = 1.0 / (1.0 + math.exp(0.55 / 0.12)), 1.0 / (1.0 + math.exp(-0.45 / 0.12))
        signal -= np.float32(0.55)
        signal *= np.float32(-1.0 / 0.12)
        np.exp(signal, out=signal)
        signal += np.float32(1.0)
        np.reciprocal(signal, out=signal)
        signal -= np.float32(lo)
        signal *= np.float32(1.0 / (hi - lo))
    return signal
