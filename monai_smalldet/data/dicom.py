"""Reading and writing single 2-D mammograms: DICOM MG first, PNG/TIFF/NIfTI as fall-backs.

:func:`read_mammogram` turns one file into a ``float32`` array of shape ``(H, W)`` =
``(rows, columns)`` with values in ``[0, 1]`` where **bright means dense tissue**, whatever
the photometric interpretation, plus a :class:`MammogramMeta` record (pixel spacing,
laterality, view, UIDs, ...). Every problem with the *file* is reported as a
:class:`MammogramReadError` that names the file and says what is wrong with it; no raw
pydicom, Pillow, nibabel or numpy exception escapes for a bad file.

:func:`write_mammogram_dicom` writes a Digital Mammography X-Ray Image Storage object
(explicit VR little endian) that DICOM loaders can group by patient, study and series.

Intensity mapping of DICOM files follows the DICOM grayscale pipeline
(PS3.4 Annex N.2.1.1): stored values -> Modality LUT (Rescale Slope/Intercept or
Modality LUT Sequence) -> VOI LUT (VOI LUT Sequence, or Window Center/Width with the
VOI LUT Function ``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID``) -> normalisation to
``[0, 1]`` by the output range of the last step -> inversion for ``MONOCHROME1``.
The LUT steps reuse :func:`pydicom.pixels.apply_modality_lut`,
:func:`pydicom.pixels.apply_voi` and :func:`pydicom.pixels.apply_windowing` (the two
halves of :func:`pydicom.pixels.apply_voi_lut`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from ..files import atomic_write
from ..spacing import read_spacing_mm

__all__ = [
    "DEFAULT_SPACING_MM",
    "MG_IMAGE_STORAGE_FOR_PRESENTATION",
    "MG_IMAGE_STORAGE_FOR_PROCESSING",
    "MammogramMeta",
    "MammogramReadError",
    "NonMammogramWarning",
    "SUPPORTED_VIEWS",
    "read_mammogram",
    "write_mammogram_dicom",
]

#: Pixel spacing (mm) assumed when a file records none: 70 um, the Hologic detector pitch
#: used by Rangarajan et al. (2022).
DEFAULT_SPACING_MM = 0.07

#: SOP Class UID of Digital Mammography X-Ray Image Storage - For Presentation.
MG_IMAGE_STORAGE_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
#: SOP Class UID of Digital Mammography X-Ray Image Storage - For Processing.
MG_IMAGE_STORAGE_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_PNG_SUFFIXES = (".png",)
_TIFF_SUFFIXES = (".tif", ".tiff")
_INFERRED_BIT_DEPTHS = (8, 10, 12, 14, 16)

# View Position -> (SNOMED CT code of the view, code meaning, PatientOrientation for L, for R).
# PatientOrientation gives the patient direction of increasing column index, then of increasing
# row index (PS3.3 C.7.6.1.1.1); mammograms are stored with the chest wall at column 0 for a
# left breast and at the last column for a right breast (PS3.3 C.8.11.7 / IHE Mammography).
_VIEWS: dict[str, tuple[str, str, str, str]] = {
    "CC": ("399162004", "cranio-caudal", "A\\R", "P\\L"),
    "XCCL": ("399192008", "cranio-caudal exaggerated laterally", "A\\R", "P\\L"),
    "XCCM": ("399101009", "cranio-caudal exaggerated medially", "A\\R", "P\\L"),
    "MLO": ("399368009", "medio-lateral oblique", "A\\FR", "P\\FL"),
    "ML": ("399260004", "medio-lateral", "A\\F", "P\\F"),
}
#: View Position values :func:`write_mammogram_dicom` knows the PatientOrientation of.
SUPPORTED_VIEWS: tuple[str, ...] = tuple(_VIEWS)


class MammogramReadError(ValueError):
    """A file could not be read as a single 2-D greyscale mammogram.

    Args:
        path: the file that was being read.
        reason: what is wrong with it, in words (e.g. ``"multi-frame image (NumberOfFrames 3)"``).

    Example:
        >>> err = MammogramReadError("/data/a.dcm", "no Pixel Data element (7FE0,0010)")
        >>> str(err)
        '/data/a.dcm: no Pixel Data element (7FE0,0010)'
        >>> err.reason
        'no Pixel Data element (7FE0,0010)'
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        # keep the two-argument constructor when the error crosses a DataLoader worker boundary
        return (type(self), (self.path, self.reason))


class NonMammogramWarning(UserWarning):
    """A DICOM file was read whose Modality is not ``MG`` (or is absent)."""


@dataclass(frozen=True)
class MammogramMeta:
    """What :func:`read_mammogram` learnt about one image besides its pixels.

    Attributes:
        path: the file read.
        rows: image height H in pixels.
        columns: image width W in pixels.
        pixel_spacing_mm: ``(row spacing, column spacing)`` in mm, i.e. the physical distance
            between the centres of vertically / horizontally adjacent pixels.
        spacing_source: where the spacing came from: ``"ImagerPixelSpacing"``,
            ``"PixelSpacing"``, ``"pixdim"`` (NIfTI header zooms) or ``"default"`` (the
            ``default_spacing_mm`` argument of :func:`read_mammogram`).
        laterality: ``"L"`` or ``"R"`` from ImageLaterality, else Laterality; ``None`` if unknown.
        view: View Position (e.g. ``"CC"``, ``"MLO"``); ``None`` if unknown.
        photometric: Photometric Interpretation of the file (``"MONOCHROME2"`` for non-DICOM).
        bits_stored: Bits Stored (DICOM), the inferred or given bit depth of integer PNG/TIFF/NIfTI
            data, or the bit width of the float type for float data.
        modality: DICOM Modality (``"MG"`` for mammograms); ``None`` for non-DICOM files.
        presentation_intent: PresentationIntentType (``"FOR PRESENTATION"``/``"FOR PROCESSING"``).
        transfer_syntax: Transfer Syntax UID of a DICOM file.
        study_instance_uid: StudyInstanceUID.
        series_instance_uid: SeriesInstanceUID.
        sop_instance_uid: SOPInstanceUID.
        patient_id: PatientID.
        source_format: ``"dicom"``, ``"png"``, ``"tiff"`` or ``"nifti"``.

    Example:
        >>> meta = MammogramMeta(path="a.png", rows=4, columns=3, pixel_spacing_mm=(0.07, 0.07),
        ...                      spacing_source="default", laterality=None, view=None,
        ...                      photometric="MONOCHROME2", bits_stored=8, source_format="png")
        >>> meta.to_dict()["pixel_spacing_mm"]
        [0.07, 0.07]
    """

    path: str
    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, float]
    spacing_source: str
    laterality: str | None
    view: str | None
    photometric: str
    bits_stored: int
    modality: str | None = None
    presentation_intent: str | None = None
    transfer_syntax: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    patient_id: str | None = None
    source_format: str = "dicom"

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-serialisable dict (tuples become lists).

        Example:
            >>> import json
            >>> meta = MammogramMeta("a.png", 4, 3, (0.07, 0.07), "default", None, None, "MONOCHROME2", 8)
            >>> json.loads(json.dumps(meta.to_dict()))["rows"]
            4
        """
        out = asdict(self)
        out["pixel_spacing_mm"] = [float(v) for v in self.pixel_spacing_mm]
        return out


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def read_mammogram(
    path: str | os.PathLike[str],
    *,
    require_mg: bool = False,
    apply_voi: bool = True,
    default_spacing_mm: float = DEFAULT_SPACING_MM,
    bits_stored: int | None = None,
) -> tuple[np.ndarray, MammogramMeta]:
    """Read one 2-D mammogram as ``float32`` ``(H, W)`` in ``[0, 1]``, bright = dense tissue.

    The format is recognised from the file content (``DICM`` marker, PNG/TIFF signatures,
    NIfTI magic), then from the suffix (``.nii``/``.nii.gz``, ``.png``, ``.tif``/``.tiff``).

    **DICOM** (any file with a ``DICM`` marker, whatever its name): the Modality LUT
    (Rescale Slope/Intercept or Modality LUT Sequence) is applied to the stored values.
    Then, if ``apply_voi`` and the file has a VOI LUT Sequence or Window Center/Width, the
    first VOI transform is applied (the LUT is preferred over the window) and the result is
    divided by pydicom's documented output range of that step: ``[0, 2**n - 1]`` for a VOI
    LUT with ``n`` bits per entry, the modality output range of the stored-value range for
    windowing (VOI LUT Function ``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID``). Otherwise the
    values are normalised by the range the header allows: ``[0, 2**BitsStored - 1]``
    (unsigned) or ``[-2**(BitsStored-1), 2**(BitsStored-1) - 1]`` (signed), mapped through
    the Modality LUT. ``MONOCHROME1`` images are inverted (``1 - x``) so that bright means
    dense. Presentation LUT Shape is not applied: for MG it merely restates the
    photometric interpretation.

    **PNG / TIFF** (8- or 16-bit greyscale, single page, via Pillow): integer values are
    divided by ``2**b - 1`` where ``b`` is ``bits_stored`` if given, else the smallest of 8,
    10, 12, 14, 16 bits that holds the maximum value; float TIFFs are min-max normalised.
    The spacing is ``default_spacing_mm`` (``spacing_source="default"``).

    **NIfTI** (``.nii``/``.nii.gz`` via nibabel): NIfTI arrays are indexed ``(x, y)`` = (column,
    row) -- the convention MONAI's ``NibabelReader`` keeps -- so the array is **transposed**
    to ``(rows, cols)``; a writer should therefore store ``image_hw.T``. A trailing singleton
    dimension (``(x, y, 1)``) is squeezed. No reorientation by the affine is done. Spacing
    is ``(zooms[1], zooms[0])`` (``spacing_source="pixdim"``), converted to mm from the
    header's spatial unit. Float (or scaled, or negative integer) data are min-max
    normalised; non-negative integer data are treated like PNG.

    Images of any size from 1 x 1 up are accepted (a 1 x 1 image is a valid if useless
    image; downstream transforms decide what is too small); zero rows or columns are refused.

    Args:
        path: file to read.
        require_mg: if ``True`` a DICOM file whose Modality is not ``MG`` is an error;
            otherwise it only triggers a :class:`NonMammogramWarning`.
        apply_voi: apply the file's VOI LUT / window (DICOM only).
        default_spacing_mm: isotropic pixel spacing assumed when the file records none
            (70 um by default, the detector pitch of the Hologic images of the paper).
        bits_stored: bit depth of integer PNG/TIFF/NIfTI data; ``None`` infers it.
            Ignored for DICOM, whose header says it.

    Returns:
        ``(image, meta)``: the ``float32`` ``(H, W)`` image and its :class:`MammogramMeta`.

    Raises:
        MammogramReadError: for a missing, unreadable or unsupported file (not DICOM/PNG/TIFF/
            NIfTI, no pixel data, truncated pixel data, colour, multi-frame, zero-sized,
            undecodable transfer syntax, NaN/inf values, non-MG with ``require_mg``, ...).
        ValueError: for invalid arguments (``default_spacing_mm`` <= 0, bad ``bits_stored``).

    Example:
        >>> import numpy as np
        >>> path = write_mammogram_dicom("/tmp/lcc.dcm", np.full((4, 3), 4095, np.uint16),
        ...                              pixel_spacing_mm=0.07, laterality="L", view="CC")
        >>> image, meta = read_mammogram(path, apply_voi=False)
        >>> image.shape, float(image.max()), meta.laterality, meta.view
        ((4, 3), 1.0, 'L', 'CC')
    """
    if not (isinstance(default_spacing_mm, (int, float)) and math.isfinite(default_spacing_mm)):
        raise ValueError(f"default_spacing_mm must be a finite number, got {default_spacing_mm!r}.")
    if default_spacing_mm <= 0:
        raise ValueError(f"default_spacing_mm must be > 0, got {default_spacing_mm}.")
    if bits_stored is not None and not (isinstance(bits_stored, int) and 1 <= bits_stored <= 16):
        raise ValueError(f"bits_stored must be an int in [1, 16] or None, got {bits_stored!r}.")

    path_str = os.fspath(path)
    kind = _detect_format(path_str)
    try:
        if kind in ("png", "tiff"):
            return _read_pillow(path_str, kind, float(default_spacing_mm), bits_stored)
        if kind == "nifti":
            return _read_nifti(path_str, float(default_spacing_mm), bits_stored)
        # DICOM, or unknown content and suffix: pydicom has the last word (files without preamble)
        return _read_dicom(path_str, require_mg, apply_voi, float(default_spacing_mm))
    except MammogramReadError:
        raise
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:  # a malformed file reaching a library error we did not foresee
        # found by fuzzing (benchmarks/fuzz_dicom.py): e.g. pydicom's NotImplementedError for an
        # unknown VR, raised lazily when a header attribute is first read
        raise MammogramReadError(path_str, f"malformed file: {type(exc).__name__}: {exc}") from None


def _detect_format(path: str) -> str | None:
    """Return ``"dicom"``, ``"png"``, ``"tiff"``, ``"nifti"`` or ``None`` (unknown) for ``path``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(352)
    except FileNotFoundError:
        raise MammogramReadError(path, "file not found") from None
    except IsADirectoryError:
        raise MammogramReadError(path, "is a directory, not a file") from None
    except OSError as exc:
        raise MammogramReadError(path, f"cannot open file ({exc.strerror or exc})") from None
    if not head:
        raise MammogramReadError(path, "empty file (0 bytes): not a DICOM, PNG, TIFF or NIfTI image")
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00", b"ni2\x00"):
        return "nifti"
    name = path.lower()
    if name.endswith(_NIFTI_SUFFIXES):
        return "nifti"  # e.g. gzip-compressed: nibabel decides
    if name.endswith(_PNG_SUFFIXES):
        return "png"
    if name.endswith(_TIFF_SUFFIXES):
        return "tiff"
    return None


def _spacing_from(value: Any) -> tuple[float, float] | None:
    """A valid ``(row, col)`` spacing from a DICOM PixelSpacing-like value (two numbers), else ``None``."""
    try:
        return read_spacing_mm([float(v) for v in value], pair=True)
    except (TypeError, ValueError):  # SpacingError is a ValueError
        return None


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int_attr(ds: Dataset, keyword: str, path: str, default: int | None = None) -> int:
    """Read an integer attribute; a missing/empty/garbled one is a :class:`MammogramReadError`."""
    try:
        value = ds.get(keyword)
    except Exception as exc:  # garbled value that pydicom cannot convert
        raise MammogramReadError(path, f"invalid {keyword} ({exc})") from None
    if value is None or value == "":
        if default is not None:
            return default
        raise MammogramReadError(path, f"missing {keyword}: cannot interpret the pixel data")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MammogramReadError(path, f"invalid {keyword} {value!r}") from None


def _read_dicom(
    path: str, require_mg: bool, apply_voi_lut: bool, default_spacing_mm: float
) -> tuple[np.ndarray, MammogramMeta]:
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise MammogramReadError(
            path,
            "not a DICOM file (no 'DICM' marker after the 128-byte preamble) "
            "and not a PNG, TIFF or NIfTI image",
        ) from None
    except Exception as exc:
        raise MammogramReadError(path, f"unreadable DICOM data set ({type(exc).__name__}: {exc})") from None

    # ---- modality ----------------------------------------------------------------------
    modality = _str_or_none(ds.get("Modality"))
    if modality != "MG":
        what = f"Modality is {modality!r}" if modality else "Modality is absent"
        if require_mg:
            raise MammogramReadError(path, f"not a mammogram: {what}, expected 'MG'")
        warnings.warn(f"{path}: {what}, expected 'MG'; reading it anyway", NonMammogramWarning, stacklevel=3)

    # ---- pixel module checks -------------------------------------------------------------
    if "PixelData" not in ds:
        extra = ""
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            extra = "; Float/Double Float Pixel Data is not supported"
        raise MammogramReadError(path, f"no Pixel Data element (7FE0,0010){extra}")
    samples = _int_attr(ds, "SamplesPerPixel", path, default=1)
    photometric = _str_or_none(ds.get("PhotometricInterpretation")) or ""
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise MammogramReadError(
            path,
            f"colour image (PhotometricInterpretation {photometric or 'absent'}, SamplesPerPixel "
            f"{samples}): only single-channel MONOCHROME1/MONOCHROME2 greyscale is supported",
        )
    if samples != 1:
        raise MammogramReadError(
            path,
            f"multi-sample image (SamplesPerPixel {samples} with {photometric}): only single-channel "
            "greyscale is supported",
        )
    frames = _int_attr(ds, "NumberOfFrames", path, default=1)
    if frames > 1:
        raise MammogramReadError(
            path, f"multi-frame image (NumberOfFrames {frames}): a single 2-D frame is expected"
        )
    rows = _int_attr(ds, "Rows", path)
    columns = _int_attr(ds, "Columns", path)
    if rows <= 0 or columns <= 0:
        raise MammogramReadError(path, f"zero-sized image (Rows {rows}, Columns {columns})")
    bits_allocated = _int_attr(ds, "BitsAllocated", path)
    bits_stored = _int_attr(ds, "BitsStored", path, default=bits_allocated)
    pixel_representation = _int_attr(ds, "PixelRepresentation", path, default=0)
    if bits_allocated not in (8, 16):
        raise MammogramReadError(
            path, f"unsupported bit depth (BitsAllocated {bits_allocated}): only 8 or 16 are supported"
        )
    if not 1 <= bits_stored <= bits_allocated:
        raise MammogramReadError(path, f"invalid BitsStored {bits_stored} for BitsAllocated {bits_allocated}")
    if pixel_representation not in (0, 1):
        raise MammogramReadError(path, f"invalid PixelRepresentation {pixel_representation}")

    # ---- transfer syntax and decoding -----------------------------------------------------
    file_meta = getattr(ds, "file_meta", None)
    tsyntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if not tsyntax:
        raise MammogramReadError(
            path, "missing Transfer Syntax UID (0002,0010): cannot decode the pixel data"
        )
    tsyntax = UID(str(tsyntax))
    ts_text = f"{tsyntax.name} ({tsyntax})" if tsyntax.name != str(tsyntax) else str(tsyntax)
    if not tsyntax.is_transfer_syntax:
        raise MammogramReadError(
            path,
            f"no decoder for transfer syntax {ts_text}: unknown to pydicom, cannot decode the pixel data",
        )
    if tsyntax.is_compressed:
        _check_decoder(path, tsyntax, ts_text)
    else:
        expected = rows * columns * (bits_allocated // 8)
        try:
            actual = len(ds.PixelData)
        except Exception as exc:
            raise MammogramReadError(path, f"unreadable Pixel Data element ({exc})") from None
        if actual < expected:
            raise MammogramReadError(
                path,
                f"truncated pixel data: {actual} bytes present, {expected} expected for "
                f"{rows} x {columns} x {bits_allocated} bits",
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. odd-length padding notices
            stored = ds.pixel_array
    except Exception as exc:
        raise MammogramReadError(
            path, f"pixel data could not be decoded (transfer syntax {ts_text}): {type(exc).__name__}: {exc}"
        ) from None
    if stored.shape != (rows, columns):
        raise MammogramReadError(
            path, f"decoded pixel data has shape {stored.shape}, expected (Rows, Columns) = {(rows, columns)}"
        )

    # ---- grayscale pipeline --------------------------------------------------------------
    image = _dicom_intensities(path, ds, stored, bits_stored, pixel_representation, apply_voi_lut)
    if photometric == "MONOCHROME1":
        image = 1.0 - image

    # ---- metadata -------------------------------------------------------------------------
    spacing: tuple[float, float] | None = None
    source = "default"
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        try:
            spacing = _spacing_from(ds.get(keyword))
        except Exception:  # garbled DS values: treat as absent
            spacing = None
        if spacing is not None:
            source = keyword
            break
    if spacing is None:
        spacing = (default_spacing_mm, default_spacing_mm)
    laterality = _str_or_none(ds.get("ImageLaterality")) or _str_or_none(ds.get("Laterality"))
    meta = MammogramMeta(
        path=path,
        rows=rows,
        columns=columns,
        pixel_spacing_mm=spacing,
        spacing_source=source,
        laterality=laterality.upper() if laterality else None,
        view=_str_or_none(ds.get("ViewPosition")),
        photometric=photometric,
        bits_stored=bits_stored,
        modality=modality,
        presentation_intent=_str_or_none(ds.get("PresentationIntentType")),
        transfer_syntax=str(tsyntax),
        study_instance_uid=_str_or_none(ds.get("StudyInstanceUID")),
        series_instance_uid=_str_or_none(ds.get("SeriesInstanceUID")),
        sop_instance_uid=_str_or_none(ds.get("SOPInstanceUID")),
        patient_id=_str_or_none(ds.get("PatientID")),
        source_format="dicom",
    )
    return image, meta


def _check_decoder(path: str, tsyntax: UID, ts_text: str) -> None:
    """Raise unless pydicom has an installed plugin that decodes ``tsyntax``."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise MammogramReadError(
            path, f"no decoder for transfer syntax {ts_text}: pydicom cannot decode this compression"
        ) from None
    if not decoder.is_available:
        missing = "; ".join(f"{name}: {', '.join(deps)}" for name, deps in decoder.missing_dependencies)
        raise MammogramReadError(
            path,
            f"no decoder available for transfer syntax {ts_text}: install a pydicom pixel-data plugin"
            + (f" ({missing})" if missing else ""),
        )


def _modality_range(ds: Dataset, bits_stored: int, pixel_representation: int) -> tuple[float, float]:
    """Output range of the Modality LUT step for the stored-value range the header allows."""
    if ds.get("ModalityLUTSequence"):
        depth = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**depth - 1)
    if pixel_representation == 0:
        lo, hi = 0.0, float(2**bits_stored - 1)
    else:
        lo, hi = float(-(2 ** (bits_stored - 1))), float(2 ** (bits_stored - 1) - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    return lo, hi


def _has_voi_lut(ds: Dataset) -> bool:
    seq = ds.get("VOILUTSequence")
    if not seq:
        return False
    item = seq[0]
    return item.get("LUTDescriptor") is not None and item.get("LUTData") is not None


def _has_window(ds: Dataset) -> bool:
    return ds.get("WindowCenter") not in (None, "") and ds.get("WindowWidth") not in (None, "")


def _dicom_intensities(
    path: str,
    ds: Dataset,
    stored: np.ndarray,
    bits_stored: int,
    pixel_representation: int,
    use_voi: bool,
) -> np.ndarray:
    """Stored values -> Modality LUT -> (VOI) -> ``[0, 1]`` float32 (before MONOCHROME1 inversion).

    Integer pixels of up to 16 bits go through a lookup table: the same pydicom steps are applied
    once to every value the dtype can hold (at most 65536), then one gather maps the image. The
    result is identical to transforming the image itself, at a fraction of the cost for a
    full-field mammogram (13.6 Mpx through float64 windowing otherwise).
    """
    if stored.dtype.kind in "ui" and stored.dtype.itemsize <= 2:
        info = np.iinfo(stored.dtype)
        domain = np.arange(info.min, info.max + 1, dtype=np.int64).astype(stored.dtype)
        table = _intensity_transform(path, ds, domain, bits_stored, pixel_representation, use_voi)
        affine = _as_clipped_affine(domain, table)
        if affine is not None:  # linear window / rescale: three float32 passes beat a gather
            # written as (x - x0) / d so that window ends on integer values map to exactly 0 and 1
            a, b = affine
            x0, d = _snap(-b / a), _snap(1.0 / a)
            image = stored.astype(np.float32)
            image -= np.float32(x0)
            image /= np.float32(d)
            return np.clip(image, 0.0, 1.0, out=image)
        index = stored if info.min == 0 else stored.astype(np.int32) - info.min
        return table[index]
    return _intensity_transform(path, ds, stored, bits_stored, pixel_representation, use_voi)


def _snap(value: float, tol: float = 1e-3) -> float:
    """Round ``value`` to the nearest integer when it is one up to float32 error (fitted on a float32 table)."""
    nearest = round(value)
    return float(nearest) if abs(value - nearest) <= tol else value


def _as_clipped_affine(
    domain: np.ndarray, table: np.ndarray, tol: float = 2e-6
) -> tuple[float, float] | None:
    """``(a, b)`` if ``table == clip(a * domain + b, 0, 1)`` everywhere (within ``tol``), else ``None``."""
    x = domain.astype(np.float64)
    inner = (table > 0.0) & (table < 1.0)
    if inner.sum() < 2:
        return None
    a, b = np.polyfit(x[inner], table[inner].astype(np.float64), 1)
    if not np.allclose(np.clip(a * x + b, 0.0, 1.0), table, atol=tol, rtol=0):
        return None
    return float(a), float(b)


def _intensity_transform(
    path: str,
    ds: Dataset,
    stored: np.ndarray,
    bits_stored: int,
    pixel_representation: int,
    use_voi: bool,
) -> np.ndarray:
    """The grayscale pipeline on an array of stored values (see :func:`_dicom_intensities`)."""
    try:
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
            if not (math.isfinite(slope) and math.isfinite(intercept)):
                raise MammogramReadError(
                    path, f"non-finite RescaleSlope/RescaleIntercept ({slope}, {intercept}): NaN/inf values"
                )
        modality_values = apply_modality_lut(stored, ds)
        lo, hi = _modality_range(ds, bits_stored, pixel_representation)
        if use_voi and _has_voi_lut(ds):
            item = ds.VOILUTSequence[0]
            nr_entries = int(item.LUTDescriptor[0]) or 2**16
            first_map = int(item.LUTDescriptor[1])
            depth = int(item.LUTDescriptor[2])
            # pydicom indexes the LUT with integers; clip to the LUT's input domain first
            lut_input = np.clip(np.rint(modality_values), first_map, first_map + nr_entries - 1).astype(
                np.int64
            )
            values = apply_voi(lut_input, ds, index=0)
            lo, hi = 0.0, float(2**depth - 1)
        elif use_voi and _has_window(ds):
            # pydicom documents the windowing output range as the modality output range of
            # the stored-value range (see ``apply_windowing``): the same ``lo, hi`` as above.
            values = apply_windowing(modality_values, ds, index=0)
        else:
            values = modality_values
    except MammogramReadError:
        raise
    except Exception as exc:
        hint = " (read with apply_voi=False to ignore the VOI LUT / window)" if use_voi else ""
        raise MammogramReadError(
            path, f"cannot apply the DICOM grayscale transforms: {type(exc).__name__}: {exc}{hint}"
        ) from None
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise MammogramReadError(path, "non-finite values (NaN/inf) after the Modality/VOI LUT")
    if not hi > lo:
        raise MammogramReadError(path, f"degenerate intensity range [{lo}, {hi}] (e.g. RescaleSlope 0)")
    image = (values - lo) / (hi - lo)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _normalise_plain(
    path: str, data: np.ndarray, bits_stored: int | None, what: str
) -> tuple[np.ndarray, int]:
    """Normalise PNG/TIFF/NIfTI values to ``[0, 1]``; return the image and the bit depth used."""
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all():
            raise MammogramReadError(path, f"non-finite values (NaN/inf) in float {what} data")
        return _min_max(data), int(data.dtype.itemsize * 8)
    if not np.issubdtype(data.dtype, np.integer):
        raise MammogramReadError(path, f"unsupported {what} data type {data.dtype}")
    lo, hi = int(data.min()), int(data.max())
    if lo < 0:
        if bits_stored is not None:
            raise MammogramReadError(
                path, f"negative values (min {lo}) cannot be read with bits_stored={bits_stored}"
            )
        return _min_max(data), int(data.dtype.itemsize * 8)
    if bits_stored is None:
        fitting = [b for b in _INFERRED_BIT_DEPTHS if hi <= 2**b - 1]
        if not fitting:
            raise MammogramReadError(path, f"integer values up to {hi} exceed 16 bits")
        bits_stored = fitting[0]
    elif hi > 2**bits_stored - 1:
        raise MammogramReadError(
            path, f"value {hi} exceeds bits_stored={bits_stored} (max {2**bits_stored - 1})"
        )
    image = data.astype(np.float64) / float(2**bits_stored - 1)
    return image.astype(np.float32), bits_stored


def _min_max(data: np.ndarray) -> np.ndarray:
    values = data.astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - lo) / (hi - lo)).astype(np.float32)


_PIL_GREY_MODES = ("L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _read_pillow(
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


def _read_nifti(
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


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _ds(value: float) -> DSfloat:
    """A Decimal String value that always fits the 16-character limit of the DS VR."""
    return DSfloat(float(value), auto_format=True)


def _make_uid(given: str | None, entropy: Sequence[str] | None, *role: str) -> str:
    if given is not None:
        return str(given)
    if entropy is None:
        return str(generate_uid())
    return str(generate_uid(entropy_srcs=[*entropy, *role]))


def write_mammogram_dicom(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    *,
    pixel_spacing_mm: float | Sequence[float],
    laterality: str,
    view: str,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    window_center: float | None = None,
    window_width: float | None = None,
    patient_id: str = "ANON",
    patient_name: str = "Synthetic^Patient",
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    study_id: str = "1",
    series_number: int = 1,
    instance_number: int = 1,
    study_date: str = "20260101",
    presentation_intent: str = "FOR PRESENTATION",
    uid_entropy: Sequence[str] | None = None,
    accession_number: str = "",
) -> Path:
    """Write ``pixels`` as a Digital Mammography X-Ray Image Storage DICOM file.

    The SOP class is *For Presentation* (``1.2.840.10008.5.1.4.1.1.1.2``) or *For Processing*
    (``...1.2.1``) as chosen by ``presentation_intent``; the transfer syntax is explicit VR
    little endian. Besides the image pixel module (SamplesPerPixel 1, BitsAllocated 16,
    BitsStored, HighBit, PixelRepresentation 0) the file holds Modality MG, ViewPosition and
    ViewCodeSequence, ImageLaterality, PatientOrientation, ImagerPixelSpacing and PixelSpacing,
    Window Center/Width with VOILUTFunction LINEAR, Rescale 1/0, PresentationLUTShape,
    BodyPartExamined BREAST, ImageType, BurnedInAnnotation NO, and patient/study/series/
    instance attributes so that a DICOM loader can group studies and series.

    Orientation: PatientOrientation follows the mammography convention that a left breast
    has its chest wall at column 0 (``L CC`` = ``A\\R``, ``L MLO`` = ``A\\FR``) and a right
    breast at the last column (``R CC`` = ``P\\L``, ``R MLO`` = ``P\\FL``); the caller is
    responsible for pixels that match.

    UIDs that are not given are generated with :func:`pydicom.uid.generate_uid`: from
    ``uid_entropy`` plus a role, deterministically, when ``uid_entropy`` is given, randomly
    otherwise. The study UID depends on ``(uid_entropy, patient_id, study_id)``, the series UID
    also on ``series_number``, the SOP instance UID also on ``instance_number``, laterality
    and view; so the four views of one case written with the same ``uid_entropy`` share the
    study, and the same arguments always give the same UIDs.

    Args:
        path: output file; written atomically (temporary file in the same folder, then
            :func:`os.replace`). Parent folders are created.
        pixels: ``uint16`` ``(H, W)`` array of *stored values* (already inverted by the caller
            for ``MONOCHROME1``), every value ``< 2**bits_stored``.
        pixel_spacing_mm: detector pixel spacing in mm: one number (isotropic) or
            ``(row spacing, column spacing)``.
        laterality: ``"L"`` or ``"R"``.
        view: View Position, one of :data:`SUPPORTED_VIEWS` (``"CC"``, ``"MLO"``, ...).
        photometric: ``"MONOCHROME2"`` (high value = bright) or ``"MONOCHROME1"``.
        bits_stored: 8..16.
        window_center: Window Center; with ``window_width``, or both ``None`` to use the
            stored-value range of the data: ``center = (min + max + 1) / 2``,
            ``width = max - min + 1`` (LINEAR maps ``min`` to 0 and ``max`` to full scale;
            this choice is symmetric under ``MONOCHROME1`` inversion).
        window_width: Window Width (>= 1 for LINEAR).
        patient_id: PatientID.
        patient_name: PatientName.
        study_instance_uid: StudyInstanceUID, generated if ``None``.
        series_instance_uid: SeriesInstanceUID, generated if ``None``.
        sop_instance_uid: SOPInstanceUID (also MediaStorageSOPInstanceUID), generated if ``None``.
        study_id: StudyID.
        series_number: SeriesNumber.
        instance_number: InstanceNumber.
        study_date: StudyDate (also Series/Content/Acquisition date), ``YYYYMMDD``.
        presentation_intent: ``"FOR PRESENTATION"`` or ``"FOR PROCESSING"``.
        uid_entropy: strings from which missing UIDs are derived deterministically.
        accession_number: AccessionNumber (Type 2: empty by default).

    Returns:
        The path written.

    Raises:
        ValueError: for pixels that are not a 2-D ``uint16`` array fitting ``bits_stored``, and
            for invalid spacing, laterality, view, photometric, intent, window or date.

    Example:
        >>> import numpy as np
        >>> stored = np.arange(12, dtype=np.uint16).reshape(3, 4) * 300
        >>> out = write_mammogram_dicom("/tmp/rmlo.dcm", stored, pixel_spacing_mm=0.07,
        ...                             laterality="R", view="MLO", uid_entropy=["case-1"])
        >>> import pydicom
        >>> ds = pydicom.dcmread(out)
        >>> ds.Modality, ds.ViewPosition, ds.ImageLaterality, list(ds.PatientOrientation)
        ('MG', 'MLO', 'R', ['P', 'FL'])
    """
    # ---- validate -------------------------------------------------------------------------
    if not isinstance(pixels, np.ndarray):
        raise ValueError(f"pixels must be a numpy array, got {type(pixels).__name__}.")
    if pixels.dtype != np.uint16:
        raise ValueError(f"pixels must have dtype uint16 (stored values), got {pixels.dtype}.")
    if pixels.ndim != 2:
        raise ValueError(f"pixels must be 2-D (H, W), got shape {pixels.shape}.")
    if 0 in pixels.shape:
        raise ValueError(f"pixels must have at least one row and one column, got shape {pixels.shape}.")
    if not (isinstance(bits_stored, int) and 8 <= bits_stored <= 16):
        raise ValueError(f"bits_stored must be an int in [8, 16], got {bits_stored!r}.")
    max_value = int(pixels.max())
    if max_value > 2**bits_stored - 1:
        raise ValueError(
            f"pixel value {max_value} does not fit in bits_stored={bits_stored} (max {2**bits_stored - 1})."
        )
    spacing = (
        [pixel_spacing_mm, pixel_spacing_mm]
        if isinstance(pixel_spacing_mm, (int, float, np.floating, np.integer))
        else list(pixel_spacing_mm)
    )
    if _spacing_from(spacing) is None:
        raise ValueError(f"pixel_spacing_mm must be one or two finite numbers > 0, got {pixel_spacing_mm!r}.")
    laterality = str(laterality).upper()
    if laterality not in ("L", "R"):
        raise ValueError(f"laterality must be 'L' or 'R', got {laterality!r}.")
    view = str(view).upper()
    if view not in _VIEWS:
        raise ValueError(f"view must be one of {SUPPORTED_VIEWS}, got {view!r}.")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be 'MONOCHROME1' or 'MONOCHROME2', got {photometric!r}.")
    intent = str(presentation_intent).upper()
    sop_classes = {
        "FOR PRESENTATION": MG_IMAGE_STORAGE_FOR_PRESENTATION,
        "FOR PROCESSING": MG_IMAGE_STORAGE_FOR_PROCESSING,
    }
    if intent not in sop_classes:
        raise ValueError(
            f"presentation_intent must be 'FOR PRESENTATION' or 'FOR PROCESSING', got {intent!r}."
        )
    if (window_center is None) != (window_width is None):
        raise ValueError("give both window_center and window_width, or neither.")
    if window_center is None or window_width is None:
        min_value = int(pixels.min())
        center, width = (min_value + max_value + 1) / 2.0, float(max_value - min_value + 1)
    else:
        center, width = float(window_center), float(window_width)
        if not (math.isfinite(center) and math.isfinite(width)) or width < 1:
            raise ValueError(f"window must be finite with width >= 1 (LINEAR), got ({center}, {width}).")
    if not (len(study_date) == 8 and study_date.isdigit()):
        raise ValueError(f"study_date must be YYYYMMDD, got {study_date!r}.")
    if uid_entropy is not None and (
        isinstance(uid_entropy, str) or not all(isinstance(s, str) for s in uid_entropy)
    ):
        raise ValueError("uid_entropy must be a sequence of strings.")

    entropy = list(uid_entropy) if uid_entropy is not None else None
    study_uid = _make_uid(study_instance_uid, entropy, "study", patient_id, study_id)
    series_uid = _make_uid(series_instance_uid, entropy, "series", patient_id, study_id, str(series_number))
    sop_uid = _make_uid(
        sop_instance_uid,
        entropy,
        "sop",
        patient_id,
        study_id,
        str(series_number),
        str(instance_number),
        laterality,
        view,
    )
    sop_class = sop_classes[intent]
    view_code, view_meaning, orient_left, orient_right = _VIEWS[view]
    rows, columns = (int(v) for v in pixels.shape)
    study_time = "090000"

    # ---- data set -------------------------------------------------------------------------
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = sop_class
    file_meta.MediaStorageSOPInstanceUID = sop_uid
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    file_meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]

    ds = Dataset()
    ds.file_meta = file_meta
    ds.preamble = b"\x00" * 128
    # SOP common
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = study_date
    ds.InstanceCreationTime = study_time
    # patient
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    # general study
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = study_id
    ds.AccessionNumber = accession_number
    ds.StudyDescription = "Synthetic mammography"
    # general series, mammography series, DX series
    ds.Modality = "MG"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = int(series_number)
    ds.SeriesDate = study_date
    ds.SeriesTime = study_time
    ds.SeriesDescription = f"{laterality} {view}"
    ds.PresentationIntentType = intent
    # general equipment
    ds.Manufacturer = "monai-smalldet synthetic"
    ds.ManufacturerModelName = "monai-smalldet"
    ds.SoftwareVersions = "monai-smalldet"
    # general image, DX image, mammography image
    ds.InstanceNumber = int(instance_number)
    ds.ContentDate = study_date
    ds.ContentTime = study_time
    ds.AcquisitionDate = study_date
    ds.AcquisitionTime = study_time
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.PatientOrientation = (orient_left if laterality == "L" else orient_right).split("\\")
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PixelIntensityRelationship = "LOG"
    # +1: lower values = less X-ray intensity at the detector = denser tissue (MONOCHROME1 storage)
    ds.PixelIntensityRelationshipSign = 1 if photometric == "MONOCHROME1" else -1
    ds.RescaleIntercept = _ds(0.0)
    ds.RescaleSlope = _ds(1.0)
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    ds.BodyPartExamined = "BREAST"
    ds.ImageLaterality = laterality
    ds.ViewPosition = view
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.DetectorType = "DIRECT"
    ds.AcquisitionContextSequence = []
    breast = Dataset()
    breast.CodeValue = "76752008"
    breast.CodingSchemeDesignator = "SCT"
    breast.CodeMeaning = "Breast"
    ds.AnatomicRegionSequence = [breast]
    view_item = Dataset()
    view_item.CodeValue = view_code
    view_item.CodingSchemeDesignator = "SCT"
    view_item.CodeMeaning = view_meaning
    view_item.ViewModifierCodeSequence = []
    ds.ViewCodeSequence = [view_item]
    # detector and spacing
    ds.ImagerPixelSpacing = [_ds(spacing[0]), _ds(spacing[1])]
    ds.PixelSpacing = [_ds(spacing[0]), _ds(spacing[1])]
    # VOI LUT
    ds.WindowCenter = _ds(center)
    ds.WindowWidth = _ds(width)
    ds.VOILUTFunction = "LINEAR"
    # image pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()

    # ---- atomic write ---------------------------------------------------------------------
    return atomic_write(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))
