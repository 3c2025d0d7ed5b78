"""View (CC/MLO) and laterality from the pixels: accuracy on synthetic mammograms.

Run: ``.venv/bin/python -m benchmarks.view [--n 400] [--n-domain 200]``

:func:`~monai_smalldet.transforms.estimate_view` and
:func:`~monai_smalldet.transforms.estimate_laterality` on the validation split of seed 3000
(no other benchmark or test uses it), generated at scale 0.25 with the default generator
(20 % MONOCHROME1), written as DICOM MG and read back with the project's reader (VOI window
applied, MONOCHROME1 inverted), exactly as the detector reads a file. Splits hold whole
four-view studies, so both views and both lateralities are balanced. The same is done for
the detector profiles ``b`` and ``c`` and the clustered-lumpy texture (``--n-domain`` images
each). ``estimate_view`` is given the pixel-estimated laterality, as the detector does.
Reports accuracy with Wilson 95% intervals, per view and laterality, and the smallest margin
of the view rule on each side (the pectoral contrast of the weakest MLO and of the strongest
CC among the images whose corner triangle is mostly breast, where the contrast decides). Writes ``benchmarks/results/view.json`` and ``view.md``. Synthetic data only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.detection import _wilson
from benchmarks.machine import describe_machine
from monai_smalldet.files import atomic_write, write_json_atomic

SEED = 3000
SPLIT = "validation"
SCALE = 0.25


def _rate(k: int, n: int) -> dict[str, Any]:
    return {"correct": k, "n": n, "accuracy": round(k / n, 4) if n else None, "ci95": _wilson(k, n)}


def _domains() -> dict[str, Any]:
    from monai_smalldet.data.synthetic import DETECTOR_PROFILES, SynthConfig

    return {
        "default (profile a, power-law texture)": SynthConfig(),
        "profile b (0.1 mm, 14 bit, MONOCHROME1, log curve)": SynthConfig(**DETECTOR_PROFILES["b"]),
        "profile c (0.05 mm, 16 bit, sigmoid curve)": SynthConfig(**DETECTOR_PROFILES["c"]),
        "clustered-lumpy texture": SynthConfig(texture="clustered_lumpy"),
    }


def _measure(root: Path, n: int, config: Any) -> list[dict[str, Any]]:
    """Generate ``n`` images of ``config``, read each back, estimate view and laterality."""
    from monai_smalldet.data.dicom import read_mammogram
    from monai_smalldet.data.synthetic import generate_dataset, load_datalist
    from monai_smalldet.transforms import estimate_laterality, estimate_view
    from monai_smalldet.transforms.view import pectoral_evidence

    generate_dataset(
        root, n_train=0, n_val=n, n_test=0, seed=SEED, scale=SCALE, config=config, progress=False
    )
    rows = []
    for item in load_datalist(root / "datalist.json", SPLIT):
        image, meta = read_mammogram(item["image"])
        img = image[None]
        t0 = time.perf_counter()
        side = estimate_laterality(img)
        view = estimate_view(img, side)
        seconds = time.perf_counter() - t0
        evidence = pectoral_evidence(img, side)
        rows.append(
            {
                "view": item["view"],
                "laterality": item["laterality"],
                "photometric": meta.photometric,
                "view_pixels": view,
                "laterality_pixels": side,
                "contrast": evidence.contrast,
                "coverage": evidence.coverage,
                "seconds": seconds,
            }
        )
    return rows


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy overall, per (laterality, view) and per photometric; the view rule's margins."""
    out: dict[str, Any] = {
        "view": _rate(sum(r["view"] == r["view_pixels"] for r in rows), len(rows)),
        "laterality": _rate(sum(r["laterality"] == r["laterality_pixels"] for r in rows), len(rows)),
        "by_slot": {},
        "by_photometric": {},
    }
    for side in ("L", "R"):
        for view in ("CC", "MLO"):
            sel = [r for r in rows if r["laterality"] == side and r["view"] == view]
            out["by_slot"][f"{side} {view}"] = {
                "view": _rate(sum(r["view"] == r["view_pixels"] for r in sel), len(sel)),
                "laterality": _rate(sum(r["laterality"] == r["laterality_pixels"] for r in sel), len(sel)),
            }
    for photometric in sorted({r["photometric"] for r in rows}):
        sel = [r for r in rows if r["photometric"] == photometric]
        out["by_photometric"][photometric] = {
            "view": _rate(sum(r["view"] == r["view_pixels"] for r in sel), len(sel)),
            "laterality": _rate(sum(r["laterality"] == r["laterality_pixels"] for r in sel), len(sel)),
        }
    # the contrast decides only where the corner triangle is mostly breast (coverage >= 0.5)
    covered = [r for r in rows if r["coverage"] >= 0.5]
    mlo = [r["contrast"] for r in covered if r["view"] == "MLO"]
    cc = [r["contrast"] for r in covered if r["view"] == "CC"]
    out["pectoral_contrast"] = {
        "weakest_mlo": round(min(mlo), 4) if mlo else None,
        "strongest_cc": round(max(cc), 4) if cc else None,
        "mlo_covered": f"{len(mlo)}/{sum(r['view'] == 'MLO' for r in rows)}",
        "cc_covered": f"{len(cc)}/{sum(r['view'] == 'CC' for r in rows)}",
        "threshold": 0.1,
    }
    out["seconds_per_image"] = round(sum(r["seconds"] for r in rows) / max(len(rows), 1), 5)
    return out


def _fmt(rate: dict[str, Any]) -> str:
    lo, hi = rate["ci95"]
    return f"{rate['correct']}/{rate['n']} = {rate['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]"


def _markdown(report: dict[str, Any], command: str) -> str:
    lines = [
        "# View (CC/MLO) and laterality from the pixels",
        "",
        "Synthetic mammograms only: nothing here is a clinical result. "
        f"{report['data']}. Accuracy with Wilson 95% intervals. Produced by `{command}`.",
        "",
        "| data | images | view | laterality | weakest MLO contrast | strongest CC contrast (CCs with a "
        "covered corner) |",
        "|---|---:|---|---|---:|---:|",
    ]
    for name, s in report["domains"].items():
        c = s["pectoral_contrast"]
        lines.append(
            f"| {name} | {s['view']['n']} | {_fmt(s['view'])} | {_fmt(s['laterality'])} | "
            f"{c['weakest_mlo']} | {c['strongest_cc']} ({c['cc_covered']}) |"
        )
    main = next(iter(report["domains"].values()))
    lines += ["", "Default domain by view slot and by stored photometric interpretation:", ""]
    lines += ["| slot | view | laterality |", "|---|---|---|"]
    for slot, s in main["by_slot"].items():
        lines.append(f"| {slot} | {_fmt(s['view'])} | {_fmt(s['laterality'])} |")
    for photometric, s in main["by_photometric"].items():
        lines.append(f"| {photometric} (as stored) | {_fmt(s['view'])} | {_fmt(s['laterality'])} |")
    lines += [
        "",
        "The contrast is (triangle mean - median of the rest of the breast) / intensity span; the rule "
        "calls MLO at >= 0.1 with the triangle at least half breast.",
        "",
        f"Machine: `{report['machine']}`",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="images of the default domain (whole studies)")
    parser.add_argument("--n-domain", type=int, default=200, help="images of each other domain")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    domains: dict[str, Any] = {}
    for i, (name, config) in enumerate(_domains().items()):
        n = args.n if i == 0 else args.n_domain
        with tempfile.TemporaryDirectory() as tmp:
            rows = _measure(Path(tmp), n, config)
        domains[name] = _summary(rows)
        print(f"{name}: view {_fmt(domains[name]['view'])}, laterality {_fmt(domains[name]['laterality'])}")
    report = {
        "benchmark": "view (CC/MLO) and laterality estimated from the pixels",
        "data": (
            f"synthetic {SPLIT} split of seed {SEED}, scale {SCALE:g}, written as DICOM MG and read back "
            f"with the project's reader; {args.n} images of the default generator and {args.n_domain} of "
            "each other domain, whole four-view studies"
        ),
        "machine": describe_machine(),
        "domains": domains,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "view.json", report)
    command = f"python -m benchmarks.view --n {args.n} --n-domain {args.n_domain}"
    text = _markdown(report, command)
    atomic_write(args.out / "view.md", lambda tmp: tmp.write_text(text), suffix=".md")
    print(text)


if __name__ == "__main__":
    main()
