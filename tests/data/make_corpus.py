"""Write the bad-input corpus: what a PACS or a research folder really holds.

Run ``python tests/data/make_corpus.py OUT_DIR`` to look at the files; the tests call
:func:`make_corpus` into a temporary folder (nothing binary is committed). Every case says
what a reader must do with it: ``ok`` (read correctly; ``checks`` names what to verify) or
``error`` (a :class:`~monai_smalldet.data.dicom.MammogramReadError` whose reason contains
``reason``). Images are synthetic mammograms at a small scale so that detection runs on them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML, JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

from monai_smalldet.data.dicom_writer import write_mammogram_dicom
from monai_smalldet.data.synthetic import SynthConfig, generate_mammogram

SCALE = 0.08  # 328 x 266 pixels at 0.875 mm
SPACING_MM = 0.07 / SCALE


@dataclass(frozen=True)
class Case:
    """One corpus file and what a reader must make of it."""

    name: str
    path: Path
    expect: str  # "ok" or "error"
    reason: str = ""  # words of the error reason (expect == "error")
    checks: dict[str, Any] = field(default_factory=dict)  # what to verify when expect == "ok"


def _mammogram(seed: int = 1, **config: Any) -> tuple[np.ndarray, np.ndarray]:
    """(12-bit stored MONOCHROME2 values, malignant boxes) of a small synthetic mammogram."""
    m = generate_mammogram(
        seed, scale=SCALE, n_lesions=1, config=SynthConfig(p_benign=0.0, p_marker=0.0, **config)
    )
    return m.image, m.boxes


def _write(path: Path, pixels: np.ndarray, **kwargs: Any) -> Path:
    kwargs.setdefault("pixel_spacing_mm", SPACING_MM)
    kwargs.setdefault("laterality", "L")
    kwargs.setdefault("view", "CC")
    kwargs.setdefault("uid_entropy", [path.name])
    return write_mammogram_dicom(path, pixels, **kwargs)


def _renewed(ds: pydicom.Dataset, name: str) -> pydicom.Dataset:
    """Give a copied dataset its own SOP instance and series UIDs (a PACS never repeats them)."""
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[name, "sop"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[name, "series"])
    return ds


def _edit(src: Path, dst: Path, **attrs: Any) -> Path:
    """Copy a DICOM file setting attributes (``None`` deletes one); a new instance in its own series."""
    ds = _renewed(pydicom.dcmread(src), dst.name)
    for keyword, value in attrs.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(dst)
    return dst


def make_corpus(out: str | Path) -> list[Case]:
    """Write every case into ``out`` and describe it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pixels, boxes = _mammogram()
    rows, cols = pixels.shape
    base = _write(out / "ok_mg_mono2.dcm", pixels)
    cases = [Case("ok_mg_mono2", base, "ok", checks={"boxes": boxes.tolist(), "laterality": "L"})]

    def ok(name: str, path: Path, **checks: Any) -> None:
        cases.append(Case(name, path, "ok", checks=checks))

    def bad(name: str, path: Path, reason: str) -> None:
        cases.append(Case(name, path, "error", reason=reason))

    # -- not images --------------------------------------------------------------------------
    (out / "not_dicom.dcm").write_text("this is a radiology report, not an image\n" * 20)
    bad("not_dicom", out / "not_dicom.dcm", "not")
    bad("no_pixel_data", _edit(base, out / "no_pixel_data.dcm", PixelData=None), "pixel data")
    data = base.read_bytes()
    (out / "truncated.dcm").write_bytes(data[: len(data) - len(data) // 3])
    bad("truncated", out / "truncated.dcm", "")
    rgb = dict(SamplesPerPixel=3, PlanarConfiguration=0, PixelData=b"\x00" * (rows * cols * 3 * 2))
    bad("rgb", _edit(base, out / "rgb.dcm", PhotometricInterpretation="RGB", **rgb), "RGB")
    bad("ybr", _edit(base, out / "ybr.dcm", PhotometricInterpretation="YBR_FULL", **rgb), "YBR")
    frames = dict(NumberOfFrames=2, PixelData=pixels.tobytes() * 2)
    bad("multi_frame", _edit(base, out / "multi_frame.dcm", **frames), "frame")
    bad("zero_size", _edit(base, out / "zero_size.dcm", Rows=0, PixelData=b""), "")
    ok("one_by_one", _write(out / "one_by_one.dcm", np.array([[2000]], np.uint16)), shape=[1, 1])

    # -- bit depths, signedness, photometric -------------------------------------------------
    for bits in (8, 10, 12, 14, 15, 16):
        top = 2**bits - 1
        scaled = np.round(pixels.astype(np.float64) / 4095 * top).astype(np.uint16)
        if bits == 8:
            ds = pydicom.dcmread(_write(out / "tmp8.dcm", scaled, bits_stored=12))
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
            ds.PixelData = scaled.astype(np.uint8).tobytes()
            low, high = int(scaled.min()), int(scaled.max())
            ds.WindowCenter, ds.WindowWidth = (low + high + 1) / 2, high - low + 1
            ds.save_as(out / "bits_8.dcm")
            (out / "tmp8.dcm").unlink()
            path = out / "bits_8.dcm"
        else:
            path = _write(out / f"bits_{bits}.dcm", scaled, bits_stored=bits)
        ok(f"bits_{bits}", path, bits_stored=bits, same_as="ok_mg_mono2")
    signed = (pixels.astype(np.int32) - 2048).astype(np.int16)
    ds = _renewed(pydicom.dcmread(base), "signed")
    ds.PixelRepresentation = 1
    ds.PixelData = signed.tobytes()
    ds.WindowCenter, ds.WindowWidth = (
        float(signed.min() + signed.max() + 1) / 2,
        float(signed.max() - signed.min() + 1),
    )
    ds.save_as(out / "signed.dcm")
    ok("signed", out / "signed.dcm", same_as="ok_mg_mono2")
    ok(
        "mono1",
        _write(out / "mono1.dcm", (4095 - pixels).astype(np.uint16), photometric="MONOCHROME1"),
        same_as="ok_mg_mono2",
    )

    # -- compression -------------------------------------------------------------------------
    for name, syntax in (("jpeg2000", JPEG2000Lossless), ("jpegls", JPEGLSLossless), ("rle", RLELossless)):
        ds = _renewed(pydicom.dcmread(base), name)
        ds.compress(syntax)
        ds.save_as(out / f"{name}.dcm")
        ok(name, out / f"{name}.dcm", same_as="ok_mg_mono2")
    ds = _renewed(pydicom.dcmread(base), "codec_absent")
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" * 8])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(out / "codec_absent.dcm")
    bad("codec_absent", out / "codec_absent.dcm", "transfer syntax")

    # -- what the header says ----------------------------------------------------------------
    for modality in ("CR", "MR", "CT"):
        ok(
            f"modality_{modality}",
            _edit(base, out / f"modality_{modality}.dcm", Modality=modality),
            modality=modality,
        )
    ok(
        "for_processing",
        _write(out / "for_processing.dcm", pixels, presentation_intent="FOR PROCESSING"),
        presentation_intent="FOR PROCESSING",
    )
    nospacing = _edit(base, out / "no_spacing.dcm", ImagerPixelSpacing=None, PixelSpacing=None)
    ok("no_spacing", nospacing, spacing_source="default")
    ok(
        "no_laterality",
        _edit(base, out / "no_laterality.dcm", ImageLaterality=None, Laterality=None),
        laterality=None,
    )

    # -- what the pixels hold ----------------------------------------------------------------
    ok("all_zero", _write(out / "all_zero.dcm", np.zeros_like(pixels)), all_zero=True)
    big = np.zeros((5700, 4200), np.uint16)
    big[1000:4700, :2500] = 1800
    ok(
        "larger_than_ffdm",
        _write(out / "larger_than_ffdm.dcm", big, pixel_spacing_mm=0.05),
        shape=[5700, 4200],
    )
    small = np.full_like(pixels, 60)
    small[rows // 2 - 12 : rows // 2 + 12, :18] = 1500
    ok("very_small_breast", _write(out / "very_small_breast.dcm", small))
    marked = pixels.copy()
    marked[8:30, cols - 30 : cols - 10] = 4095  # a burnt-in label in the air
    ok("burnt_in_label", _write(out / "burnt_in_label.dcm", marked), boxes=boxes.tolist())
    return cases


if __name__ == "__main__":  # pragma: no cover
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus")
    for case in make_corpus(target):
        print(f"{case.expect:5s} {case.name:22s} {case.path}")
