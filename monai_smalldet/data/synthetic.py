"""Synthetic full-field digital mammograms (FFDM) with lesion ground truth.

No public mammograms can be redistributed with this project, so it ships a generator of
realistic-looking FFDM images with exact ground truth. It is meant as a test fixture and a
training source for the CPU-quick profile, never as a stand-in for clinical validation.

Physics, all in millimetres so that ``scale`` changes only the sampling:

* **Geometry**: 3328 x 4096 pixels at 0.07 mm (Hologic Selenia Dimensions) at ``scale=1``;
  ``scale=0.25`` gives 832 x 1024 at 0.28 mm. CC and MLO views, laterality ``L`` (chest wall
  at column 0) or ``R`` (chest wall at the last column). The breast is an ellipse centred on
  the chest wall with a low-order Fourier perturbation of its outline; MLO views are tilted,
  reach the top edge (axilla) and carry a pectoral-muscle triangle in the upper chest-wall
  corner.
* **Thickness**: a compressed breast is flat in the middle and rolls off over the last
  ``D`` mm towards the skin, with a semicircular edge profile ``sqrt(1 - (1 - d/D)^2)``;
  a thin, slightly denser skin line follows the outline.
* **Parenchyma**: power-law ("1/f^beta") Gaussian noise, radial power spectrum
  ``P(f) ~ f^-beta``, ``beta`` drawn from N(3.17, 0.23) for CC and N(3.30, 0.24) for MLO,
  the values measured on FFDM (Cockmartin et al.; Burgess et al., Med Phys 2001); or, with
  ``texture="clustered_lumpy"``, an independent model: a clustered lumpy background (Bochud
  et al. 1999, :mod:`~monai_smalldet.data.textures`). Breast density (fatty to dense) scales
  the glandular fraction and the texture amplitude.
* **Lesions**: circumscribed (smooth or lobulated) and spiculated masses of 3-30 mm
  (diameter log-uniform, so about 52 % are under 10 mm), projected as spheres with a soft
  margin; spicules are tapered lines radiating from the core; microcalcification clusters of
  3-20 specks of 0.1-1 mm within about 1 cm^2, rendered with their integrated attenuation
  preserved at any pixel size (a 0.1 mm speck fades at 0.28 mm pixels, as it would). Benign
  distractors are round, sharply circumscribed masses.
* **Detector**: quantum noise whose standard deviation scales inversely with the pixel
  pitch, a transfer curve (linear, log or sigmoid) and quantisation to ``bits_stored`` (12,
  14 or 16) bits. :data:`DETECTOR_PROFILES` names detector settings (pitch 0.05-0.1 mm, bits,
  MONOCHROME1/2, transfer curve) for training on a mix and leave-one-domain-out tests.

Ground-truth conventions (shared with the datalists written by :func:`generate_dataset`):
boxes are ``(x1, y1, x2, y2)`` with x = **column**, y = **row**, in continuous pixel
coordinates of the stored image (pixel ``i`` spans ``[i, i + 1)``). Malignant findings are
the detection targets (``box``/``label`` with label ``1``); benign distractors are kept out of
them under ``benign_box``/``benign_size_mm``/``benign_type`` so that a detector that flags
them scores a false positive. A mass box encloses its core (spicules excluded); a cluster box
encloses all its specks.

Example:
    .. code-block:: python

        from monai_smalldet.data.synthetic import generate_mammogram

        m = generate_mammogram(seed=7, scale=0.25, view="MLO", laterality="R")
        m.image.shape        # (1024, 832), uint16, MONOCHROME2 (bright = dense)
        m.boxes              # (N, 4) float32 x1, y1, x2, y2 in pixels, x = column
        m.lesion_size_mm     # diameters in mm
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
from scipy import fft as sp_fft
from scipy.special import expit

from ..files import atomic_write, write_json_atomic
from .textures import TRANSFER_CURVES, apply_transfer_curve, clustered_lumpy_noise

__all__ = [
    "FULL_SHAPE_PX",
    "FULL_SPACING_MM",
    "DETECTOR_PROFILES",
    "TEXTURES",
    "VIEW_SLOTS",
    "Lesion",
    "SynthConfig",
    "SyntheticMammogram",
    "generate_dataset",
    "generate_mammogram",
    "load_datalist",
    "power_law_noise",
]

FULL_SHAPE_PX: tuple[int, int] = (4096, 3328)
"""(rows, columns) of a full-resolution synthetic image (Hologic Selenia Dimensions)."""
FULL_SPACING_MM: float = 0.07
"""Pixel pitch of a full-resolution synthetic image, in mm."""
VIEW_SLOTS: tuple[tuple[str, str], ...] = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))
"""The four screening views, in the order images of a study are generated."""

TEXTURES: tuple[str, ...] = ("power_law", "clustered_lumpy")
"""Parenchyma models of :class:`SynthConfig` ``texture``."""

DETECTOR_PROFILES: dict[str, dict[str, Any]] = {
    "a": {"detector_pitch_mm": 0.07, "bits_stored": 12, "p_monochrome1": 0.2, "transfer": "linear"},
    "b": {"detector_pitch_mm": 0.1, "bits_stored": 14, "p_monochrome1": 1.0, "transfer": "log"},
    "c": {"detector_pitch_mm": 0.05, "bits_stored": 16, "p_monochrome1": 0.0, "transfer": "sigmoid"},
}
"""Detector settings by name, for ``SynthConfig(**DETECTOR_PROFILES[name])``: ``a`` is the
default (0.07 mm, the pitch of the Hologic Selenia Dimensions); ``b`` a 0.1 mm pitch (as GE's
Senographe Essential), 14 bits, always MONOCHROME1, log curve; ``c`` a 0.05 mm pitch (as
Fujifilm's Amulet), 16 bits, MONOCHROME2, sigmoid curve. Only the pitches are those of the
named detectors; bits, photometric and curve are combinations chosen to differ, not any
vendor's processing."""

MALIGNANT_TYPES = ("circumscribed_mass", "spiculated_mass", "calcification_cluster")
BENIGN_TYPES = ("benign_mass",)


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of the generator (defaults give screening-like but lesion-rich data).

    Args:
        scale: linear sampling factor; 1.0 = 4096 x 3328 at 0.07 mm, 0.25 = 1024 x 832 at 0.28 mm.
        p_normal: probability that an image has no malignant finding.
        max_lesions: an abnormal image has 1..max_lesions malignant findings.
        type_weights: relative frequency of ``circumscribed_mass``, ``spiculated_mass``,
            ``calcification_cluster``.
        mass_diameter_mm: (min, max) of the log-uniform malignant mass diameter.
        cluster_diameter_mm: (min, max) of the log-uniform calcification-cluster extent.
        small_only: restrict malignant findings to < 10 mm (the paper's small-cancer set).
        p_benign: probability that an image carries one benign distractor (a second with half that).
        benign_diameter_mm: (min, max) of the log-uniform benign mass diameter.
        mass_contrast: (min, max) of the peak attenuation contrast of a mass of
            ``mass_contrast_ref_mm`` diameter (tissue spans about 0.35-0.85). A mass's contrast
            grows linearly with its diameter: the X-ray path through the centre of a roughly
            spherical lesion is its diameter, and for the small attenuation differences
            between carcinoma and fibroglandular tissue (Johns & Yaffe, Phys Med Biol 1987)
            the subject contrast is proportional to that path. Spicules keep the reference
            contrast (their thickness does not grow with the mass).
        mass_contrast_ref_mm: diameter at which ``mass_contrast`` applies.
        mass_contrast_max: upper bound of a mass's peak contrast.
        p_monochrome1: share of images stored as MONOCHROME1 (inverted grey scale).
        bits_stored: 12, 14 or 16.
        p_marker: probability of a burnt-in laterality marker in the air region.
        texture: parenchyma model, one of :data:`TEXTURES`.
        detector_pitch_mm: pixel pitch at ``scale=1``; the field of view stays 286.7 x 233 mm
            (4096 x 3328 pixels at 0.07 mm), so the image size follows the pitch.
        transfer: detector transfer curve, one of
            :data:`~monai_smalldet.data.textures.TRANSFER_CURVES`.
    """

    scale: float = 1.0
    p_normal: float = 0.3
    max_lesions: int = 2
    type_weights: tuple[float, float, float] = (0.35, 0.35, 0.30)
    mass_diameter_mm: tuple[float, float] = (3.0, 30.0)
    cluster_diameter_mm: tuple[float, float] = (3.0, 14.0)
    small_only: bool = False
    p_benign: float = 0.35
    benign_diameter_mm: tuple[float, float] = (4.0, 20.0)
    mass_contrast: tuple[float, float] = (0.05, 0.12)
    mass_contrast_ref_mm: float = 4.0
    mass_contrast_max: float = 0.6
    p_monochrome1: float = 0.2
    bits_stored: int = 12
    p_marker: float = 0.25
    texture: str = "power_law"
    detector_pitch_mm: float = FULL_SPACING_MM
    transfer: str = "linear"

    def __post_init__(self) -> None:
        if not 0.02 <= self.scale <= 2.0:
            raise ValueError(f"scale must be in [0.02, 2.0], got {self.scale}.")
        if self.bits_stored not in (12, 14, 16):
            raise ValueError(f"bits_stored must be 12, 14 or 16, got {self.bits_stored}.")
        for name in ("p_normal", "p_benign", "p_monochrome1", "p_marker"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability, got {value}.")
        if self.max_lesions < 1:
            raise ValueError(f"max_lesions must be >= 1, got {self.max_lesions}.")
        if self.texture not in TEXTURES:
            raise ValueError(f"texture must be one of {TEXTURES}, got {self.texture!r}.")
        if self.transfer not in TRANSFER_CURVES:
            raise ValueError(f"transfer must be one of {TRANSFER_CURVES}, got {self.transfer!r}.")
        if not 0.02 <= self.detector_pitch_mm <= 0.2:
            raise ValueError(f"detector_pitch_mm must be in [0.02, 0.2], got {self.detector_pitch_mm}.")

    @property
    def shape_px(self) -> tuple[int, int]:
        """(rows, columns) of the images at this scale."""
        factor = self.scale * (FULL_SPACING_MM / self.detector_pitch_mm)
        return (round(FULL_SHAPE_PX[0] * factor), round(FULL_SHAPE_PX[1] * factor))

    @property
    def spacing_mm(self) -> float:
        """Pixel pitch in mm at this scale (square pixels)."""
        return self.detector_pitch_mm / self.scale


@dataclass(frozen=True)
class Lesion:
    """One finding in physical units; ``box_mm`` is (x1, y1, x2, y2), x = column direction."""

    kind: str
    center_mm: tuple[float, float]
    size_mm: float
    box_mm: tuple[float, float, float, float]
    malignant: bool


@dataclass
class SyntheticMammogram:
    """A generated image with its ground truth.

    ``image`` holds MONOCHROME2 stored values (bright = dense); :func:`generate_dataset` inverts
    them when it writes a MONOCHROME1 file. Boxes are ``(x1, y1, x2, y2)`` pixels, x = column.
    """

    image: np.ndarray
    breast_mask: np.ndarray
    pixel_spacing_mm: float
    view: str
    laterality: str
    bits_stored: int
    density: float
    beta: float
    lesions: list[Lesion] = field(default_factory=list)
    marker_box: tuple[float, float, float, float] | None = None

    def _boxes(self, malignant: bool) -> np.ndarray:
        rows = [
            np.asarray(les.box_mm) / self.pixel_spacing_mm
            for les in self.lesions
            if les.malignant == malignant
        ]
        return np.asarray(rows, dtype=np.float32).reshape(-1, 4)

    @property
    def boxes(self) -> np.ndarray:
        """Malignant findings, (N, 4) float32 ``x1, y1, x2, y2`` pixels (x = column)."""
        return self._boxes(True)

    @property
    def labels(self) -> np.ndarray:
        """Labels of :attr:`boxes`: 1 = malignant."""
        return np.ones(len(self.boxes), dtype=np.int64)

    @property
    def lesion_size_mm(self) -> list[float]:
        return [les.size_mm for les in self.lesions if les.malignant]

    @property
    def lesion_type(self) -> list[str]:
        return [les.kind for les in self.lesions if les.malignant]

    @property
    def benign_boxes(self) -> np.ndarray:
        """Benign distractors, (M, 4) float32 pixels (not detection targets)."""
        return self._boxes(False)

    @property
    def breast_box(self) -> tuple[int, int, int, int]:
        """Tight bounding box ``(x1, y1, x2, y2)`` of :attr:`breast_mask` in pixels."""
        rows = np.flatnonzero(self.breast_mask.any(axis=1))
        cols = np.flatnonzero(self.breast_mask.any(axis=0))
        return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)

    def to_float(self) -> np.ndarray:
        """The image as float32 in [0, 1], bright = dense."""
        return self.image.astype(np.float32) / float(2**self.bits_stored - 1)


def power_law_noise(
    shape: tuple[int, int],
    spacing_mm: float,
    beta: float,
    rng: np.random.Generator,
    f_min_per_mm: float = 0.01,
) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise with radial power spectrum ``~ f^-beta``.

    The field is synthesised in the frequency domain (random complex coefficients shaped by
    ``f^(-beta/2)``) and brought back with one real inverse FFT. Frequencies are in cycles per
    mm, so the texture has the same physical scale whatever the pixel pitch; below
    ``f_min_per_mm`` the spectrum is held flat to bound the variance.

    Args:
        shape: (rows, columns).
        spacing_mm: pixel pitch in mm.
        beta: spectral exponent (about 3 for mammographic parenchyma).
        rng: the random generator.
        f_min_per_mm: frequency below which the spectrum is flat.

    Returns:
        float32 array of ``shape``.
    """
    rows, cols = shape
    fy = sp_fft.fftfreq(rows, d=spacing_mm).astype(np.float32)[:, None]
    fx = sp_fft.rfftfreq(cols, d=spacing_mm).astype(np.float32)[None, :]
    radius = np.sqrt(fy * fy + fx * fx)
    np.maximum(radius, np.float32(f_min_per_mm), out=radius)
    amplitude = radius ** np.float32(-beta / 2.0)
    amplitude[0, 0] = 0.0
    coeffs = rng.standard_normal((rows, cols // 2 + 1, 2), dtype=np.float32)
    spectrum = (coeffs[..., 0] + 1j * coeffs[..., 1]).astype(np.complex64)
    spectrum *= amplitude
    field_ = sp_fft.irfft2(spectrum, s=(rows, cols), workers=-1).astype(np.float32, copy=False)
    field_ -= field_.mean()
    field_ /= max(float(field_.std()), 1e-12)
    return field_


@dataclass(frozen=True)
class _Outline:
    """Analytic breast outline: an ellipse centred on the chest wall, tilted and perturbed."""

    center_mm: tuple[float, float]  # (x, y); x = 0 is the chest wall (before mirroring)
    semi_axes_mm: tuple[float, float]  # (depth towards the nipple, half height)
    tilt_rad: float
    harmonics: tuple[tuple[int, float, float], ...]  # (order, amplitude, phase)

    def rho(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised radius (``< 1`` inside) and centre distance in mm at points ``(x, y)``."""
        dx = x - np.float32(self.center_mm[0])
        dy = y - np.float32(self.center_mm[1])
        c, s = np.float32(math.cos(self.tilt_rad)), np.float32(math.sin(self.tilt_rad))
        u = (dx * c + dy * s) / np.float32(self.semi_axes_mm[0])
        v = (-dx * s + dy * c) / np.float32(self.semi_axes_mm[1])
        rho0 = np.sqrt(u * u + v * v)
        z = (u + 1j * v).astype(np.complex64) / np.maximum(rho0, np.float32(1e-6))
        wobble = np.ones_like(rho0)
        zk = np.ones_like(z)
        order_done = 0
        for order, amp, phase in self.harmonics:
            while order_done < order:
                zk *= z
                order_done += 1
            wobble += np.float32(amp) * (zk * np.complex64(np.exp(1j * phase))).real
        return rho0 / wobble, np.sqrt(dx * dx + dy * dy)


def _child(seed: int | np.random.SeedSequence, k: int) -> np.random.SeedSequence:
    """The k-th independent stream of ``seed``, derived without mutating a given SeedSequence."""
    if isinstance(seed, np.random.SeedSequence):
        return np.random.SeedSequence(entropy=seed.entropy, spawn_key=(*seed.spawn_key, k))
    return np.random.SeedSequence(entropy=int(seed), spawn_key=(k,))


def _upsample(coarse: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling by an integer ``factor`` with cell centres aligned, cropped to ``shape``."""
    coarse = np.ascontiguousarray(coarse, dtype=np.float32)
    if factor == 1:
        return coarse[: shape[0], : shape[1]].copy()
    size = (coarse.shape[1] * factor, coarse.shape[0] * factor)  # cv2 wants (width, height)
    fine = cv2.resize(coarse, size, interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(fine[: shape[0], : shape[1]])


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _draw_outline(rng: np.random.Generator, view: str, size_mm: tuple[float, float]) -> _Outline:
    height_mm, width_mm = size_mm
    harmonics = tuple(
        (k, float(rng.normal(0.0, 0.025)), float(rng.uniform(0, 2 * math.pi))) for k in (2, 3, 4, 5)
    )
    if view == "CC":
        center = (0.0, height_mm * rng.uniform(0.42, 0.58))
        axes = (width_mm * rng.uniform(0.45, 0.85), height_mm * rng.uniform(0.30, 0.44))
        tilt = math.radians(rng.uniform(-5, 5))
    else:  # MLO: longer, tilted so the nipple points down-out, reaching the axilla at the top
        center = (0.0, height_mm * rng.uniform(0.42, 0.55))
        axes = (width_mm * rng.uniform(0.55, 0.9), height_mm * rng.uniform(0.45, 0.6))
        tilt = math.radians(rng.uniform(10, 28))
        # the axillary tail reaches the top edge along the chest wall (solve rho(0, 0) = 0.9)
        sin_t, cos_t = math.sin(tilt), math.cos(tilt)
        along = min(center[1] * sin_t / axes[0], 0.8)
        axes = (axes[0], max(axes[1], center[1] * cos_t / math.sqrt(0.81 - along**2)))
    return _Outline(center, axes, tilt, harmonics)


def _mass_patch(
    rng: np.random.Generator,
    kind: str,
    radius_mm: float,
    spacing_mm: float,
    contrast: float,
    spicule_contrast: float | None = None,
) -> tuple[np.ndarray, float]:
    """Render a mass centred in a square patch; return (patch, core half-extent in mm).

    ``contrast`` is the peak of the body; spicules peak at 0.6 x ``spicule_contrast``
    (default: ``contrast``)."""
    spicule_contrast = contrast if spicule_contrast is None else spicule_contrast
    lobulation = 0.0 if kind == "benign_mass" else rng.uniform(0.0, 0.12)
    margin_mm = 0.12 if kind == "benign_mass" else rng.uniform(0.3, 0.8) * min(1.0, radius_mm / 4)
    n_spicules = int(rng.integers(8, 21)) if kind == "spiculated_mass" else 0
    spicule_len = [radius_mm * rng.uniform(0.6, 1.6) + rng.uniform(1.0, 4.0) for _ in range(n_spicules)]
    reach_mm = radius_mm * (1 + lobulation) + 3 * margin_mm + (max(spicule_len) if spicule_len else 0.0)
    half = int(math.ceil(reach_mm / spacing_mm)) + 2
    coords = (np.arange(-half, half + 1, dtype=np.float32)) * np.float32(spacing_mm)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    r = np.sqrt(xx * xx + yy * yy)
    theta = np.arctan2(yy, xx)
    boundary = np.full_like(r, radius_mm)
    if lobulation > 0:
        for k in (2, 3, 5):
            boundary += np.float32(radius_mm * lobulation / 3 * rng.uniform(0.5, 1.5)) * np.cos(
                k * theta + np.float32(rng.uniform(0, 2 * math.pi))
            )
    # projected sphere thickness with a soft (ill-defined) or sharp (benign) margin
    ratio = r / boundary
    body = np.sqrt(np.clip(1.0 - ratio * ratio, 0.0, 1.0))
    edge = expit((boundary - r) / np.float32(max(margin_mm, 0.05)))
    patch = np.float32(contrast) * np.maximum(body, 0.35 * edge)
    for length in spicule_len:
        angle = rng.uniform(0, 2 * math.pi)
        ux, uy = math.cos(angle), math.sin(angle)
        start, stop = 0.5 * radius_mm, radius_mm + length
        t = np.clip(xx * ux + yy * uy, start, stop)
        dist = np.sqrt((xx - t * ux) ** 2 + (yy - t * uy) ** 2)
        width = np.float32(rng.uniform(0.25, 0.6)) * (1.0 - (t - start) / (stop - start)) + np.float32(1e-3)
        # a line thinner than a pixel keeps its integrated attenuation
        eff = np.maximum(width, np.float32(spacing_mm))
        spicule = np.float32(0.6 * spicule_contrast) * (width / eff) * np.clip(1.0 - dist / eff, 0.0, 1.0)
        np.maximum(patch, spicule, out=patch)
    return patch, radius_mm * (1 + lobulation)


def _cluster_specks(rng: np.random.Generator, extent_mm: float) -> list[tuple[float, float, float, float]]:
    """Specks of a cluster as (dx_mm, dy_mm, diameter_mm, peak attenuation)."""
    n = int(rng.integers(3, 21))
    specks = []
    for _ in range(n):
        r = 0.5 * extent_mm * math.sqrt(rng.uniform(0, 1))
        a = rng.uniform(0, 2 * math.pi)
        diameter = _log_uniform(rng, 0.1, 1.0)
        specks.append((r * math.cos(a), r * math.sin(a), diameter, float(rng.uniform(0.25, 0.6))))
    return specks


def _add_specks(
    image: np.ndarray,
    center_px: tuple[float, float],
    specks: list[tuple[float, float, float, float]],
    spacing_mm: float,
) -> tuple[float, float, float, float]:
    """Add Gaussian specks whose integral matches a sphere of each diameter; return the box in px."""
    rows, cols = image.shape
    x1 = y1 = math.inf
    x2 = y2 = -math.inf
    pixel_sigma = 0.5 * spacing_mm  # detector aperture blur
    for dx, dy, diameter, peak in specks:
        sigma_obj = diameter / 2.0 / 1.5
        sigma = math.sqrt(sigma_obj**2 + pixel_sigma**2)
        amp = peak * (sigma_obj / sigma) ** 2  # integral of the speck is preserved
        cx = center_px[0] + dx / spacing_mm
        cy = center_px[1] + dy / spacing_mm
        rad = 3 * sigma / spacing_mm + 1
        c0, c1 = max(int(cx - rad), 0), min(int(cx + rad) + 1, cols)
        r0, r1 = max(int(cy - rad), 0), min(int(cy + rad) + 1, rows)
        if c0 >= c1 or r0 >= r1:
            continue
        gx = ((np.arange(c0, c1, dtype=np.float32) + 0.5 - cx) * spacing_mm) ** 2
        gy = ((np.arange(r0, r1, dtype=np.float32) + 0.5 - cy) * spacing_mm) ** 2
        blob = np.exp(-(gy[:, None] + gx[None, :]) / np.float32(2 * sigma * sigma))
        image[r0:r1, c0:c1] += np.float32(amp) * blob
        half_px = max(diameter / 2.0, spacing_mm / 2) / spacing_mm
        x1, y1 = min(x1, cx - half_px), min(y1, cy - half_px)
        x2, y2 = max(x2, cx + half_px), max(y2, cy + half_px)
    return (x1, y1, x2, y2)


def _draw_marker(
    image: np.ndarray, mask: np.ndarray, spacing_mm: float, chest_left: bool, value: float
) -> tuple[float, float, float, float] | None:
    """Burn a block-letter laterality marker into an air corner on the nipple side, if free."""
    rows, cols = image.shape
    h, w = max(int(12 / spacing_mm), 6), max(int(9 / spacing_mm), 4)
    m = max(int(6 / spacing_mm), 1)
    r0 = m
    c0 = cols - m - w if chest_left else m
    if c0 < 0 or r0 + h >= rows or mask[max(r0 - m, 0) : r0 + h + m, max(c0 - m, 0) : c0 + w + m].any():
        return None
    bar = max(w // 4, 1)
    image[r0 : r0 + h, c0 : c0 + bar] = value  # an "L"-like glyph: upright and foot
    image[r0 + h - bar : r0 + h, c0 : c0 + w] = value
    return (float(c0), float(r0), float(c0 + w), float(r0 + h))


def generate_mammogram(
    seed: int | np.random.SeedSequence,
    *,
    scale: float | None = None,
    view: str = "CC",
    laterality: str = "L",
    config: SynthConfig | None = None,
    n_lesions: int | None = None,
    render_findings: bool = True,
) -> SyntheticMammogram:
    """Generate one synthetic FFDM image with its ground truth (see the module docstring).

    Args:
        seed: integer seed or a :class:`numpy.random.SeedSequence`; same seed, same pixels.
        scale: overrides ``config.scale``.
        view: ``"CC"`` or ``"MLO"``.
        laterality: ``"L"`` (chest wall at column 0) or ``"R"`` (chest wall at the last column).
        config: generator parameters; defaults to :class:`SynthConfig`.
        n_lesions: force this many malignant findings (``None``: drawn from ``config``).
        render_findings: ``False`` plans the findings (same random draws, same ground truth)
            but draws none of them: the image of the same seed without its lesions.

    Returns:
        a :class:`SyntheticMammogram`.

    Example:
        >>> m = generate_mammogram(0, scale=0.1, view="MLO", laterality="R", n_lesions=1)
        >>> m.image.shape, m.boxes.shape
        ((410, 333), (1, 4))
    """
    cfg = config or SynthConfig()
    if scale is not None:
        cfg = replace(cfg, scale=scale)
    view, laterality = view.upper(), laterality.upper()
    if view not in ("CC", "MLO"):
        raise ValueError(f"view must be 'CC' or 'MLO', got {view!r}.")
    if laterality not in ("L", "R"):
        raise ValueError(f"laterality must be 'L' or 'R', got {laterality!r}.")
    # independent streams, so the scene (outline, findings) does not depend on the image size
    rng_shape, rng_texture, rng_findings, rng_detector = (
        np.random.default_rng(_child(seed, k)) for k in range(4)
    )
    breast = _anatomy(rng_shape, rng_texture, view, cfg)
    plan = _plan_findings(rng_findings, cfg, n_lesions)
    lesions = _place_findings(rng_findings, plan, breast, cfg, render_findings)
    image, marker_box = _expose(rng_detector, breast, cfg)
    mask = breast.mask
    if laterality == "R":  # mirror: chest wall on the right edge
        image, mask, lesions, marker_box = _mirrored(image, mask, lesions, marker_box, cfg.spacing_mm)
    return SyntheticMammogram(
        image=image,
        breast_mask=mask,
        pixel_spacing_mm=cfg.spacing_mm,
        view=view,
        laterality=laterality,
        bits_stored=cfg.bits_stored,
        density=breast.density,
        beta=breast.beta,
        lesions=lesions,
        marker_box=marker_box,
    )


class _Breast(NamedTuple):
    """The anatomy of one image before its findings: all in stored pixels (chest wall at x = 0)."""

    outline: Any
    view: str
    thickness: np.ndarray  # relative compressed thickness, 0 outside
    mask: np.ndarray  # breast tissue
    muscle: np.ndarray  # pectoral muscle (MLO)
    attenuation: np.ndarray  # float32, the findings are added to it in place
    density: float
    beta: float


def _anatomy(
    rng: np.random.Generator, rng_texture: np.random.Generator, view: str, cfg: SynthConfig
) -> _Breast:
    """Outline, thickness, glandular envelope, texture, skin line and (MLO) pectoral muscle."""
    rows, cols = cfg.shape_px
    sp = cfg.spacing_mm
    size_mm = (rows * sp, cols * sp)
    outline = _draw_outline(rng, view, size_mm)
    # The outline, thickness and envelope fields are smooth: evaluate them on a grid of at most
    # ~0.28 mm and upsample bilinearly (cell centres aligned), which keeps the mask edge exact
    # to a fraction of a pixel and full-size generation fast.
    factor = max(1, int(round(0.28 / sp)))
    crows, ccols = -(-rows // factor), -(-cols // factor)
    csp = np.float32(sp * factor)
    cx_mm = (np.arange(ccols, dtype=np.float32) + 0.5) * csp
    cy_mm = (np.arange(crows, dtype=np.float32) + 0.5) * csp
    xx, yy = np.meshgrid(cx_mm, cy_mm)  # chest wall at x = 0; mirrored at the end for R
    rho_c, centre_dist = outline.rho(xx, yy)
    # distance to the skin along the ray from the chest-wall centre, in mm
    skin_c = centre_dist * (1.0 / np.maximum(rho_c, np.float32(1e-3)) - 1.0)
    rolloff_mm = rng.uniform(15.0, 30.0)
    depth = np.clip(skin_c / np.float32(rolloff_mm), 0.0, 1.0)
    thick_c = np.sqrt(np.clip(1.0 - (1.0 - depth) ** 2, 0.0, 1.0))
    # glandular tissue lies mostly in the central breast, away from the skin
    env_c = np.exp(-((rho_c / np.float32(0.75)) ** 4))
    skin_line_c = np.float32(0.04) * expit((np.float32(1.5) - skin_c) / np.float32(0.3))
    muscle_c = np.zeros_like(rho_c)
    if view == "MLO":
        px = outline.semi_axes_mm[0] * rng.uniform(0.25, 0.45)
        py = size_mm[0] * rng.uniform(0.35, 0.65)
        level = (xx / np.float32(px)) ** 1.15 + yy / np.float32(py)
        muscle_c = expit((1.0 - level) / np.float32(0.6 / px + 0.6 / py)).astype(np.float32)
    fields = [_upsample(f_, factor, (rows, cols)) for f_ in (rho_c, thick_c, env_c, skin_line_c, muscle_c)]
    rho, thickness, envelope, skin_line, muscle_w = fields
    mask = rho < 1.0
    thickness *= mask
    muscle = (muscle_w > 0.5) & mask

    beta = float(np.clip(rng.normal(3.17, 0.23) if view == "CC" else rng.normal(3.30, 0.24), 2.6, 3.7))
    density = float(rng.beta(1.6, 2.2))
    if cfg.texture == "clustered_lumpy":
        texture = clustered_lumpy_noise((rows, cols), sp, rng_texture)
    else:
        texture = power_law_noise((rows, cols), sp, beta, rng_texture)
    # tissue = 0.35 + 0.5 * glandular fraction, built in place on the texture buffer
    tissue = texture
    if view == "MLO":  # the pectoral muscle: dense, with its own faint texture
        muscle_level = np.float32(0.8 + 0.03 * rng.standard_normal()) + np.float32(0.02) * texture
    tissue *= np.float32(0.5 * (0.07 + 0.08 * density))
    envelope *= np.float32(0.5 * (0.15 + 0.45 * density))
    tissue += envelope
    tissue += np.float32(0.35)
    if view == "MLO":
        muscle_level -= tissue
        muscle_level *= muscle_w
        tissue += muscle_level
        del muscle_level
    skin_line *= mask
    attenuation = tissue
    attenuation *= thickness
    attenuation += skin_line
    return _Breast(outline, view, thickness, mask, muscle, attenuation, density, beta)


def _inside(breast: _Breast, sp: float, cx: float, cy: float, radius: float) -> bool:
    """Whether a disc of ``radius`` mm at (cx, cy) lies inside breast tissue, off the muscle."""
    rows, cols = breast.mask.shape
    angles = np.linspace(0, 2 * math.pi, 12, endpoint=False)
    pts_x = np.array([cx] + [cx + radius * math.cos(a) for a in angles], np.float32)
    pts_y = np.array([cy] + [cy + radius * math.sin(a) for a in angles], np.float32)
    r_pts, d_pts = breast.outline.rho(pts_x, pts_y)
    skin = d_pts * (1.0 / np.maximum(r_pts, 1e-3) - 1.0)
    if (r_pts >= 0.95).any() or (skin < 2.0).any():
        return False
    size_mm = (rows * sp, cols * sp)
    if (
        (pts_x <= 1.0).any()
        or (pts_y <= 1.0).any()
        or (pts_x >= size_mm[1] - 1).any()
        or (pts_y >= size_mm[0] - 1).any()
    ):
        return False
    if breast.view == "MLO":
        ci = np.clip((pts_y / sp).astype(int), 0, rows - 1)
        cj = np.clip((pts_x / sp).astype(int), 0, cols - 1)
        if breast.muscle[ci, cj].any():
            return False
    return True


def _plan_findings(
    rng: np.random.Generator, cfg: SynthConfig, n_lesions: int | None
) -> list[tuple[str, bool]]:
    """``(kind, malignant)`` of each finding to place: the malignant ones, then benign masses."""
    if n_lesions is None:
        n_lesions = 0 if rng.uniform() < cfg.p_normal else int(rng.integers(1, cfg.max_lesions + 1))
    plan: list[tuple[str, bool]] = []
    weights = np.asarray(cfg.type_weights, dtype=float) / sum(cfg.type_weights)
    for _ in range(n_lesions):
        plan.append((str(rng.choice(MALIGNANT_TYPES, p=weights)), True))
    n_benign = int(rng.uniform() < cfg.p_benign) + int(rng.uniform() < cfg.p_benign / 2)
    return plan + [("benign_mass", False)] * n_benign


def _place_findings(
    rng: np.random.Generator, plan: list[tuple[str, bool]], breast: _Breast, cfg: SynthConfig, render: bool
) -> list[Lesion]:
    """Size, place and (``render``) draw each planned finding into ``breast.attenuation``."""
    sp = cfg.spacing_mm
    rows, cols = breast.mask.shape
    size_mm = (rows * sp, cols * sp)
    lesions: list[Lesion] = []
    occupied: list[tuple[float, float, float]] = []
    for kind, malignant in plan:
        if kind == "calcification_cluster":
            lo, hi = cfg.cluster_diameter_mm
        elif malignant:
            lo, hi = cfg.mass_diameter_mm
        else:
            lo, hi = cfg.benign_diameter_mm
        if malignant and cfg.small_only:
            hi = min(hi, 9.99)
        size = _log_uniform(rng, lo, hi)
        reach = size / 2 * (2.6 if kind == "spiculated_mass" else 1.2) + 2.0
        for _attempt in range(200):
            cx = rng.uniform(0.02, 0.95) * size_mm[1]
            cy = rng.uniform(0.02, 0.98) * size_mm[0]
            # the whole box (corners at sqrt(2) x the radius) must lie in the breast
            if _inside(breast, sp, cx, cy, (size / 2 + 1.0) * math.sqrt(2)) and all(
                math.hypot(cx - ox, cy - oy) > reach + orr for ox, oy, orr in occupied
            ):
                break
        else:
            continue  # no room (a very small breast): skip this finding
        occupied.append((cx, cy, reach))
        if kind == "calcification_cluster":
            target = breast.attenuation if render else np.zeros_like(breast.attenuation)
            box_px = _add_specks(target, (cx / sp, cy / sp), _cluster_specks(rng, size), sp)
            box = tuple(v * sp for v in box_px)
            extent = max(box[2] - box[0], box[3] - box[1])
            lesions.append(Lesion(kind, (cx, cy), float(extent), box, True))  # type: ignore[arg-type]
            continue
        lesions.append(_draw_mass(rng, kind, malignant, size, (cx, cy), breast, cfg, render))
    return lesions


def _draw_mass(
    rng: np.random.Generator,
    kind: str,
    malignant: bool,
    size: float,
    centre_mm: tuple[float, float],
    breast: _Breast,
    cfg: SynthConfig,
    render: bool,
) -> Lesion:
    """One mass: its contrast from the local thickness, its patch added to the attenuation."""
    sp = cfg.spacing_mm
    rows, cols = breast.mask.shape
    cx, cy = centre_mm
    local_t = float(breast.thickness[min(int(cy / sp), rows - 1), min(int(cx / sp), cols - 1)])
    cpx, cpy = cx / sp, cy / sp
    base = rng.uniform(*cfg.mass_contrast) * local_t
    contrast = min(base * size / cfg.mass_contrast_ref_mm, cfg.mass_contrast_max)
    patch, core = _mass_patch(rng, kind, size / 2, sp, contrast, spicule_contrast=base)
    half = patch.shape[0] // 2
    ic, jc = int(round(cpy - 0.5)), int(round(cpx - 0.5))
    r0, c0 = ic - half, jc - half
    pr0, pc0 = max(0, -r0), max(0, -c0)
    r0c, c0c = max(r0, 0), max(c0, 0)
    r1c, c1c = min(r0 + patch.shape[0], rows), min(c0 + patch.shape[1], cols)
    if render:
        window = patch[pr0 : pr0 + r1c - r0c, pc0 : pc0 + c1c - c0c]
        breast.attenuation[r0c:r1c, c0c:c1c] += window * breast.mask[r0c:r1c, c0c:c1c]
    # the patch centre sits on pixel (ic, jc): its centre in mm is ((jc + .5) sp, (ic + .5) sp)
    mx, my = (jc + 0.5) * sp, (ic + 0.5) * sp
    return Lesion(kind, (mx, my), float(size), (mx - core, my - core, mx + core, my + core), malignant)


def _expose(rng: np.random.Generator, breast: _Breast, cfg: SynthConfig) -> tuple[np.ndarray, Any]:
    """The detector: quantum noise, an optional burnt-in marker, quantisation to stored values."""
    rows, cols = breast.mask.shape
    quantum_sigma = 0.006 * (FULL_SPACING_MM / cfg.spacing_mm)
    signal = np.float32(0.03) + np.float32(0.9) * breast.attenuation
    signal += np.float32(quantum_sigma) * rng.standard_normal((rows, cols), dtype=np.float32)
    max_value = 2**cfg.bits_stored - 1
    marker_box = None
    if rng.uniform() < cfg.p_marker:
        marker_box = _draw_marker(signal, breast.mask, cfg.spacing_mm, chest_left=True, value=0.97)
    if cfg.transfer != "linear":
        apply_transfer_curve(signal, cfg.transfer)
    return np.clip(np.rint(signal * max_value), 0, max_value).astype(np.uint16), marker_box


def _mirrored(
    image: np.ndarray, mask: np.ndarray, lesions: list[Lesion], marker_box: Any, sp: float
) -> tuple[np.ndarray, np.ndarray, list[Lesion], Any]:
    """A left breast's image and ground truth as the right breast's (chest wall on the right)."""
    cols = image.shape[1]
    width = cols * sp
    lesions = [
        replace(
            les,
            center_mm=(width - les.center_mm[0], les.center_mm[1]),
            box_mm=(width - les.box_mm[2], les.box_mm[1], width - les.box_mm[0], les.box_mm[3]),
        )
        for les in lesions
    ]
    if marker_box is not None:
        marker_box = (cols - marker_box[2], marker_box[1], cols - marker_box[0], marker_box[3])
    return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(mask[:, ::-1]), lesions, marker_box


# -- datasets ----------------------------------------------------------------------------------

SPLITS: tuple[str, ...] = ("training", "validation", "test")
_SPLIT_DIRS = {"training": "train", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class _ImageJob:
    out_dir: str
    split: str
    index: int
    seed: int
    config: SynthConfig
    write_png: bool


def _image_entropy(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """Seed of one image: depends on (seed, split, index) only, never on the split sizes."""
    return np.random.SeedSequence(entropy=seed, spawn_key=(SPLITS.index(split), index))


def _make_item(job: _ImageJob) -> dict[str, Any]:
    """Generate, write (DICOM, optional PNG) and describe one image of a dataset."""
    from .dicom_writer import write_mammogram_dicom

    study, slot = divmod(job.index, len(VIEW_SLOTS))
    laterality, view = VIEW_SLOTS[slot]
    seq = _image_entropy(job.seed, job.split, job.index)
    rng_meta = np.random.default_rng(_child(seq, 99))
    m = generate_mammogram(seq, view=view, laterality=laterality, config=job.config)
    max_value = 2**m.bits_stored - 1
    photometric = "MONOCHROME1" if rng_meta.uniform() < job.config.p_monochrome1 else "MONOCHROME2"
    stored = m.image if photometric == "MONOCHROME2" else (max_value - m.image).astype(np.uint16)
    tissue = m.image[m.breast_mask] if m.breast_mask.any() else m.image.ravel()
    low, high = np.percentile(tissue, [0.05, 99.95])
    low, high = max(0.0, low - 0.05 * (high - low)), min(float(max_value), high + 0.05 * (high - low))
    center = (low + high) / 2 if photometric == "MONOCHROME2" else max_value - (low + high) / 2
    split_dir = _SPLIT_DIRS[job.split]
    patient_id = f"SYN-{split_dir.upper()}-{job.seed}-{study:05d}"
    rel = Path(split_dir) / patient_id / f"{laterality}_{view}.dcm"
    entropy = [str(job.seed), job.split, str(study)]
    write_mammogram_dicom(
        Path(job.out_dir) / rel,
        stored,
        pixel_spacing_mm=m.pixel_spacing_mm,
        laterality=laterality,
        view=view,
        photometric=photometric,
        bits_stored=m.bits_stored,
        window_center=float(center),
        window_width=float(max(high - low, 2.0)),
        patient_id=patient_id,
        patient_name=f"Synthetic^{split_dir.capitalize()}{study:05d}",
        study_instance_uid=_uid(entropy + ["study"]),
        series_instance_uid=_uid(entropy + ["series"]),
        sop_instance_uid=_uid(entropy + ["image", str(slot)]),
        study_id=str(study),
        instance_number=slot + 1,
        uid_entropy=entropy + ["image", str(slot)],
    )
    item: dict[str, Any] = {
        "image": rel.as_posix(),
        "box": np.round(m.boxes, 2).tolist(),
        "label": m.labels.tolist(),
        "lesion_size_mm": [round(s, 2) for s in m.lesion_size_mm],
        "lesion_type": m.lesion_type,
        "benign_box": np.round(m.benign_boxes, 2).tolist(),
        "benign_size_mm": [round(les.size_mm, 2) for les in m.lesions if not les.malignant],
        "benign_type": [les.kind for les in m.lesions if not les.malignant],
        "view": view,
        "laterality": laterality,
        "pixel_spacing_mm": round(m.pixel_spacing_mm, 6),
        "shape": list(m.image.shape),
        "breast_box": list(m.breast_box) if m.breast_mask.any() else None,
        "marker_box": list(m.marker_box) if m.marker_box else None,
        "density": round(m.density, 3),
        "beta": round(m.beta, 3),
        "photometric": photometric,
        "bits_stored": m.bits_stored,
        "patient_id": patient_id,
    }
    if job.write_png:
        png_rel = rel.with_suffix(".png")
        _write_png16(Path(job.out_dir) / png_rel, m.image)
        item["image_png"] = png_rel.as_posix()
    return item


def _uid(entropy: list[str]) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=entropy))


def _write_png16(path: Path, image: np.ndarray) -> None:
    """Write a 16-bit greyscale PNG atomically."""

    def write(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), image.astype(np.uint16)):
            raise OSError(f"{path}: could not write PNG")

    atomic_write(path, write, suffix=".png")


def _run_jobs(jobs: list[_ImageJob], workers: int, bar: Any) -> list[dict[str, Any]]:
    """Every job's datalist item, in job order (in ``workers`` processes when more than one)."""
    items: list[dict[str, Any]] = []
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for item in pool.map(_make_item, jobs, chunksize=1):
                items.append(item)
                bar.update()
        return items
    for job in jobs:
        items.append(_make_item(job))
        bar.update()
    return items


def generate_dataset(
    out_dir: str | os.PathLike[str],
    *,
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int = 0,
    scale: float = 1.0,
    small_only: bool = False,
    config: SynthConfig | None = None,
    write_png: bool = False,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Write a synthetic FFDM dataset (DICOM MG) and its MONAI datalist.

    Layout: ``out_dir/{train,val,test}/<PatientID>/<L|R>_<CC|MLO>.dcm``; consecutive images form
    screening studies of four views (LCC, LMLO, RCC, RMLO) sharing patient, study and series
    UIDs (lesions are drawn independently per view). ``out_dir/datalist.json`` is a
    decathlon-style datalist (``training``/``validation``/``test``; image paths relative to
    ``out_dir``, load it with ``monai.data.load_decathlon_datalist(path, data_list_key=...)``),
    ``out_dir/dataset.json`` records the generator parameters. Each image's seed depends only
    on ``(seed, split, index)``: the same call gives byte-identical pixels, and growing a split
    leaves the existing images unchanged.

    Args:
        out_dir: output folder (created).
        n_train, n_val, n_test: images per split.
        seed: dataset seed.
        scale: image scale (1.0 = 3328 x 4096 at 0.07 mm).
        small_only: malignant findings all < 10 mm (the paper's small-cancer test set).
        config: further generator parameters (its ``scale``/``small_only`` are overridden).
        write_png: also write each image as a 16-bit PNG beside the DICOM.
        workers: processes used to generate images.
        progress: show a tqdm progress bar.

    Returns:
        the path of ``datalist.json``.
    """
    from tqdm.auto import tqdm

    counts = {"training": n_train, "validation": n_val, "test": n_test}
    for split, n in counts.items():
        if n < 0:
            raise ValueError(f"number of {split} images must be >= 0, got {n}.")
    cfg = replace(config or SynthConfig(), scale=scale, small_only=small_only)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [
        _ImageJob(str(out), split, i, seed, cfg, write_png) for split in SPLITS for i in range(counts[split])
    ]
    with tqdm(total=len(jobs), desc="synthesising mammograms", unit="img", disable=not progress) as bar:
        items = _run_jobs(jobs, workers, bar)
    datalist: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    for job, item in zip(jobs, items, strict=True):
        datalist[job.split].append(item)
    write_json_atomic(out / "datalist.json", datalist)
    write_json_atomic(
        out / "dataset.json",
        {
            "name": "monai-smalldet synthetic FFDM",
            "description": "Synthetic full-field digital mammograms; not real patient data.",
            "seed": seed,
            "counts": counts,
            "config": asdict(cfg),
            "shape_px": list(cfg.shape_px),
            "pixel_spacing_mm": cfg.spacing_mm,
            "box_convention": "x1, y1, x2, y2 in pixels of the stored image; x = column",
            "label_convention": "label 1 = malignant; benign distractors under benign_* keys",
        },
    )
    return out / "datalist.json"


def load_datalist(path: str | os.PathLike[str], split: str = "training") -> list[dict[str, Any]]:
    """Load one split of a datalist with absolute image paths (MONAI ``load_decathlon_datalist``)."""
    from monai.data import load_decathlon_datalist

    path = Path(path)
    return load_decathlon_datalist(path, is_segmentation=False, data_list_key=split, base_dir=path.parent)
