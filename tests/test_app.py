"""End to end: the MONAI Deploy app (apps/mammo_detect) on a small synthetic DICOM study.

The study holds four For Presentation MG views (a bright square "lesion" on the left CC only),
a CT instance (another series of the same study), an MG instance whose pixel data is cut short,
and a text file. The app runs in-process (holoscan runs on CPU) with a fake network that
reports the bright region of each tile in the YOLO head's eval format, so every SR rectangle
must land on the drawn square. One more run goes through ``python -m apps.mammo_detect`` with
a randomly initialised yolov5n checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import yaml

pytest.importorskip("monai.deploy.core")
hd = pytest.importorskip("highdicom")

from apps.mammo_detect import main  # noqa: E402
from apps.mammo_detect.operators import find_checkpoint, output_paths, safe_name  # noqa: E402
from apps.mammo_detect.writer import CAD_SR_NAME, WriteOptions  # noqa: E402
from monai_smalldet.data.dicom_writer import write_mammogram_dicom  # noqa: E402
from monai_smalldet.inference import MultiScaleDetector  # noqa: E402
from monai_smalldet.networks import NetworkSpec, build_network, save_checkpoint  # noqa: E402
from tests.fakes import BrightSquareNet  # noqa: E402

#: a calibrated operating point as `monai-smalldet calibrate` writes it into a spec
OPERATING_POINT = {"score_threshold": 0.25, "target_fpi": 0.3, "split": "validation"}

REPO = Path(__file__).resolve().parents[1]
APP_DIR = REPO / "apps" / "mammo_detect"
SHAPE = (300, 240)  # rows, columns
SPACING = 0.5  # coarse, for small test images, and inside the app's plausible range
LESION = (40, 120, 64, 144)  # x1, y1, x2, y2 on the left CC
VIEWS = [("L", "CC", LESION), ("L", "MLO", None), ("R", "CC", None), ("R", "MLO", None)]
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _pixels(laterality: str, square=None, shape=SHAPE) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    chest_x = 0 if laterality == "L" else w - 1
    breast = ((xx - chest_x) / (0.7 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2 < 1
    img = np.where(breast, 1600, 80).astype(np.uint16)
    if square is not None:
        x1, y1, x2, y2 = square
        img[y1:y2, x1:x2] = 4095
    return img


def _write_view(folder: Path, index: int, laterality: str, view: str, square=None, shape=SHAPE) -> Path:
    return write_mammogram_dicom(
        folder / f"{laterality}_{view}.dcm",
        _pixels(laterality, square, shape),
        pixel_spacing_mm=SPACING,
        laterality=laterality,
        view=view,
        patient_id="APP-TEST-1",
        uid_entropy=["test_app"],
        instance_number=index + 1,
        window_center=2048,
        window_width=4096,
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("app")
    dicom = root / "dicom"
    files = {}
    for index, (lat, view, square) in enumerate(VIEWS):
        files[(lat, view)] = _write_view(dicom / "mg", index, lat, view, square)
    ref = pydicom.dcmread(files[("L", "CC")])
    # a CT instance of the same study, in its own series
    ct = ref.copy()
    ct.Modality = "CT"
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    ct.SOPInstanceUID = ct.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid(
        entropy_srcs=["ct"]
    )
    ct.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["ct-series"])
    del ct.PresentationIntentType
    (dicom / "ct").mkdir()
    ct.save_as(dicom / "ct" / "ct.dcm", enforce_file_format=True)
    # an MG instance of the MG series whose pixel data is cut short
    broken = write_mammogram_dicom(
        dicom / "mg" / "broken.dcm",
        _pixels("L"),
        pixel_spacing_mm=SPACING,
        laterality="L",
        view="CC",
        patient_id="APP-TEST-1",
        uid_entropy=["test_app"],
        instance_number=9,
    )
    ds = pydicom.dcmread(broken)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(broken, enforce_file_format=True)
    (dicom / "notes.txt").write_text("not a DICOM file\n")
    model = root / "model"
    torch.manual_seed(0)
    save_checkpoint(
        model / "model.pt",
        build_network("n"),
        NetworkSpec(
            tile_size_px=128, pixel_spacing_mm=SPACING, scales=(1.0, 0.5), operating_point=OPERATING_POINT
        ),
    )
    return {
        "root": root,
        "dicom": dicom,
        "model": model,
        "views": {k: pydicom.dcmread(p, stop_before_pixels=True) for k, p in files.items()},
        "ct_series": str(ct.SeriesInstanceUID),
        "broken_sop": str(ds.SOPInstanceUID),
        "study_uid": str(ref.StudyInstanceUID),
    }


def _fake_detector() -> MultiScaleDetector:
    detector = MultiScaleDetector(
        BrightSquareNet(), scales=(1.0, 0.5), tile_size=128, overlap=0.25, device="cpu", batch_size=4
    )
    detector.spec = NetworkSpec(tile_size_px=128, scales=(1.0, 0.5), operating_point=OPERATING_POINT)
    return detector


@pytest.fixture(scope="module")
def runs(study, tmp_path_factory) -> dict:
    """Two in-process runs: one with -i/-o/-m and the TID 1500 SRs, one with the HOLOSCAN_*
    variables and the defaults (the CAD SR only)."""
    out_a = tmp_path_factory.mktemp("out_a")
    code_a = main(
        ["mammo_detect", "-i", str(study["dicom"]), "-o", str(out_a), "-m", str(study["model"])],
        detector=_fake_detector(),
        write_options=WriteOptions(write_tid1500=True),
    )
    out_b = tmp_path_factory.mktemp("out_b")
    env = {
        "HOLOSCAN_INPUT_PATH": str(study["dicom"]),
        "HOLOSCAN_OUTPUT_PATH": str(out_b),
        "HOLOSCAN_MODEL_PATH": str(study["model"]),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        code_b = main(["mammo_detect"], detector=_fake_detector())
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {"a": (code_a, out_a), "b": (code_b, out_b)}


def _summary(out: Path, study_uid: str) -> dict:
    return json.loads(output_paths(out, study_uid)["summary"].read_text())


def _sr_findings(path: Path) -> tuple[pydicom.Dataset, list[dict]]:
    ds = pydicom.dcmread(path)
    sr = hd.sr.srread(path)
    found = []
    for group in sr.content.get_planar_roi_measurement_groups():
        roi = group.roi
        assert roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        points = np.asarray(roi.value, dtype=float)
        assert points.shape == (5, 2) and np.allclose(points[0], points[-1])  # closed rectangle
        ref = roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        measures = {m.name.meaning: m.value for m in group.get_measurements()}
        assert "Probability of cancer" not in measures  # an uncalibrated score claims no probability
        box = [points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()]
        found.append({"box": box, "score": measures["Certainty of Finding"] / 100.0, "ref": str(ref)})
    return ds, found


def _content_texts(ds: pydicom.Dataset) -> dict[str, list[str]]:
    """Concept name -> text values over the whole SR content tree."""
    out: dict[str, list[str]] = {}
    for item in _walk_content(ds):
        if item.ValueType == "TEXT":
            out.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(str(item.TextValue))
    return out


def test_run_succeeds_and_reports_failures_and_skips(study, runs):
    code, out = runs["a"]
    assert code == 4  # one image failed: its own exit status, the others went on
    summary = _summary(out, study["study_uid"])
    assert summary["num_images"] == 4 and summary["patient_id"] == "APP-TEST-1"
    assert {(i["laterality"], i["view"]) for i in summary["images"]} == {(a, b) for a, b, _ in VIEWS}
    # the cut-short MG is failed with its reason, the others went on
    assert [f["sop_instance_uid"] for f in summary["failed"]] == [study["broken_sop"]]
    assert "truncated" in summary["failed"][0]["reason"]
    # the CT series is skipped, with its modality
    skipped = {s["series_instance_uid"]: s for s in summary["skipped"]}
    assert skipped[study["ct_series"]]["modality"] == "CT"
    assert summary["model"]["name"] == "monai-smalldet" and summary["model"]["version"]
    run = json.loads((out / "run_summary.json").read_text())
    assert run["num_images"] == 4 and run["num_failed"] == 1 and run["complete"] is True
    assert run["num_studies_not_written"] == 0 and run["studies"][0]["written"] is True
    assert [u["file"] for u in run["unloaded_files"]] == ["notes.txt"]
    # outputs: the study's CAD SR, one TID 1500 SR + one overlay per image, no temporary left
    study_dir = output_paths(out, study["study_uid"])["study_dir"]
    names = sorted(p.name for p in study_dir.iterdir())
    assert CAD_SR_NAME in names and summary["cad_sr_file"] == CAD_SR_NAME
    assert sorted(run["studies"][0]["files"]) == names
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert len([n for n in names if n.endswith(".sr.dcm")]) == 4
    assert len([n for n in names if n.endswith(".overlay.png")]) == 4
    assert not [n for n in names if n.startswith(".")]
    for image in summary["images"]:
        assert (study_dir / image["overlay_file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sr_findings_land_on_the_lesion_and_agree_with_json(study, runs):
    _, out = runs["a"]
    summary = _summary(out, study["study_uid"])
    study_dir = output_paths(out, study["study_uid"])["study_dir"]
    sr_series = set()
    for image in summary["images"]:
        source = study["views"][(image["laterality"], image["view"])]
        assert image["sop_instance_uid"] == source.SOPInstanceUID
        ds, found = _sr_findings(study_dir / image["sr_file"])
        # DICOM SR, patient/study from the source, a new series
        assert ds.Modality == "SR" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
        assert ds.PatientID == source.PatientID and ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        sr_series.add(ds.SeriesInstanceUID)
        evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        # the SR holds the JSON's reported findings (here all: the fake scores 0.9 >= 0.25)
        assert all(f["reported"] for f in image["findings"])
        assert image["num_reported"] == len(found) == len(image["findings"])
        for sr_f, js_f in zip(found, image["findings"], strict=True):
            assert sr_f["ref"] == source.SOPInstanceUID
            np.testing.assert_allclose(sr_f["box"], js_f["box"], atol=1e-3)
            assert sr_f["score"] == pytest.approx(js_f["score"], abs=1e-6)
            assert js_f["box_mm"] == pytest.approx([v * SPACING for v in js_f["box"]])
        if image["laterality"] == "L" and image["view"] == "CC":
            assert len(found) == 1
            np.testing.assert_allclose(found[0]["box"], LESION, atol=2.5)
            assert found[0]["score"] == pytest.approx(0.9, abs=1e-4)
            texts = _content_texts(ds)
            assert "monai-smalldet" in texts["Algorithm Name"]
            assert texts["Algorithm Version"][0] == summary["model"]["version"]
        else:
            assert found == []
    assert len(sr_series) == 1  # one new series for the study's reports


def test_two_runs_give_identical_findings(study, runs):
    code_b, out_b = runs["b"]  # the run configured by HOLOSCAN_* variables
    assert code_b == 4
    a = _summary(runs["a"][1], study["study_uid"])
    b = _summary(out_b, study["study_uid"])

    def key(s):
        return [(i["sop_instance_uid"], i["findings"]) for i in s["images"]], s["failed"]

    assert key(a) == key(b)


def test_empty_input_fails_with_a_message(tmp_path, study, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["mammo_detect", "-i", str(empty), "-o", str(tmp_path / "o"), "-m", str(study["model"])])
    assert code != 0
    assert "empty" in capsys.readouterr().err


def test_no_mammogram_and_no_model_fail_with_a_message(tmp_path, study, capsys):
    only_ct = tmp_path / "ct"
    only_ct.mkdir()
    ct = next((study["dicom"] / "ct").iterdir())
    (only_ct / "ct.dcm").write_bytes(ct.read_bytes())
    code = main(
        ["mammo_detect", "-i", str(only_ct), "-o", str(tmp_path / "o"), "-m", str(study["model"])],
        detector=_fake_detector(),
    )
    assert code == 3 and "no Modality MG" in capsys.readouterr().err
    no_model = tmp_path / "no_model"
    no_model.mkdir()
    code = main(["mammo_detect", "-i", str(study["dicom"]), "-o", str(tmp_path / "o"), "-m", str(no_model)])
    assert code == 2 and "model.pt" in capsys.readouterr().err


def test_report_policy_keeps_low_scores_out_of_the_sr_but_in_the_json(tmp_path, study, monkeypatch):
    """An operating point above the finding's score: the SR says that no finding reached the
    operating point (not "Lesion: Absent"), the overlay draws nothing, and summary.json still
    lists the finding, unreported."""
    single = tmp_path / "in"
    single.mkdir()
    shutil.copy(study["dicom"] / "mg" / "L_CC.dcm", single / "L_CC.dcm")
    monkeypatch.setenv("MAMMO_DETECT_REPORT_MIN_SCORE", "0.95")
    out = tmp_path / "out"
    code = main(
        ["mammo_detect", "-i", str(single), "-o", str(out), "-m", str(study["model"])],
        detector=_fake_detector(),
        write_options=WriteOptions(write_tid1500=True),
    )
    assert code == 0
    summary = _summary(out, study["study_uid"])
    assert summary["model"]["report_policy"] == {
        "min_score": 0.95,
        "max_findings": 10,
        "source": "configured",
    }
    (image,) = summary["images"]
    assert [f["reported"] for f in image["findings"]] == [False] and image["num_reported"] == 0
    np.testing.assert_allclose(image["findings"][0]["box"], LESION, atol=2.5)
    sr_path = output_paths(out, study["study_uid"])["study_dir"] / image["sr_file"]
    ds, found = _sr_findings(sr_path)
    assert found == []
    values = {
        item.ConceptCodeSequence[0].CodeMeaning for item in _walk_content(ds) if item.ValueType == "CODE"
    }
    assert "All algorithms succeeded; without findings" in values and "Absent" not in values
    from monai_smalldet.reports import read_mammography_cad_sr

    cad = read_mammography_cad_sr(pydicom.dcmread(sr_path.parent / CAD_SR_NAME))
    assert cad["summary"] == "All algorithms succeeded; without findings" and cad["findings"] == []
    # a value that does not parse stops the run before anything starts, naming the variable
    monkeypatch.setenv("MAMMO_DETECT_REPORT_MAX_FINDINGS", "many")
    code = main(["mammo_detect", "-i", str(single), "-o", str(tmp_path / "o2"), "-m", str(study["model"])])
    assert code == 2 and not list((tmp_path / "o2").rglob("*.*"))


def test_an_image_without_spacing_fails_unless_the_site_sets_one(tmp_path, study, monkeypatch):
    """No Imager Pixel Spacing / Pixel Spacing: the image fails with that reason (a guessed spacing
    would resize every finding); MAMMO_DETECT_ASSUME_SPACING_MM runs it and the summary says so."""
    import pydicom

    single = tmp_path / "in"
    single.mkdir()
    ds = pydicom.dcmread(study["dicom"] / "mg" / "L_CC.dcm")
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.save_as(single / "L_CC.dcm")
    detector = MultiScaleDetector(
        BrightSquareNet(), scales=(1.0, 0.5), tile_size=128, target_spacing_mm=SPACING, device="cpu"
    )
    detector.spec = NetworkSpec(tile_size_px=128, scales=(1.0, 0.5), operating_point=OPERATING_POINT)
    args = ["mammo_detect", "-i", str(single), "-m", str(study["model"])]
    assert main([*args, "-o", str(tmp_path / "strict")], detector=detector) == 1  # its only image failed
    (failed,) = _summary(tmp_path / "strict", study["study_uid"])["failed"]
    assert failed["file"] == "L_CC.dcm" and "no pixel spacing" in failed["reason"]
    monkeypatch.setenv("MAMMO_DETECT_ASSUME_SPACING_MM", str(SPACING))
    assert main([*args, "-o", str(tmp_path / "assumed")], detector=detector) == 0
    (image,) = _summary(tmp_path / "assumed", study["study_uid"])["images"]
    assert image["spacing_source"] == "assumed" and image["pixel_spacing_mm"] == pytest.approx([SPACING] * 2)
    np.testing.assert_allclose(image["findings"][0]["box"], LESION, atol=2.5)
    monkeypatch.setenv("MAMMO_DETECT_ASSUME_SPACING_MM", "-1")
    assert main([*args, "-o", str(tmp_path / "bad")], detector=detector) == 2
    assert not list((tmp_path / "bad").rglob("*.*"))


@pytest.mark.parametrize(
    ("min_score", "max_findings", "expected"),
    [(0.25, 10, [True, True, False]), (0.0, 2, [True, True, False]), (0.0, 0, [False, False, False])],
)
def test_report_policy_marks_the_top_findings(min_score, max_findings, expected):
    from apps.mammo_detect.operators import ReportPolicy

    findings = [{"score": 0.3}, {"score": 0.9}, {"score": 0.1}]
    marked = ReportPolicy(min_score, max_findings).mark(findings)
    assert [f["score"] for f in marked] == [0.9, 0.3, 0.1]
    assert [f["reported"] for f in marked] == expected
    with pytest.raises(ValueError, match="min_score"):
        ReportPolicy(min_score=1.5)


def _walk_content(ds: pydicom.Dataset):
    stack = list(ds.ContentSequence)
    while stack:
        item = stack.pop()
        yield item
        stack.extend(item.get("ContentSequence", []))


def test_paths_are_safe_and_checkpoints_are_found(tmp_path, study):
    assert safe_name("1.2.840.1") == "1.2.840.1"
    for bad in ("../../etc", "", "1.2/../3", "a" * 80, "..", "1." * 40):
        name = safe_name(bad)
        assert name.startswith("x") and "/" not in name and ".." not in name
    paths = output_paths(tmp_path, "../../evil", "../x")
    assert all(p.resolve().is_relative_to(tmp_path.resolve()) for p in paths.values())
    assert find_checkpoint(study["model"]) == study["model"] / "model.pt"
    assert find_checkpoint(study["model"].parent) == study["model"] / "model.pt"  # MAP layout
    with pytest.raises(FileNotFoundError, match="model.pt"):
        find_checkpoint(tmp_path)


def test_reports_at_the_models_operating_point_and_refuses_an_uncalibrated_model(tmp_path, study, capsys):
    """Without MAMMO_DETECT_REPORT_MIN_SCORE the SR reports at the threshold calibrated on
    validation (the model's spec); a model without one is refused before any work."""
    single = tmp_path / "in"
    single.mkdir()
    shutil.copy(study["dicom"] / "mg" / "L_CC.dcm", single / "L_CC.dcm")
    out = tmp_path / "out"
    assert (
        main(
            ["mammo_detect", "-i", str(single), "-o", str(out), "-m", str(study["model"])],
            detector=_fake_detector(),
        )
        == 0
    )
    policy = _summary(out, study["study_uid"])["model"]["report_policy"]
    assert policy == {
        "min_score": OPERATING_POINT["score_threshold"],
        "max_findings": 10,
        "source": "model operating point",
    }
    bare = tmp_path / "bare"
    save_checkpoint(
        bare / "model.pt", build_network("n"), NetworkSpec(tile_size_px=128, pixel_spacing_mm=SPACING)
    )
    code = main(["mammo_detect", "-i", str(single), "-o", str(tmp_path / "o2"), "-m", str(bare)])
    assert code == 2 and "no calibrated operating point" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())


def test_command_line_with_a_real_checkpoint(tmp_path, study):
    """``python -m apps.mammo_detect -i -o -m`` with a random yolov5n checkpoint: one small MG
    image (and a CT, skipped with a log line)."""
    dicom = tmp_path / "in"
    _write_view(dicom, 0, "R", "MLO", shape=(120, 96))
    ct = next((study["dicom"] / "ct").iterdir())
    (dicom / "ct.dcm").write_bytes(ct.read_bytes())
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "apps.mammo_detect",
            "-i",
            str(dicom),
            "-o",
            str(out),
            "-m",
            str(study["model"]),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"skipped series {study['ct_series']} (Modality CT)" in proc.stdout + proc.stderr
    run = json.loads((out / "run_summary.json").read_text())
    assert run["num_images"] == 1 and run["num_failed"] == 0
    assert run["model"]["checkpoint"] == "model.pt" and len(run["model"]["checkpoint_sha256"]) == 64
    assert run["model"]["spec"]["tile_size_px"] == 128
    summary = json.loads((out / run["studies"][0]["summary_file"]).read_text())
    image = summary["images"][0]
    assert (image["laterality"], image["view"]) == ("R", "MLO")
    assert image["sr_file"] is None  # TID 1500 only on request
    assert (out / run["studies"][0]["summary_file"]).parent.joinpath(CAD_SR_NAME).is_file()


# -- MAP configuration ---------------------------------------------------------------------------


def test_app_yaml_is_a_valid_map_configuration():
    config = yaml.safe_load((APP_DIR / "app.yaml").read_text())
    # the rules of holoscan-cli's ApplicationConfiguration (the MAP packager), checked by hand
    app = config["application"]
    assert app["title"] and str(app["version"])
    assert "resources" in config
    for key in ("input-formats", "output-formats"):
        assert isinstance(app[key], list) and app[key]
    resources = config["resources"]
    assert float(resources["cpu"]) >= 1 and str(resources["memory"]).endswith(("Gi", "Mi"))
    try:  # holoscan-cli <= 4.x ships the packager; 5.x does not
        from holoscan_cli.packager.config_reader import ApplicationConfiguration
    except ImportError:
        pytest.skip("the installed holoscan-cli has no MAP packager (holoscan_cli.packager)")
    reader = ApplicationConfiguration()
    reader.read(APP_DIR / "app.yaml")
    assert reader.title() == app["title"]


def test_requirements_are_installed_here():
    """Every requirement of the MAP is satisfied by this environment (checked offline by pip)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-deps",
            "--no-index",
            "-r",
            str(APP_DIR / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0 and "No matching distribution" in proc.stderr:
        pytest.skip("a requirement is not installed here and pip has no index offline")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Would install" not in proc.stdout


def test_requirements_cover_every_backend_the_app_accepts():
    """MAMMO_DETECT_BACKEND=onnxruntime must work in the container: the MAP installs the
    packages of the 'onnx' extra, at its pins."""
    import re
    import tomllib

    from monai_smalldet.networks import BACKENDS

    listed = {}
    for line in (APP_DIR / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name = re.split(r"[<>=!~ ]", line, maxsplit=1)[0].lower()
            listed[name] = line
    extras = tomllib.loads((APP_DIR.parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert "onnxruntime" in BACKENDS
    for pin in extras["onnx"]:
        name = re.split(r"[<>=!~ ]", pin, maxsplit=1)[0].lower()
        assert listed.get(name) == pin, f"{pin} missing from the MAP requirements"


def test_sr_files_validate_with_dciodvfy(runs):
    """David Clunie's validator: no error against the SR IODs, the CAD SR's and TID 1500's
    (warnings are reported, not fatal)."""
    from tests.tools import require_tool

    tool = require_tool("dciodvfy", "dicom3tools")
    _, out = runs["a"]
    srs = sorted(out.rglob("*.sr.dcm")) + sorted(out.rglob(CAD_SR_NAME))
    assert len(srs) == 5
    for path in srs:
        proc = subprocess.run([tool, "-new", str(path)], capture_output=True, text=True, timeout=120)
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{path.name}: {errors}"


@pytest.mark.slow
def test_fifty_studies_in_one_run_without_memory_growth(tmp_path, monkeypatch):
    """RSS once study 50 is detected stays within 10% of RSS once study 5 is (no leak per study)."""
    monkeypatch.setenv("MAMMO_DETECT_SPACING_RANGE_MM", "0.02-2")  # the small images' 1.4 mm
    from monai_smalldet.data.synthetic import generate_dataset
    from monai_smalldet.networks import NetworkSpec, build_network, save_checkpoint

    generate_dataset(tmp_path / "in", n_train=0, n_val=0, n_test=200, scale=0.05, progress=False, workers=2)
    torch.manual_seed(0)
    spec = NetworkSpec(
        tile_size_px=128, pixel_spacing_mm=1.4, scales=(1.0, 0.5), operating_point=OPERATING_POINT
    )
    save_checkpoint(tmp_path / "model" / "model.pt", build_network("n"), spec)
    out = tmp_path / "out"
    assert (
        main(
            [
                "mammo_detect",
                "-i",
                str(tmp_path / "in" / "test"),
                "-o",
                str(out),
                "-m",
                str(tmp_path / "model"),
            ]
        )
        == 0
    )
    studies = json.loads((out / "run_summary.json").read_text())["studies"]
    assert len(studies) == 50 and sum(s["num_images"] for s in studies) == 200
    rss = [s["rss_mb_after_detection"] for s in studies]  # studies in processing order
    assert rss[49] <= 1.10 * rss[4], rss


# -- per-study results, untrusted input, unwritable output ----------------------------------------


def _second_study(folder: Path, study: dict) -> str:
    """A copy of the left CC as the only image of another study; returns that study's UID."""
    ds = pydicom.dcmread(study["dicom"] / "mg" / "L_CC.dcm")
    ds.StudyInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["second study"])
    ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["second series"])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid(
        entropy_srcs=["second sop"]
    )
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / "other_L_CC.dcm", enforce_file_format=True)
    return str(ds.StudyInstanceUID)


def test_each_study_is_written_when_done_and_a_failed_write_keeps_the_previous_results(
    tmp_path, study, monkeypatch
):
    """Two studies: each is written before the next is detected; then a rerun whose second study
    hits a full disk (ENOSPC injected into its overlay) keeps that study's earlier results
    byte for byte, writes the first, says which one is missing and exits with 4. The rerun's
    CAD SR of an unchanged study has the same UIDs (no duplicate series in a PACS)."""
    import errno

    import apps.mammo_detect.writer as writer_module
    from monai_smalldet import visualize

    inp = tmp_path / "in"
    shutil.copytree(study["dicom"] / "mg", inp / "mg", ignore=shutil.ignore_patterns("broken.dcm"))
    other = _second_study(inp / "other", study)
    events: list[tuple[str, str]] = []
    detector = _fake_detector()
    predict = detector.predict
    monkeypatch.setattr(
        detector, "predict", lambda *a, **k: events.append(("detect", "")) or predict(*a, **k)
    )
    write_study = writer_module.write_study

    def recording_write(result, *args, **kwargs):
        events.append(("write", result.study_instance_uid))
        return write_study(result, *args, **kwargs)

    monkeypatch.setattr(writer_module, "write_study", recording_write)
    out = tmp_path / "out"
    args = ["mammo_detect", "-i", str(inp), "-o", str(out), "-m", str(study["model"])]
    assert main(args, detector=detector) == 0
    order = sorted([study["study_uid"], other])
    images = {study["study_uid"]: 4, other: 1}
    expected = [e for uid in order for e in [("detect", "")] * images[uid] + [("write", uid)]]
    assert events == expected  # a study is written before the next one is detected
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    cad_before = pydicom.dcmread(output_paths(out, study["study_uid"])["study_dir"] / CAD_SR_NAME)

    overlay_png = visualize.overlay_png

    def full_disk(image, path, *a, **k):
        if safe_name(other) in str(Path(path).parent.name):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return overlay_png(image, path, *a, **k)

    monkeypatch.setattr(visualize, "overlay_png", full_disk)
    assert main(args, detector=_fake_detector()) == 4
    run = json.loads((out / "run_summary.json").read_text())
    by_uid = {s["study_instance_uid"]: s for s in run["studies"]}
    assert by_uid[other]["written"] is False and "ENOSPC" in by_uid[other]["write_error"]
    assert run["num_studies_not_written"] == 1 and by_uid[study["study_uid"]]["written"] is True
    other_dir = output_paths(out, other)["study_dir"]
    after = {p.relative_to(out): p.read_bytes() for p in other_dir.rglob("*") if p.is_file()}
    assert after == {k: v for k, v in before.items() if k.parts[0] == other_dir.name}  # untouched
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no staging left
    cad_after = pydicom.dcmread(output_paths(out, study["study_uid"])["study_dir"] / CAD_SR_NAME)
    assert cad_after.SeriesInstanceUID == cad_before.SeriesInstanceUID
    assert cad_after.SOPInstanceUID == cad_before.SOPInstanceUID


def test_series_selection_is_per_instance_whatever_the_file_order(tmp_path, study):
    """A series mixing a For Processing and a For Presentation instance: the latter is
    detected, the former skipped with its reason, whichever file comes first."""
    results = []
    for first, second in (("a", "b"), ("b", "a")):
        inp = tmp_path / f"in_{first}"
        inp.mkdir()
        shutil.copy(study["dicom"] / "mg" / "L_CC.dcm", inp / f"{second}_presentation.dcm")
        ds = pydicom.dcmread(study["dicom"] / "mg" / "L_MLO.dcm")
        ds.PresentationIntentType = "FOR PROCESSING"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2.1"
        ds.SeriesInstanceUID = pydicom.dcmread(inp / f"{second}_presentation.dcm").SeriesInstanceUID
        ds.save_as(inp / f"{first}_processing.dcm", enforce_file_format=True)
        out = tmp_path / f"out_{first}"
        code = main(
            ["mammo_detect", "-i", str(inp), "-o", str(out), "-m", str(study["model"])],
            detector=_fake_detector(),
        )
        summary = _summary(out, study["study_uid"])
        results.append(
            (
                code,
                [i["sop_instance_uid"] for i in summary["images"]],
                [(s["sop_instance_uid"], s["reason"]) for s in summary["skipped"]],
            )
        )
    assert results[0] == results[1]
    code, images, skipped = results[0]
    assert code == 0 and images == [study["views"][("L", "CC")].SOPInstanceUID]
    assert skipped == [
        (study["views"][("L", "MLO")].SOPInstanceUID, "not a Digital Mammography For Presentation image")
    ]


def test_headers_that_cannot_be_trusted_fail_their_image_with_the_reason(tmp_path, study, monkeypatch):
    """An implausible spacing (2.26 mm), an image that would expand beyond the pixel limit and an
    invalid SOP Instance UID each fail their own image; the study's CAD SR (valid, per
    dciodvfy) lists the ones it can reference and leaves out the invalid UID."""
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(study["dicom"] / "mg" / "R_CC.dcm", inp / "good.dcm")
    coarse = write_mammogram_dicom(
        inp / "coarse.dcm",
        _pixels("L", shape=(256, 1024)),
        pixel_spacing_mm=2.26,
        laterality="L",
        view="CC",
        patient_id="APP-TEST-1",
        uid_entropy=["test_app"],
        instance_number=20,
    )
    ds = pydicom.dcmread(study["dicom"] / "mg" / "L_MLO.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.abc"
    ds.save_as(inp / "bad_uid.dcm", enforce_file_format=True)
    detector = MultiScaleDetector(
        BrightSquareNet(), scales=(1.0, 0.5), tile_size=128, target_spacing_mm=SPACING, device="cpu"
    )
    detector.spec = NetworkSpec(tile_size_px=128, scales=(1.0, 0.5), operating_point=OPERATING_POINT)
    out = tmp_path / "out"
    args = ["mammo_detect", "-i", str(inp), "-m", str(study["model"])]
    assert main([*args, "-o", str(out)], detector=detector) == 4
    summary = _summary(out, study["study_uid"])
    reasons = {f["file"]: f["reason"] for f in summary["failed"]}
    assert "implausible pixel spacing (2.26, 2.26) mm" in reasons["coarse.dcm"]
    assert "invalid SOPInstanceUID '1.2.3.abc'" in reasons["bad_uid.dcm"]
    assert [i["file"] for i in summary["images"]] == ["good.dcm"]
    from monai_smalldet.reports import read_mammography_cad_sr

    cad_path = output_paths(out, study["study_uid"])["study_dir"] / CAD_SR_NAME
    cad = read_mammography_cad_sr(pydicom.dcmread(cad_path))
    coarse_uid = str(pydicom.dcmread(coarse, stop_before_pixels=True).SOPInstanceUID)
    assert set(cad["images"]) == {study["views"][("R", "CC")].SOPInstanceUID, coarse_uid}
    assert "implausible" in cad["failed"][coarse_uid]
    from tests.tools import require_tool

    proc = subprocess.run(
        [require_tool("dciodvfy", "dicom3tools"), "-new", str(cad_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert [line for line in proc.stderr.splitlines() if line.startswith("Error")] == []
    # a site that accepts coarse spacings still meets the pixel limit: 2.26 -> 0.5 mm is 20x
    monkeypatch.setenv("MAMMO_DETECT_SPACING_RANGE_MM", "0.02-3")
    monkeypatch.setenv("MAMMO_DETECT_MAX_PIXELS", "1000000")
    assert main([*args, "-o", str(tmp_path / "out2")], detector=detector) == 4
    reasons = {f["file"]: f["reason"] for f in _summary(tmp_path / "out2", study["study_uid"])["failed"]}
    assert "above the limit of 1 Mpx" in reasons["coarse.dcm"]


def test_an_output_folder_that_cannot_be_written_is_exit_2_with_one_line(tmp_path, study):
    """A read-only filesystem (a tmpfs mounted read-only in a private mount namespace) and a
    path under a regular file: one error line, exit 2, no traceback."""
    readonly = tmp_path / "ro"
    readonly.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    app = [sys.executable, "-m", "apps.mammo_detect", "-i", str(study["dicom"]), "-m", str(study["model"])]
    script = f'mount -t tmpfs -o ro,size=1m none {readonly} && exec "$@"'
    for out, mount in ((readonly / "out", True), (readonly, True), (tmp_path / "file" / "out", False)):
        (tmp_path / "file").write_text("x")
        command = (
            ["unshare", "-m", "sh", "-c", script, "sh", *app, "-o", str(out)]
            if mount
            else [*app, "-o", str(out)]
        )
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        if mount and "mount" in proc.stderr and proc.returncode != 2:
            pytest.skip(f"no private mount namespace here: {proc.stderr.strip()[:200]}")
        errors = [line for line in proc.stderr.splitlines() if line.startswith("mammo_detect: error:")]
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert len(errors) == 1 and ("Read-only file system" in errors[0] or "Not a directory" in errors[0])
        assert "Traceback" not in proc.stderr


def test_each_file_is_parsed_once_for_its_header_and_once_for_its_image(tmp_path, study, monkeypatch):
    """The loader reads headers only (the SDK's would read and keep every file whole): each MG
    file is parsed twice in all, once up to its pixel data and once whole by read_mammogram;
    the datasets the run keeps hold no pixel data."""
    from collections import Counter

    import apps.mammo_detect.operators as operators

    calls: Counter = Counter()
    real = pydicom.dcmread

    def counting(fp, *args, **kwargs):
        calls[(Path(str(fp)).name, bool(kwargs.get("stop_before_pixels")))] += 1
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counting)
    inp = tmp_path / "in"
    shutil.copytree(study["dicom"] / "mg", inp, ignore=shutil.ignore_patterns("broken.dcm"))
    app_out = tmp_path / "out"
    kept = []
    one_image = operators.MammoDetectionOperator._one_image

    def keep(self, ds, series_uid):
        kept.append(ds)
        return one_image(self, ds, series_uid)

    monkeypatch.setattr(operators.MammoDetectionOperator, "_one_image", keep)
    args = ["mammo_detect", "-i", str(inp), "-o", str(app_out), "-m", str(study["model"])]
    assert main(args, detector=_fake_detector()) == 0
    names = sorted(p.name for p in inp.iterdir())
    assert {name: (calls[(name, True)], calls[(name, False)]) for name in names} == {n: (1, 1) for n in names}
    assert len(kept) == 4 and not any("PixelData" in ds for ds in kept)


def test_cad_sr_agrees_with_the_json_finding_by_finding_and_passes_dcmtk(study, runs):
    """The study's CAD SR (default outputs): every reported finding of summary.json, on its
    image, with its box and score; the failed image under Failed Detections with its reason;
    DCMTK reads it without a warning about the document."""
    from monai_smalldet.reports import read_mammography_cad_sr
    from tests.tools import cad_and_json_findings, require_tool

    _, out = runs["b"]
    summary = _summary(out, study["study_uid"])
    path = output_paths(out, study["study_uid"])["study_dir"] / CAD_SR_NAME
    cad = read_mammography_cad_sr(pydicom.dcmread(path))
    got, expected = cad_and_json_findings(cad, summary)
    assert got == expected and len(got) == 1
    assert all(f["rendering_intent"] == "Presentation Required" for f in cad["findings"])
    assert cad["failed"] == {study["broken_sop"]: summary["failed"][0]["reason"]}
    assert cad["detections"] == "Partially Succeeded"
    proc = subprocess.run(
        [require_tool("dsrdump", "dcmtk"), str(path)], capture_output=True, text=True, timeout=60
    )
    notes = ("does not support this Specific Character Set", "template constraints not yet")
    problems = [
        line
        for line in proc.stderr.splitlines()
        if line[:2] in ("W:", "E:", "F:") and not any(n in line for n in notes)
    ]
    assert proc.returncode == 0 and problems == []
