"""Coverage-guided fuzzing of the DICOM reading path with atheris (libFuzzer for Python).

Run: ``.venv/bin/python -m benchmarks.fuzz_dicom --runs 20000`` (bounded; not part of CI, a
short smoke run is). Seeds are small valid DICOM MG files (uncompressed, RLE, JPEG-LS,
JPEG 2000, MONOCHROME1, signed); pydicom and the project's reader are instrumented. The
only exception allowed out of :func:`~monai_smalldet.data.dicom.read_mammogram` is
:class:`~monai_smalldet.data.dicom.MammogramReadError`: anything else stops the run as a
crash, and the input is saved under ``--artifacts``. Results go to
``benchmarks/results/fuzz_dicom.json`` (iterations, crashes, seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import atheris

if "--light" in sys.argv:  # instrument the project's reader only: quick start for smoke runs
    import pydicom

    with atheris.instrument_imports():
        from monai_smalldet.data import dicom as dicom_module
        from monai_smalldet.data import formats  # noqa: F401 (PNG/TIFF/NIfTI, imported on demand)
    from monai_smalldet.data.dicom_writer import write_mammogram_dicom  # seeds only
else:  # instrument pydicom as well (about a minute to start), for real runs
    with atheris.instrument_imports():
        import pydicom

        from monai_smalldet.data import dicom as dicom_module
        from monai_smalldet.data import formats  # noqa: F401 (PNG/TIFF/NIfTI, imported on demand)
    from monai_smalldet.data.dicom_writer import write_mammogram_dicom  # seeds only

RESULTS = Path(__file__).parent / "results" / "fuzz_dicom.json"


def write_seeds(folder: Path) -> list[Path]:
    """Small valid mammogram files in several encodings: where mutations start from."""
    import numpy as np
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, size=(40, 32), dtype=np.uint16)
    base = write_mammogram_dicom(
        folder / "plain.dcm", pixels, pixel_spacing_mm=0.07, laterality="L", view="CC", uid_entropy=["fuzz"]
    )
    seeds = [base]
    seeds.append(
        write_mammogram_dicom(
            folder / "mono1.dcm",
            (4095 - pixels).astype(np.uint16),
            pixel_spacing_mm=0.07,
            laterality="R",
            view="MLO",
            photometric="MONOCHROME1",
            uid_entropy=["fuzz1"],
        )
    )
    for name, syntax in (("rle", RLELossless), ("jls", JPEGLSLossless), ("j2k", JPEG2000Lossless)):
        ds = pydicom.dcmread(base)
        ds.compress(syntax)
        ds.save_as(folder / f"{name}.dcm")
        seeds.append(folder / f"{name}.dcm")
    ds = pydicom.dcmread(base)
    ds.PixelRepresentation = 1
    ds.save_as(folder / "signed.dcm")
    seeds.append(folder / "signed.dcm")
    return seeds


def make_target(scratch: Path):
    path = scratch / "input.dcm"

    def test_one_input(data: bytes) -> None:
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                dicom_module.read_mammogram(path)
            except dicom_module.MammogramReadError:
                pass  # the one typed error the reader may raise

    return test_one_input


def _child(args: argparse.Namespace) -> None:
    """The fuzzing process: libFuzzer ends it itself (exit 0 after ``-runs``, non-zero on a crash)."""
    scratch = Path(tempfile.mkdtemp(prefix="fuzz-dicom-"))
    write_seeds(scratch / "seeds")
    libfuzzer_args = [
        sys.argv[0],
        f"-runs={args.runs}",
        f"-max_len={args.max_len}",
        f"-seed={args.seed}",
        f"-artifact_prefix={args.artifacts}/",
        str(scratch / "seeds"),
    ]
    atheris.Setup(libfuzzer_args, make_target(scratch))
    atheris.Fuzz()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20000, help="fuzzing iterations")
    parser.add_argument("--max-len", type=int, default=4096, help="largest input in bytes")
    parser.add_argument("--artifacts", type=Path, default=Path("fuzz-artifacts"))
    parser.add_argument("--results", default=str(RESULTS), help="JSON to write ('' for none)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--light", action="store_true", help="instrument only the project's reader")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.artifacts = args.artifacts.resolve()
    args.artifacts.mkdir(parents=True, exist_ok=True)
    if args.child:
        _child(args)
        return
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.fuzz_dicom",
        "--child",
        "--runs",
        str(args.runs),
        "--max-len",
        str(args.max_len),
        "--artifacts",
        str(args.artifacts),
        "--seed",
        str(args.seed),
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    crashes = sorted(p for p in os.listdir(args.artifacts) if p.startswith(("crash-", "timeout-", "oom-")))
    summary = {
        "benchmark": "atheris fuzzing of read_mammogram (only MammogramReadError may escape)",
        "runs": args.runs,
        "max_len": args.max_len,
        "seed": args.seed,
        "instrumented": "monai_smalldet.data" if args.light else "pydicom + monai_smalldet.data",
        "seconds": round(elapsed, 1),
        "exit_code": proc.returncode,
        "crashes": len(crashes) if crashes else int(proc.returncode != 0),
        "artifacts": crashes,
    }
    print(json.dumps(summary))
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
    if args.results:
        out = Path(args.results)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=1) + "\n")
    sys.exit(1 if summary["crashes"] else 0)


if __name__ == "__main__":
    main()
