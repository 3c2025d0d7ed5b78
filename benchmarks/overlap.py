"""Tile overlap: sensitivity against the pixels it costs, lesion by lesion.

Run: ``.venv/bin/python -m benchmarks.overlap [--n 120] [--overlaps 0 0.05 0.1 0.2]``

The shipped checkpoint on one synthetic test split that no other benchmark uses (seed 3000,
at the scale the model was trained at), once per tile overlap, everything else the default.
For each overlap: the pixels the network computed per image (in whole tiles' worth), FROC
sensitivity at 0.1 / 0.2 / 0.3 false positives per image with bootstrap 95% intervals, and a
paired comparison with the default overlap (0.1) at each one's own 0.3-FPI operating point:
the lesions only one of the two finds, and the exact two-sided McNemar p-value of that split.
Writes ``benchmarks/results/overlap.json`` and ``overlap.md``. Synthetic data: the figures
compare tile layouts of one pipeline, nothing about clinical performance.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import describe_machine
from benchmarks.quality import OP_FPI, _as_pred, _hits, _predictions, _score_at
from monai_smalldet.files import atomic_write, write_json_atomic

FPIS = (0.1, 0.2, 0.3)
DEFAULT = 0.1


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value of ``only_a`` vs ``only_b`` discordant lesions."""
    from scipy.stats import binomtest

    n = only_a + only_b
    return 1.0 if n == 0 else float(binomtest(only_a, n, 0.5).pvalue)


class _PixelCounter:
    """Wraps a detector's runner; counts the input pixels it is given."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.pixels = 0

    def __call__(self, x: Any, **kwargs: Any) -> Any:
        self.pixels += int(x.numel())
        return self.runner(x, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("bundle/models/model.pt"))
    parser.add_argument("--n", type=int, default=120, help="test images")
    parser.add_argument("--overlaps", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2])
    parser.add_argument("--seed", type=int, default=3000)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    overlaps = sorted(set(args.overlaps) | {DEFAULT})

    from monai_smalldet.data.synthetic import generate_dataset, load_datalist
    from monai_smalldet.inference import MultiScaleDetector
    from monai_smalldet.metrics import froc, froc_table
    from monai_smalldet.networks import load_checkpoint

    _, spec = load_checkpoint(args.checkpoint)
    scale = 0.07 / spec.pixel_spacing_mm
    results: dict[float, Any] = {}
    hits: dict[float, np.ndarray] = {}
    pixels: dict[float, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(
            Path(tmp), n_train=0, n_val=0, n_test=args.n, seed=args.seed, scale=scale, progress=False
        )
        items = load_datalist(Path(tmp) / "datalist.json", "test")
        for overlap in overlaps:
            detector = MultiScaleDetector.from_checkpoint(args.checkpoint, device="cpu", overlap=overlap)
            counter = _PixelCounter(detector.runner)
            detector.runner = counter
            outs = _predictions(detector, items)
            preds = [_as_pred(o.fused) for o in outs]
            results[overlap] = froc(preds, items, fpis=FPIS, n_bootstrap=args.bootstrap, seed=0)
            threshold = _score_at(results[overlap], OP_FPI)
            hits[overlap] = np.concatenate(
                [
                    _hits(o.fused, np.asarray(it["box"], np.float32).reshape(-1, 4), threshold)
                    for o, it in zip(outs, items, strict=True)
                ]
            )
            pixels[overlap] = counter.pixels / spec.tile_size_px**2 / len(items)
            print(f"overlap {overlap:g}: {pixels[overlap]:.2f} tiles' worth per image", flush=True)

    rows = {}
    for overlap in overlaps:
        only_here = int(np.sum(hits[overlap] & ~hits[DEFAULT]))
        only_default = int(np.sum(hits[DEFAULT] & ~hits[overlap]))
        rows[f"{overlap:g}"] = {
            "tile_equivalents_per_image": round(pixels[overlap], 3),
            "pixels_vs_default": round(pixels[overlap] / pixels[DEFAULT], 3),
            "lesions_hit_at_0.3_fpi": int(hits[overlap].sum()),
            "only_this_overlap_hits": only_here,
            "only_default_hits": only_default,
            "mcnemar_p_vs_default": float(f"{mcnemar_p(only_here, only_default):.3g}"),
            "froc": {
                "sensitivity_at_fpi": {str(k): v for k, v in results[overlap].sensitivity_at_fpi.items()},
                "cpm": results[overlap].cpm,
                "bootstrap": results[overlap].bootstrap.to_dict() if results[overlap].bootstrap else None,
            },
        }
    n_lesions = int(len(hits[DEFAULT]))
    report = {
        "benchmark": "tile overlap: sensitivity vs pixels computed",
        "data": f"synthetic test split, seed {args.seed}, {len(items)} images, {n_lesions} lesions, scale {scale:g}",
        "checkpoint": str(args.checkpoint),
        "tile_size_px": spec.tile_size_px,
        "machine": describe_machine(),
        "default_overlap": DEFAULT,
        "operating_point_fpi": OP_FPI,
        "overlaps": rows,
    }
    command = f"python -m benchmarks.overlap --n {args.n} --checkpoint {args.checkpoint}"
    md = [
        "# Tile overlap: sensitivity vs cost on synthetic data",
        "",
        "Synthetic mammograms only: nothing here is a clinical result. "
        f"Checkpoint `{args.checkpoint}` ({spec.tile_size_px} px tiles) on {len(items)} images with "
        f"{n_lesions} lesions (seed {args.seed}); bootstrap 95% intervals over images. Produced by "
        f"`{command}`.",
        "",
        froc_table({f"overlap {o:g}": results[o] for o in overlaps}),
        "",
        f"| overlap | whole tiles' pixels / image | vs {DEFAULT:g} | lesions hit at {OP_FPI:g} FPI "
        f"| hit only at this overlap | hit only at {DEFAULT:g} | McNemar p |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, row in rows.items():
        md.append(
            f"| {key} | {row['tile_equivalents_per_image']:.2f} | {row['pixels_vs_default']:.3f} | "
            f"{row['lesions_hit_at_0.3_fpi']} | {row['only_this_overlap_hits']} | "
            f"{row['only_default_hits']} | {row['mcnemar_p_vs_default']:.3g} |"
        )
    write_json_atomic(args.out / "overlap.json", report)
    text = "\n".join(md) + "\n"
    atomic_write(args.out / "overlap.md", lambda tmp: tmp.write_text(text))
    print("\n".join(md))


if __name__ == "__main__":
    main()
