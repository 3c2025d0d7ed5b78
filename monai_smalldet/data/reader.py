"""A MONAI :class:`~monai.data.ImageReader` for 2-D mammograms (DICOM MG, PNG, TIFF, NIfTI).

It wraps :func:`monai_smalldet.data.dicom.read_mammogram`, so the array handed to MONAI is
already ``float32`` in ``[0, 1]`` with bright = dense tissue, in ``(rows, cols)`` order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.config import PathLike
from monai.data import ImageReader
from monai.utils import MetaKeys, TraceKeys, ensure_tuple

from .dicom import DEFAULT_SPACING_MM, MammogramMeta, read_mammogram

__all__ = ["MAMMOGRAM_SUFFIXES", "MammogramReader", "mammogram_meta_dict"]

#: File name endings :class:`MammogramReader` accepts without looking inside the file.
MAMMOGRAM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".png", ".tif", ".tiff", ".nii", ".nii.gz")


def _has_dicm_marker(path: PathLike) -> bool:
    """Whether ``path`` is a file with the ``DICM`` marker after a 128-byte preamble."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except (OSError, TypeError, ValueError):
        return False


def mammogram_meta_dict(meta: MammogramMeta) -> dict[str, Any]:
    """The MONAI metadata dict of one image: MONAI's required keys plus every meta field.

    MONAI keys: ``spatial_shape`` (``(rows, cols)``), ``original_channel_dim`` (``nan``: the
    array has no channel dim), ``affine`` and ``original_affine`` (4 x 4,
    ``diag(row spacing, column spacing, 1, 1)``: array axis 0 = rows, axis 1 = columns, in mm),
    and ``filename_or_obj``. Every :class:`~monai_smalldet.data.dicom.MammogramMeta` field is
    added under its own name; ``pixel_spacing_mm`` becomes a ``float64`` array
    ``[row, col]`` (so a batch collates to ``(B, 2)``) and ``None`` values become MONAI's
    ``"none"`` marker (``TraceKeys.NONE``), as :class:`monai.data.ImageReader` subclasses do,
    so that batches collate.

    Args:
        meta: what :func:`~monai_smalldet.data.dicom.read_mammogram` returned.

    Example:
        >>> from monai_smalldet.data.dicom import MammogramMeta
        >>> meta = MammogramMeta("a.png", 4, 3, (0.1, 0.07), "default", None, None, "MONOCHROME2", 8)
        >>> d = mammogram_meta_dict(meta)
        >>> d["spatial_shape"].tolist(), float(d["affine"][0, 0]), d["laterality"]
        ([4, 3], 0.1, 'none')
    """
    out: dict[str, Any] = {}
    for key, value in meta.to_dict().items():
        out[key] = str(TraceKeys.NONE) if value is None else value
    row_mm, col_mm = (float(v) for v in meta.pixel_spacing_mm)
    out["pixel_spacing_mm"] = np.array([row_mm, col_mm], dtype=np.float64)
    affine = np.diag([row_mm, col_mm, 1.0, 1.0])
    out[MetaKeys.AFFINE] = affine
    out[MetaKeys.ORIGINAL_AFFINE] = affine.copy()
    out[MetaKeys.SPATIAL_SHAPE] = np.asarray((meta.rows, meta.columns))
    out[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan")
    out["filename_or_obj"] = meta.path
    return out


class MammogramReader(ImageReader):
    """Load 2-D mammograms (DICOM MG, PNG, TIFF, NIfTI) for MONAI's ``LoadImage``/``LoadImaged``.

    Reading is done by :func:`~monai_smalldet.data.dicom.read_mammogram`: the data array is
    ``float32`` ``(H, W)`` = ``(rows, cols)`` in ``[0, 1]`` with bright = dense tissue and **no
    channel dim**; unlike :class:`monai.data.PILReader` the axes are *not* swapped. The meta
    dict (see :func:`mammogram_meta_dict`) carries ``spatial_shape``, ``original_channel_dim``
    (``nan``), an ``affine`` from the pixel spacing, ``filename_or_obj`` and every
    :class:`~monai_smalldet.data.dicom.MammogramMeta` field (``pixel_spacing_mm``,
    ``laterality``, ``view``, ``photometric``, UIDs, ...).

    Several file names given at once are stacked along a new first (channel) dim, like
    MONAI's readers do; they must then have the same shape.

    Note:
        ``LoadImage(reader=MammogramReader())`` also keeps MONAI's default readers as
        fall-backs: if this reader refuses a file, ``LoadImage`` tries the others, which may
        read it without this reader's checks. :class:`monai_smalldet.transforms.LoadMammogram`
        uses this reader only, so that its errors surface.

    Args:
        require_mg: refuse DICOM files whose Modality is not ``MG`` (else warn).
        apply_voi: apply the DICOM VOI LUT / window.
        default_spacing_mm: spacing assumed when a file records none.
        bits_stored: bit depth of integer PNG/TIFF/NIfTI data; ``None`` infers it.

    Example:
        >>> from monai.transforms import Compose, LoadImaged
        >>> load = Compose([LoadImaged(keys="image", reader=MammogramReader(), ensure_channel_first=True)])
        >>> item = load({"image": "/data/lcc.dcm"})  # doctest: +SKIP
        >>> item["image"].shape, item["image"].meta["laterality"]  # doctest: +SKIP
        (torch.Size([1, 4096, 3328]), 'L')
    """

    def __init__(
        self,
        require_mg: bool = False,
        apply_voi: bool = True,
        default_spacing_mm: float = DEFAULT_SPACING_MM,
        bits_stored: int | None = None,
    ) -> None:
        super().__init__()
        self.require_mg = require_mg
        self.apply_voi = apply_voi
        self.default_spacing_mm = default_spacing_mm
        self.bits_stored = bits_stored

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Whether every file in ``filename`` looks like a mammogram this reader handles.

        Accepted: names ending in ``.dcm``, ``.dicom``, ``.png``, ``.tif``, ``.tiff``, ``.nii``,
        ``.nii.gz`` (case-insensitive), and files of any other name (e.g. without suffix, or
        named by their SOP Instance UID) that carry the DICOM ``DICM`` marker.

        Args:
            filename: file name or a list of file names to read.
        """
        names = ensure_tuple(filename)
        if not names:
            return False
        for name in names:
            if not isinstance(name, (str, os.PathLike)):
                return False
            text = os.fspath(name).lower()
            if not (text.endswith(MAMMOGRAM_SUFFIXES) or _has_dicm_marker(name)):
                return False
        return True

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> Any:
        """Read one or several files; returns ``(array, MammogramMeta)`` or a list of them.

        Args:
            data: file name or a list of file names to read.
            kwargs: overrides of the constructor arguments for this call (``require_mg``,
                ``apply_voi``, ``default_spacing_mm``, ``bits_stored``).

        Raises:
            MammogramReadError: for a file that is not a readable single 2-D mammogram.
        """
        options = {
            "require_mg": self.require_mg,
            "apply_voi": self.apply_voi,
            "default_spacing_mm": self.default_spacing_mm,
            "bits_stored": self.bits_stored,
        }
        unknown = set(kwargs) - set(options)
        if unknown:
            raise TypeError(f"MammogramReader.read got unexpected arguments {sorted(unknown)}.")
        options.update(kwargs)
        filenames: Sequence[PathLike] = ensure_tuple(data)
        images = [read_mammogram(name, **options) for name in filenames]
        return images if len(images) > 1 else images[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """Return the ``(H, W)`` array (or ``(N, H, W)`` for N files) and its meta dict.

        The meta dict is that of the first image (see :func:`mammogram_meta_dict`); for
        several images ``original_channel_dim`` is 0.

        Args:
            img: what :meth:`read` returned.
        """
        items = [img] if isinstance(img, tuple) else list(img)
        arrays = [array for array, _ in items]
        meta = mammogram_meta_dict(items[0][1])
        if len(arrays) == 1:
            return arrays[0], meta
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            names = [m.path for _, m in items]
            raise ValueError(f"cannot stack images of different shapes {sorted(shapes)}: {names}.")
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, axis=0), meta
