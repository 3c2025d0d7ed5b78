"""Detection quality of a checkpoint against a baseline, on the project's synthetic test splits.

Run: ``.venv/bin/python -m benchmarks.detection --checkpoint bundle/models/model.pt
[--baseline OLD.pt] [--n 240] [--data-dir DIR]``

Both test splits are written by the generator at the checkpoint's profile with seeds that no
training or validation split uses: *general* (seed 1000) and *small* (seed 2000, every malignant
finding < 10 mm), ``--n`` images each (reused from ``--data-dir`` when already there). Each
checkpoint runs once per image in fp32; from the same per-level detections the benchmark reads

* the checkpoint's own fusion (from its spec; the paper's WBF when it has none), the paper's WBF
  and each pyramid level alone: sensitivity at 0.1 / 0.2 / 0.3 false positives per image and
  CPM, bootstrap 95% intervals over images;
* at the 0.3-FPI operating point of the test split itself, sensitivity by lesion size
  (< 5, 5-10, >= 10 mm) and type, with Wilson 95% intervals, and where the false positives are
  (on benign findings or elsewhere);
* with the checkpoint's calibrated threshold (chosen on validation), the FPI and sensitivity
  it actually gives on test;
* against the baseline, paired on the same lesions at each one's own 0.3-FPI operating
  point: lesions only one finds, the exact McNemar p-value, and a bootstrap interval of the
  sensitivity difference (images resampled, both models together).

Writes ``detection.json`` and ``detection.md`` under ``--out``. Synthetic data only: the figures
say how the detector does on the generator's lesions, nothing about clinical performance.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import describe_machine
from benchmarks.overlap import mcnemar_p
from monai_smalldet.files import atomic_write, write_json_atomic

FPIS = (0.1, 0.2, 0.3)
OP_FPI = 0.3
SPLITS = {"general": (1000, False), "small": (2000, True)}
SIZE_BINS = (("<5mm", 0.0, 5.0), ("5-10mm", 5.0, 10.0), (">=10mm", 10.0, math.inf))


def _split_items(data_dir: Path, name: str, n: int, scale: float) -> list[dict]:
    from monai_smalldet.data.synthetic import generate_dataset, load_datalist

    seed, small = SPLITS[name]
    root = data_dir / f"test_{name}"
    datalist = root / "datalist.json"
    if not datalist.is_file() or len(load_datalist(datalist, "test")) < n:
        generate_dataset(
            root, n_train=0, n_val=0, n_test=n, seed=seed, scale=scale, small_only=small, progress=False
        )
    return load_datalist(datalist, "test")[:n]


def _outputs(checkpoint: Path, items: list[dict], cache: Path | None) -> tuple[list[Any], Any, float]:
    """Per-image detector outputs (fp32, every level kept), the detector, seconds taken."""
    from monai_smalldet.inference import MultiScaleDetector
    from monai_smalldet.transforms import LoadMammogram

    detector = MultiScaleDetector.from_checkpoint(checkpoint, device="cpu", precision="fp32")
    if cache is not None and cache.is_file():
        return pickle.loads(cache.read_bytes()), detector, float("nan")
    loader = LoadMammogram()
    t0 = time.perf_counter()
    outs = [detector.predict(loader(it["image"])) for it in items]
    seconds = time.perf_counter() - t0
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(pickle.dumps(outs))
    return outs, detector, seconds


def _fused(outs: list[Any], name: str, kwargs: dict) -> list[dict]:
    from monai_smalldet.fusion import get_fusion

    fuse = get_fusion(name, **kwargs)
    return [_pred(fuse(o.per_scale, o.image_size_hw)) for o in outs]


def _pred(d: Any) -> dict:
    return {"box": d.boxes, "label_scores": d.scores}


def _centres_in(pred: dict, threshold: float, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(which of ``boxes`` a prediction >= threshold hits, which predictions hit none of them)."""
    keep = np.asarray(pred["label_scores"]) >= threshold
    b = np.asarray(pred["box"], np.float64).reshape(-1, 4)[keep]
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    inside = (
        (cx[None] >= boxes[:, :1])
        & (cx[None] <= boxes[:, 2:3])
        & (cy[None] >= boxes[:, 1:2])
        & (cy[None] <= boxes[:, 3:4])
    )
    return inside.any(1), ~inside.any(0)


def _wilson(k: int, n: int) -> list[float] | None:
    if n == 0:
        return None
    p, z = k / n, 1.959964
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def _lesion_table(preds: list[dict], items: list[dict], threshold: float) -> tuple[dict, np.ndarray, dict]:
    """Per-stratum hits at ``threshold``, the per-lesion hit vector, and where the FPs are."""
    hits, sizes, types = [], [], []
    fp_benign = fp_other = 0
    for pred, it in zip(preds, items, strict=True):
        gt = np.asarray(it.get("box") or np.zeros((0, 4)), np.float64).reshape(-1, 4)
        hit, _ = _centres_in(pred, threshold, gt)
        hits += hit.tolist()
        sizes += list(it.get("lesion_size_mm") or [math.nan] * len(gt))
        types += list(it.get("lesion_type") or [None] * len(gt))
        _, no_lesion = _centres_in(pred, threshold, gt)
        benign = np.asarray(it.get("benign_box") or np.zeros((0, 4)), np.float64).reshape(-1, 4)
        keep = np.asarray(pred["label_scores"]) >= threshold
        fp_pred = {
            "box": np.asarray(pred["box"]).reshape(-1, 4)[keep][no_lesion],
            "label_scores": np.ones(int(no_lesion.sum())),
        }
        _, off_benign = _centres_in(fp_pred, 0.5, benign)
        fp_benign += int((~off_benign).sum())
        fp_other += int(off_benign.sum())
    hits_a, sizes_a = np.asarray(hits, bool), np.asarray(sizes, np.float64)
    table = {}
    for label, lo, hi in SIZE_BINS:
        m = (sizes_a >= lo) & (sizes_a < hi)
        table[f"size {label}"] = {
            "found": int(hits_a[m].sum()),
            "lesions": int(m.sum()),
            "ci95": _wilson(int(hits_a[m].sum()), int(m.sum())),
        }
    for t in sorted({t for t in types if t}):
        m = np.asarray([x == t for x in types])
        table[f"type {t}"] = {
            "found": int(hits_a[m].sum()),
            "lesions": int(m.sum()),
            "ci95": _wilson(int(hits_a[m].sum()), int(m.sum())),
        }
    fps = {"on_benign_findings": fp_benign, "elsewhere": fp_other}
    return table, hits_a, fps


def _row(result: Any) -> dict:
    b = result.bootstrap
    out = {f"sensitivity@{f:g}": round(result.sensitivity_at(f), 4) for f in FPIS}
    out["cpm"] = round(result.cpm, 4)
    if b is not None:
        for f in FPIS:
            out[f"ci95@{f:g}"] = [round(float(v), 4) for v in b.sensitivity_at_fpi[f]]
        out["cpm_ci95"] = [round(float(v), 4) for v in b.cpm]
    return out


def _paired_difference(a: list[dict], b: list[dict], items: list[dict], n_boot: int) -> dict:
    """Bootstrap (images resampled) of sensitivity@0.3 of a minus b, each read at its own 0.3 FPI."""
    from monai_smalldet.metrics import froc

    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(items), len(items))
        sub = [items[i] for i in idx]
        ra = froc([a[i] for i in idx], sub, fpis=(OP_FPI,), n_bootstrap=0, stratify=False)
        rb = froc([b[i] for i in idx], sub, fpis=(OP_FPI,), n_bootstrap=0, stratify=False)
        diffs.append(ra.sensitivity_at(OP_FPI) - rb.sensitivity_at(OP_FPI))
    lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
    return {"ci95": [round(float(lo), 4), round(float(hi), 4)], "n_resamples": n_boot}


def evaluate_split(args: argparse.Namespace, name: str, items: list[dict]) -> dict[str, Any]:
    from monai_smalldet.engines.calibrate import threshold_at_fpi
    from monai_smalldet.metrics import froc

    def score(preds: list[dict]) -> Any:
        return froc(preds, items, fpis=FPIS, n_bootstrap=args.bootstrap, seed=0, stratify=False)

    report: dict[str, Any] = {
        "images": len(items),
        "lesions": sum(len(it["box"]) for it in items),
        "models": {},
    }
    own_preds: dict[str, list[dict]] = {}
    for role, ckpt in (("model", args.checkpoint), ("baseline", args.baseline)):
        if ckpt is None:
            continue
        digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()[:16]
        cache = args.data_dir / "outputs" / f"{ckpt.stem}_{digest}_{name}_{len(items)}.pkl"
        outs, detector, seconds = _outputs(ckpt, items, cache if args.cache else None)
        spec = detector.spec
        rows = {}
        own = _fused(outs, detector.fusion_name, detector.fusion_kwargs)
        rows["own fusion"] = _row(score(own))
        rows["paper WBF (avg, iou 0.55)"] = _row(score(_fused(outs, "wbf", {})))
        for i, s in enumerate(detector.scales):
            rows[f"{s:g}X alone"] = _row(score([_pred(o.per_scale[i]) for o in outs]))
        result = froc(own, items, fpis=(OP_FPI,), n_bootstrap=0, stratify=False)
        thr = threshold_at_fpi(result, OP_FPI)
        table, hits, fps = _lesion_table(own, items, thr)
        model_report = {
            "checkpoint": str(ckpt),
            "fusion": {"name": detector.fusion_name, "kwargs": detector.fusion_kwargs},
            "seconds": None if math.isnan(seconds) else round(seconds, 1),
            "rows": rows,
            "at_test_operating_point": {"score_threshold": thr, "strata": table, "false_positives": fps},
        }
        if detector.score_threshold is not None:
            calibrated = detector.score_threshold
            n_fp = sum(
                int(_centres_in(p, calibrated, np.asarray(it["box"] or np.zeros((0, 4))))[1].sum())
                for p, it in zip(own, items, strict=True)
            )
            found = sum(
                int(_centres_in(p, calibrated, np.asarray(it["box"] or np.zeros((0, 4))))[0].sum())
                for p, it in zip(own, items, strict=True)
            )
            model_report["at_calibrated_threshold"] = {
                "score_threshold": calibrated,
                "fpi": round(n_fp / len(items), 4),
                "sensitivity": round(found / max(report["lesions"], 1), 4),
                "calibrated_on": spec.operating_point,
            }
        model_report["_hits"] = hits
        report["models"][role] = model_report
        own_preds[role] = own
    if "baseline" in report["models"]:
        a, b = report["models"]["model"].pop("_hits"), report["models"]["baseline"].pop("_hits")
        only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
        report["paired"] = {
            "only_model": only_a,
            "only_baseline": only_b,
            "both": int((a & b).sum()),
            "mcnemar_p": float(f"{mcnemar_p(only_a, only_b):.3g}"),
            "difference_sensitivity@0.3": _paired_difference(
                own_preds["model"], own_preds["baseline"], items, args.paired_bootstrap
            ),
        }
    else:
        report["models"]["model"].pop("_hits")
    return report


def _markdown(report: dict) -> list[str]:
    md = [
        "# Detection on synthetic test splits",
        "",
        report["note"],
        "",
        f"Command: `{report['command']}`",
        "",
    ]
    for name, split in report["splits"].items():
        md += [f"## {name} split: {split['images']} images, {split['lesions']} malignant lesions", ""]
        md += [
            "| model | rows | sens@0.1 | sens@0.2 | sens@0.3 [95% CI] | CPM |",
            "|---|---|---|---|---|---|",
        ]
        for role, m in split["models"].items():
            for row_name, r in m["rows"].items():
                ci = r.get("ci95@0.3")
                ci_s = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
                md.append(
                    f"| {role} | {row_name} | {r['sensitivity@0.1']:.3f} | {r['sensitivity@0.2']:.3f} | {r['sensitivity@0.3']:.3f}{ci_s} | {r['cpm']:.3f} |"
                )
        md.append("")
        for role, m in split["models"].items():
            op = m["at_test_operating_point"]
            md.append(
                f"{role} ({m['fusion']['name']} {m['fusion']['kwargs']}) at 0.3 FPI (score >= {op['score_threshold']:.4f}): "
                + ", ".join(f"{k} {v['found']}/{v['lesions']}" for k, v in op["strata"].items())
                + f"; false positives on benign findings {op['false_positives']['on_benign_findings']}, elsewhere {op['false_positives']['elsewhere']}."
            )
            if "at_calibrated_threshold" in m:
                c = m["at_calibrated_threshold"]
                md.append(
                    f"  With the validation threshold {c['score_threshold']:.4f}: {c['fpi']:.3f} FPI, sensitivity {c['sensitivity']:.3f}."
                )
        if "paired" in split:
            p = split["paired"]
            md.append(
                f"\nPaired (same lesions, each at its own 0.3 FPI): only model {p['only_model']}, only baseline {p['only_baseline']}, both {p['both']}; McNemar p = {p['mcnemar_p']:.3g}; difference in sensitivity@0.3, bootstrap 95% CI {p['difference_sensitivity@0.3']['ci95']}."
            )
        md.append("")
    return md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("bundle/models/model.pt"))
    parser.add_argument("--baseline", type=Path, help="checkpoint compared with, paired on the same lesions")
    parser.add_argument("--n", type=int, default=240, help="images per test split")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--data-dir", type=Path, default=Path(".cache/benchmark_data"))
    parser.add_argument(
        "--cache", action="store_true", help="keep and reuse per-image outputs under --data-dir"
    )
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--paired-bootstrap", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="detection", help="base name of the result files")
    args = parser.parse_args()

    from monai_smalldet.networks import load_checkpoint

    _, spec = load_checkpoint(args.checkpoint)
    scale = 0.07 / spec.pixel_spacing_mm
    command = "python -m benchmarks.detection " + " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in (("checkpoint", args.checkpoint), ("baseline", args.baseline), ("n", args.n))
        if v is not None
    )
    report: dict[str, Any] = {
        "benchmark": "detection quality on synthetic test splits",
        "note": "Synthetic mammograms only: nothing here is a clinical result. fp32 on CPU.",
        "command": command,
        "machine": describe_machine(),
        "network": spec.to_dict(),
        "splits": {},
    }
    for name in args.splits:
        items = _split_items(args.data_dir, name, args.n, scale)
        report["splits"][name] = evaluate_split(args, name, items)
        print(
            json.dumps(
                {name: {r: m["rows"]["own fusion"] for r, m in report["splits"][name]["models"].items()}}
            )
        )
    write_json_atomic(args.out / f"{args.name}.json", report)
    text = "\n".join(_markdown(report)) + "\n"
    atomic_write(args.out / f"{args.name}.md", lambda tmp: tmp.write_text(text))


if __name__ == "__main__":
    main()
