"""Writing one mammogram as DICOM Digital Mammography X-Ray Image Storage (explicit VR little
endian) that DICOM loaders can group by patient, study and series; written atomically.

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

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from ..files import atomic_write
from .dicom import (
    MG_IMAGE_STORAGE_FOR_PRESENTATION,
    MG_IMAGE_STORAGE_FOR_PROCESSING,
    _spacing_from,
)

__all__ = ["SUPPORTED_VIEWS", "write_mammogram_dicom"]

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
    """Write ``pixels`` as a Digital Mammography X-Ray Image Storage DICOM file (contents,
    orientation, UIDs and an example: the module docstring).

    Args:
        path: output file, written atomically; parent folders are created.
        pixels: ``uint16`` ``(H, W)`` array of *stored values* (already inverted by the caller
            for ``MONOCHROME1``), every value ``< 2**bits_stored``.
        pixel_spacing_mm: in mm, one number (isotropic) or ``(row, column)``.
        laterality: ``"L"`` or ``"R"``.
        view: View Position, one of :data:`SUPPORTED_VIEWS` (``"CC"``, ``"MLO"``, ...).
        photometric: ``"MONOCHROME2"`` (high value = bright) or ``"MONOCHROME1"``.
        bits_stored: 8..16.
        window_center, window_width: the VOI window (width >= 1, LINEAR); both ``None``: the
            stored-value range, ``((min + max + 1) / 2, max - min + 1)``.
        patient_id, patient_name, study_id, series_number, instance_number, accession_number:
            the attributes of those names (AccessionNumber is Type 2: empty by default).
        study_instance_uid, series_instance_uid, sop_instance_uid: the UIDs (the SOP instance
            UID also as MediaStorageSOPInstanceUID), generated when ``None``.
        study_date: StudyDate (also Series/Content/Acquisition date), ``YYYYMMDD``.
        presentation_intent: ``"FOR PRESENTATION"`` or ``"FOR PROCESSING"``.
        uid_entropy: strings from which missing UIDs are derived deterministically.

    Returns: the path written.
    Raises:
        ValueError: pixels not a 2-D ``uint16`` array fitting ``bits_stored``; an invalid
            spacing, laterality, view, photometric, intent, window, date or ``uid_entropy``.

    """
    max_value = _check_pixels(pixels, bits_stored)
    spacing = _check_spacing(pixel_spacing_mm)
    laterality, view, intent = _check_names(laterality, view, photometric, presentation_intent)
    center, width = _window(pixels, max_value, window_center, window_width)
    given = (study_instance_uid, series_instance_uid, sop_instance_uid)
    uids = _uids(
        given, uid_entropy, study_date, patient_id, study_id, series_number, instance_number, laterality, view
    )
    ds = _header(uids, _SOP_CLASSES[intent], study_date)
    _add_patient_study_series(
        ds,
        uids,
        patient_name,
        patient_id,
        study_id,
        accession_number,
        int(series_number),
        f"{laterality} {view}",
    )
    ds.PresentationIntentType = intent
    _add_mammography_image(ds, laterality, view, photometric, int(instance_number), study_date)
    ds.ImagerPixelSpacing = [_ds(spacing[0]), _ds(spacing[1])]
    ds.PixelSpacing = [_ds(spacing[0]), _ds(spacing[1])]
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = _ds(center), _ds(width), "LINEAR"
    _add_pixels(ds, pixels, photometric, bits_stored)
    # ---- atomic write ---------------------------------------------------------------------
    return atomic_write(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))


_SOP_CLASSES = {
    "FOR PRESENTATION": MG_IMAGE_STORAGE_FOR_PRESENTATION,
    "FOR PROCESSING": MG_IMAGE_STORAGE_FOR_PROCESSING,
}
_TIME = "090000"


class _Uids(NamedTuple):
    study: str
    series: str
    sop: str


def _check_pixels(pixels: np.ndarray, bits_stored: int) -> int:
    """The largest stored value, after checking ``pixels`` is a 2-D uint16 fitting ``bits_stored``."""
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
    return max_value


def _check_spacing(pixel_spacing_mm: float | Sequence[float]) -> list[float]:
    """``[row, column]`` spacing from one number or a pair, checked."""
    spacing = (
        [pixel_spacing_mm, pixel_spacing_mm]
        if isinstance(pixel_spacing_mm, (int, float, np.floating, np.integer))
        else list(pixel_spacing_mm)
    )
    if _spacing_from(spacing) is None:
        raise ValueError(f"pixel_spacing_mm must be one or two finite numbers > 0, got {pixel_spacing_mm!r}.")
    return spacing


def _check_names(
    laterality: str, view: str, photometric: str, presentation_intent: str
) -> tuple[str, str, str]:
    """Upper-cased laterality, view and presentation intent, each checked; photometric checked."""
    laterality = str(laterality).upper()
    if laterality not in ("L", "R"):
        raise ValueError(f"laterality must be 'L' or 'R', got {laterality!r}.")
    view = str(view).upper()
    if view not in _VIEWS:
        raise ValueError(f"view must be one of {SUPPORTED_VIEWS}, got {view!r}.")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be 'MONOCHROME1' or 'MONOCHROME2', got {photometric!r}.")
    intent = str(presentation_intent).upper()
    if intent not in _SOP_CLASSES:
        raise ValueError(
            f"presentation_intent must be 'FOR PRESENTATION' or 'FOR PROCESSING', got {intent!r}."
        )
    return laterality, view, intent


def _window(
    pixels: np.ndarray, max_value: int, window_center: float | None, window_width: float | None
) -> tuple[float, float]:
    """(center, width) as given, or from the stored-value range when both are ``None``."""
    if (window_center is None) != (window_width is None):
        raise ValueError("give both window_center and window_width, or neither.")
    if window_center is None or window_width is None:
        min_value = int(pixels.min())
        return (min_value + max_value + 1) / 2.0, float(max_value - min_value + 1)
    center, width = float(window_center), float(window_width)
    if not (math.isfinite(center) and math.isfinite(width)) or width < 1:
        raise ValueError(f"window must be finite with width >= 1 (LINEAR), got ({center}, {width}).")
    return center, width


def _uids(
    given: tuple[str | None, str | None, str | None],
    uid_entropy: Sequence[str] | None,
    study_date: str,
    patient_id: str,
    study_id: str,
    series_number: int,
    instance_number: int,
    laterality: str,
    view: str,
) -> _Uids:
    """Study, series and SOP instance UIDs: ``given`` ones kept, the others generated (see the
    module docstring); the date and ``uid_entropy`` are checked here."""
    if not (len(study_date) == 8 and study_date.isdigit()):
        raise ValueError(f"study_date must be YYYYMMDD, got {study_date!r}.")
    if uid_entropy is not None and (
        isinstance(uid_entropy, str) or not all(isinstance(s, str) for s in uid_entropy)
    ):
        raise ValueError("uid_entropy must be a sequence of strings.")
    entropy = list(uid_entropy) if uid_entropy is not None else None
    ids = (patient_id, study_id, str(series_number))
    return _Uids(
        study=_make_uid(given[0], entropy, "study", *ids[:2]),
        series=_make_uid(given[1], entropy, "series", *ids),
        sop=_make_uid(given[2], entropy, "sop", *ids, str(instance_number), laterality, view),
    )


def _header(uids: _Uids, sop_class: str, date: str) -> Dataset:
    """File meta and SOP common module."""
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = sop_class
    file_meta.MediaStorageSOPInstanceUID = uids.sop
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    file_meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]
    ds = Dataset()
    ds.file_meta = file_meta
    ds.preamble = b"\x00" * 128
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uids.sop
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = _TIME
    return ds


def _add_patient_study_series(
    ds: Dataset,
    uids: _Uids,
    patient_name: str,
    patient_id: str,
    study_id: str,
    accession_number: str,
    series_number: int,
    series_description: str,
) -> None:
    """Patient, general study, general / mammography series and general equipment modules."""
    date = ds.InstanceCreationDate
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = uids.study
    ds.StudyDate = date
    ds.StudyTime = _TIME
    ds.ReferringPhysicianName = ""
    ds.StudyID = study_id
    ds.AccessionNumber = accession_number
    ds.StudyDescription = "Synthetic mammography"
    ds.Modality = "MG"
    ds.SeriesInstanceUID = uids.series
    ds.SeriesNumber = series_number
    ds.SeriesDate = date
    ds.SeriesTime = _TIME
    ds.SeriesDescription = series_description
    ds.Manufacturer = "monai-smalldet synthetic"
    ds.ManufacturerModelName = "monai-smalldet"
    ds.SoftwareVersions = "monai-smalldet"


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "SCT"
    item.CodeMeaning = meaning
    return item


def _add_mammography_image(
    ds: Dataset, laterality: str, view: str, photometric: str, instance_number: int, date: str
) -> None:
    """General image, DX image and mammography image modules (orientation, view, anatomy)."""
    view_code, view_meaning, orient_left, orient_right = _VIEWS[view]
    ds.InstanceNumber = instance_number
    ds.ContentDate = date
    ds.ContentTime = _TIME
    ds.AcquisitionDate = date
    ds.AcquisitionTime = _TIME
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
    ds.AnatomicRegionSequence = [_code("76752008", "Breast")]
    view_item = _code(view_code, view_meaning)
    view_item.ViewModifierCodeSequence = []
    ds.ViewCodeSequence = [view_item]


def _add_pixels(ds: Dataset, pixels: np.ndarray, photometric: str, bits_stored: int) -> None:
    """Image pixel module: one 16-bit unsigned sample per pixel."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(v) for v in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
