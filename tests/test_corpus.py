"""The bad-input corpus (tests/data/make_corpus.py) through read_mammogram and `monai-smalldet detect`.

Every case gets either a correct result or a MammogramReadError naming the file and the
reason; a batch goes on with the rest; a killed run leaves no partial output and resumes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_smalldet.cli import main
from monai_smalldet.data.dicom import MammogramReadError, NonMammogramWarning, read_mammogram
from monai_smalldet.networks import NetworkSpec, build_network, save_checkpoint

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_corpus import SPACING_MM, make_corpus  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, {case.name: case for case in make_corpus(folder)}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    # the detector resamples every input to 2x the corpus spacing, so even the oversized image is small
    # an operating point as `monai-smalldet calibrate` writes it: the app refuses a model without one
    operating_point = {"score_threshold": 0.25, "target_fpi": 0.3, "split": "validation"}
    spec = NetworkSpec(
        tile_size_px=128, pixel_spacing_mm=2 * SPACING_MM, scales=(1.0, 0.5), operating_point=operating_point
    )
    return save_checkpoint(path, build_network("n"), spec)


def test_corpus_has_the_promised_cases(corpus):
    _, cases = corpus
    assert len(cases) >= 20
    assert sum(c.expect == "error" for c in cases.values()) >= 7


def test_every_case_reads_correctly_or_fails_with_a_named_reason(corpus):
    _, cases = corpus
    reference, _ = read_mammogram(cases["ok_mg_mono2"].path)
    for name, case in cases.items():
        if case.expect == "error":
            with pytest.raises(MammogramReadError) as info:
                read_mammogram(case.path)
            assert case.path.name in str(info.value) and info.value.reason, name
            assert case.reason.lower() in info.value.reason.lower(), (name, info.value.reason)
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image, meta = read_mammogram(case.path)
        assert image.dtype == np.float32 and 0.0 <= image.min() <= image.max() <= 1.0, name
        checks = case.checks
        if "shape" in checks:
            assert list(image.shape) == checks["shape"], name
        if "same_as" in checks:  # any bit depth, sign, photometric or codec: the same picture
            np.testing.assert_allclose(image, reference, atol=2.5 / 255, err_msg=name)
        if "bits_stored" in checks:
            assert meta.bits_stored == checks["bits_stored"]
        if "modality" in checks:
            assert meta.modality == checks["modality"]
            assert any(issubclass(w.category, NonMammogramWarning) for w in caught), name
            with pytest.raises(MammogramReadError, match=checks["modality"]):
                read_mammogram(case.path, require_mg=True)
        if "spacing_source" in checks:
            assert meta.spacing_source == checks["spacing_source"]
        if "laterality" in checks:
            assert meta.laterality == checks["laterality"]
        if "presentation_intent" in checks:
            assert meta.presentation_intent == checks["presentation_intent"]
        if checks.get("all_zero"):
            assert image.max() == 0.0


def test_detect_goes_on_past_bad_files(corpus, checkpoint, tmp_path):
    folder, cases = corpus
    out = tmp_path / "pred"
    assert main(["detect", str(folder), "--checkpoint", str(checkpoint), "--out", str(out), "--quiet"]) == 0
    failed = {Path(f["image"]).stem: f for f in json.loads((out / "failed.json").read_text())}
    expected_errors = {name for name, case in cases.items() if case.expect == "error"}
    # readable without a spacing, but the detector resamples and is not told what to assume
    no_spacing = {name for name, case in cases.items() if case.checks.get("spacing_source") == "default"}
    assert no_spacing and set(failed) == expected_errors | no_spacing
    for name, record in failed.items():
        error = "SpacingError" if name in no_spacing else "MammogramReadError"
        assert record["error"] == error and cases[name].path.name in record["reason"], record
    for name, case in cases.items():
        if case.expect == "ok" and name not in no_spacing:
            payload = json.loads((out / f"{name}.json").read_text())
            h, w = payload["image_size_hw"]
            for finding in payload["findings"]:
                x1, y1, x2, y2 = finding["box"]
                assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h, name
            assert "PatientName" not in json.dumps(payload) and "Synthetic^" not in json.dumps(payload)


def test_time_limit_ends_an_image_with_a_clear_error(corpus, checkpoint, tmp_path):
    folder, cases = corpus
    out = tmp_path / "slow"
    code = main(
        [
            "detect",
            str(cases["larger_than_ffdm"].path),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--quiet",
            "--time-limit-s",
            "0.01",
        ]
    )
    assert code == 1
    (record,) = json.loads((out / "failed.json").read_text())
    assert record["error"] == "ImageTimeoutError" and "time limit" in record["reason"]


@pytest.mark.slow
def test_killed_run_leaves_no_partial_file_and_resumes(corpus, checkpoint, tmp_path):
    folder, cases = corpus
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(16):
        (inputs / f"img{i:02d}.dcm").write_bytes(cases["ok_mg_mono2"].path.read_bytes())
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "monai_smalldet",
        "detect",
        str(inputs),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--quiet",
        "--resume",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(out.glob("img*.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(out.glob("img*.json"))
    assert 2 <= len(done) < 16, "the run was not killed mid-way"
    for path in done:
        json.loads(path.read_text())  # every visible result is complete
    before = {p.name: p.stat().st_mtime_ns for p in done}
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    after = sorted(out.glob("img*.json"))
    assert len(after) == 16
    assert all(
        p.stat().st_mtime_ns == before[p.name] for p in after if p.name in before
    )  # skipped, not redone
    assert not list(out.glob(".*.tmp*"))  # no temporary left behind


@pytest.mark.slow
def test_deploy_app_accounts_for_every_corpus_file(corpus, checkpoint, tmp_path, monkeypatch):
    """The MONAI Deploy app over the whole corpus: each file processed, failed with its reason,
    skipped as a non-MG / For Processing series, or listed as not loadable; the run goes on."""
    import pydicom

    monkeypatch.setenv("MAMMO_DETECT_SPACING_RANGE_MM", "0.02-2")  # the corpus' small images: 0.875 mm

    from apps.mammo_detect.app import main as app_main

    folder, cases = corpus
    out = tmp_path / "app"
    assert (
        app_main(["mammo_detect", "-i", str(folder), "-o", str(out), "-m", str(checkpoint.parent)]) == 4
    )  # failures: exit 4
    run = json.loads((out / "run_summary.json").read_text())
    done, failed, skipped_series = {}, {}, set()
    for summary_file in out.glob("*/summary.json"):
        summary = json.loads(summary_file.read_text())
        done.update({Path(i["file"]).stem: i for i in summary["images"]})
        failed.update({Path(i["file"]).stem: i for i in summary["failed"]})
        skipped_series.update(s["series_instance_uid"] for s in summary["skipped"])
    unloaded = {Path(u["file"]).stem for u in run["unloaded_files"]}
    skipped_series.update(s["series_instance_uid"] for s in run["skipped_series"])
    for name, case in cases.items():
        if name in unloaded:
            assert case.expect == "error", name
        elif case.expect == "error":
            assert case.reason.lower() in failed[name]["reason"].lower(), (name, failed.get(name))
        elif case.checks.get("spacing_source") == "default":
            # readable, but the app does not guess a spacing (MAMMO_DETECT_ASSUME_SPACING_MM unset)
            assert "no pixel spacing" in failed[name]["reason"], (name, failed.get(name))
        elif name.startswith("modality_") or name == "for_processing":
            assert pydicom.dcmread(case.path, stop_before_pixels=True).SeriesInstanceUID in skipped_series, (
                name
            )
        else:
            assert name in done, name
            h, w = done[name]["image_size_hw"]
            for finding in done[name]["findings"]:
                x1, y1, x2, y2 = finding["box"]
                assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h
    assert "Synthetic^" not in json.dumps(run)  # no patient name in the run summary
