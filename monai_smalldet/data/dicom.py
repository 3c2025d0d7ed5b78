"""Reading and writing single 2-D mammograms: DICOM MG first, PNG/TIFF/NIfTI as fall-backs.

:func:`read_mammogram` turns one file into a ``float32`` array of shape ``(H, W)`` =
``(rows, columns)`` with values in ``[0, 1]`` where **bright means dense tissue**, whatever
the photometric interpretation, plus a :class:`MammogramMeta` record (pixel spacing,
laterality, view, UIDs, ...). Every problem with the *file* is reported as a
:class:`MammogramReadError` that names the file and says what is wrong with it; no raw
pydicom, Pillow, nibabel or numpy exception escapes for a bad file.

:mod:`.formats` reads PNG/TIFF and NIfTI; :mod:`.dicom_writer` writes DICOM MG.

Intensity mapping of DICOM files follows the DICOM grayscale pipeline
(PS3.4 Annex N.2.1.1): stored values -> Modality LUT (Rescale Slope/Intercept or
Modality LUT Sequence) -> VOI LUT (VOI LUT Sequence, or Window Center/Width with the
VOI LUT Function ``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID``) -> normalisation to
``[0, 1]`` by the output range of the last step -> inversion for ``MONOCHROME1``.
The LUT steps reuse :func:`pydicom.pixels.apply_modality_lut`,
:func:`pydicom.pixels.apply_voi` and :func:`pydicom.pixels.apply_windowing` (the two
halves of :func:`pydicom.pixels.apply_voi_lut`).

Formats
-------

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
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing
from pydicom.uid import (
    UID,
)

from ..spacing import read_spacing_mm

__all__ = [
    "DEFAULT_SPACING_MM",
    "MG_IMAGE_STORAGE_FOR_PRESENTATION",
    "MG_IMAGE_STORAGE_FOR_PROCESSING",
    "MammogramMeta",
    "MammogramReadError",
    "NonMammogramWarning",
    "header_spacing",
    "read_mammogram",
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
        view_source: where ``view`` came from: ``"ViewPosition"``, ``"ViewCodeSequence"``,
            ``"SeriesDescription"``, ``"ProtocolName"`` or ``"file name"`` (``None``: unknown).
        laterality_source: where ``laterality`` came from: ``"ImageLaterality"`` or
            ``"Laterality"`` (``None``: unknown).

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
    view_source: str | None = None
    laterality_source: str | None = None

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

    The format is recognised from the content, then the suffix; each format's intensity
    and spacing rules are in the module docstring (*Formats*).

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
            from .formats import read_pillow

            return read_pillow(path_str, kind, float(default_spacing_mm), bits_stored)
        if kind == "nifti":
            from .formats import read_nifti

            return read_nifti(path_str, float(default_spacing_mm), bits_stored)
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


_VIEWS = ("CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM", "FB", "SIO", "AT", "CV", "RCC", "RL", "RM")
#: CID 4014 View for Mammography: SNOMED CT and the older SNOMED-RT (SRT) codes -> View Position
_VIEW_CODES = {
    "399162004": "CC",
    "R-10242": "CC",
    "399368009": "MLO",
    "R-10226": "MLO",
    "399260004": "ML",
    "R-10224": "ML",
    "399352003": "LM",
    "R-10228": "LM",
    "399099002": "LMO",
    "R-10230": "LMO",
    "399192008": "XCCL",
    "R-1024A": "XCCL",
    "399101009": "XCCM",
    "R-1024B": "XCCM",
    "399196006": "FB",
    "R-10244": "FB",
    "399188001": "SIO",
    "R-102D0": "SIO",
}
_VIEW_TEXT = re.compile(r"(?:^|[^A-Z])[LR]?[ _-]?(MLO|CC|ML|LM)(?:$|[^A-Z])")


def _view(ds: Any, path: str) -> tuple[str | None, str | None]:
    """The view and where it came from: View Position, else View Code Sequence, else the
    series description / protocol name / file name (``L_CC``, ``RMLO``, ``MG_R_ML``)."""
    position = (_str_or_none(ds.get("ViewPosition")) or "").upper()
    if position in _VIEWS:
        return position, "ViewPosition"
    try:
        code = str(ds.ViewCodeSequence[0].CodeValue)
    except (AttributeError, IndexError, KeyError):
        code = ""
    if code in _VIEW_CODES:
        return _VIEW_CODES[code], "ViewCodeSequence"
    for name, text in (
        ("SeriesDescription", ds.get("SeriesDescription")),
        ("ProtocolName", ds.get("ProtocolName")),
        ("file name", os.path.basename(str(path))),
    ):
        found = _VIEW_TEXT.search(str(text or "").upper())
        if found:
            return found.group(1), name
    return (position or None), ("ViewPosition" if position else None)


def _laterality(ds: Any) -> tuple[str | None, str | None]:
    """The laterality (upper case) and the attribute it came from: ImageLaterality, else Laterality."""
    for keyword in ("ImageLaterality", "Laterality"):
        value = _str_or_none(ds.get(keyword))
        if value:
            return value.upper(), keyword
    return None, None


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
    modality = _str_or_none(ds.get("Modality"))
    if modality != "MG":
        what = f"Modality is {modality!r}" if modality else "Modality is absent"
        if require_mg:
            raise MammogramReadError(path, f"not a mammogram: {what}, expected 'MG'")
        warnings.warn(f"{path}: {what}, expected 'MG'; reading it anyway", NonMammogramWarning, stacklevel=3)
    layout = _pixel_layout(ds, path)
    stored, tsyntax = _decode(ds, path, layout)
    image = _dicom_intensities(
        path, ds, stored, layout.bits_stored, layout.pixel_representation, apply_voi_lut
    )
    if layout.photometric == "MONOCHROME1":
        image = 1.0 - image
    return image, _dicom_meta(ds, path, layout, str(tsyntax), default_spacing_mm)


class _PixelLayout(NamedTuple):
    photometric: str
    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int


def _pixel_layout(ds: Dataset, path: str) -> _PixelLayout:
    """The image pixel module's attributes, checked: one greyscale 2-D frame of 8 or 16 bits."""
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
    return _PixelLayout(photometric, rows, columns, bits_allocated, bits_stored, pixel_representation)


def _decode(ds: Dataset, path: str, layout: _PixelLayout) -> tuple[np.ndarray, UID]:
    """The stored values ``(Rows, Columns)`` and the transfer syntax, after checking that it can
    be decoded (a decoder for compressed data, enough bytes for native data)."""
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
    rows, columns, bits_allocated = layout.rows, layout.columns, layout.bits_allocated
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
    return stored, tsyntax


def header_spacing(ds: Dataset) -> tuple[tuple[float, float] | None, str | None]:
    """``((row, col) mm, attribute)`` from a DICOM header: ImagerPixelSpacing (the detector
    pitch, what a mammogram's sizes are measured in), else PixelSpacing; ``(None, None)`` when
    neither holds two valid numbers (absent, garbled or out of range: treated alike)."""
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        try:
            spacing = _spacing_from(ds.get(keyword))
        except Exception:  # garbled DS values: treat as absent
            spacing = None
        if spacing is not None:
            return spacing, keyword
    return None, None


def _dicom_meta(
    ds: Dataset, path: str, layout: _PixelLayout, transfer_syntax: str, default_spacing_mm: float
) -> MammogramMeta:
    """The header fields the pipeline uses; spacing from :func:`header_spacing`, else
    ``default_spacing_mm`` (``spacing_source="default"``)."""
    spacing, source = header_spacing(ds)
    if spacing is None:
        spacing, source = (default_spacing_mm, default_spacing_mm), "default"
    laterality, laterality_source = _laterality(ds)
    view, view_source = _view(ds, path)
    return MammogramMeta(
        path=path,
        rows=layout.rows,
        columns=layout.columns,
        pixel_spacing_mm=spacing,
        spacing_source=source,
        laterality=laterality,
        laterality_source=laterality_source,
        view=view,
        view_source=view_source,
        photometric=layout.photometric,
        bits_stored=layout.bits_stored,
        modality=_str_or_none(ds.get("Modality")),
        presentation_intent=_str_or_none(ds.get("PresentationIntentType")),
        transfer_syntax=transfer_syntax,
        study_instance_uid=_str_or_none(ds.get("StudyInstanceUID")),
        series_instance_uid=_str_or_none(ds.get("SeriesInstanceUID")),
        sop_instance_uid=_str_or_none(ds.get("SOPInstanceUID")),
        patient_id=_str_or_none(ds.get("PatientID")),
        source_format="dicom",
    )


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
