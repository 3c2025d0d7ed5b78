"""Mammography CAD SR (SOP Class 1.2.840.10008.5.1.4.1.1.88.50, template TID 4000), built with pydicom.

What a mammography review workstation renders as CAD marks. One document per study: every
image the detector was run on is an entry of the Image Library (TID 4020), whether it was
analysed or failed; each finding is a Single Image Finding (TID 4006) whose Center (POINT) and
Outline (closed POLYLINE) select, **by reference**, the Image Library entry of their image
(TID 4021); the Summary of Detections (TID 4015/4017) says on which images the detection
succeeded and on which it failed, and why. The tree (PS3.16; ``[1.2.k]`` = by-reference
address of the k-th Image Library entry)::

    [1]   CONTAINER Mammography CAD Report (TID 4000, DCMR)
    [1.1]   HAS CONCEPT MOD  CODE Language of Content Item and Descendants = English
    [1.2]   CONTAINS CONTAINER Image Library
    [1.2.k]   CONTAINS IMAGE (laterality, view, orientation, dates, pixel spacing as acq. context)
    [1.3]   CONTAINS CODE CAD Processing and Findings Summary (CID 6047)
              HAS PROPERTIES  TEXT Impression Description, Algorithm Name/Version/Parameters
              INFERRED FROM  CONTAINER Individual Impression/Recommendation  (one per finding)
                HAS CONCEPT MOD  CODE Rendering Intent
                CONTAINS CODE Single Image Finding = mass-like density | calcification cluster
                  HAS CONCEPT MOD  CODE Rendering Intent (> CAD Operating Point, when optional)
                  HAS OBS CONTEXT  TEXT/UIDREF Tracking Identifier / Unique Identifier
                  HAS PROPERTIES  TEXT Algorithm Name, Version;  NUM Certainty of Finding (%)
                  HAS PROPERTIES  SCOORD Center POINT   > SELECTED FROM [1.2.k]
                  HAS PROPERTIES  SCOORD Outline POLYLINE > SELECTED FROM [1.2.k]
    [1.4]   CONTAINS CODE Summary of Detections = Succeeded | Partially Succeeded | Failed
              INFERRED FROM  CONTAINER Successful Detections / Failed Detections
                CONTAINS CODE Detection Performed (+ algorithm, HAS PROPERTIES [1.2.k] ...,
                         CAD Operating Points table)
    [1.5]   CONTAINS CODE Summary of Analyses = Not Attempted

Honest content (the detector is research software):

- the score is an **uncalibrated detector score**, reported as *Certainty of Finding*
  (score x 100, %), never as *Probability of cancer*; the algorithm parameters say so;
- an image without a finding at the operating point gives the summary "All algorithms
  succeeded; without findings", not a diagnostic claim such as "Lesion: Absent";
- findings at or above the model's operating point are *Presentation Required*; with
  ``include_optional`` the ones below it (down to ``optional_min_score``) are *Presentation
  Optional* with CAD Operating Point 2 (the table under Detection Performed describes points
  1 and 2);
- the model's identity (name, version, checkpoint SHA-256) and, where the model says so,
  "NOT FOR CLINICAL USE" (in the impression, the series description and the algorithm
  parameters).

Coordinates: SCOORD values are (column, row) pixels of the stored image, the top-left corner
of the top-left pixel at (0, 0) (PS3.3 C.18.6.1.1), the same numbers as the boxes
``(x1, y1, x2, y2)`` of the JSON results.

Validated with DCMTK's ``dsrdump`` (the IOD's relationship constraints) and dicom3tools'
``dciodvfy`` (modules, value types, evidence) in the tests.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "FINDING_CODES",
    "MAMMOGRAPHY_CAD_SR",
    "CadAlgorithm",
    "CadFinding",
    "CadImage",
    "build_mammography_cad_sr",
    "read_mammography_cad_sr",
    "valid_uid",
]

MAMMOGRAPHY_CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"

#: CID 6014 codes of the Single Image Findings this writer emits, by finding type. A mass
#: seen on one image is a "Mammography breast density" (CID 6014 has no mass code: the mass
#: code 129788004 belongs to the Composite Features of CID 6016).
FINDING_CODES = {
    "mass": ("129793001", "SCT", "Mammography breast density"),
    "calcification_cluster": ("129769006", "SCT", "Calcification Cluster"),
}

_LANGUAGE = ("121049", "DCM", "Language of Content Item and Descendants")
_ENGLISH = ("eng", "RFC5646", "English")
_REPORT = ("111036", "DCM", "Mammography CAD Report")
_LIBRARY = ("111028", "DCM", "Image Library")
_SUMMARY = ("111017", "DCM", "CAD Processing and Findings Summary")
_IMPRESSION = ("111034", "DCM", "Individual Impression/Recommendation")
_IMPRESSION_TEXT = ("111033", "DCM", "Impression Description")
_RENDERING = ("111056", "DCM", "Rendering Intent")
_REQUIRED = ("111150", "DCM", "Presentation Required: Rendering device is expected to present")
_OPTIONAL = ("111151", "DCM", "Presentation Optional: Rendering device may present")
_SINGLE_FINDING = ("111059", "DCM", "Single Image Finding")
_TRACKING_ID = ("112039", "DCM", "Tracking Identifier")
_TRACKING_UID = ("112040", "DCM", "Tracking Unique Identifier")
_ALGO_NAME = ("111001", "DCM", "Algorithm Name")
_ALGO_VERSION = ("111003", "DCM", "Algorithm Version")
_ALGO_PARAMS = ("111002", "DCM", "Algorithm Parameters")
_CERTAINTY = ("111012", "DCM", "Certainty of Finding")
_CENTER = ("111010", "DCM", "Center")
_OUTLINE = ("111041", "DCM", "Outline")
_OPERATING_POINT = ("111071", "DCM", "CAD Operating Point")
_MAX_OPERATING_POINT = ("111072", "DCM", "Maximum CAD Operating Point")
_RECOMMENDED_OPERATING_POINT = ("111092", "DCM", "Recommended CAD Operating Point")
_OPERATING_POINT_TABLE = ("111093", "DCM", "CAD Operating Point Table")
_OPERATING_POINT_TEXT = ("111081", "DCM", "CAD Operating Point Description")
_X_CONCEPT = ("122698", "DCM", "X-Concept")
_Y_CONCEPT = ("122699", "DCM", "Y-Concept")
_FALSE_MARKS = ("111086", "DCM", "False Markers per Image")
_LESION_SENSITIVITY = ("111089", "DCM", "Lesion Sensitivity")
_DETECTIONS = ("111064", "DCM", "Summary of Detections")
_ANALYSES = ("111065", "DCM", "Summary of Analyses")
_SUCCESSFUL = ("111063", "DCM", "Successful Detections")
_FAILED = ("111025", "DCM", "Failed Detections")
_DETECTION = ("111022", "DCM", "Detection Performed")
_STATUS = {
    "succeeded": ("111222", "DCM", "Succeeded"),
    "partial": ("111223", "DCM", "Partially Succeeded"),
    "failed": ("111224", "DCM", "Failed"),
    "not attempted": ("111225", "DCM", "Not Attempted"),
}
_PROCESSING = {  # CID 6047, by (all succeeded, some succeeded, with findings)
    (True, True, False): ("111241", "DCM", "All algorithms succeeded; without findings"),
    (True, True, True): ("111242", "DCM", "All algorithms succeeded; with findings"),
    (False, True, False): ("111243", "DCM", "Not all algorithms succeeded; without findings"),
    (False, True, True): ("111244", "DCM", "Not all algorithms succeeded; with findings"),
    (False, False, False): ("111245", "DCM", "No algorithms succeeded; without findings"),
}
_LATERALITY = {
    "L": ("80248007", "SCT", "Left breast"),
    "R": ("73056007", "SCT", "Right breast"),
    "B": ("63762007", "SCT", "Both breasts"),
}
_VIEW_CODES = {  # CID 4014, by ViewPosition
    "CC": ("399162004", "SCT", "cranio-caudal"),
    "MLO": ("399368009", "SCT", "medio-lateral oblique"),
    "ML": ("399260004", "SCT", "medial-lateral"),
    "LM": ("399352003", "SCT", "latero-medial"),
    "LMO": ("399099002", "SCT", "latero-medial oblique"),
    "XCCL": ("399192008", "SCT", "cranio-caudal exaggerated laterally"),
    "XCCM": ("399101009", "SCT", "cranio-caudal exaggerated medially"),
    "FB": ("399196006", "SCT", "caudo-cranial"),
    "SIO": ("399188001", "SCT", "superolateral to inferomedial oblique"),
}
_ACQ = {
    "laterality": ("111027", "DCM", "Image Laterality"),
    "view": ("111031", "DCM", "Image View"),
    "row": ("111044", "DCM", "Patient Orientation Row"),
    "column": ("111043", "DCM", "Patient Orientation Column"),
    "study_date": ("111060", "DCM", "Study Date"),
    "study_time": ("111061", "DCM", "Study Time"),
    "content_date": ("111018", "DCM", "Content Date"),
    "content_time": ("111019", "DCM", "Content Time"),
    "horizontal": ("111026", "DCM", "Horizontal Pixel Spacing"),
    "vertical": ("111066", "DCM", "Vertical Pixel Spacing"),
}
_MM = ("mm", "UCUM", "millimeter")
_PERCENT = ("%", "UCUM", "Percent")
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def valid_uid(uid: Any) -> bool:
    """Whether ``uid`` is a valid DICOM UID (PS3.5 9.1: digits and dots, components without
    leading zeros, at most 64 characters)."""
    text = str(uid or "")
    return 0 < len(text) <= 64 and bool(_UID_RE.match(text))


@dataclass(frozen=True)
class CadFinding:
    """One finding on one image.

    Attributes:
        box: ``(x1, y1, x2, y2)`` pixels of the stored image, x = column.
        score: the detector's score in [0, 1].
        finding_type: a key of :data:`FINDING_CODES`.
    """

    box: tuple[float, float, float, float]
    score: float
    finding_type: str = "mass"

    def __post_init__(self) -> None:
        x1, y1, x2, y2 = (float(v) for v in self.box)
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 < x1 or y2 < y1:
            raise ValueError(f"a finding's box must be finite (x1, y1, x2, y2), got {self.box!r}")
        if not 0.0 <= float(self.score) <= 1.0:
            raise ValueError(f"a finding's score must lie in [0, 1], got {self.score!r}")
        if self.finding_type not in FINDING_CODES:
            raise ValueError(
                f"finding_type must be one of {sorted(FINDING_CODES)}, got {self.finding_type!r}"
            )


@dataclass(frozen=True)
class CadImage:
    """One image the detector was run on: its header and findings, or why it failed.

    Attributes:
        source: the image's pydicom header (pixels not needed).
        findings: every finding the detector returned on it (the writer picks which to show).
        failure: why the image was not analysed (``None``: analysed).
    """

    source: Any
    findings: tuple[CadFinding, ...] = ()
    failure: str | None = None


@dataclass(frozen=True)
class CadAlgorithm:
    """The detector's identity and operating point, as the report states them.

    Attributes:
        name: algorithm name (Algorithm Name, Manufacturer's Model Name).
        version: algorithm version (package version and model identity).
        score_threshold: the operating point: findings with at least this score are
            Presentation Required.
        checkpoint_sha256: SHA-256 of the model file (``None``: not from a file).
        target_fpi: false positives per image the threshold was chosen for, on validation.
        sensitivity: lesion sensitivity at that threshold on validation (``None``: unknown).
        calibration: where the threshold comes from (e.g. "validation split, 240 images").
        finding_types: what the model detects (keys of :data:`FINDING_CODES`).
        not_for_clinical_use: mark the report "NOT FOR CLINICAL USE" (synthetic-data models).
        manufacturer: the General Equipment manufacturer.
        software_version: the writer's software version.
    """

    name: str
    version: str
    score_threshold: float
    checkpoint_sha256: str | None = None
    target_fpi: float | None = None
    sensitivity: float | None = None
    calibration: str | None = None
    finding_types: tuple[str, ...] = ("mass",)
    not_for_clinical_use: bool = True
    manufacturer: str = "monai-smalldet"
    software_version: str = ""
    parameters: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.score_threshold) <= 1.0:
            raise ValueError(f"score_threshold must lie in [0, 1], got {self.score_threshold!r}")
        unknown = set(self.finding_types) - set(FINDING_CODES)
        if unknown or not self.finding_types:
            raise ValueError(
                f"finding_types must be among {sorted(FINDING_CODES)}, got {self.finding_types!r}"
            )

    def parameter_texts(self) -> list[str]:
        out = [
            "score: uncalibrated detector score in [0, 1], reported as Certainty of Finding x 100; "
            "not a probability of cancer",
            f"operating point: score >= {self.score_threshold:.4f}"
            + (f" (chosen for {self.target_fpi:g} false positives per image" if self.target_fpi else "")
            + (f" on {self.calibration}" if self.calibration and self.target_fpi else "")
            + (")" if self.target_fpi else ""),
        ]
        if self.checkpoint_sha256:
            out.append(f"model checkpoint sha256: {self.checkpoint_sha256}")
        if self.not_for_clinical_use:
            out.append("NOT FOR CLINICAL USE: research software, model trained on synthetic data")
        return out + list(self.parameters)


# ---------------------------------------------------------------------------------------------
# content items
# ---------------------------------------------------------------------------------------------


def _code(triplet: Sequence[str]) -> Any:
    from pydicom.dataset import Dataset

    value, scheme, meaning = triplet
    ds = Dataset()
    ds.CodeValue = value
    ds.CodingSchemeDesignator = scheme
    ds.CodeMeaning = meaning
    return ds


def _item(relationship: str | None, value_type: str, concept: Sequence[str] | None, **values: Any) -> Any:
    """A content item; ``values`` are the DICOM keywords of its value (and ContentSequence)."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    if relationship:
        ds.RelationshipType = relationship
    ds.ValueType = value_type
    if concept is not None:
        ds.ConceptNameCodeSequence = [_code(concept)]
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def _children(item: Any, children: Iterable[Any]) -> Any:
    items = list(children)
    if items:
        item.ContentSequence = items
    return item


def _text(rel: str, concept: Sequence[str], text: str) -> Any:
    return _item(rel, "TEXT", concept, TextValue=str(text)[:1024] or "-")


def _code_item(rel: str, concept: Sequence[str], value: Sequence[str], children: Iterable[Any] = ()) -> Any:
    return _children(_item(rel, "CODE", concept, ConceptCodeSequence=[_code(value)]), children)


def _num(
    rel: str, concept: Sequence[str], value: float, unit: Sequence[str], children: Iterable[Any] = ()
) -> Any:
    from pydicom.dataset import Dataset
    from pydicom.valuerep import format_number_as_ds

    measured = Dataset()
    value = float(value)
    measured.NumericValue = str(int(value)) if value.is_integer() else format_number_as_ds(value)
    measured.MeasurementUnitsCodeSequence = [_code(unit)]
    return _children(_item(rel, "NUM", concept, MeasuredValueSequence=[measured]), children)


def _by_reference(rel: str, address: Sequence[int]) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.RelationshipType = rel
    ds.ReferencedContentItemIdentifier = [int(v) for v in address]
    return ds


def _scoord(
    concept: Sequence[str], graphic_type: str, points: np.ndarray, image_address: Sequence[int]
) -> Any:
    item = _item(
        "HAS PROPERTIES",
        "SCOORD",
        concept,
        GraphicType=graphic_type,
        GraphicData=[float(v) for v in np.asarray(points, dtype=np.float64).reshape(-1)],
    )
    return _children(item, [_by_reference("SELECTED FROM", image_address)])


def _algorithm(algorithm: CadAlgorithm, with_parameters: bool) -> list[Any]:
    items = [
        _text("HAS PROPERTIES", _ALGO_NAME, algorithm.name),
        _text("HAS PROPERTIES", _ALGO_VERSION, algorithm.version),
    ]
    if with_parameters:
        items += [_text("HAS PROPERTIES", _ALGO_PARAMS, t) for t in algorithm.parameter_texts()]
    return items


def _laterality(ds: Any) -> str | None:
    value = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "").upper()
    return value if value in _LATERALITY else None


def _view_code(ds: Any) -> Any | None:
    seq = ds.get("ViewCodeSequence")
    if seq and seq[0].get("CodeValue") and seq[0].get("CodingSchemeDesignator"):
        item = seq[0]
        scheme = (
            "SCT" if item.CodingSchemeDesignator == "SRT" and not item.CodeValue.startswith("R-") else None
        )
        return (
            item.CodeValue,
            scheme or item.CodingSchemeDesignator,
            item.get("CodeMeaning", item.CodeValue),
        )
    return _VIEW_CODES.get(str(ds.get("ViewPosition", "") or "").upper())


def _spacing_mm(ds: Any) -> tuple[float, float] | None:
    from monai_smalldet.spacing import SpacingError, read_spacing_mm

    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if keyword in ds:
            try:
                return read_spacing_mm(list(ds.get(keyword)), pair=True)
            except SpacingError:
                return None
    return None


def _library_entry(ds: Any) -> Any:
    """TID 4020: the IMAGE item of one image and the image's acquisition context."""
    from pydicom.dataset import Dataset

    ref = Dataset()
    ref.ReferencedSOPClassUID = str(ds.get("SOPClassUID", MG_FOR_PRESENTATION))
    ref.ReferencedSOPInstanceUID = str(ds.SOPInstanceUID)
    context = []
    side = _laterality(ds)
    if side is not None:
        context.append(_code_item("HAS ACQ CONTEXT", _ACQ["laterality"], _LATERALITY[side]))
    view = _view_code(ds)
    if view is not None:
        context.append(_code_item("HAS ACQ CONTEXT", _ACQ["view"], view))
    orientation = list(ds.get("PatientOrientation", []) or [])
    if len(orientation) == 2 and all(str(v) for v in orientation):
        context.append(_text("HAS ACQ CONTEXT", _ACQ["row"], str(orientation[0])))
        context.append(_text("HAS ACQ CONTEXT", _ACQ["column"], str(orientation[1])))
    for date_key, time_key, name in (
        ("StudyDate", "StudyTime", "study"),
        ("ContentDate", "ContentTime", "content"),
    ):
        if ds.get(date_key):
            context.append(_item("HAS ACQ CONTEXT", "DATE", _ACQ[f"{name}_date"], Date=str(ds.get(date_key))))
        if ds.get(time_key):
            context.append(_item("HAS ACQ CONTEXT", "TIME", _ACQ[f"{name}_time"], Time=str(ds.get(time_key))))
    spacing = _spacing_mm(ds)
    if spacing is not None:  # (row, column) spacing: horizontal = between columns
        context.append(_num("HAS ACQ CONTEXT", _ACQ["horizontal"], spacing[1], _MM))
        context.append(_num("HAS ACQ CONTEXT", _ACQ["vertical"], spacing[0], _MM))
    return _children(_item("CONTAINS", "IMAGE", None, ReferencedSOPSequence=[ref]), context)


def _finding(
    finding: CadFinding,
    index: int,
    label: str,
    address: Sequence[int],
    algorithm: CadAlgorithm,
    required: bool,
    image_uid: str,
) -> Any:
    """TID 4003 (one Individual Impression/Recommendation) holding one TID 4006 finding. The
    tracking UID is derived from the image, the box and the score: the same finding gets the
    same UID in a rerun."""
    from pydicom.uid import generate_uid

    intent = _REQUIRED if required else _OPTIONAL
    point = [] if required else [_num("HAS PROPERTIES", _OPERATING_POINT, 2, ("{1:n}", "UCUM", "range: 1:n"))]
    x1, y1, x2, y2 = (float(v) for v in finding.box)
    tracking_seed = f"{image_uid} {index} {x1:.3f} {y1:.3f} {x2:.3f} {y2:.3f} {float(finding.score):.6f}"
    outline = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]])
    single = _code_item(
        "CONTAINS",
        _SINGLE_FINDING,
        FINDING_CODES[finding.finding_type],
        [
            _code_item("HAS CONCEPT MOD", _RENDERING, intent, point),
            _text("HAS OBS CONTEXT", _TRACKING_ID, f"{label} finding {index}"),
            _item("HAS OBS CONTEXT", "UIDREF", _TRACKING_UID, UID=generate_uid(entropy_srcs=[tracking_seed])),
            *_algorithm(algorithm, with_parameters=False),
            _num("HAS PROPERTIES", _CERTAINTY, round(100.0 * float(finding.score), 4), _PERCENT),
            _scoord(_CENTER, "POINT", np.array([(x1 + x2) / 2, (y1 + y2) / 2]), address),
            _scoord(_OUTLINE, "POLYLINE", outline, address),
        ],
    )
    impression = _item("INFERRED FROM", "CONTAINER", _IMPRESSION, ContinuityOfContent="SEPARATE")
    return _children(impression, [_code_item("HAS CONCEPT MOD", _RENDERING, intent), single])


def _operating_points(
    algorithm: CadAlgorithm, include_optional: bool, optional_min_score: float
) -> list[Any]:
    """TID 4023: the operating points a display may choose between (1: the model's; 2: lower)."""
    highest = 2 if include_optional else 1
    rows = [
        _num("HAS PROPERTIES", _MAX_OPERATING_POINT, highest, ("[arb'U]", "UCUM", "arbitrary unit")),
        _num("HAS PROPERTIES", _RECOMMENDED_OPERATING_POINT, 1, ("{0:n}", "UCUM", "range: 0:n")),
    ]
    points = [(0, "no CAD marks", None, None)]
    points.append(
        (1, f"score >= {algorithm.score_threshold:.4f}", algorithm.target_fpi, algorithm.sensitivity)
    )
    if include_optional:
        points.append(
            (2, f"score >= {optional_min_score:.4f} (below the model's operating point)", None, None)
        )
    table = []
    for value, text, fpi, sens in points:
        children = [_text("HAS PROPERTIES", _OPERATING_POINT_TEXT, text)]
        if fpi is not None:
            children.append(_num("HAS PROPERTIES", _FALSE_MARKS, fpi, ("{ratio}", "UCUM", "ratio")))
        if sens is not None:
            children.append(_num("HAS PROPERTIES", _LESION_SENSITIVITY, round(100 * sens, 2), _PERCENT))
        table.append(_num("CONTAINS", _OPERATING_POINT, value, ("{0:n}", "UCUM", "range: 0:n"), children))
    axes = [
        _code_item("CONTAINS", _X_CONCEPT, _FALSE_MARKS),
        _code_item("CONTAINS", _Y_CONCEPT, _LESION_SENSITIVITY),
    ]
    container = _item("HAS PROPERTIES", "CONTAINER", _OPERATING_POINT_TABLE, ContinuityOfContent="SEPARATE")
    return [*rows, _children(container, axes + table)]


def _detections(
    images: Sequence[CadImage], algorithm: CadAlgorithm, include_optional: bool, optional_min_score: float
) -> Any:
    """TID 4000 rows 6-7: Summary of Detections and the detections performed, per outcome."""
    ok = [k for k, image in enumerate(images, start=1) if image.failure is None]
    failed = [k for k, image in enumerate(images, start=1) if image.failure is not None]
    status = "succeeded" if not failed else ("failed" if not ok else "partial")
    containers = []
    if ok:
        performed = []
        for finding_type in algorithm.finding_types:
            refs = [_by_reference("HAS PROPERTIES", (1, 2, k)) for k in ok]
            extra = _operating_points(algorithm, include_optional, optional_min_score)
            performed.append(
                _code_item(
                    "CONTAINS",
                    _DETECTION,
                    FINDING_CODES[finding_type],
                    [*_algorithm(algorithm, True), *refs, *extra],
                )
            )
        containers.append(
            _children(
                _item("INFERRED FROM", "CONTAINER", _SUCCESSFUL, ContinuityOfContent="SEPARATE"), performed
            )
        )
    if failed:
        performed = []
        for k in failed:  # one per failed image, its reason in the parameters
            reason = _text("HAS PROPERTIES", _ALGO_PARAMS, f"not analysed: {images[k - 1].failure}")
            for finding_type in algorithm.finding_types:
                performed.append(
                    _code_item(
                        "CONTAINS",
                        _DETECTION,
                        FINDING_CODES[finding_type],
                        [*_algorithm(algorithm, False), reason, _by_reference("HAS PROPERTIES", (1, 2, k))],
                    )
                )
        containers.append(
            _children(_item("INFERRED FROM", "CONTAINER", _FAILED, ContinuityOfContent="SEPARATE"), performed)
        )
    return _code_item("CONTAINS", _DETECTIONS, _STATUS[status], containers)


def _impression_text(images: Sequence[CadImage], shown: int, algorithm: CadAlgorithm) -> str:
    ok = sum(image.failure is None for image in images)
    parts = []
    if algorithm.not_for_clinical_use:
        parts.append("NOT FOR CLINICAL USE: research software, model trained on synthetic data only.")
    parts.append(
        f"{shown} CAD mark(s) at the operating point (detector score >= {algorithm.score_threshold:.4f}) "
        f"on {ok} analysed image(s) of {len(images)}."
    )
    if shown == 0 and ok:
        parts.append(
            "No finding reached the operating point; this is not a statement that no lesion is present."
        )
    not_analysed = [image for image in images if image.failure is not None]
    if not_analysed:
        listed = "; ".join(f"{image.source.SOPInstanceUID}: {image.failure}" for image in not_analysed)
        parts.append(f"Not analysed: {listed}.")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# the document
# ---------------------------------------------------------------------------------------------

_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "IssuerOfPatientID",
    "StudyDescription",
)
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime")
_TYPE2 += ("ReferringPhysicianName", "StudyID", "AccessionNumber")


def _check_sources(images: Sequence[CadImage]) -> str:
    if not images:
        raise ValueError("a Mammography CAD SR needs at least one image")
    study = str(images[0].source.get("StudyInstanceUID", ""))
    for image in images:
        ds = image.source
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
            if not valid_uid(ds.get(keyword)):
                raise ValueError(f"image {ds.get('SOPInstanceUID')!r}: invalid {keyword} {ds.get(keyword)!r}")
        if str(ds.StudyInstanceUID) != study:
            raise ValueError(f"images of two studies in one report: {study} and {ds.StudyInstanceUID}")
    return study


def build_mammography_cad_sr(
    images: Sequence[CadImage],
    algorithm: CadAlgorithm,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int = 9101,
    instance_number: int = 1,
    include_optional: bool = False,
    optional_min_score: float = 0.05,
    max_findings_per_image: int = 10,
    content_datetime: _dt.datetime | None = None,
) -> Any:
    """The Mammography CAD SR of one study (see the module docstring for the tree).

    Args:
        images: every image of the study the detector was run on (analysed or failed), in the
            order of the Image Library.
        algorithm: the detector's identity and operating point.
        series_instance_uid, sop_instance_uid: the report's UIDs.
        include_optional: also report findings below the operating point (down to
            ``optional_min_score``) as Presentation Optional.
        max_findings_per_image: most findings reported per image, highest score first.
        content_datetime: the report's content date/time (default: now).

    Returns:
        a ``pydicom.Dataset`` with file meta, ready for ``save_as(..., enforce_file_format=True)``.

    Raises:
        ValueError: no image, images of several studies, or an invalid source UID.
    """
    study_uid = _check_sources(images)
    for uid in (series_instance_uid, sop_instance_uid):
        if not valid_uid(uid):
            raise ValueError(f"invalid UID for the report: {uid!r}")
    library = _children(
        _item("CONTAINS", "CONTAINER", _LIBRARY, ContinuityOfContent="SEPARATE"),
        [_library_entry(image.source) for image in images],
    )
    root_children = [
        _code_item("HAS CONCEPT MOD", _LANGUAGE, _ENGLISH),
        library,
        _findings_summary(images, algorithm, include_optional, optional_min_score, max_findings_per_image),
        _detections(images, algorithm, include_optional, optional_min_score),
        _code_item("CONTAINS", _ANALYSES, _STATUS["not attempted"]),
    ]
    ds = _document_header(images, study_uid, algorithm, content_datetime or _dt.datetime.now())
    ds.SOPInstanceUID = sop_instance_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = int(series_number)
    ds.InstanceNumber = int(instance_number)
    ds.ContentSequence = root_children
    return ds


def _findings_summary(
    images: Sequence[CadImage],
    algorithm: CadAlgorithm,
    include_optional: bool,
    optional_min_score: float,
    max_findings_per_image: int,
) -> Any:
    """TID 4001: the CAD Processing and Findings Summary, its impression and the findings."""
    impressions = []
    for k, image in enumerate(images, start=1):
        if image.failure is not None:
            continue
        ranked = sorted(image.findings, key=lambda f: -float(f.score))[:max_findings_per_image]
        label = " ".join(
            v for v in (_laterality(image.source), str(image.source.get("ViewPosition", "") or "")) if v
        )
        uid = str(image.source.SOPInstanceUID)
        for index, finding in enumerate(ranked, start=1):
            required = float(finding.score) >= algorithm.score_threshold
            if required or (include_optional and float(finding.score) >= optional_min_score):
                impressions.append(
                    _finding(finding, index, label or f"image {k}", (1, 2, k), algorithm, required, uid)
                )
    shown = sum(
        1 for item in impressions if item.ContentSequence[0].ConceptCodeSequence[0].CodeValue == _REQUIRED[0]
    )
    ok = [image.failure is None for image in images]
    body = [_text("HAS PROPERTIES", _IMPRESSION_TEXT, _impression_text(images, shown, algorithm))]
    body += _algorithm(algorithm, with_parameters=True)
    return _code_item(
        "CONTAINS", _SUMMARY, _PROCESSING[(all(ok), any(ok), bool(impressions))], body + impressions
    )


def _document_header(
    images: Sequence[CadImage], study_uid: str, algorithm: CadAlgorithm, now: _dt.datetime
) -> Any:
    """The report's modules other than its content tree (Patient and Study from the first image;
    SR Document Series, General Equipment, SR Document General) and its file meta."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    first = images[0].source
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = MAMMOGRAPHY_CAD_SR
    for keyword in _COPIED:
        if keyword in first:
            setattr(ds, keyword, first.get(keyword))
    for keyword in _TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, None)
    ds.StudyInstanceUID = study_uid
    ds.Modality = "SR"
    marker = " NOT FOR CLINICAL USE" if algorithm.not_for_clinical_use else ""
    ds.SeriesDescription = f"{algorithm.manufacturer} Mammography CAD{marker}"[:64]
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.Manufacturer = algorithm.manufacturer
    ds.ManufacturerModelName = algorithm.name[:64]
    versions = [v for v in (algorithm.software_version, algorithm.version) if v]
    ds.SoftwareVersions = [v[:64] for v in versions] or None
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.PerformedProcedureCodeSequence = []
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(images, study_uid)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code(_REPORT)]
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "4000"
    ds.ContentTemplateSequence = [template]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MAMMOGRAPHY_CAD_SR
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def _evidence(images: Sequence[CadImage], study_uid: str) -> list[Any]:
    """Current Requested Procedure Evidence: every image of the Image Library, by series."""
    from pydicom.dataset import Dataset

    by_series: dict[str, list[Any]] = {}
    for image in images:
        ref = Dataset()
        ref.ReferencedSOPClassUID = str(image.source.get("SOPClassUID", MG_FOR_PRESENTATION))
        ref.ReferencedSOPInstanceUID = str(image.source.SOPInstanceUID)
        by_series.setdefault(str(image.source.SeriesInstanceUID), []).append(ref)
    study = Dataset()
    study.StudyInstanceUID = study_uid
    series_items = []
    for series_uid, refs in by_series.items():
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        series.ReferencedSOPSequence = refs
        series_items.append(series)
    study.ReferencedSeriesSequence = series_items
    return [study]


# ---------------------------------------------------------------------------------------------
# reading back
# ---------------------------------------------------------------------------------------------


def _concept(item: Any) -> str | None:
    seq = item.get("ConceptNameCodeSequence")
    return str(seq[0].CodeValue) if seq else None


def read_mammography_cad_sr(ds: Any) -> dict[str, Any]:
    """The findings and detection outcome of a Mammography CAD SR (any writer's, this
    module's layout of Single Image Findings under Individual Impressions).

    Returns:
        ``{"summary": CID 6047 meaning, "detections": CID 6042 meaning, "images": {sop uid:
        {"laterality", "view"}}, "findings": [{"sop_instance_uid", "finding_type", "box",
        "center", "score", "rendering_intent"}], "failed": {sop uid: reason}}``; ``score`` is
        Certainty of Finding / 100 (``None`` when absent); ``box`` comes from the Outline.

    Raises:
        ValueError: not a Mammography CAD SR, or a by-reference address that resolves to no
            Image Library entry.
    """
    if str(ds.get("SOPClassUID", "")) != MAMMOGRAPHY_CAD_SR or _concept(ds) != _REPORT[0]:
        raise ValueError("not a Mammography CAD SR (SOP Class / root concept)")
    root = list(ds.ContentSequence)
    library_pos = next(i for i, item in enumerate(root, start=1) if _concept(item) == _LIBRARY[0])
    entries: dict[tuple[int, ...], str] = {}
    images: dict[str, dict[str, Any]] = {}
    for k, entry in enumerate(root[library_pos - 1].ContentSequence, start=1):
        uid = str(entry.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        entries[(1, library_pos, k)] = uid
        context = {_concept(c): c for c in entry.get("ContentSequence", [])}
        lat = context.get(_ACQ["laterality"][0])
        view = context.get(_ACQ["view"][0])
        images[uid] = {
            "laterality": lat.ConceptCodeSequence[0].CodeMeaning if lat is not None else None,
            "view": view.ConceptCodeSequence[0].CodeMeaning if view is not None else None,
        }

    def resolve(item: Any) -> str:
        for child in item.get("ContentSequence", []):
            if "ReferencedContentItemIdentifier" in child:
                address = tuple(int(v) for v in child.ReferencedContentItemIdentifier)
                if address not in entries:
                    raise ValueError(f"by-reference address {address} is not an Image Library entry")
                return entries[address]
        raise ValueError("SCOORD without a by-reference SELECTED FROM")

    out: dict[str, Any] = {"images": images, "findings": [], "failed": {}}
    for item in root:
        concept = _concept(item)
        if concept == _SUMMARY[0]:
            out["summary"] = item.ConceptCodeSequence[0].CodeMeaning
            for impression in item.get("ContentSequence", []):
                if _concept(impression) != _IMPRESSION[0]:
                    continue
                for single in impression.ContentSequence:
                    if _concept(single) == _SINGLE_FINDING[0]:
                        out["findings"].append(_read_finding(single, resolve))
        elif concept == _DETECTIONS[0]:
            out["detections"] = item.ConceptCodeSequence[0].CodeMeaning
            for container in item.get("ContentSequence", []):
                if _concept(container) != _FAILED[0]:
                    continue
                for performed in container.ContentSequence:
                    texts = [c for c in performed.ContentSequence if _concept(c) == _ALGO_PARAMS[0]]
                    refs = [c for c in performed.ContentSequence if "ReferencedContentItemIdentifier" in c]
                    for ref in refs:
                        uid = entries[tuple(int(v) for v in ref.ReferencedContentItemIdentifier)]
                        out["failed"][uid] = (
                            str(texts[0].TextValue).removeprefix("not analysed: ") if texts else ""
                        )
    return out


def _read_finding(single: Any, resolve: Any) -> dict[str, Any]:
    finding: dict[str, Any] = {"finding_type": single.ConceptCodeSequence[0].CodeMeaning, "score": None}
    for child in single.ContentSequence:
        concept = _concept(child)
        if concept == _RENDERING[0]:
            finding["rendering_intent"] = child.ConceptCodeSequence[0].CodeMeaning.split(":")[0]
        elif concept == _CERTAINTY[0]:
            finding["score"] = float(child.MeasuredValueSequence[0].NumericValue) / 100.0
        elif concept == _CENTER[0]:
            finding["center"] = [float(v) for v in child.GraphicData]
            finding["sop_instance_uid"] = resolve(child)
        elif concept == _OUTLINE[0]:
            points = np.asarray([float(v) for v in child.GraphicData]).reshape(-1, 2)
            finding["box"] = [points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()]
            finding["box"] = [float(v) for v in finding["box"]]
    return finding
