"""The Mammography CAD SR writer (TID 4000) against DCMTK's reader and dicom3tools' validator.

The study: four MG views written as real DICOM files; the left CC has one finding above the
operating point and one below; the right MLO failed. Every document is checked by ``dsrdump``
(DCMTK: the IOD's relationship constraints, by-reference targets), read back from DCMTK's
dump (positions and referenced UIDs, independent of this package's reader) and validated
by ``dciodvfy`` (modules, value types, evidence). Negative controls show that both
validators catch what they are trusted to catch.
"""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from monai_smalldet.data.dicom_writer import write_mammogram_dicom
from monai_smalldet.reports import (
    MAMMOGRAPHY_CAD_SR,
    CadAlgorithm,
    CadFinding,
    CadImage,
    build_mammography_cad_sr,
    read_mammography_cad_sr,
    valid_uid,
)
from tests.tools import require_tool

VIEWS = [("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]
LESION = (40.0, 120.0, 64.0, 144.0)
SHA = "0123456789abcdef" * 4
#: dsrdump's notes that are not about the document: DCMTK 3.6.7's VR checker skips UTF-8
#: text, and it does not check template rows (it says so on every SR)
DCMTK_NOTES = ("does not support this Specific Character Set: ISO_IR 192", "template constraints not yet")


@pytest.fixture(scope="module")
def headers(tmp_path_factory) -> list[pydicom.Dataset]:
    folder = tmp_path_factory.mktemp("cad_views")
    out = []
    for index, (lat, view) in enumerate(VIEWS):
        path = write_mammogram_dicom(
            folder / f"{lat}{view}.dcm",
            np.full((300, 240), 1000, np.uint16),
            pixel_spacing_mm=(0.07, 0.065),
            laterality=lat,
            view=view,
            patient_id="CAD-1",
            uid_entropy=["cad-sr-test"],
            instance_number=index + 1,
        )
        out.append(pydicom.dcmread(path, stop_before_pixels=True))
    return out


ALGORITHM = CadAlgorithm(
    name="monai-smalldet multi-scale YOLOv5n",
    version="0.1.0 model 01234567",
    score_threshold=0.415,
    checkpoint_sha256=SHA,
    target_fpi=0.3,
    sensitivity=0.92,
    calibration="the validation split",
    software_version="0.1.0",
)


def _images(headers, failed: bool = True, findings: bool = True) -> list[CadImage]:
    out = []
    for index, ds in enumerate(headers):
        found = (
            (CadFinding(LESION, 0.9), CadFinding((10, 10, 20, 20), 0.2)) if index == 0 and findings else ()
        )
        failure = "pixel data truncated (12 of 144000 bytes)" if failed and index == 3 else None
        out.append(CadImage(ds, found, failure=failure))
    return out


def _write(tmp_path: Path, images, **kwargs) -> Path:
    ds = build_mammography_cad_sr(
        images, ALGORITHM, series_instance_uid=generate_uid(), sop_instance_uid=generate_uid(), **kwargs
    )
    path = tmp_path / "cad.sr.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _dsrdump(path: Path) -> tuple[int, list[str], list[str]]:
    """(exit status, dump lines, warnings/errors other than DCMTK's notes)."""
    tool = require_tool("dsrdump", "dcmtk")
    proc = subprocess.run([tool, "+Pn", "+Pu", "+Pl", str(path)], capture_output=True, text=True, timeout=60)
    problems = [
        line
        for line in proc.stderr.splitlines()
        if line[:2] in ("W:", "E:", "F:") and not any(n in line for n in DCMTK_NOTES)
    ]
    return proc.returncode, proc.stdout.splitlines(), problems


def _dciodvfy(path: Path) -> list[str]:
    tool = require_tool("dciodvfy", "dicom3tools")
    proc = subprocess.run([tool, "-new", str(path)], capture_output=True, text=True, timeout=60)
    return [
        line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith(("Error", "Warning"))
    ]


def _dump_findings(lines: list[str]) -> list[dict]:
    """Centers, certainties and the SOP instance their SELECTED FROM points at, from DCMTK's
    numbered dump alone."""
    images = {}
    for line in lines:
        m = re.match(r'^([\d.]+)\s+<contains IMAGE:=\([^,]*,"([\d.]+)"\)>', line)
        if m:
            images[m.group(1)] = m.group(2)
    found, current = [], None
    for line in lines:
        m = re.match(r'^([\d.]+)\s+<contains CODE:\(,,"Single Image Finding"\)', line)
        if m:
            current = {}
            found.append(current)
        m = re.match(r'^[\d.]+\s+<has properties NUM:\(,,"Certainty of Finding"\)="([\d.]+)" \(%,UCUM', line)
        if m and current is not None:
            current["percent"] = float(m.group(1))
        m = re.match(r'^[\d.]+\s+<has properties SCOORD:\(,,"Center"\)=\(POINT,([\d.]+)/([\d.]+)\)>', line)
        if m and current is not None:
            current["center"] = (float(m.group(1)), float(m.group(2)))
            current["awaiting_ref"] = True
        m = re.match(r"^[\d.]+\s+<selected from ([\d.]+)>", line)
        if m and current is not None and current.pop("awaiting_ref", False):
            current["image"] = images[m.group(1)]
    return found


def test_a_study_report_passes_dcmtk_and_dciodvfy(tmp_path, headers):
    path = _write(tmp_path, _images(headers))
    code, lines, problems = _dsrdump(path)
    assert code == 0 and problems == []
    assert _dciodvfy(path) == []
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == MAMMOGRAPHY_CAD_SR and ds.Modality == "SR"
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "4000"
    assert ds.PatientID == "CAD-1" and ds.StudyInstanceUID == headers[0].StudyInstanceUID
    evidence = (
        ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    )
    assert [r.ReferencedSOPInstanceUID for r in evidence] == [h.SOPInstanceUID for h in headers]


def test_findings_read_back_through_dcmtk_land_on_their_image(tmp_path, headers):
    path = _write(tmp_path, _images(headers))
    _, lines, _ = _dsrdump(path)
    found = _dump_findings(lines)
    assert len(found) == 1  # the 0.2 finding is below the operating point: not in the report
    assert found[0]["image"] == headers[0].SOPInstanceUID
    assert found[0]["center"] == ((LESION[0] + LESION[2]) / 2, (LESION[1] + LESION[3]) / 2)
    assert found[0]["percent"] == pytest.approx(90.0)
    # the package's reader agrees with DCMTK's view
    back = read_mammography_cad_sr(pydicom.dcmread(path))
    assert [(f["sop_instance_uid"], f["box"], f["score"]) for f in back["findings"]] == [
        (headers[0].SOPInstanceUID, list(LESION), pytest.approx(0.9))
    ]
    assert back["findings"][0]["rendering_intent"] == "Presentation Required"
    lat_view = {uid: (v["laterality"], v["view"]) for uid, v in back["images"].items()}
    assert lat_view[headers[1].SOPInstanceUID] == ("Left breast", "medio-lateral oblique")
    assert lat_view[headers[2].SOPInstanceUID] == ("Right breast", "cranio-caudal")


def test_failed_images_are_listed_with_their_reason(tmp_path, headers):
    path = _write(tmp_path, _images(headers))
    back = read_mammography_cad_sr(pydicom.dcmread(path))
    assert back["failed"] == {headers[3].SOPInstanceUID: "pixel data truncated (12 of 144000 bytes)"}
    assert back["detections"] == "Partially Succeeded"
    assert back["summary"] == "Not all algorithms succeeded; with findings"
    _, lines, _ = _dsrdump(path)
    text = "\n".join(lines)
    assert "Failed Detections" in text and headers[3].SOPInstanceUID in text


def test_no_finding_is_not_a_diagnosis_and_the_model_is_identified(tmp_path, headers):
    path = _write(tmp_path, _images(headers, failed=False, findings=False))
    code, lines, problems = _dsrdump(path)
    assert code == 0 and problems == [] and _dciodvfy(path) == []
    text = "\n".join(lines)
    assert "All algorithms succeeded; without findings" in text
    assert "Single Image Finding" not in text
    assert "Absent" not in text and "Probability of cancer" not in text
    assert "this is not a statement that no lesion is present" in text
    assert f"model checkpoint sha256: {SHA}" in text
    assert "NOT FOR CLINICAL USE" in text
    ds = pydicom.dcmread(path)
    assert "NOT FOR CLINICAL USE" in ds.SeriesDescription
    assert list(ds.SoftwareVersions) == ["0.1.0", ALGORITHM.version]


def test_optional_findings_carry_their_operating_point(tmp_path, headers):
    path = _write(tmp_path, _images(headers), include_optional=True, optional_min_score=0.1)
    code, lines, problems = _dsrdump(path)
    assert code == 0 and problems == [] and _dciodvfy(path) == []
    back = read_mammography_cad_sr(pydicom.dcmread(path))
    intents = sorted((f["score"], f["rendering_intent"]) for f in back["findings"])
    assert intents == [
        (pytest.approx(0.2), "Presentation Optional"),
        (pytest.approx(0.9), "Presentation Required"),
    ]
    text = "\n".join(lines)
    assert '"CAD Operating Point")="2"' in text and '"Maximum CAD Operating Point")="2"' in text


def test_the_validators_catch_what_they_are_trusted_with(tmp_path, headers):
    """Negative controls: a relationship the IOD forbids fails dsrdump; an image missing from
    the evidence fails dciodvfy."""
    ds = build_mammography_cad_sr(
        _images(headers), ALGORITHM, series_instance_uid=generate_uid(), sop_instance_uid=generate_uid()
    )
    ds.ContentSequence[1].RelationshipType = "HAS PROPERTIES"  # CONTAINER HAS PROPERTIES CONTAINER
    bad_relationship = tmp_path / "bad_relationship.dcm"
    ds.save_as(bad_relationship, enforce_file_format=True)
    code, _, problems = _dsrdump(bad_relationship)
    assert code != 0 or problems
    ds = build_mammography_cad_sr(
        _images(headers), ALGORITHM, series_instance_uid=generate_uid(), sop_instance_uid=generate_uid()
    )
    del ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    no_evidence = tmp_path / "no_evidence.dcm"
    ds.save_as(no_evidence, enforce_file_format=True)
    assert any(line.startswith("Error") for line in _dciodvfy(no_evidence))


def test_untrusted_headers_are_refused_with_the_attribute_named(headers):
    bad = copy.deepcopy(headers[1])
    bad.SOPInstanceUID = "1.2.3.abc"
    with pytest.raises(ValueError, match=r"invalid SOPInstanceUID '1\.2\.3\.abc'"):
        build_mammography_cad_sr(
            [CadImage(headers[0]), CadImage(bad)],
            ALGORITHM,
            series_instance_uid="1.2.3",
            sop_instance_uid="1.2.4",
        )
    other = copy.deepcopy(headers[1])
    other.StudyInstanceUID = "1.2.999"
    with pytest.raises(ValueError, match="two studies"):
        build_mammography_cad_sr(
            [CadImage(headers[0]), CadImage(other)],
            ALGORITHM,
            series_instance_uid="1.2.3",
            sop_instance_uid="1.2.4",
        )
    with pytest.raises(ValueError, match="score"):
        CadFinding((0, 0, 1, 1), 1.5)
    assert valid_uid("1.2.840.10008.5.1.4.1.1.88.50")
    assert not valid_uid("1.2.03") and not valid_uid("1." + "1" * 64) and not valid_uid("")
