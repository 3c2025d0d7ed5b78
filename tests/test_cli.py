"""The monai-smalldet command: synth -> detect -> froc, with a bad file in the batch."""

from __future__ import annotations

import json

import pytest
import torch

from monai_smalldet.cli import main
from monai_smalldet.networks import NetworkSpec, build_network, save_checkpoint


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    assert (
        main(
            ["synth", "--out", str(out / "data"), "--n-test", "3", "--scale", "0.1", "--seed", "2", "--quiet"]
        )
        == 0
    )
    torch.manual_seed(0)
    save_checkpoint(
        out / "model.pt",
        build_network("n"),
        NetworkSpec(tile_size_px=128, pixel_spacing_mm=0.7, scales=(1.0, 0.5)),
    )
    return out


def test_detect_then_froc(dataset, capsys):
    data, out = dataset / "data", dataset / "pred"
    (data / "test" / "broken.dcm").write_bytes(b"not a dicom file")
    code = main(
        [
            "detect",
            str(data / "test"),
            "--checkpoint",
            str(dataset / "model.pt"),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    written = sorted(p.name for p in out.glob("*.json") if p.name != "failed.json")
    assert len(written) == 3
    failed = json.loads((out / "failed.json").read_text())
    assert (
        len(failed) == 1 and "broken.dcm" in failed[0]["image"] and failed[0]["error"] == "MammogramReadError"
    )
    payload = json.loads((out / written[0]).read_text())
    h, w = payload["image_size_hw"]
    assert payload["scales"] == [1.0, 0.5] and payload["pixel_spacing_mm"] == pytest.approx([0.7, 0.7])
    for finding in payload["findings"]:
        x1, y1, x2, y2 = finding["box"]
        assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h
        assert finding["box_mm"][2] == pytest.approx(x2 * 0.7, rel=1e-6)
    # the tiling options reach the detector: more overlap, more tiles on the same image
    dense = dataset / "pred_dense"
    source = data / "test" / written[0].removesuffix(".json").replace("__", "/")  # the JSON's image
    args = ["detect", str(source.with_suffix(".dcm")), "--checkpoint", str(dataset / "model.pt")]
    assert main([*args, "--out", str(dense), "--overlap", "0.5", "--quiet"]) == 0
    (again,) = (p for p in dense.glob("*.json") if p.name != "failed.json")
    assert sum(json.loads(again.read_text())["tiles_per_scale"]) > sum(payload["tiles_per_scale"])
    assert (
        main(
            [
                "froc",
                "--predictions",
                str(out),
                "--datalist",
                str(data / "datalist.json"),
                "--split",
                "test",
                "--out",
                str(dataset / "froc"),
                "--bootstrap",
                "50",
            ]
        )
        == 0
    )
    result = json.loads((dataset / "froc" / "froc.json").read_text())
    assert result["missing_predictions"] == 0
    assert (dataset / "froc" / "froc.png").stat().st_size > 1000
    assert "0.3" in (dataset / "froc" / "froc.md").read_text()


def test_detect_resume_skips_done_images(dataset):
    out = dataset / "resume"
    args = [
        "detect",
        str(dataset / "data" / "test"),
        "--checkpoint",
        str(dataset / "model.pt"),
        "--out",
        str(out),
        "--quiet",
        "--resume",
        "--mode",
        "whole",
    ]
    assert main(args) == 0
    first = {p: p.stat().st_mtime_ns for p in out.glob("*.json") if p.name != "failed.json"}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in first} == first


def test_detect_backends_write_the_same_findings(dataset):
    pytest.importorskip("onnxruntime")
    found = {}
    for backend in ("torch", "onnxruntime"):
        out = dataset / f"backend_{backend}"
        args = ["detect", str(dataset / "data" / "test"), "--checkpoint", str(dataset / "model.pt")]
        args += ["--out", str(out), "--quiet", "--backend", backend, "--precision", "fp32"]
        assert main(args) == 0
        found[backend] = {
            p.name: json.loads(p.read_text())["findings"]
            for p in out.glob("*.json")
            if p.name != "failed.json"
        }
    assert found["torch"].keys() == found["onnxruntime"].keys() and len(found["torch"]) == 3
    for name, ref in found["torch"].items():
        top = sorted(ref, key=lambda f: -f["score"])[:3]
        for finding in top:  # the strongest findings: same box and score (1e-4)
            other = found["onnxruntime"][name]
            best = min(
                other, key=lambda f: max(abs(a - b) for a, b in zip(f["box"], finding["box"], strict=True))
            )
            assert max(abs(a - b) for a, b in zip(best["box"], finding["box"], strict=True)) < 2.0
            assert abs(best["score"] - finding["score"]) < 1e-4


def test_detect_without_inputs_fails(tmp_path, dataset):
    assert (
        main(
            ["detect", str(tmp_path), "--checkpoint", str(dataset / "model.pt"), "--out", str(tmp_path / "o")]
        )
        == 2
    )


def test_patient_identity_only_with_keep_phi(dataset):
    source = sorted((dataset / "data" / "test").rglob("L_CC.dcm"))[0]
    for flag, expect_name in (([], False), (["--keep-phi"], True)):
        out = dataset / f"phi{len(flag)}"
        args = [
            "detect",
            str(source),
            "--checkpoint",
            str(dataset / "model.pt"),
            "--out",
            str(out),
            "--quiet",
        ]
        assert main(args + flag) == 0
        text = next(p for p in out.glob("*.json") if p.name != "failed.json").read_text()
        assert ("Synthetic^" in text) is expect_name


def test_an_image_without_spacing_fails_by_name_unless_a_spacing_is_assumed(dataset, tmp_path, caplog):
    """A DICOM with neither Imager Pixel Spacing nor Pixel Spacing: listed in failed.json with
    the reason while the batch goes on; with --assume-spacing-mm it runs, its JSON and each of
    its findings say so, and a warning names the file; the other image names its attribute."""
    import pydicom

    sources = sorted((dataset / "data" / "test").rglob("*.dcm"))[:2]
    ds = pydicom.dcmread(sources[0])
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        if keyword in ds:
            delattr(ds, keyword)
    bare = tmp_path / "no_spacing.dcm"
    ds.save_as(bare)
    args = ["detect", str(bare), str(sources[1]), "--checkpoint", str(dataset / "model.pt"), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "strict")]) == 0
    failed = json.loads((tmp_path / "strict" / "failed.json").read_text())
    assert [(f["image"], f["error"]) for f in failed] == [(str(bare), "SpacingError")]
    assert "no pixel spacing" in failed[0]["reason"]
    assert len([p for p in (tmp_path / "strict").glob("*.json") if p.name != "failed.json"]) == 1
    assert main([*args, "--out", str(tmp_path / "assumed"), "--assume-spacing-mm", "0.7"]) == 0
    assert json.loads((tmp_path / "assumed" / "failed.json").read_text()) == []
    sources_seen = {}
    for p in (tmp_path / "assumed").glob("*.json"):
        if p.name != "failed.json":
            payload = json.loads(p.read_text())
            sources_seen[payload["image"]] = (payload["spacing_source"], payload["pixel_spacing_mm"])
    assert sources_seen[str(bare.resolve())] == ("assumed", [0.7, 0.7])
    assert sources_seen[str(sources[1].resolve())][0] in ("ImagerPixelSpacing", "PixelSpacing")
    assert any(str(bare) in r.getMessage() and "assumed" in r.getMessage() for r in caplog.records)
    for p in (tmp_path / "assumed").glob("*.json"):
        if p.name != "failed.json":
            payload = json.loads(p.read_text())
            assumed = payload["spacing_source"] == "assumed"
            assert all(f.get("spacing_assumed", False) == assumed for f in payload["findings"])


def test_same_file_names_from_different_folders_do_not_collide(dataset):
    files = sorted((dataset / "data" / "test").rglob("L_CC.dcm"))
    other = dataset / "copy" / "L_CC.dcm"
    other.parent.mkdir(exist_ok=True)
    other.write_bytes(files[0].read_bytes())
    out = dataset / "collide"
    assert (
        main(
            [
                "detect",
                str(files[0]),
                str(other),
                "--checkpoint",
                str(dataset / "model.pt"),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    written = [p for p in out.glob("*.json") if p.name != "failed.json"]
    assert len(written) == 2
    assert {json.loads(p.read_text())["image"] for p in written} == {
        str(files[0].resolve()),
        str(other.resolve()),
    }


def test_demo_runs_the_whole_chain(dataset, tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--scale", "0.1", "--n-test", "2", "--workers", "1"]
    assert main([*args, "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "no model at" in capsys.readouterr().err
    assert (out / "preview.png").is_file()
    assert main([*args, "--checkpoint", str(dataset / "model.pt")]) == 0
    results = sorted(p.name for p in (out / "predictions").glob("*.json") if p.name != "failed.json")
    assert json.loads((out / "predictions" / "failed.json").read_text()) == []
    overlays = sorted((out / "predictions").glob("*.png"))
    assert len(results) == 2 and len(overlays) == 2, (results, overlays)
    froc = json.loads((out / "froc" / "froc.json").read_text())
    assert froc["num_images"] == 2 and froc["missing_predictions"] == 0
    assert (out / "froc" / "froc.png").is_file()


def test_the_library_batch_under_the_command(dataset, tmp_path):
    """``detect_files`` (what the command and the bundle's inference run): per-image results and
    failures as values, the same files on disk."""
    from monai_smalldet.batch import detect_files
    from monai_smalldet.inference import MultiScaleDetector

    good = sorted((dataset / "data" / "test").rglob("*.dcm"))[:1]
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"DICM?")
    detector = MultiScaleDetector.from_checkpoint(dataset / "model.pt", device="cpu")
    result = detect_files(detector, [*good, bad], tmp_path / "out", report_threshold=0.5)
    assert [p.name for p in result.written] == [f"{good[0].stem}.json"]
    assert [(f["image"], f["error"]) for f in result.failed] == [(str(bad), "MammogramReadError")]
    assert json.loads((tmp_path / "out" / "failed.json").read_text()) == result.failed
    payload = json.loads(result.written[0].read_text())
    assert payload["operating_point"] == {"score_threshold": 0.5, "source": "given"}
    assert all(f["reported"] == (f["score"] >= 0.5) for f in payload["findings"])
