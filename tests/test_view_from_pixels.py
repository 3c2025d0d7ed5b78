"""View (CC/MLO) from the pixels, and header values the pixels contradict: reported, never replaced.

The expected views and lateralities are the generator's ground truth (what it was asked to
draw) or the values written into the test files, never outputs of the code under test.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest

from monai_smalldet.data.dicom import read_mammogram
from monai_smalldet.data.dicom_writer import write_mammogram_dicom
from monai_smalldet.data.synthetic import generate_mammogram
from monai_smalldet.transforms import estimate_view, resolve_orientation
from tests.fakes import BrightSquareNet

SCALE = 0.1  # 410 x 333 px at 0.7 mm: the muscle and the breast outline are still many pixels
SLOTS = [(lat, view) for lat in ("L", "R") for view in ("CC", "MLO")]


def _generated(seed: int, laterality: str, view: str) -> tuple[np.ndarray, int]:
    """Stored MONOCHROME2 values of a generator image and its BitsStored."""
    m = generate_mammogram(seed, scale=SCALE, view=view, laterality=laterality, n_lesions=0)
    return m.image, m.bits_stored


def _write(path: Path, seed: int, side: str, drawn: str, photometric: str = "MONOCHROME2", **kw) -> Path:
    """A generator image of laterality ``side`` and view ``drawn`` written as DICOM MG, with
    those in its header unless ``kw`` overrides them; the window spans the stored range."""
    stored, bits = _generated(seed, side, drawn)
    top = 2**bits - 1
    if photometric == "MONOCHROME1":
        stored = (top - stored).astype(np.uint16)
    kw.setdefault("laterality", side)
    kw.setdefault("view", drawn)
    kw.setdefault("pixel_spacing_mm", 0.07 / SCALE)
    return write_mammogram_dicom(
        path,
        stored,
        photometric=photometric,
        bits_stored=bits,
        window_center=top / 2,
        window_width=top + 1,
        **kw,
    )


def _strip_view(path: Path) -> Path:
    """Remove every header source of the view (ViewPosition, ViewCodeSequence, descriptions)."""
    ds = pydicom.dcmread(path)
    for keyword in ("ViewPosition", "ViewCodeSequence", "SeriesDescription", "ProtocolName"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.save_as(path, enforce_file_format=True)
    return path


def _set(path: Path, **attrs: str) -> Path:
    ds = pydicom.dcmread(path)
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


# -- estimate_view on generator images ---------------------------------------------------------


def test_estimate_view_on_generator_images():
    """Both views, both lateralities, 8 seeds each (32 images): at least 31 right (97 %), given
    the true laterality and with the laterality left to be estimated."""
    given = estimated = total = 0
    for seed in range(8):
        for lat, view in SLOTS:
            stored, bits = _generated(900 + seed, lat, view)
            img = (stored.astype(np.float32) / (2**bits - 1))[None]
            given += estimate_view(img, lat) == view
            estimated += estimate_view(img) == view
            total += 1
    assert total == 32
    assert given >= 31 and estimated >= 31, (given, estimated)


def test_estimate_view_through_the_reader_monochrome1_and_2(tmp_path):
    """Files stored as MONOCHROME1 and MONOCHROME2 read back (bright = dense) give the drawn view."""
    right = 0
    for i, (lat, view) in enumerate(SLOTS * 2):
        photometric = "MONOCHROME1" if i % 2 else "MONOCHROME2"
        path = _write(tmp_path / f"img{i}.dcm", 950 + i, lat, view, photometric)
        image, meta = read_mammogram(path)
        assert meta.photometric == photometric
        right += estimate_view(image[None], lat) == view
    assert right >= 7, right


def test_estimate_view_on_handmade_images():
    """No breast, a flat breast, a dense corner triangle, the triangle on the nipple side."""
    blank = np.zeros((1, 300, 240), np.float32)
    assert estimate_view(blank, "L") == "CC"
    breast = blank.copy()
    breast[:, :, :160] = 0.4
    assert estimate_view(breast, "L") == "CC"
    rows, cols = np.mgrid[0:300, 0:240]
    muscle = breast.copy()
    muscle[:, (rows / 120 + cols / 60) < 1] = 0.9  # legs 120 rows x 60 columns from the corner
    assert estimate_view(muscle, "L") == "MLO"
    assert estimate_view(muscle[:, :, ::-1].copy(), "R") == "MLO"
    assert estimate_view(muscle, "R") == "CC"  # the triangle is looked for on the chest-wall side
    with pytest.raises(ValueError, match="laterality"):
        estimate_view(muscle, "X")
    with pytest.raises(ValueError, match="rank"):
        estimate_view(muscle[0], "L")


def test_resolve_orientation_keeps_the_header_and_reports():
    stored, bits = _generated(960, "L", "MLO")
    img = (stored.astype(np.float32) / (2**bits - 1))[None]
    agree = resolve_orientation(
        img, "L", "MLO", laterality_source="ImageLaterality", view_source="ViewPosition"
    )
    assert (agree.laterality, agree.view, agree.header_checks) == ("L", "MLO", {})
    missing = resolve_orientation(img, None, "none")
    assert (missing.laterality, missing.laterality_source, missing.view, missing.view_source) == (
        "L",
        "pixels",
        "MLO",
        "pixels",
    )
    wrong = resolve_orientation(
        img, "R", "CC", laterality_source="ImageLaterality", view_source="ViewPosition"
    )
    assert (wrong.laterality, wrong.view) == ("R", "CC")  # kept
    assert wrong.header_checks == {
        "laterality": {"header": "R", "header_source": "ImageLaterality", "pixels": "L"},
        "view": {"header": "CC", "header_source": "ViewPosition", "pixels": "MLO"},
    }
    lateral = resolve_orientation(img, "L", "ML", view_source="ViewPosition")  # not a checked view
    assert (lateral.view, lateral.header_checks) == ("ML", {})


# -- the detect JSON (the library batch under the CLI and the bundle) ---------------------------


def _detector(spacing_mm: float = 0.07 / SCALE):
    from monai_smalldet.inference import MultiScaleDetector

    return MultiScaleDetector(
        BrightSquareNet(), scales=(1.0,), tile_size=128, target_spacing_mm=spacing_mm, device="cpu"
    )


def test_detect_json_view_from_pixels_and_header_checks(tmp_path, caplog):
    from monai_smalldet.batch import detect_files

    src = tmp_path / "in"
    no_view = _strip_view(_write(src / "img_a.dcm", 970, "R", "MLO"))
    no_view_cc = _strip_view(_write(src / "img_b.dcm", 971, "L", "CC"))
    wrong_side = _write(src / "img_c.dcm", 972, "L", "CC", laterality="R")
    wrong_view = _write(src / "img_d.dcm", 973, "R", "MLO", view="CC")
    right = _write(src / "img_e.dcm", 974, "L", "MLO")
    with caplog.at_level(logging.WARNING, logger="monai_smalldet"):
        result = detect_files(_detector(), [src], tmp_path / "out")
    assert not result.failed
    out = {p.stem: json.loads(p.read_text()) for p in result.written}

    a, b = out["img_a"], out["img_b"]
    assert (a["view"], a["view_source"], a["laterality"], a["laterality_source"]) == (
        "MLO",
        "pixels",
        "R",
        "ImageLaterality",
    )
    assert (b["view"], b["view_source"], b["header_checks"]) == ("CC", "pixels", {})
    c = out["img_c"]
    assert (c["laterality"], c["laterality_source"], c["view"]) == ("R", "ImageLaterality", "CC")
    assert c["header_checks"] == {
        "laterality": {"header": "R", "header_source": "ImageLaterality", "pixels": "L"}
    }
    d = out["img_d"]
    assert (d["view"], d["view_source"]) == ("CC", "ViewPosition")
    assert d["header_checks"] == {"view": {"header": "CC", "header_source": "ViewPosition", "pixels": "MLO"}}
    e = out["img_e"]
    assert (e["laterality"], e["view"], e["view_source"], e["header_checks"]) == (
        "L",
        "MLO",
        "ViewPosition",
        {},
    )
    assert e["orientation_from_pixels"] == {"laterality": "L", "view": "MLO"}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2, warned
    assert any(str(wrong_side) in m and "laterality is R in the header" in m for m in warned)
    assert any(str(wrong_view) in m and "view is CC in the header" in m for m in warned)
    assert not any(str(p) in m for p in (no_view, no_view_cc, right) for m in warned)


def test_predict_arguments_and_plain_arrays():
    """A plain array without metadata: both from the pixels; an argument wins over the metadata
    and is reported as ``argument`` when the pixels disagree."""
    stored, bits = _generated(980, "R", "CC")
    img = stored.astype(np.float32) / (2**bits - 1)
    det = _detector()
    plain = det.predict(img, pixel_spacing_mm=0.07 / SCALE).to_dict()
    assert (plain["laterality"], plain["laterality_source"], plain["view"], plain["view_source"]) == (
        "R",
        "pixels",
        "CC",
        "pixels",
    )
    given = det.predict(
        img,
        laterality="L",
        image_meta={"laterality": "R", "laterality_source": "ImageLaterality", "view": "CC"},
        pixel_spacing_mm=0.07 / SCALE,
    ).to_dict()
    assert (given["laterality"], given["laterality_source"], given["view"], given["view_source"]) == (
        "L",
        "argument",
        "CC",
        "metadata",
    )
    assert given["header_checks"] == {
        "laterality": {"header": "L", "header_source": "argument", "pixels": "R"}
    }


# -- the deploy app's per-image summary ---------------------------------------------------------


def test_app_summary_reports_view_source_and_header_checks(tmp_path):
    pytest.importorskip("monai.deploy.core")
    pytest.importorskip("highdicom")
    import torch

    from apps.mammo_detect import main
    from apps.mammo_detect.operators import output_paths
    from monai_smalldet.networks import NetworkSpec, build_network, save_checkpoint

    src = tmp_path / "in"
    # 0.5 mm: inside the app's plausible spacing range (the pixels are those of the 0.7 mm images)
    common = {"patient_id": "VIEW-1", "uid_entropy": ["view-test"], "pixel_spacing_mm": 0.5}
    _strip_view(_write(src / "a.dcm", 990, "L", "MLO", instance_number=1, **common))
    _write(src / "b.dcm", 991, "R", "CC", laterality="L", instance_number=2, **common)
    torch.manual_seed(0)
    point = {"score_threshold": 0.25, "target_fpi": 0.3, "split": "validation"}
    spec = NetworkSpec(tile_size_px=128, pixel_spacing_mm=0.5, scales=(1.0,), operating_point=point)
    save_checkpoint(tmp_path / "model" / "model.pt", build_network("n"), spec)
    detector = _detector(0.5)
    detector.spec = spec
    args = ["mammo_detect", "-i", str(src), "-o", str(tmp_path / "out"), "-m", str(tmp_path / "model")]
    assert main(args, detector=detector) == 0
    study_uid = str(pydicom.dcmread(src / "a.dcm", stop_before_pixels=True).StudyInstanceUID)
    summary = json.loads(output_paths(tmp_path / "out", study_uid)["summary"].read_text())
    by_file = {image["file"]: image for image in summary["images"]}
    a, b = by_file["a.dcm"], by_file["b.dcm"]
    assert (a["view"], a["view_source"], a["laterality_source"], a["header_checks"]) == (
        "MLO",
        "pixels",
        "ImageLaterality",
        {},
    )
    assert (b["laterality"], b["view"], b["view_source"]) == ("L", "CC", "ViewPosition")
    assert b["header_checks"] == {
        "laterality": {"header": "L", "header_source": "ImageLaterality", "pixels": "R"}
    }
