"""PNG/TIFF (Pillow) and NIfTI (nibabel) mammograms for :func:`~monai_smalldet.data.dicom.read_mammogram`:
the same ``float32`` ``(H, W)`` image in ``[0, 1]`` and :class:`~monai_smalldet.data.dicom.MammogramMeta`."""

from __future__ import annotations

import numpy as np

from .dicom import (
    MammogramMeta,
    MammogramReadError,
    _normalise_plain,
    _spacing_from,
)

__all__ = ["read_nifti", "read_pillow"]


_PIL_GREY_MODES = ("L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def read_pillow(
    path: str, kind: str, default_spacing_mm: float, bits_stored: int | None
) -> tuple[np.ndarray, MammogramMeta]:
    from PIL import Image, UnidentifiedImageError

    label = kind.upper()
    try:
        with Image.open(path) as img:
            n_frames = int(getattr(img, "n_frames", 1))
            if n_frames > 1:
                raise MammogramReadError(
                    path, f"multi-frame {label} ({n_frames} pages): a single 2-D image is expected"
                )
            if img.mode not in _PIL_GREY_MODES:
                raise MammogramReadError(
                    path,
                    f"colour or palette {label} (Pillow mode {img.mode}): only single-channel "
                    "8/16-bit greyscale is supported",
                )
            img.load()
            data = np.asarray(img)
    except MammogramReadError:
        raise
    except UnidentifiedImageError:
        raise MammogramReadError(path, f"not a valid {label} image (Pillow cannot identify it)") from None
    except Exception as exc:
        raise MammogramReadError(path, f"unreadable {label} image ({type(exc).__name__}: {exc})") from None
    if data.ndim != 2:
        raise MammogramReadError(
            path, f"{label} image has shape {data.shape}: a 2-D greyscale image is expected"
        )
    if data.dtype.byteorder == ">":
        data = data.astype(data.dtype.newbyteorder("<"))
    image, bits = _normalise_plain(path, data, bits_stored, label)
    meta = MammogramMeta(
        path=path,
        rows=int(image.shape[0]),
        columns=int(image.shape[1]),
        pixel_spacing_mm=(default_spacing_mm, default_spacing_mm),
        spacing_source="default",
        laterality=None,
        view=None,
        photometric="MONOCHROME2",
        bits_stored=bits,
        source_format=kind,
    )
    return image, meta


_NIFTI_UNIT_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001, "unknown": 1.0}


def read_nifti(
    path: str, default_spacing_mm: float, bits_stored: int | None
) -> tuple[np.ndarray, MammogramMeta]:
    import nibabel as nib

    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
        zooms = [float(z) for z in img.header.get_zooms()]
        unit = img.header.get_xyzt_units()[0] if hasattr(img.header, "get_xyzt_units") else "unknown"
    except Exception as exc:
        raise MammogramReadError(path, f"unreadable NIfTI image ({type(exc).__name__}: {exc})") from None
    while data.ndim > 2 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 2:
        raise MammogramReadError(
            path, f"NIfTI image has shape {data.shape}: a single 2-D image (x, y) or (x, y, 1) is expected"
        )
    if 0 in data.shape:
        raise MammogramReadError(path, f"zero-sized NIfTI image (shape {data.shape})")
    data = np.ascontiguousarray(data.T)  # (x, y) = (cols, rows) -> (rows, cols)
    image, bits = _normalise_plain(path, data, bits_stored, "NIfTI")
    scale = _NIFTI_UNIT_TO_MM.get(str(unit), 1.0)
    spacing = _spacing_from([zooms[1] * scale, zooms[0] * scale]) if len(zooms) >= 2 else None
    source = "pixdim"
    if spacing is None:
        spacing, source = (default_spacing_mm, default_spacing_mm), "default"
    meta = MammogramMeta(
        path=path,
        rows=int(image.shape[0]),
        columns=int(image.shape[1]),
        pixel_spacing_mm=spacing,
        spacing_source=source,
        laterality=None,
        view=None,
        photometric="MONOCHROME2",
        bits_stored=bits,
        source_format="nifti",
    )
    return image, meta
