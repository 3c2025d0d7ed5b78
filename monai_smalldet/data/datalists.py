"""Datalists from mammography datasets as they are published, and from a documented CSV.

Each converter reads a dataset's own annotation files and returns a decathlon-style datalist
(``training`` / ``validation`` / ``test``, one entry per image, the format of
:func:`monai_smalldet.data.synthetic.generate_dataset`) and a report of every row it could not
convert, with the reason. :func:`write_datalist` writes both, atomically; the command is
``monai-smalldet datalist --format {csv,vindr-mammo,inbreast,cbis-ddsm} ROOT --out datalist.json``.

An entry::

    {"image": "<path, relative to the datalist's folder>", "patient_id": ..., "laterality": "L",
     "view": "CC", "box": [[x1, y1, x2, y2], ...], "label": [1, ...], "lesion_type": [...],
     "benign_box": [...], "benign_type": [...], "pixel_spacing_mm": [0.07, 0.07],
     "spacing_source": "ImagerPixelSpacing", "source_split": ...}

Boxes are pixels of the **stored image**, x = column, (x1, y1) the top-left corner; malignant
findings go under ``box`` (``label`` 1), benign ones under ``benign_box`` (the hard negatives of
:class:`~monai_smalldet.transforms.RandLesionTileSamplerd`). Images without a finding have empty
lists. ``pixel_spacing_mm`` (``[row, col]`` mm) and ``spacing_source`` say where each image's
spacing came from: ``ImagerPixelSpacing`` or ``PixelSpacing`` (the DICOM header, read by
:func:`~monai_smalldet.data.dicom.header_spacing`, as the loader reads it), ``csv`` (the generic
CSV's ``spacing_mm`` column), ``user`` (the converter's ``spacing_mm`` argument, ``--spacing``:
applied only to images that record none), or ``missing`` (``pixel_spacing_mm`` null; the
loader then uses its ``default_spacing_mm`` and says so). No converter invents a dataset
default: VinDr-Mammo and INbreast DICOMs record their own; CBIS-DDSM's do not, and its
digitiser per case is only in the original DDSM ``.ics`` files, which CBIS-DDSM does not ship.
:class:`~monai_smalldet.transforms.LoadMammogramd` reads an entry's spacing for a file that
records none. The validation split is cut from the training split by patient (seeded; one patient's
images never straddle two splits); a dataset's own test split stays the test split.

Rules for every converter: a row that cannot be converted (missing image file, a box that is
empty or lies outside the image, an unknown pathology or BI-RADS value, a malformed number) is
listed in the report with its row number and reason and left out; the conversion never stops at
the first bad row; nothing is written when no image could be converted.
"""

from __future__ import annotations

import csv
import math
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..files import write_json_atomic
from ..spacing import read_spacing_mm

__all__ = [
    "CBIS_DDSM_CSVS",
    "CSV_COLUMNS",
    "INBREAST_MALIGNANT_BIRADS",
    "VINDR_MALIGNANT_BIRADS",
    "ConversionError",
    "ConversionReport",
    "convert_cbis_ddsm",
    "convert_csv",
    "convert_inbreast",
    "convert_vindr_mammo",
    "write_datalist",
]

#: the generic CSV format, one row per finding (an image without findings: one row, no box)
CSV_COLUMNS = {
    "image": "image file (DICOM, PNG, TIFF), relative to the CSV's folder or absolute; required",
    "patient_id": "patient identifier (the validation split is cut by patient); required",
    "split": "training | validation | test; empty: training",
    "laterality": "L | R; optional",
    "view": "CC | MLO | ...; optional",
    "x1,y1,x2,y2": "finding box in pixels of the stored image, x = column; all empty: no finding",
    "pathology": "malignant | benign (with a box); optional when there is no box",
    "lesion_type": "free text, e.g. mass, calcification_cluster; optional",
    "spacing_mm": "pixel spacing in mm (one number), for images whose files record none; optional",
}

#: VinDr-Mammo ``finding_birads`` values counted as malignant by default (BI-RADS 4 and 5:
#: suspicious / highly suggestive of malignancy; VinDr-Mammo has no biopsy-proven pathology)
VINDR_MALIGNANT_BIRADS = ("BI-RADS 4", "BI-RADS 5")
_VINDR_BENIGN_BIRADS = ("BI-RADS 2", "BI-RADS 3")
_SPLITS = ("training", "validation", "test")


class ConversionError(ValueError):
    """A dataset that cannot be converted at all (missing annotation file, missing columns,
    no convertible image); the message names the file and the problem."""


@dataclass
class ConversionReport:
    """What a conversion did: rows read, images per split, every rejected row and why."""

    source: str
    format: str
    rows: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    images: dict[str, int] = field(default_factory=dict)
    findings: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    clipped_boxes: int = 0
    spacing_sources: dict[str, int] = field(default_factory=dict)

    def reject(self, row: int, file: str | None, reason: str) -> None:
        self.rejected.append({"row": row, "file": file, "reason": reason})

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format,
            "rows": self.rows,
            "rows_rejected": len(self.rejected),
            "images": self.images,
            "findings": self.findings,
            "clipped_boxes": self.clipped_boxes,
            "spacing_sources": self.spacing_sources,
            "settings": self.settings,
            "rejected": self.rejected,
        }


@dataclass
class _Image:
    path: Path
    patient_id: str
    split: str
    laterality: str | None = None
    view: str | None = None
    size_hw: tuple[int, int] | None = None
    spacing: tuple[float, float] | None = None
    spacing_source: str | None = None
    boxes: list[list[float]] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    benign: list[list[float]] = field(default_factory=list)
    benign_types: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _read_csv(path: Path, required: Iterable[str]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = sorted(set(required) - set(reader.fieldnames or []))
            if missing:
                raise ConversionError(f"{path}: missing column(s) {missing} (found {reader.fieldnames})")
            return list(reader)
    except OSError as err:
        raise ConversionError(f"{path}: cannot read the annotation file ({err.strerror or err})") from None


def _image_header(path: Path) -> tuple[tuple[int, int], tuple[float, float] | None, str | None]:
    """``((rows, columns), spacing, its source)`` of an image file, from its header only; a
    PNG/TIFF/JPEG records no spacing the pipeline trusts."""
    if path.suffix.lower() in (".png", ".tif", ".tiff", ".jpg", ".jpeg"):
        from PIL import Image

        with Image.open(path) as im:
            return (int(im.height), int(im.width)), None, None
    import pydicom

    from .dicom import header_spacing

    tags = ["Rows", "Columns", "ImagerPixelSpacing", "PixelSpacing"]
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
    return (int(ds.Rows), int(ds.Columns)), *header_spacing(ds)


def _box(values: Sequence[str]) -> list[float] | None:
    """A box from four texts; ``None`` when all are empty (or NaN); ValueError when malformed."""
    texts = [str(v).strip() for v in values]
    if all(t == "" or t.lower() == "nan" for t in texts):
        return None
    box = [float(t) for t in texts]
    if not all(math.isfinite(v) for v in box):
        raise ValueError(f"box {texts} is not four finite numbers")
    return box


def _check_box(box: list[float], size_hw: tuple[int, int], report: ConversionReport) -> str | None:
    """Why ``box`` is not a finding of an image of ``size_hw`` (``None``: it is). A box that
    overlaps the image but crosses its border (VinDr-Mammo has slightly negative coordinates) is
    clipped to the image in place and counted in the report."""
    x1, y1, x2, y2 = box
    h, w = size_hw
    if not (x2 > x1 and y2 > y1):
        return f"empty box {box}"
    if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
        return f"box {box} outside the {w} x {h} image"
    clipped = [max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)]
    if clipped != box:
        box[:] = clipped
        report.clipped_boxes += 1
    return None


def _resolve(image: _Image, report: ConversionReport, row: int, cache: dict[Path, Any]) -> bool:
    """Check the image file once (exists, readable size); reject the row otherwise."""
    if image.path not in cache:
        try:
            cache[image.path] = _image_header(image.path) if image.path.is_file() else "image file not found"
        except Exception as err:  # a damaged file: reported, the others go on
            cache[image.path] = f"unreadable image header ({type(err).__name__}: {err})"
    found = cache[image.path]
    if isinstance(found, str):
        report.reject(row, str(image.path), found)
        return False
    image.size_hw, spacing, source = found
    if spacing is not None:  # the header wins over any other source, as in the loader
        image.spacing, image.spacing_source = spacing, source
    return True


def _assign_split(images: list[_Image], split: str, fraction: float, seed: int) -> None:
    """Move a seeded ``fraction`` of the training patients (all their images) to ``split``."""
    patients = sorted({im.patient_id for im in images if im.split == "training"})
    random.Random(f"{seed} {split}").shuffle(patients)
    chosen = set(patients[: round(fraction * len(patients))])
    for im in images:
        if im.split == "training" and im.patient_id in chosen:
            im.split = split


def _datalist(
    images: Iterable[_Image], base: Path, report: ConversionReport
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in _SPLITS}
    for im in sorted(images, key=lambda i: (i.split, i.patient_id, str(i.path))):
        try:
            rel = os.path.relpath(im.path, base)
        except ValueError:  # another drive (Windows)
            rel = str(im.path)
        entry = {
            "image": rel if not rel.startswith("..") else str(im.path.resolve()),
            "patient_id": im.patient_id,
            "laterality": im.laterality,
            "view": im.view,
            "shape": list(im.size_hw) if im.size_hw else None,
            "pixel_spacing_mm": list(im.spacing) if im.spacing else None,
            "spacing_source": im.spacing_source or "missing",
            "box": im.boxes,
            "label": [1] * len(im.boxes),
            "lesion_type": im.types,
            "benign_box": im.benign,
            "benign_type": im.benign_types,
            **im.extra,
        }
        out[im.split].append(entry)
    report.images = {s: len(v) for s, v in out.items()}
    report.findings = {
        "malignant": sum(len(e["box"]) for v in out.values() for e in v),
        "benign": sum(len(e["benign_box"]) for v in out.values() for e in v),
    }
    return out


def _finish(
    images: dict[Any, _Image],
    base: Path,
    report: ConversionReport,
    val_fraction: float,
    seed: int,
    spacing_mm: float | None = None,
):
    if not images:
        raise ConversionError(
            f"{report.source}: no image could be converted ({len(report.rejected)} rows rejected)"
        )
    _assign_split(list(images.values()), "validation", val_fraction, seed)
    report.settings.update(val_fraction=val_fraction, seed=seed, spacing_mm=spacing_mm)
    if spacing_mm is not None:
        given = read_spacing_mm(spacing_mm)
        for im in images.values():
            if im.spacing is None:
                im.spacing, im.spacing_source = given, "user"
    sources = [im.spacing_source or "missing" for im in images.values()]
    report.spacing_sources = {k: sources.count(k) for k in sorted(set(sources))}
    return _datalist(images.values(), base, report), report


def _side(value: str) -> str | None:
    text = str(value or "").strip().upper()
    return {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}.get(text)


# ---------------------------------------------------------------------------------------------
# the generic CSV
# ---------------------------------------------------------------------------------------------


def convert_csv(
    csv_path: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    spacing_mm: float | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], ConversionReport]:
    """The datalist of a CSV in the documented generic format (:data:`CSV_COLUMNS`, one row per
    finding), for private data.

    Args:
        csv_path: the CSV file; relative image paths are relative to its folder.
        out_dir: the folder the datalist will be written to (image paths are made relative to
            it; default: the CSV's folder).
        val_fraction, seed: the patient-level validation split cut from ``training``.
        spacing_mm: pixel spacing (mm) of the images whose files record none (``spacing_source``
            ``user``); default: left ``missing``.

    Raises:
        ConversionError: unreadable CSV, missing required columns, or no convertible image.
    """
    path = Path(csv_path)
    rows = _read_csv(path, ("image", "patient_id"))
    report = ConversionReport(str(path), "csv", rows=len(rows))
    images: dict[Path, _Image] = {}
    cache: dict[Path, Any] = {}
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        file = Path(row["image"].strip())
        file = file if file.is_absolute() else path.parent / file
        split = (row.get("split") or "training").strip().lower() or "training"
        if split not in _SPLITS:
            report.reject(
                number, str(file), f"unknown split {row.get('split')!r} (training, validation, test)"
            )
            continue
        if not row["patient_id"].strip():
            report.reject(number, str(file), "empty patient_id")
            continue
        image = images.get(file) or _Image(
            file, row["patient_id"].strip(), split, _side(row.get("laterality", ""))
        )
        image.view = image.view or (row.get("view") or "").strip().upper() or None
        if not _resolve(image, report, number, cache):
            continue
        try:
            box = _box([row.get(k, "") for k in ("x1", "y1", "x2", "y2")])
            spacing = (row.get("spacing_mm") or "").strip()
            if spacing and image.spacing_source in (None, "csv"):
                image.spacing, image.spacing_source = read_spacing_mm(float(spacing)), "csv"
        except ValueError as err:  # SpacingError is a ValueError
            report.reject(number, str(file), f"malformed row: {err}")
            continue
        images[file] = image
        if box is None:
            continue
        problem = _check_box(box, image.size_hw, report)  # type: ignore[arg-type]
        pathology = (row.get("pathology") or "").strip().lower()
        if problem is None and pathology not in ("malignant", "benign"):
            problem = f"unknown pathology {row.get('pathology')!r} (malignant, benign)"
        if problem is not None:
            report.reject(number, str(file), problem)
            continue
        kind = (row.get("lesion_type") or "").strip() or "lesion"
        (image.boxes if pathology == "malignant" else image.benign).append(box)
        (image.types if pathology == "malignant" else image.benign_types).append(kind)
    return _finish(images, Path(out_dir) if out_dir else path.parent, report, val_fraction, seed, spacing_mm)


# ---------------------------------------------------------------------------------------------
# VinDr-Mammo
# ---------------------------------------------------------------------------------------------

_VINDR_COLUMNS = (
    "study_id",
    "image_id",
    "laterality",
    "view_position",
    "height",
    "width",
    "finding_categories",
    "finding_birads",
    "xmin",
    "ymin",
    "xmax",
    "ymax",
    "split",
)


def _vindr_categories(text: str) -> list[str]:
    """``"['Mass', 'Suspicious Calcification']"`` -> ``["Mass", "Suspicious Calcification"]``."""
    import ast

    value = ast.literal_eval(text.strip()) if text.strip().startswith("[") else [text]
    return [str(v).strip() for v in value]


def convert_vindr_mammo(
    root: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    malignant_birads: Sequence[str] = VINDR_MALIGNANT_BIRADS,
    val_fraction: float = 0.1,
    seed: int = 0,
    spacing_mm: float | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], ConversionReport]:
    """The datalist of VinDr-Mammo (PhysioNet, Nguyen et al., Sci Data 2023) as published.

    Reads ``<root>/finding_annotations.csv`` (one row per finding, or one "No Finding" row per
    image; columns ``study_id, series_id, image_id, laterality, view_position, height, width,
    breast_birads, breast_density, finding_categories, finding_birads, xmin, ymin, xmax, ymax,
    split``) and finds each image at ``<root>/images/<study_id>/<image_id>.dicom``. Boxes are in
    pixels of the stored image (``xmin``/``xmax`` along columns). VinDr-Mammo grades findings
    by BI-RADS, without pathology: ``finding_birads`` in ``malignant_birads`` (default BI-RADS
    4 and 5) is a malignant finding (``box``), BI-RADS 2 and 3 a benign one (``benign_box``);
    a finding without a BI-RADS grade (the dataset gives none to skin thickening or retraction,
    nipple retraction and lymph nodes) is left out and listed in the report. Source of the
    layout: the dataset's PhysioNet description and its authors' code
    (github.com/vinbigdata-medical/vindr-mammo, ``visualize.py``, ``split_data.ipynb``). ``split``: the dataset's ``training`` /
    ``test``; the study id stands for the patient (the dataset gives one study per patient).
    The annotation's ``height``/``width`` must match the DICOM's rows/columns.

    Raises:
        ConversionError: no annotation file, missing columns, or no convertible image.
    """
    root = Path(root)
    rows = _read_csv(root / "finding_annotations.csv", _VINDR_COLUMNS)
    report = ConversionReport(str(root), "vindr-mammo", rows=len(rows))
    report.settings["malignant_birads"] = list(malignant_birads)
    images: dict[Path, _Image] = {}
    cache: dict[Path, Any] = {}
    for number, row in enumerate(rows, start=2):
        file = root / "images" / row["study_id"].strip() / f"{row['image_id'].strip()}.dicom"
        split = {"training": "training", "test": "test"}.get(row["split"].strip().lower())
        if split is None:
            report.reject(number, str(file), f"unknown split {row['split']!r} (training, test)")
            continue
        image = images.get(file) or _Image(file, row["study_id"].strip(), split, _side(row["laterality"]))
        image.view = image.view or row["view_position"].strip().upper() or None
        if not _resolve(image, report, number, cache):
            continue
        try:
            declared = (int(float(row["height"])), int(float(row["width"])))
            categories = _vindr_categories(row["finding_categories"])
            box = _box([row[k] for k in ("xmin", "ymin", "xmax", "ymax")])
        except (ValueError, SyntaxError) as err:
            report.reject(number, str(file), f"malformed row: {err}")
            continue
        if declared != image.size_hw:
            report.reject(number, str(file), f"annotated size {declared} != image size {image.size_hw}")
            continue
        images[file] = image
        if box is None or categories == ["No Finding"]:
            continue
        birads = row["finding_birads"].strip()
        problem = _check_box(box, image.size_hw, report)  # type: ignore[arg-type]
        if problem is None and not birads:
            problem = (
                f"finding {categories} has no BI-RADS grade (skin, nipple and lymph-node findings carry none)"
            )
        elif problem is None and birads not in (*malignant_birads, *_VINDR_BENIGN_BIRADS):
            problem = f"finding BI-RADS {birads!r} is neither malignant {list(malignant_birads)} nor benign"
        if problem is not None:
            report.reject(number, str(file), problem)
            continue
        kind = "; ".join(categories)
        malignant = birads in malignant_birads
        (image.boxes if malignant else image.benign).append(box)
        (image.types if malignant else image.benign_types).append(kind)
    return _finish(images, Path(out_dir) if out_dir else root, report, val_fraction, seed, spacing_mm)


# ---------------------------------------------------------------------------------------------
# INbreast
# ---------------------------------------------------------------------------------------------

#: INbreast ``Bi-Rads`` values (per image) counted as malignant by default: 4a-c, 5, 6
INBREAST_MALIGNANT_BIRADS = ("4a", "4b", "4c", "5", "6")
_INBREAST_BENIGN_BIRADS = ("1", "2", "3")
#: ROI names as INbreast spells them (inconsistently) -> finding type; others are "other"
_INBREAST_TYPES = {
    "mass": "mass",
    "spiculated region": "mass",
    "espiculated region": "mass",
    "cluster": "calcification_cluster",
    "calcification": "calcification",
    "calcifications": "calcification",
    "distortion": "architectural_distortion",
    "asymmetry": "asymmetry",
    "assymetry": "asymmetry",
}


def _inbreast_rois(xml: Path) -> list[tuple[str, list[tuple[float, float]]]]:
    """``(name, [(x, y), ...])`` of each ROI of an INbreast XML (OsiriX plist, ``Point_px``
    strings ``"(x, y)"``, x = column)."""
    import plistlib

    with open(xml, "rb") as fh:
        image = plistlib.load(fh, fmt=plistlib.FMT_XML)["Images"][0]
    out = []
    for roi in image.get("ROIs", []):
        points = []
        for text in roi.get("Point_px", []):
            x, y = (float(v) for v in str(text).strip().strip("()").split(",")[:2])
            points.append((x, y))
        out.append((str(roi.get("Name", "")), points))
    return out


def _read_inbreast_csv(path: Path) -> list[dict[str, str]]:
    """The rows of ``INbreast.csv`` (``;``-separated), its needed columns checked."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise ConversionError(f"{path}: cannot read the annotation file ({err.strerror or err})") from None
    reader = csv.DictReader(text.splitlines(), delimiter=";")
    missing = sorted({"Laterality", "View", "File Name", "Bi-Rads"} - set(reader.fieldnames or []))
    if missing:
        raise ConversionError(f"{path}: missing column(s) {missing} (found {reader.fieldnames})")
    return list(reader)


def _add_inbreast_rois(
    image: _Image,
    rois: list[tuple[str, list[tuple[float, float]]]],
    malignant: bool,
    report: ConversionReport,
    number: int,
    xml: Path,
) -> None:
    """Each ROI of three or more points as the box of its points; point marks counted."""
    for roi_name, points in rois:
        if len(points) < 3:
            report.settings["point_rois_skipped"] += 1
            continue
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        box = [min(xs), min(ys), max(xs), max(ys)]
        problem = _check_box(box, image.size_hw, report)  # type: ignore[arg-type]
        if problem is not None:
            report.reject(number, str(xml), f"ROI {roi_name!r}: {problem}")
            continue
        kind = _INBREAST_TYPES.get(roi_name.strip().lower(), "other")
        (image.boxes if malignant else image.benign).append(box)
        (image.types if malignant else image.benign_types).append(kind)


def convert_inbreast(
    root: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    malignant_birads: Sequence[str] = INBREAST_MALIGNANT_BIRADS,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    spacing_mm: float | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], ConversionReport]:
    """The datalist of INbreast (Moreira et al., Acad Radiol 2012) as released.

    Reads ``<root>/INbreast.csv`` (``;``-separated: ``Patient ID;Patient age;Laterality;View;
    Acquisition date;File Name;ACR;Bi-Rads``), finds each image at
    ``<root>/AllDICOMs/<File Name>_<patient>_MG_<L|R>_<CC|ML>_ANON.dcm`` and its ROIs in
    ``<root>/AllXML/<File Name>.xml`` (OsiriX plist; an image without annotation has none).
    Each ROI of three or more points becomes the box of its points (``Point_px``, x = column);
    ROIs of one or two points are single calcifications (point marks): left out and counted
    in the report (``settings.point_rois_skipped``). INbreast grades images, not ROIs: the
    ROIs of an image whose ``Bi-Rads`` is in ``malignant_birads`` (default 4a, 4b, 4c, 5, 6) are
    malignant (``box``), those of a BI-RADS 1-3 image benign (``benign_box``), the usual
    approximation in the literature. The patient is the file name's second token. INbreast
    has no official split: ``test_fraction`` of the patients (seeded) form the test split,
    then ``val_fraction`` of the rest the validation split.

    Raises:
        ConversionError: no ``INbreast.csv``, missing columns, or no convertible image.
    """
    root = Path(root)
    rows = _read_inbreast_csv(root / "INbreast.csv")
    report = ConversionReport(str(root), "inbreast", rows=len(rows))
    report.settings.update(malignant_birads=list(malignant_birads), point_rois_skipped=0)
    images: dict[Path, _Image] = {}
    cache: dict[Path, Any] = {}
    for number, row in enumerate(rows, start=2):
        name = row["File Name"].strip()
        found = sorted((root / "AllDICOMs").glob(f"{name}_*.dcm")) if name else []
        if len(found) != 1:
            what = "no DICOM file" if not found else f"{len(found)} DICOM files"
            report.reject(number, str(root / "AllDICOMs" / f"{name}_*.dcm"), f"{what} for File Name {name!r}")
            continue
        birads = row["Bi-Rads"].strip().lower()
        if birads not in (*malignant_birads, *_INBREAST_BENIGN_BIRADS):
            report.reject(number, str(found[0]), f"unknown Bi-Rads {row['Bi-Rads']!r}")
            continue
        tokens = found[0].stem.split("_")
        image = _Image(found[0], tokens[1] if len(tokens) > 1 else name, "training", _side(row["Laterality"]))
        image.view = row["View"].strip().upper() or None
        image.extra["birads"] = birads
        if not _resolve(image, report, number, cache):
            continue
        xml = root / "AllXML" / f"{name}.xml"
        try:
            rois = _inbreast_rois(xml) if xml.is_file() else []
        except Exception as err:  # a damaged XML: this image is reported, the others go on
            report.reject(number, str(xml), f"unreadable ROI file ({type(err).__name__}: {err})")
            continue
        _add_inbreast_rois(image, rois, birads in malignant_birads, report, number, xml)
        images[found[0]] = image
    if images:
        _assign_split(list(images.values()), "test", test_fraction, seed)
    report.settings["test_fraction"] = test_fraction
    return _finish(images, Path(out_dir) if out_dir else root, report, val_fraction, seed, spacing_mm)


# ---------------------------------------------------------------------------------------------
# CBIS-DDSM
# ---------------------------------------------------------------------------------------------

CBIS_DDSM_CSVS = (
    "mass_case_description_train_set.csv",
    "calc_case_description_train_set.csv",
    "mass_case_description_test_set.csv",
    "calc_case_description_test_set.csv",
)
_CBIS_COLUMNS = (
    "patient_id",
    "left or right breast",
    "image view",
    "abnormality type",
    "pathology",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
)
_CBIS_PATHOLOGY = {"MALIGNANT": True, "BENIGN": False, "BENIGN_WITHOUT_CALLBACK": False}


def _dicoms_for(root: Path, csv_path: str) -> list[Path]:
    """The DICOM files a CBIS-DDSM CSV path stands for: the path itself when the download kept
    it, else every file under its top folder (the NBIA retriever renames study, series and
    files, and keeps only that folder's name)."""
    rel = Path(csv_path.strip())
    if (root / rel).is_file():
        return [root / rel]
    folder = root / rel.parts[0] if rel.parts else root / "-"
    return sorted(folder.rglob("*.dcm")) if folder.is_dir() else []


def _cbis_mask_boxes(
    candidates: list[Path], size_hw: tuple[int, int]
) -> tuple[list[list[float]], str | None]:
    """Boxes (one per connected component) of the ROI mask among ``candidates`` (the mask and
    the cropped image, whose names CBIS-DDSM swaps between its CSVs): the candidate with the
    full image's rows x columns."""
    import pydicom
    from scipy import ndimage

    same = []
    for path in candidates:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        if (int(header.Rows), int(header.Columns)) == size_hw:
            same.append(path)
    if len(same) != 1:
        sizes = "none" if not same else f"{len(same)} files"
        return [], f"ROI mask: {sizes} of the image's size {size_hw} among {[p.name for p in candidates]}"
    mask = np.asarray(pydicom.dcmread(same[0]).pixel_array) > 0
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    boxes = []
    for rows, cols in ndimage.find_objects(labels)[:n]:
        boxes.append([float(cols.start), float(rows.start), float(cols.stop), float(rows.stop)])
    return boxes, None if boxes else "empty ROI mask"


def convert_cbis_ddsm(
    root: str | os.PathLike[str],
    *,
    csv_files: Sequence[str] = CBIS_DDSM_CSVS,
    out_dir: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    spacing_mm: float | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], ConversionReport]:
    """The datalist of CBIS-DDSM (TCIA, Lee et al., Sci Data 2017) as published.

    Reads the description CSVs (``<root>/mass_case_description_train_set.csv`` and the calc /
    test ones; one row per abnormality; ``breast_density`` / ``breast density`` differ between
    mass and calc files and are not needed) and the DICOM download under ``<root>``: each CSV
    path is used as written when it exists, else the files under its top folder
    (``Mass-Training_P_00001_LEFT_CC[_1]``), the only part of the path the NBIA Data Retriever
    keeps. The full image must be the one file of its folder; the ROI mask is the file of the
    abnormality's folder with the full image's size (CBIS-DDSM lists mask and crop as
    ``000000``/``000001`` in opposite orders in its mass and calc CSVs, so names are not
    trusted); no such file (masks of another size exist) rejects the row. Each connected
    component of the mask (8-connected) is one box. ``pathology`` MALIGNANT is malignant,
    BENIGN and BENIGN_WITHOUT_CALLBACK benign. The split is the CSV's (Training / Test); the
    validation split is cut from Training by ``patient_id``.

    Raises:
        ConversionError: a CSV that is missing or lacks columns, or no convertible image.
    """
    root = Path(root)
    report = ConversionReport(str(root), "cbis-ddsm")
    images: dict[Path, _Image] = {}
    cache: dict[Path, Any] = {}
    for csv_name in csv_files:
        rows = _read_csv(root / csv_name, _CBIS_COLUMNS)
        report.rows += len(rows)
        split = "test" if "test" in csv_name.lower() else "training"
        for number, row in enumerate(rows, start=2):
            where = f"{csv_name}:{number}"
            full = _dicoms_for(root, row["image file path"])
            if len(full) != 1:
                report.reject(
                    number, f"{where} {row['image file path'].strip()}", f"{len(full)} full-image files found"
                )
                continue
            image = images.get(full[0]) or _Image(
                full[0], row["patient_id"].strip(), split, _side(row["left or right breast"])
            )
            image.view = image.view or row["image view"].strip().upper() or None
            if not _resolve(image, report, number, cache):
                continue
            pathology = row["pathology"].strip().upper()
            if pathology not in _CBIS_PATHOLOGY:
                report.reject(number, where, f"unknown pathology {row['pathology']!r}")
                continue
            candidates = sorted(
                {
                    *_dicoms_for(root, row["ROI mask file path"]),
                    *_dicoms_for(root, row["cropped image file path"]),
                }
            )
            try:
                boxes, problem = _cbis_mask_boxes(candidates, image.size_hw)  # type: ignore[arg-type]
            except Exception as err:  # a damaged mask file: this row is reported
                boxes, problem = [], f"unreadable ROI mask ({type(err).__name__}: {err})"
            if problem is not None:
                report.reject(number, where, problem)
                continue
            images[full[0]] = image
            kind = {"mass": "mass", "calcification": "calcification"}.get(
                row["abnormality type"].strip().lower(), "other"
            )
            malignant = _CBIS_PATHOLOGY[pathology]
            for box in boxes:
                (image.boxes if malignant else image.benign).append(box)
                (image.types if malignant else image.benign_types).append(kind)
    return _finish(images, Path(out_dir) if out_dir else root, report, val_fraction, seed, spacing_mm)


def write_datalist(
    datalist: Mapping[str, list[dict[str, Any]]], report: ConversionReport, out: str | os.PathLike[str]
) -> tuple[Path, Path]:
    """Write ``out`` (the datalist) and ``<out stem>.report.json`` beside it, each atomically
    (the report first: a datalist on disk always has its report)."""
    out = Path(out)
    report_path = out.with_name(f"{out.stem}.report.json")
    write_json_atomic(report_path, report.to_dict())
    write_json_atomic(out, dict(datalist))
    return out, report_path
