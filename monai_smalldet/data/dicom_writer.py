"""Writing one mammogram as DICOM Digital Mammography X-Ray Image Storage (explicit VR little
endian) that DICOM loaders can group by patient, study and series; written atomically."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

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
