"""Detection quality on held-out synthetic test sets: the paper's tables and ablations.

Run: ``.venv/bin/python -m benchmarks.quality [--checkpoint bundle/models/model.pt] [--n 40]``.

The benchmark writes its own test sets (synthetic DICOM mammograms at the checkpoint's
profile, seeds that no training split uses): a general split and a small-lesion split
(every malignant finding < 10 mm). On both, with the given checkpoint:

* Table 2 (proposed vs single scale): 3 scales + WBF vs the full-resolution level alone (the
  same network; the paper's baseline was trained on one scale, see ``--baseline-checkpoint``);
* Table 3: each pyramid level alone, and the mean size of the lesions found only at that level;
* Figure 4 ablations: *resolution* (level 1.0 on images degraded to 0.25x detail and upsampled
  back vs true resolution), *scale* (level 1.0 alone vs 3 scales fused), *context* (level 0.25
  vs degraded level 1.0: the same resolution, 16x more context per tile);
* fusion: WBF vs NMS vs soft-NMS vs concatenation (the same per-level detections);
  tiled vs whole-image levels; tile overlap 0 vs 0.1; the last row/column of tiles trimmed at
  the level's border (default) vs shifted back inside it as whole tiles (SAHI's layout); tiles
  cropped to their breast part (default on CPU) vs whole tiles across the skin line.

Sensitivity at 0.15 / 0.2 / 0.3 false positives per image (hit: predicted box centre inside
the lesion box), bootstrap 95% intervals over images. Writes ``benchmarks/results/quality.json``,
``quality.md`` and FROC plots (``quality_*.png``). Data are synthetic: these numbers say how
the method behaves on the generator's lesions, nothing about clinical performance.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import describe_machine
from monai_smalldet.files import atomic_write, write_json_atomic

FPIS = (0.1, 0.15, 0.2, 0.3)
REPORT_FPIS = (0.15, 0.2, 0.3)
OP_FPI = 0.3  # operating point for "found only at this level"


def _predictions(detector: Any, items: list[dict], degrade: float | None = None) -> list[Any]:
    from monai_smalldet.transforms import DegradeResolution, LoadMammogram

    loader = LoadMammogram()
    degrader = DegradeResolution(degrade) if degrade else None
    outputs = []
    for item in items:
        image = loader(item["image"])
        if degrader is not None:
            image = degrader(image)
        outputs.append(detector.predict(image))
    return outputs


def _as_pred(detections: Any) -> dict[str, np.ndarray]:
    return {"box": detections.boxes, "label_scores": detections.scores}


def _score_at(result: Any, fpi: float) -> float:
    """Score threshold of the last operating point at or below ``fpi`` FPs per image."""
    keep = result.thresholds[(result.fpi <= fpi) & np.isfinite(result.thresholds)]
    return float(keep.min()) if keep.size else float("inf")


def _hits(pred: Any, boxes: np.ndarray, threshold: float) -> np.ndarray:
    """Which lesions a prediction above ``threshold`` hits (centre inside the lesion box)."""
    hit = np.zeros(len(boxes), bool)
    keep = pred.scores >= threshold
    if not keep.any() or not len(boxes):
        return hit
    b = pred.boxes[keep]
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    for j, (x1, y1, x2, y2) in enumerate(boxes):
        hit[j] = bool(np.any((cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2)))
    return hit


def evaluate(
    checkpoint: Path, items: list[dict], n_bootstrap: int, baseline: Path | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """All rows of one test split: ``({row name: FROCResult}, extra facts)``."""
    from monai_smalldet.fusion import get_fusion
    from monai_smalldet.inference import MultiScaleDetector
    from monai_smalldet.metrics import froc

    def score(preds: list[Any]) -> Any:
        return froc(preds, items, fpis=FPIS, n_bootstrap=n_bootstrap, seed=0)

    rows: dict[str, Any] = {}
    extra: dict[str, Any] = {"seconds": {}}
    detector = MultiScaleDetector.from_checkpoint(checkpoint, device="cpu")
    scales = detector.scales
    t0 = time.perf_counter()
    outs = _predictions(detector, items)
    extra["seconds"]["tiled"] = round(time.perf_counter() - t0, 1)
    hw = [o.image_size_hw for o in outs]
    rows["3 scales + WBF (proposed)"] = score([_as_pred(o.fused) for o in outs])
    for i, s in enumerate(scales):
        rows[f"scale {s:g}X alone"] = score([_as_pred(o.per_scale[i]) for o in outs])
    if baseline is not None:
        single = MultiScaleDetector.from_checkpoint(baseline, device="cpu", scales=(1.0,))
        rows["single-scale trained baseline"] = score(
            [_as_pred(o.fused) for o in _predictions(single, items)]
        )

    # Table 3: lesions found only at one level, at the operating point of that level
    only: dict[str, Any] = {}
    found_by_level = []
    for i, s in enumerate(scales):
        thr = _score_at(rows[f"scale {s:g}X alone"], OP_FPI)
        found_by_level.append(
            [
                _hits(o.per_scale[i], np.asarray(it["box"], np.float32).reshape(-1, 4), thr)
                for o, it in zip(outs, items, strict=True)
            ]
        )
    sizes = [np.asarray(it.get("lesion_size_mm", []), np.float64).reshape(-1) for it in items]
    for i, s in enumerate(scales):
        only_sizes = []
        for k in range(len(items)):
            others = np.zeros(len(sizes[k]), bool)
            for j in range(len(scales)):
                if j != i:
                    others |= found_by_level[j][k]
            only_sizes += sizes[k][found_by_level[i][k] & ~others].tolist()
        only[f"{s:g}X"] = {
            "lesions_found_only_here": len(only_sizes),
            "mean_size_mm": round(statistics.mean(only_sizes), 2) if only_sizes else None,
        }
    extra["found_only_at_level"] = only

    # fusion ablation on the same per-level detections
    for name in ("nms", "soft_nms", "concat"):
        fuse = get_fusion(name)
        rows[f"fusion: {name}"] = score(
            [_as_pred(fuse(o.per_scale, size)) for o, size in zip(outs, hw, strict=True)]
        )

    # tiled vs whole, overlap 0 vs 0.1
    t0 = time.perf_counter()
    whole = _predictions(MultiScaleDetector.from_checkpoint(checkpoint, device="cpu", mode="whole"), items)
    extra["seconds"]["whole"] = round(time.perf_counter() - t0, 1)
    rows["whole-image levels (no tiles)"] = score([_as_pred(o.fused) for o in whole])
    no_overlap = _predictions(
        MultiScaleDetector.from_checkpoint(checkpoint, device="cpu", overlap=0.0), items
    )
    rows["tiles without overlap"] = score([_as_pred(o.fused) for o in no_overlap])
    shifted = _predictions(
        MultiScaleDetector.from_checkpoint(
            checkpoint, device="cpu", tile_edge="shift", crop_tiles_to_breast=False
        ),
        items,
    )
    rows["whole tiles, last row/column shifted back (SAHI layout)"] = score(
        [_as_pred(o.fused) for o in shifted]
    )
    uncropped = _predictions(
        MultiScaleDetector.from_checkpoint(checkpoint, device="cpu", crop_tiles_to_breast=False), items
    )
    rows["tiles not cropped to the breast"] = score([_as_pred(o.fused) for o in uncropped])

    # resolution and context: level 1.0 on images degraded to 0.25x detail
    degraded = _predictions(
        MultiScaleDetector.from_checkpoint(checkpoint, device="cpu", scales=(1.0,)), items, degrade=0.25
    )
    rows["scale 1X on 0.25X-degraded images"] = score([_as_pred(o.fused) for o in degraded])
    extra["tiles_per_image"] = statistics.mean(sum(o.tiles_per_scale) for o in outs)
    return rows, extra


def _compact(value: Any) -> Any:
    """A FROC result's dict without its curves and pointwise bands (thousands of points): the
    reported sensitivities, intervals, CPM and counts stay; the PNGs show the curves."""
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items() if k not in ("curve", "fpi_grid", "lower", "upper")}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


ABLATIONS = {
    "resolution": ("scale 1X alone", "scale 1X on 0.25X-degraded images"),
    "scale": ("scale 1X alone", "3 scales + WBF (proposed)"),
    "context": ("scale 1X on 0.25X-degraded images", "scale 0.25X alone"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("bundle/models/model.pt"))
    parser.add_argument("--baseline-checkpoint", type=Path, help="a model trained on one scale (Table 2)")
    parser.add_argument("--n", type=int, default=40, help="images per test split")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    from monai_smalldet.data.synthetic import generate_dataset, load_datalist
    from monai_smalldet.metrics import froc_table, plot_froc
    from monai_smalldet.networks import load_checkpoint

    _, spec = load_checkpoint(args.checkpoint)
    scale = 0.07 / spec.pixel_spacing_mm  # the synthetic profile the model was trained at
    splits = {"general": (1000, False), "small (<10 mm)": (2000, True)}
    report: dict[str, Any] = {
        "benchmark": "detection quality, paper's Tables 2-3 and Figure 4 ablations",
        "data": "synthetic mammograms (DICOM MG), generated by this benchmark",
        "checkpoint": str(args.checkpoint),
        "baseline_checkpoint": None if args.baseline_checkpoint is None else str(args.baseline_checkpoint),
        "network": spec.to_dict(),
        "machine": describe_machine(),
        "fpis": list(REPORT_FPIS),
        "splits": {},
    }
    baseline = (
        f"; single-scale trained baseline `{args.baseline_checkpoint}` (1X only)"
        if args.baseline_checkpoint is not None
        else ""
    )
    command = f"python -m benchmarks.quality --n {args.n} --checkpoint {args.checkpoint}" + (
        f" --baseline-checkpoint {args.baseline_checkpoint}" if args.baseline_checkpoint is not None else ""
    )
    md = [
        "# Detection quality on synthetic data",
        "",
        "Synthetic mammograms only: nothing here is a clinical result. "
        f"Checkpoint `{args.checkpoint}`{baseline}; sensitivity (%) at false positives per image, "
        f"bootstrap 95% intervals over images. Produced by `{command}`.",
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for split, (seed, small) in splits.items():
            root = Path(tmp) / str(seed)
            generate_dataset(
                root,
                n_train=0,
                n_val=0,
                n_test=args.n,
                seed=seed,
                scale=scale,
                small_only=small,
                progress=False,
            )
            items = load_datalist(root / "datalist.json", "test")
            n_lesions = sum(len(it["box"]) for it in items)
            rows, extra = evaluate(args.checkpoint, items, args.bootstrap, args.baseline_checkpoint)
            slug = "small" if small else "general"
            plot_froc(
                {k: rows[k] for k in rows if k.startswith(("3 scales", "scale "))},
                args.out / f"quality_{slug}.png",
                title=f"FROC, synthetic {split} split ({len(items)} images, {n_lesions} lesions)",
                max_fpi=1.0,
            )
            report["splits"][split] = {
                "seed": seed,
                "scale": scale,
                "images": len(items),
                "lesions": n_lesions,
                "rows": {k: _compact(v.to_dict()) for k, v in rows.items()},
                "ablations": {
                    name: {
                        "a": a,
                        "b": b,
                        "sensitivity_at_0.3_a": rows[a].sensitivity_at(0.3),
                        "sensitivity_at_0.3_b": rows[b].sensitivity_at(0.3),
                    }
                    for name, (a, b) in ABLATIONS.items()
                },
                **extra,
            }
            md += [
                f"## {split} split: {len(items)} images, {n_lesions} malignant lesions (seed {seed}, scale {scale:g})",
                "",
                froc_table(rows, REPORT_FPIS),
                "",
                "Lesions found only at one level (at that level's 0.3 FPI threshold): "
                + ", ".join(
                    f"{lvl}: {v['lesions_found_only_here']} (mean {v['mean_size_mm']} mm)"
                    for lvl, v in extra["found_only_at_level"].items()
                ),
                "",
                f"![FROC](quality_{slug}.png)",
                "",
            ]
            print("\n".join(md[-8:]), flush=True)
    machine = report["machine"]
    md.append(f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, torch {machine.get('torch')}.")
    text = "\n".join(md) + "\n"
    atomic_write(args.out / "quality.md", lambda tmp: tmp.write_text(text))
    write_json_atomic(args.out / "quality.json", report, default=float)


if __name__ == "__main__":
    main()
