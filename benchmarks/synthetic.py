"""Speed of the synthetic FFDM generator (goal: a full-size image well under 2 s on one CPU).

Run: ``.venv/bin/python -m benchmarks.synthetic [--repeats 5]``. Prints a markdown table and
writes ``benchmarks/results/synthetic.json``. Data are synthetic by construction.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe_machine
from monai_smalldet.data.dicom_writer import write_mammogram_dicom
from monai_smalldet.data.synthetic import SynthConfig, generate_mammogram
from monai_smalldet.files import write_json_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "synthetic.json")
    args = parser.parse_args()
    generate_mammogram(0, scale=0.25)  # warm-up: imports, FFT plans
    rows = []
    for scale in (1.0, 0.25):
        for view in ("CC", "MLO"):
            gen, write = [], []
            for seed in range(args.repeats):
                t0 = time.perf_counter()
                m = generate_mammogram(seed, scale=scale, view=view, config=SynthConfig(p_normal=0.0))
                t1 = time.perf_counter()
                with tempfile.TemporaryDirectory() as tmp:
                    write_mammogram_dicom(
                        Path(tmp) / "x.dcm",
                        m.image,
                        pixel_spacing_mm=m.pixel_spacing_mm,
                        laterality="L",
                        view=view,
                    )
                t2 = time.perf_counter()
                gen.append(t1 - t0)
                write.append(t2 - t1)
            rows.append(
                {
                    "scale": scale,
                    "view": view,
                    "shape_px": list(m.image.shape),
                    "generate_s_median": round(statistics.median(gen), 3),
                    "generate_s_max": round(max(gen), 3),
                    "write_dicom_s_median": round(statistics.median(write), 3),
                    "repeats": args.repeats,
                }
            )
    print("| scale | view | shape (rows x cols) | generate s (median / max) | write DICOM s |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['scale']} | {r['view']} | {r['shape_px'][0]} x {r['shape_px'][1]} | "
            f"{r['generate_s_median']} / {r['generate_s_max']} | {r['write_dicom_s_median']} |"
        )
    payload = {
        "benchmark": "synthetic generator speed",
        "data": "synthetic",
        "machine": describe_machine(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, payload)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
