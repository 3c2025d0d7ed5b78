"""DICOM MG writing/reading, compressed transfer syntaxes, PNG/TIFF/NIfTI, and bad files."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML, JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless

from monai_smalldet.data import (
    MG_IMAGE_STORAGE_FOR_PRESENTATION,
    MG_IMAGE_STORAGE_FOR_PROCESSING,
    MammogramMeta,
    MammogramReadError,
    NonMammogramWarning,
    read_mammogram,
    write_mammogram_dicom,
)

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _rewrite(src: Path, dst: Path, **attrs: Any) -> Path:
    """Copy a DICOM file, setting attributes (value ``None`` deletes the attribute)."""
    ds = pydicom.dcmread(src)
    for keyword, value in attrs.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(dst)
    return dst


def _encapsulated(src: Path, dst: Path, transfer_syntax: str, frame: bytes) -> Path:
    """Copy a DICOM file with ``frame`` as its encapsulated pixel data and a new transfer syntax."""
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(dst)
    return dst


def encode_jpeg_lossless_sv1(image: np.ndarray, precision: int) -> bytes:
    """Minimal JPEG Lossless, Process 14, Selection Value 1 encoder (ITU-T T.81 Annex H).

    pydicom cannot encode this transfer syntax and no encoder is installed, so the test builds
    the bitstream itself: one component, predictor 1 (left neighbour; first row/column as
    the standard says), point transform 0, one Huffman table giving every difference category
    (SSSS 0..16) a 5-bit code. The decoder under test is pylibjpeg-libjpeg.
    """
    rows, cols = image.shape
    x = image.astype(np.int64)
    pred = np.empty_like(x)
    pred[0, 0] = 1 << (precision - 1)
    pred[0, 1:] = x[0, :-1]
    pred[1:, 0] = x[:-1, 0]
    pred[1:, 1:] = x[1:, :-1]
    bits: list[str] = []
    for d in ((x - pred) % 65536).ravel().tolist():
        if d == 32768:  # SSSS 16 has no extra bits
            bits.append(format(16, "05b"))
            continue
        v = d - 65536 if d > 32768 else d
        ssss = abs(v).bit_length()
        bits.append(format(ssss, "05b"))
        if ssss:
            bits.append(format(v if v > 0 else v + (1 << ssss) - 1, f"0{ssss}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    scan = bytearray()
    for i in range(0, len(stream), 8):
        byte = int(stream[i : i + 8], 2)
        scan.append(byte)
        if byte == 0xFF:
            scan.append(0x00)  # byte stuffing
    sof3 = bytes(
        [0xFF, 0xC3, 0, 11, precision, *rows.to_bytes(2, "big"), *cols.to_bytes(2, "big"), 1, 1, 0x11, 0]
    )
    dht_body = bytes([0x00, 0, 0, 0, 0, 17] + [0] * 11) + bytes(range(17))
    dht = bytes([0xFF, 0xC4]) + (len(dht_body) + 2).to_bytes(2, "big") + dht_body
    sos = bytes([0xFF, 0xDA, 0, 8, 1, 1, 0x00, 1, 0, 0])
    return b"\xff\xd8" + sof3 + dht + sos + bytes(scan) + b"\xff\xd9"


# ---------------------------------------------------------------------------------------------
# round trip: values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [12, 14])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_round_trip_stored_range(write_mg, mg_pixels, photometric, bits):
    """Without VOI the values are stored / (2**bits - 1); MONOCHROME1 stores and reads inverted."""
    top = 2**bits - 1
    dense = (mg_pixels.astype(np.int64) * top // 4095).astype(np.uint16)
    dense[0, 0], dense[-1, -1] = top, 0
    stored = dense if photometric == "MONOCHROME2" else (top - dense).astype(np.uint16)
    path = write_mg("a.dcm", stored, photometric=photometric, bits_stored=bits)
    image, meta = read_mammogram(path, apply_voi=False)
    assert image.dtype == np.float32 and image.shape == (64, 48)
    np.testing.assert_allclose(image, dense / top, atol=1e-6)
    assert image[0, 0] == 1.0 and image[-1, -1] == 0.0  # bright = dense either way
    assert (meta.photometric, meta.bits_stored) == (photometric, bits)


# (bits, center, width, function, stored value, expected output): worked by hand from
# PS3.3 C.11.2.1.2 (LINEAR), C.11.2.1.3.2 (LINEAR_EXACT), C.11.2.1.3.1 (SIGMOID).
WINDOW_CASES = [
    (12, 2048, 4096, "LINEAR", 1000, 1000 / 4095),  # full-range window = identity
    (12, 2048, 4096, "LINEAR", 0, 0.0),
    (12, 2048, 4096, "LINEAR", 4095, 1.0),
    (12, 1000, 201, "LINEAR", 899, 0.0),  # x <= c - 0.5 - (w - 1) / 2 = 899.5
    (12, 1000, 201, "LINEAR", 900, 0.0025),  # (900 - 999.5) / 200 + 0.5
    (12, 1000, 201, "LINEAR", 1000, 0.5025),
    (12, 1000, 201, "LINEAR", 1100, 1.0),  # x > 1099.5
    (12, 1000, 200, "LINEAR_EXACT", 950, 0.25),  # (950 - 1000) / 200 + 0.5
    (12, 1000, 200, "LINEAR_EXACT", 900, 0.0),
    (12, 1000, 200, "SIGMOID", 1000, 0.5),
    (12, 1000, 200, "SIGMOID", 1100, 1 / (1 + math.exp(-2))),
    (14, 8192, 16384, "LINEAR", 4096, 4096 / 16383),
]


@pytest.mark.parametrize("bits, center, width, function, value, expected", WINDOW_CASES)
def test_window_hand_worked(write_mg, tmp_path, bits, center, width, function, value, expected):
    stored = np.full((4, 3), value, dtype=np.uint16)
    path = write_mg("w.dcm", stored, bits_stored=bits, window_center=center, window_width=width)
    path = _rewrite(path, tmp_path / "w2.dcm", VOILUTFunction=function)
    image, _ = read_mammogram(path)
    np.testing.assert_allclose(image, expected, atol=1e-6)


@pytest.mark.parametrize("value, expected", [(900, 0.0025), (1000, 0.5025), (1100, 1.0), (0, 0.0)])
def test_window_monochrome1_mirrors_monochrome2(write_mg, value, expected):
    """A MONOCHROME1 file of 4095 - s with window center 4096 - c reads as the MONOCHROME2 file of s."""
    mono2 = write_mg("m2.dcm", np.full((2, 2), value, np.uint16), window_center=1000, window_width=201)
    mono1 = write_mg(
        "m1.dcm",
        np.full((2, 2), 4095 - value, np.uint16),
        photometric="MONOCHROME1",
        window_center=4096 - 1000,
        window_width=201,
    )
    np.testing.assert_allclose(read_mammogram(mono2)[0], expected, atol=1e-6)
    np.testing.assert_allclose(read_mammogram(mono1)[0], expected, atol=1e-6)


@pytest.mark.parametrize("bits", [12, 14])
def test_monochrome1_inverted_equals_monochrome2_default_window(write_mg, mg_pixels, bits):
    top = 2**bits - 1
    mono2 = write_mg("m2.dcm", mg_pixels, bits_stored=bits)
    mono1 = write_mg(
        "m1.dcm", (top - mg_pixels).astype(np.uint16), bits_stored=bits, photometric="MONOCHROME1"
    )
    a, b = read_mammogram(mono2)[0], read_mammogram(mono1)[0]
    np.testing.assert_allclose(a, b, atol=1e-6)
    # the default window spans the data range exactly
    assert a.min() == 0.0 and a.max() == 1.0
    lo, hi = int(mg_pixels.min()), int(mg_pixels.max())
    np.testing.assert_allclose(a, (mg_pixels - lo) / (hi - lo), atol=1e-6)


# (attributes set on a 12-bit file, stored values, expected outputs)
MODALITY_CASES = [
    # unsigned with rescale: output range [0*2-100, 4095*2-100] -> same fractions
    ({"RescaleSlope": 2, "RescaleIntercept": -100}, [0, 1000, 4095], [0.0, 1000 / 4095, 1.0]),
    # negative slope flips the range
    ({"RescaleSlope": -1, "RescaleIntercept": 0}, [0, 1000, 4095], [1.0, 1 - 1000 / 4095, 0.0]),
]


@pytest.mark.parametrize("attrs, values, expected", MODALITY_CASES)
def test_modality_lut_normalisation(write_mg, tmp_path, attrs, values, expected):
    path = write_mg("r.dcm", np.array([values], dtype=np.uint16))
    path = _rewrite(path, tmp_path / "r2.dcm", **attrs)
    image, _ = read_mammogram(path, apply_voi=False)
    np.testing.assert_allclose(image[0], expected, atol=1e-6)


def test_rescale_then_window(write_mg, tmp_path):
    """Window on rescaled values: stored 1000 + intercept 1000 in window (3048, 4096) -> 1000/4095."""
    path = write_mg("r.dcm", np.full((2, 2), 1000, np.uint16), window_center=3048, window_width=4096)
    path = _rewrite(path, tmp_path / "r2.dcm", RescaleIntercept=1000)
    np.testing.assert_allclose(read_mammogram(path)[0], 1000 / 4095, atol=1e-6)


@pytest.mark.parametrize(
    "stored, expected",
    [(-2048, 0.0), (0, 2048 / 4095), (2047, 1.0), (-1, 2047 / 4095)],
)
def test_signed_pixels(write_mg, tmp_path, stored, expected):
    path = write_mg("s.dcm", np.zeros((2, 3), np.uint16))
    ds = pydicom.dcmread(path)
    ds.PixelRepresentation = 1
    ds.PixelData = np.full((2, 3), stored, dtype="<i2").tobytes()
    for keyword in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
        delattr(ds, keyword)
    ds.save_as(tmp_path / "s2.dcm")
    image, _ = read_mammogram(tmp_path / "s2.dcm")
    np.testing.assert_allclose(image, expected, atol=1e-6)


def test_voi_lut_sequence_preferred_over_window(write_mg, tmp_path):
    """A 12-bit inverting VOI LUT (output 4095 - x) wins over the window; output / (2**12 - 1)."""
    path = write_mg("v.dcm", np.array([[0, 1000, 4095]], np.uint16))
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 12])  # LUT Descriptor
    item.add_new(0x00283006, "US", list(range(4095, -1, -1)))  # LUT Data
    ds.VOILUTSequence = [item]
    ds.save_as(tmp_path / "v2.dcm")
    image, _ = read_mammogram(tmp_path / "v2.dcm")
    np.testing.assert_allclose(image[0], [1.0, 3095 / 4095, 0.0], atol=1e-6)
    # apply_voi=False ignores both
    image, _ = read_mammogram(tmp_path / "v2.dcm", apply_voi=False)
    np.testing.assert_allclose(image[0], [0.0, 1000 / 4095, 1.0], atol=1e-6)


def test_one_by_one_image_is_allowed(write_mg):
    image, meta = read_mammogram(write_mg("one.dcm", np.array([[7]], np.uint16)), apply_voi=False)
    assert image.shape == (1, 1) and (meta.rows, meta.columns) == (1, 1)
    np.testing.assert_allclose(image, 7 / 4095)


# ---------------------------------------------------------------------------------------------
# round trip: header
# ---------------------------------------------------------------------------------------------


def test_metadata_round_trip(write_mg, mg_pixels):
    path = write_mg(
        "m.dcm",
        mg_pixels,
        pixel_spacing_mm=(0.085, 0.07),
        laterality="R",
        view="MLO",
        patient_id="P001",
        presentation_intent="FOR PROCESSING",
        uid_entropy=["seed-0", "case-7"],
    )
    _, meta = read_mammogram(path)
    ds = pydicom.dcmread(path)
    assert meta.path == str(path)
    assert (meta.rows, meta.columns) == (64, 48)
    assert meta.pixel_spacing_mm == (0.085, 0.07)
    assert meta.spacing_source == "ImagerPixelSpacing"
    assert (meta.laterality, meta.view, meta.modality) == ("R", "MLO", "MG")
    assert meta.presentation_intent == "FOR PROCESSING"
    assert meta.transfer_syntax == "1.2.840.10008.1.2.1"
    assert meta.patient_id == "P001" and meta.source_format == "dicom"
    assert meta.study_instance_uid == ds.StudyInstanceUID
    assert meta.series_instance_uid == ds.SeriesInstanceUID
    assert meta.sop_instance_uid == ds.SOPInstanceUID
    json.dumps(meta.to_dict())  # JSON-safe
    assert meta.to_dict()["pixel_spacing_mm"] == [0.085, 0.07]


MANDATORY = {
    "SOPClassUID": MG_IMAGE_STORAGE_FOR_PRESENTATION,
    "Modality": "MG",
    "PresentationIntentType": "FOR PRESENTATION",
    "ViewPosition": "CC",
    "ImageLaterality": "L",
    "PhotometricInterpretation": "MONOCHROME2",
    "SamplesPerPixel": 1,
    "BitsAllocated": 16,
    "BitsStored": 12,
    "HighBit": 11,
    "PixelRepresentation": 0,
    "BodyPartExamined": "BREAST",
    "BurnedInAnnotation": "NO",
    "VOILUTFunction": "LINEAR",
    "Manufacturer": "monai-smalldet synthetic",
    "PatientID": "ANON",
    "StudyDate": "20260101",
    "Rows": 64,
    "Columns": 48,
}
PRESENT = [
    "PatientName",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "SeriesNumber",
    "InstanceNumber",
    "ImageType",
    "PatientOrientation",
    "ImagerPixelSpacing",
    "PixelSpacing",
    "WindowCenter",
    "WindowWidth",
    "ViewCodeSequence",
    "AnatomicRegionSequence",
    "PresentationLUTShape",
    "PixelData",
]


def test_written_file_has_mandatory_tags(write_mg, mg_pixels):
    ds = pydicom.dcmread(write_mg("t.dcm", mg_pixels))
    assert ds.preamble == b"\x00" * 128
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.file_meta.MediaStorageSOPClassUID == MG_IMAGE_STORAGE_FOR_PRESENTATION
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    for keyword, value in MANDATORY.items():
        assert ds[keyword].value == value, keyword
    for keyword in PRESENT:
        assert keyword in ds, keyword
    assert ds.ViewCodeSequence[0].CodeValue == "399162004"
    np.testing.assert_array_equal(ds.pixel_array, mg_pixels)
    # default window spans the data: center (min + max + 1) / 2, width max - min + 1
    lo, hi = int(mg_pixels.min()), int(mg_pixels.max())
    assert float(ds.WindowCenter) == (lo + hi + 1) / 2 and float(ds.WindowWidth) == hi - lo + 1


@pytest.mark.parametrize(
    "intent, sop_class",
    [
        ("FOR PRESENTATION", MG_IMAGE_STORAGE_FOR_PRESENTATION),
        ("FOR PROCESSING", MG_IMAGE_STORAGE_FOR_PROCESSING),
    ],
)
def test_sop_class_follows_presentation_intent(write_mg, intent, sop_class):
    ds = pydicom.dcmread(write_mg("i.dcm", np.zeros((2, 2), np.uint16), presentation_intent=intent))
    assert ds.SOPClassUID == sop_class and ds.PresentationIntentType == intent


@pytest.mark.parametrize(
    "laterality, view, orientation",
    [("L", "CC", ["A", "R"]), ("R", "CC", ["P", "L"]), ("L", "MLO", ["A", "FR"]), ("R", "MLO", ["P", "FL"])],
)
def test_patient_orientation(write_mg, laterality, view, orientation):
    ds = pydicom.dcmread(write_mg("o.dcm", np.zeros((2, 2), np.uint16), laterality=laterality, view=view))
    assert list(ds.PatientOrientation) == orientation


def test_uid_entropy_is_deterministic(write_mg):
    pixels = np.zeros((2, 2), np.uint16)

    def uids(name: str, **kwargs: Any) -> tuple[str, str, str]:
        ds = pydicom.dcmread(write_mg(name, pixels, **kwargs))
        return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID

    first = uids("a.dcm", uid_entropy=["seed-1", "case-3"])
    assert uids("b.dcm", uid_entropy=["seed-1", "case-3"]) == first
    other_view = uids("c.dcm", uid_entropy=["seed-1", "case-3"], view="MLO", instance_number=2)
    assert other_view[:2] == first[:2] and other_view[2] != first[2]  # same study/series, new instance
    assert uids("d.dcm", uid_entropy=["seed-2", "case-3"])[0] != first[0]
    assert uids("e.dcm")[0] != uids("f.dcm")[0]  # random without entropy
    given = uids("g.dcm", study_instance_uid="1.2.3", uid_entropy=["seed-1"])
    assert given[0] == "1.2.3"


def test_write_is_atomic_and_overwrites(write_mg, tmp_path):
    write_mg("x.dcm", np.zeros((2, 2), np.uint16))
    write_mg("x.dcm", np.full((2, 2), 5, np.uint16))
    assert sorted(os.listdir(tmp_path)) == ["x.dcm"]  # no temporary file left
    assert int(pydicom.dcmread(tmp_path / "x.dcm").pixel_array[0, 0]) == 5


BAD_WRITES = [
    ({"pixels": np.zeros((2, 2), np.int16)}, "dtype uint16"),
    ({"pixels": np.zeros((2, 2), np.float32)}, "dtype uint16"),
    ({"pixels": np.zeros((2, 2, 1), np.uint16)}, "2-D"),
    ({"pixels": np.zeros((0, 2), np.uint16)}, "at least one row"),
    ({"pixels": np.full((2, 2), 4096, np.uint16)}, "does not fit in bits_stored=12"),
    ({"bits_stored": 17}, "bits_stored"),
    ({"laterality": "B"}, "laterality"),
    ({"view": "SPOT"}, "view"),
    ({"photometric": "RGB"}, "photometric"),
    ({"pixel_spacing_mm": 0.0}, "pixel_spacing_mm"),
    ({"pixel_spacing_mm": (0.07, 0.07, 1.0)}, "pixel_spacing_mm"),
    ({"presentation_intent": "FOR FUN"}, "presentation_intent"),
    ({"window_center": 100.0}, "both window_center and window_width"),
    ({"window_center": 100.0, "window_width": 0.5}, "width >= 1"),
    ({"study_date": "2026-01-01"}, "YYYYMMDD"),
    ({"uid_entropy": "seed"}, "uid_entropy"),
]


@pytest.mark.parametrize("kwargs, message", BAD_WRITES)
def test_write_validates_inputs(tmp_path, kwargs, message):
    args: dict[str, Any] = {
        "pixels": np.zeros((2, 2), np.uint16),
        "pixel_spacing_mm": 0.07,
        "laterality": "L",
        "view": "CC",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        write_mammogram_dicom(tmp_path / "bad.dcm", args.pop("pixels"), **args)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# spacing and laterality fall-backs, non-MG
# ---------------------------------------------------------------------------------------------

SPACING_CASES = [
    ({}, (0.085, 0.07), "ImagerPixelSpacing"),
    ({"ImagerPixelSpacing": None}, (0.085, 0.07), "PixelSpacing"),
    ({"ImagerPixelSpacing": None, "PixelSpacing": None}, (0.1, 0.1), "default"),
    ({"ImagerPixelSpacing": [0, 0]}, (0.085, 0.07), "PixelSpacing"),  # invalid: skipped
]


@pytest.mark.parametrize("attrs, spacing, source", SPACING_CASES)
def test_spacing_sources(write_mg, tmp_path, attrs, spacing, source):
    path = write_mg("s.dcm", np.zeros((2, 2), np.uint16), pixel_spacing_mm=(0.085, 0.07))
    path = _rewrite(path, tmp_path / "s2.dcm", **attrs)
    _, meta = read_mammogram(path, default_spacing_mm=0.1)
    assert meta.pixel_spacing_mm == spacing and meta.spacing_source == source


def test_laterality_falls_back_to_series_laterality(write_mg, tmp_path):
    path = write_mg("l.dcm", np.zeros((2, 2), np.uint16), laterality="L")
    path = _rewrite(path, tmp_path / "l2.dcm", ImageLaterality=None, Laterality="R", ViewPosition=None)
    _, meta = read_mammogram(path)
    assert meta.laterality == "R"
    # without View Position the view still comes from the View Code Sequence the writer wrote
    assert (meta.view, meta.view_source) == ("CC", "ViewCodeSequence")


@pytest.mark.parametrize("modality, words", [("CT", "'CT'"), (None, "absent")])
def test_non_mg_warns_by_default_and_fails_when_required(write_mg, tmp_path, modality, words):
    path = _rewrite(write_mg("n.dcm", np.zeros((2, 2), np.uint16)), tmp_path / "n2.dcm", Modality=modality)
    with pytest.warns(NonMammogramWarning, match=words):
        image, meta = read_mammogram(path)
    assert image.shape == (2, 2) and meta.modality == modality
    with pytest.raises(MammogramReadError, match="not a mammogram") as info:
        read_mammogram(path, require_mg=True)
    assert words in info.value.reason and str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------
# compressed transfer syntaxes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [12, 16])
@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEGLosslessSV1])
def test_compressed_transfer_syntaxes_decode_losslessly(write_mg, tmp_path, mg_pixels, syntax, bits):
    pixels = (mg_pixels.astype(np.uint32) * (2**bits - 1) // 4095).astype(np.uint16)
    plain = write_mg("plain.dcm", pixels, bits_stored=bits, photometric="MONOCHROME1")
    packed = tmp_path / "packed.dcm"
    if syntax == JPEGLosslessSV1:
        # pydicom has no encoder for Process 14 SV1: use the minimal encoder above
        _encapsulated(plain, packed, syntax, encode_jpeg_lossless_sv1(pixels, bits))
    else:
        ds = pydicom.dcmread(plain)
        ds.compress(syntax)
        ds.save_as(packed)
    expected, _ = read_mammogram(plain)
    image, meta = read_mammogram(packed)
    assert meta.transfer_syntax == syntax
    np.testing.assert_array_equal(pydicom.dcmread(packed).pixel_array, pixels)
    np.testing.assert_array_equal(image, expected)


# ---------------------------------------------------------------------------------------------
# bad files: every one is a MammogramReadError naming the file and the reason
# ---------------------------------------------------------------------------------------------


def _base(tmp_path: Path) -> Path:
    return write_mammogram_dicom(
        tmp_path / "base.dcm",
        np.full((8, 6), 100, np.uint16),
        pixel_spacing_mm=0.07,
        laterality="L",
        view="CC",
    )


def _bad_text(tmp_path: Path) -> Path:
    path = tmp_path / "notes.dcm"
    path.write_text("this is not an image\n" * 20)
    return path


def _bad_no_suffix_text(tmp_path: Path) -> Path:
    path = tmp_path / "README"
    path.write_text("plain text " * 40)
    return path


def _bad_empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    return path


def _bad_directory(tmp_path: Path) -> Path:
    path = tmp_path / "folder.dcm"
    path.mkdir()
    return path


def _bad_missing(tmp_path: Path) -> Path:
    return tmp_path / "missing.dcm"


def _bad_no_pixels(tmp_path: Path) -> Path:
    return _rewrite(_base(tmp_path), tmp_path / "nopix.dcm", PixelData=None)


def _bad_truncated_file(tmp_path: Path) -> Path:
    data = _base(tmp_path).read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:-40])
    return path


def _bad_short_element(tmp_path: Path) -> Path:
    return _rewrite(_base(tmp_path), tmp_path / "short.dcm", PixelData=b"\x00" * 10)


def _bad_rgb(tmp_path: Path) -> Path:
    return _rewrite(
        _base(tmp_path),
        tmp_path / "rgb.dcm",
        SamplesPerPixel=3,
        PhotometricInterpretation="RGB",
        PlanarConfiguration=0,
        PixelData=b"\x00" * (8 * 6 * 3 * 2),
    )


def _bad_ybr(tmp_path: Path) -> Path:
    return _rewrite(
        _base(tmp_path),
        tmp_path / "ybr.dcm",
        SamplesPerPixel=3,
        PhotometricInterpretation="YBR_FULL",
        PlanarConfiguration=0,
        PixelData=b"\x00" * (8 * 6 * 3 * 2),
    )


def _bad_samples(tmp_path: Path) -> Path:
    return _rewrite(_base(tmp_path), tmp_path / "spp.dcm", SamplesPerPixel=3)


def _bad_multiframe(tmp_path: Path) -> Path:
    return _rewrite(
        _base(tmp_path), tmp_path / "frames.dcm", NumberOfFrames=3, PixelData=b"\x00" * (3 * 8 * 6 * 2)
    )


def _bad_zero_rows(tmp_path: Path) -> Path:
    return _rewrite(_base(tmp_path), tmp_path / "rows0.dcm", Rows=0, PixelData=b"")


def _bad_zero_columns(tmp_path: Path) -> Path:
    return _rewrite(_base(tmp_path), tmp_path / "cols0.dcm", Columns=0, PixelData=b"")


def _bad_bits(tmp_path: Path) -> Path:
    return _rewrite(_base(tmp_path), tmp_path / "bits.dcm", BitsAllocated=32, BitsStored=32, HighBit=31)


def _bad_mpeg2(tmp_path: Path) -> Path:
    return _encapsulated(_base(tmp_path), tmp_path / "mpeg2.dcm", MPEG2MPML, b"\x00\x00\x01\xb3" * 8)


def _bad_jpeg_xl(tmp_path: Path) -> Path:
    """JPEG XL Lossless (1.2.840.10008.1.2.4.110): unknown to pydicom 3.0, so no plugin decodes it.

    pydicom refuses to write an unknown transfer syntax, so an MPEG2 file (UID of the same
    length) is written and its UID patched in the bytes.
    """
    mpeg2 = _bad_mpeg2(tmp_path).read_bytes()
    path = tmp_path / "jxl.dcm"
    path.write_bytes(mpeg2.replace(b"1.2.840.10008.1.2.4.100", b"1.2.840.10008.1.2.4.110"))
    return path


def _bad_corrupt_rle(tmp_path: Path) -> Path:
    return _encapsulated(
        _base(tmp_path), tmp_path / "rle.dcm", RLELossless, b"\x01\x00\x00\x00" + b"\xff" * 60
    )


def _bad_nan_rescale(tmp_path: Path) -> Path:
    path = _base(tmp_path)
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():  # pydicom flags the invalid DS value
        warnings.simplefilter("ignore")
        ds["RescaleSlope"].value = "NaN"
        ds.save_as(tmp_path / "nan.dcm")
    return tmp_path / "nan.dcm"


def _bad_window(tmp_path: Path) -> Path:
    return _rewrite(_base(tmp_path), tmp_path / "win.dcm", WindowWidth=0)


def _bad_voi_function(tmp_path: Path) -> Path:
    return _rewrite(_base(tmp_path), tmp_path / "fn.dcm", VOILUTFunction="CUBIC")


def _bad_png_rgb(tmp_path: Path) -> Path:
    path = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((8, 6, 3), np.uint8)).save(path)
    return path


def _bad_tiff_pages(tmp_path: Path) -> Path:
    path = tmp_path / "pages.tif"
    pages = [Image.fromarray(np.zeros((8, 6), np.uint8)) for _ in range(2)]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return path


def _bad_tiff_inf(tmp_path: Path) -> Path:
    path = tmp_path / "inf.tif"
    data = np.zeros((8, 6), np.float32)
    data[2, 3] = np.inf
    Image.fromarray(data).save(path)
    return path


def _bad_nifti_nan(tmp_path: Path) -> Path:
    data = np.zeros((6, 8), np.float32)
    data[1, 1] = np.nan
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _bad_nifti_volume(tmp_path: Path) -> Path:
    path = tmp_path / "vol.nii"
    nib.save(nib.Nifti1Image(np.zeros((6, 8, 3), np.float32), np.eye(4)), path)
    return path


def _bad_png_garbage(tmp_path: Path) -> Path:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    return path


# (case, builder, read_mammogram kwargs, words the reason must contain)
BAD_FILES: list[tuple[str, Callable[[Path], Path], dict[str, Any], list[str]]] = [
    ("not-dicom", _bad_text, {}, ["not a DICOM file", "PNG, TIFF or NIfTI"]),
    ("not-dicom-no-suffix", _bad_no_suffix_text, {}, ["not a DICOM file"]),
    ("empty", _bad_empty, {}, ["empty file"]),
    ("directory", _bad_directory, {}, ["directory"]),
    ("missing", _bad_missing, {}, ["file not found"]),
    ("no-pixel-data", _bad_no_pixels, {}, ["no Pixel Data", "7FE0,0010"]),
    ("truncated-file", _bad_truncated_file, {}, ["truncated pixel data", "96 expected"]),
    ("short-pixel-element", _bad_short_element, {}, ["truncated pixel data", "10 bytes"]),
    ("rgb", _bad_rgb, {}, ["colour image", "RGB", "SamplesPerPixel 3"]),
    ("ybr", _bad_ybr, {}, ["colour image", "YBR_FULL"]),
    ("samples-per-pixel", _bad_samples, {}, ["multi-sample", "SamplesPerPixel 3"]),
    ("multi-frame", _bad_multiframe, {}, ["multi-frame", "NumberOfFrames 3"]),
    ("zero-rows", _bad_zero_rows, {}, ["zero-sized", "Rows 0"]),
    ("zero-columns", _bad_zero_columns, {}, ["zero-sized", "Columns 0"]),
    ("bit-depth", _bad_bits, {}, ["unsupported bit depth", "BitsAllocated 32"]),
    ("codec-mpeg2", _bad_mpeg2, {}, ["no decoder", "MPEG2 Main Profile", "1.2.840.10008.1.2.4.100"]),
    ("codec-jpeg-xl", _bad_jpeg_xl, {}, ["no decoder", "1.2.840.10008.1.2.4.110"]),
    ("corrupt-rle", _bad_corrupt_rle, {}, ["could not be decoded", "RLE Lossless"]),
    ("nan-rescale", _bad_nan_rescale, {}, ["non-finite", "NaN"]),
    ("bad-window", _bad_window, {}, ["grayscale transforms", "Window Width", "apply_voi=False"]),
    ("bad-voi-function", _bad_voi_function, {}, ["grayscale transforms", "CUBIC"]),
    ("png-rgb", _bad_png_rgb, {}, ["colour", "mode RGB"]),
    ("png-garbage", _bad_png_garbage, {}, ["PNG"]),
    ("tiff-pages", _bad_tiff_pages, {}, ["multi-frame", "2 pages"]),
    ("tiff-inf", _bad_tiff_inf, {}, ["non-finite", "NaN/inf"]),
    ("nifti-nan", _bad_nifti_nan, {}, ["non-finite", "NIfTI"]),
    ("nifti-volume", _bad_nifti_volume, {}, ["2-D", "(6, 8, 3)"]),
]


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
@pytest.mark.parametrize("case, build, kwargs, words", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_files_raise_read_error(tmp_path, case, build, kwargs, words):
    path = build(tmp_path)
    with pytest.raises(MammogramReadError) as info:
        read_mammogram(path, **kwargs)
    err = info.value
    assert err.path == str(path)
    assert str(err) == f"{path}: {err.reason}"
    assert path.name in str(err)
    for word in words:
        assert word in err.reason, f"{word!r} not in {err.reason!r}"


def test_read_error_is_a_value_error_and_pickles():
    import pickle

    err = MammogramReadError("/x/a.dcm", "multi-frame image")
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.reason, str(again)) == (
        "/x/a.dcm",
        "multi-frame image",
        "/x/a.dcm: multi-frame image",
    )


@pytest.mark.parametrize(
    "kwargs", [{"default_spacing_mm": 0.0}, {"default_spacing_mm": math.nan}, {"bits_stored": 20}]
)
def test_invalid_arguments_are_value_errors(write_mg, kwargs):
    path = write_mg("a.dcm", np.zeros((2, 2), np.uint16))
    with pytest.raises(ValueError) as info:
        read_mammogram(path, **kwargs)
    assert not isinstance(info.value, MammogramReadError)


# ---------------------------------------------------------------------------------------------
# PNG, TIFF, NIfTI
# ---------------------------------------------------------------------------------------------


def _marked(dtype: type, value: float) -> np.ndarray:
    """(64, 48) zeros with ``value`` at (row 5, col 40) and half of it at (row 60, col 2)."""
    data = np.zeros((64, 48), dtype)
    data[5, 40] = value
    data[60, 2] = value / 2
    return data


# (file name, writer, read kwargs, expected value at (5, 40), expected bits_stored, source_format)
PLAIN_CASES = [
    ("a16.png", lambda p: Image.fromarray(_marked(np.uint16, 3000)).save(p), {}, 3000 / 4095, 12, "png"),
    (
        "a16b.png",
        lambda p: Image.fromarray(_marked(np.uint16, 3000)).save(p),
        {"bits_stored": 16},
        3000 / 65535,
        16,
        "png",
    ),
    ("a8.png", lambda p: Image.fromarray(_marked(np.uint8, 200)).save(p), {}, 200 / 255, 8, "png"),
    ("a16.tif", lambda p: Image.fromarray(_marked(np.uint16, 16000)).save(p), {}, 16000 / 16383, 14, "tiff"),
    ("af.tiff", lambda p: Image.fromarray(_marked(np.float32, 2.5)).save(p), {}, 1.0, 32, "tiff"),
]


@pytest.mark.parametrize(
    "name, write, kwargs, value, bits, fmt", PLAIN_CASES, ids=[c[0] for c in PLAIN_CASES]
)
def test_png_tiff_orientation_and_scaling(tmp_path, name, write, kwargs, value, bits, fmt):
    path = tmp_path / name
    write(path)
    image, meta = read_mammogram(path, default_spacing_mm=0.05, **kwargs)
    assert image.shape == (64, 48) and image.dtype == np.float32
    assert image[5, 40] == pytest.approx(value, abs=1e-6)
    assert image[60, 2] == pytest.approx(value / 2, abs=1e-3)
    assert image[40, 5] == 0.0
    assert (meta.rows, meta.columns, meta.bits_stored, meta.source_format) == (64, 48, bits, fmt)
    assert meta.pixel_spacing_mm == (0.05, 0.05) and meta.spacing_source == "default"
    assert meta.photometric == "MONOCHROME2" and meta.modality is None


@pytest.mark.parametrize(
    "name, data, value",
    [
        ("a.nii", _marked(np.uint16, 3000), 3000 / 4095),
        ("a.nii.gz", _marked(np.float32, 8.0), 1.0),
        ("b.nii.gz", _marked(np.int16, 3000)[..., None], 3000 / 4095),  # (x, y, 1): squeezed
    ],
)
def test_nifti_is_transposed_to_rows_cols(tmp_path, name, data, value):
    """NIfTI stores (x, y) = (col, row): the file holds ``image.T``; spacing is (zooms[1], zooms[0])."""
    path = tmp_path / name
    on_disk = np.swapaxes(data, 0, 1)  # (x=col, y=row[, 1])
    nib.save(nib.Nifti1Image(on_disk, np.diag([0.05, 0.1, 1.0, 1.0])), path)
    image, meta = read_mammogram(path)
    assert image.shape == (64, 48)
    assert image[5, 40] == pytest.approx(value, abs=1e-6)
    assert image[60, 2] == pytest.approx(value / 2, abs=1e-3)
    assert meta.pixel_spacing_mm == pytest.approx((0.1, 0.05))
    assert meta.spacing_source == "pixdim" and meta.source_format == "nifti"


def test_dicom_found_by_content_whatever_the_name(write_mg, tmp_path, mg_pixels):
    path = write_mg("a.dcm", mg_pixels)
    renamed = tmp_path / "1.2.826.0.1.3680043.8.498.1"
    os.replace(path, renamed)
    image, meta = read_mammogram(renamed)
    assert image.shape == (64, 48) and meta.source_format == "dicom"


def test_meta_to_dict_round_trips_through_json():
    meta = MammogramMeta(
        "a.png", 4, 3, (0.07, 0.05), "default", None, None, "MONOCHROME2", 8, source_format="png"
    )
    assert (
        MammogramMeta(**{**json.loads(json.dumps(meta.to_dict())), "pixel_spacing_mm": (0.07, 0.05)}) == meta
    )


def test_the_view_comes_from_the_header_else_the_series_description_else_the_file_name(write_mg, mg_pixels):
    """View Position first; without it the View Code Sequence (SNOMED CT or the older SRT
    code), the series description, the protocol name, the file name, each recorded as the
    source; nothing found: None."""
    import pydicom
    from pydicom.dataset import Dataset

    from monai_smalldet.data.dicom import read_mammogram

    def variant(name, **attrs):
        path = write_mg(name, mg_pixels, view="MLO")
        ds = pydicom.dcmread(path)
        for keyword in ("ViewPosition", "ViewCodeSequence", "SeriesDescription", "ProtocolName"):
            if keyword in ds:
                delattr(ds, keyword)
        for keyword, value in attrs.items():
            setattr(ds, keyword, value)
        ds.save_as(path, enforce_file_format=True)
        return read_mammogram(path)[1]

    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "R-10242", "SRT", "cranio-caudal"
    cases = [
        ("a.dcm", {"ViewPosition": "MLO"}, ("MLO", "ViewPosition")),
        ("b.dcm", {"ViewCodeSequence": [code]}, ("CC", "ViewCodeSequence")),
        ("c.dcm", {"SeriesDescription": "R MLO tomo-free"}, ("MLO", "SeriesDescription")),
        ("d.dcm", {"ProtocolName": "LCC"}, ("CC", "ProtocolName")),
        ("20586960_6c613a14_MG_R_ML_ANON.dcm", {}, ("ML", "file name")),
        ("plain.dcm", {"SeriesDescription": "screening"}, (None, None)),
    ]
    for name, attrs, expected in cases:
        meta = variant(name, **attrs)
        assert (meta.view, meta.view_source) == expected, name
