"""Generalisation beyond one texture and one detector: training on a mix, leave-one-domain-out.

Run (training is resumable: a finished arm is skipped)::

    .venv/bin/python -m benchmarks.domains train --steps 900
    .venv/bin/python -m benchmarks.domains evaluate --n 200

Domains (synthetic generator, quick profile scale 0.25; see ``monai_smalldet.data.synthetic``):

* ``A``: power-law parenchyma, detector profile ``a`` (0.07 mm, 12 bits, linear): the domain
  of the shipped model's training data;
* ``lumpy``: the independent clustered-lumpy parenchyma model, profile ``a``;
* ``B``: power-law parenchyma, profile ``b`` (0.1 mm, 14 bits, MONOCHROME1, log curve);
* ``C``: power-law parenchyma, profile ``c`` (0.05 mm, 16 bits, MONOCHROME2, sigmoid curve).

Arms, each fine-tuned from the shipped model (``bundle/models/model.pt``, trained on ``A``
only) with the bundle's own ``train.yaml``, the same number of optimiser steps, tiles per
step and training images (1,200):

* ``mix``: 300 images from each of the four domains;
* ``without <D>`` for each new domain D: 400 images from each of the three others.

Evaluated in fp32 on a test split of ``--n`` images per domain (its own seed; lesion mix of
the general split), WBF ``conf_type="max"``, IoU 0.3 (the fusion the bundle validated), each
model at its own 0.3-FPI point on that split. For each new domain: the shipped model (never
saw it), ``without <D>`` (trained on a mix without it) and ``mix`` (trained with it), paired
per lesion (exact McNemar, bootstrap 95% interval of the difference over images). On ``A``:
the shipped model against ``mix`` (what the mix costs or gains at home). Writes
``domains.json`` and ``domains.md`` under ``--out``. Synthetic data only: nothing here is a
clinical result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.ablation import VALIDATED_FUSION, _bootstrap_difference, _hits, train_with_bundle
from benchmarks.detection import _outputs, _pred
from benchmarks.machine import describe_machine
from benchmarks.overlap import mcnemar_p
from monai_smalldet.files import atomic_write, write_json_atomic

SHIPPED = Path("bundle/models/model.pt")
DOMAINS: dict[str, dict[str, Any]] = {
    "A": {},
    "lumpy": {"texture": "clustered_lumpy"},
    "B": {"profile": "b"},
    "C": {"profile": "c"},
}
NEW_DOMAINS = ("lumpy", "B", "C")
TRAIN_SEED = {name: 3000 + k for k, name in enumerate(DOMAINS)}
TEST_SEED = {name: 4000 + k for k, name in enumerate(DOMAINS)}
TRAIN_IMAGES = 1200


def domain_config(name: str) -> Any:
    """The generator's :class:`SynthConfig` of one domain."""
    from monai_smalldet.data.synthetic import DETECTOR_PROFILES, SynthConfig

    spec = dict(DOMAINS[name])
    profile = spec.pop("profile", "a")
    return replace(SynthConfig(**DETECTOR_PROFILES[profile]), **spec)


def _domain_data(data_dir: Path, name: str, split: str, n: int) -> list[dict]:
    """The first ``n`` items of one domain's training or test split (written when missing)."""
    from monai_smalldet.data.synthetic import generate_dataset, load_datalist

    training = split in ("training", "validation")  # one generated training folder holds both
    # absolute: the mix datalists live in another folder and name these images from there
    root = (data_dir / f"{'train' if training else 'test'}_{name}").absolute()
    datalist = root / "datalist.json"
    if not datalist.is_file() or len(load_datalist(datalist, split)) < n:
        generate_dataset(
            root,
            n_train=n if training else 0,
            n_val=4 if training else 0,
            n_test=0 if training else n,
            seed=(TRAIN_SEED if training else TEST_SEED)[name],
            scale=0.25,
            config=domain_config(name),
            workers=2,
            progress=False,
        )
    return load_datalist(datalist, split)[:n]


def arms() -> dict[str, list[str]]:
    """Each arm's training domains."""
    out = {"mix": list(DOMAINS)}
    out.update({f"without {d}": [x for x in DOMAINS if x != d] for d in NEW_DOMAINS})
    return out


def _mix_dataset(root: Path, data_dir: Path, arm: str, domains: list[str]) -> Path:
    """A folder whose datalist.json holds the arm's training images (absolute paths)."""
    per_domain = TRAIN_IMAGES // len(domains)
    training, validation = [], []
    for name in domains:
        training += _domain_data(data_dir, name, "training", per_domain)
        validation += _domain_data(data_dir, name, "validation", 4)[:1]
    folder = root / arm.replace(" ", "_") / "data"
    write_json_atomic(folder / "datalist.json", {"training": training, "validation": validation, "test": []})
    return folder


def train(args: argparse.Namespace) -> None:
    for name in DOMAINS:  # the largest share any arm takes, written once
        _domain_data(args.data_dir, name, "training", TRAIN_IMAGES // (len(DOMAINS) - 1))
    for arm, domains in arms().items():
        print(f"training {arm}: {domains}", flush=True)
        dataset = _mix_dataset(args.root, args.data_dir, arm, domains)
        record = {"arm": arm, "domains": domains, "init_checkpoint": str(SHIPPED)}
        out = args.root / arm.replace(" ", "_")
        train_with_bundle(out, dataset, args.seed, args.steps, {"init_checkpoint": str(SHIPPED)}, record)


def _model_preds(args: argparse.Namespace, model: str, domain: str, items: list[dict]) -> list[dict]:
    from monai_smalldet.fusion import get_fusion

    ckpt = SHIPPED if model == "shipped" else args.root / model.replace(" ", "_") / "model_final.pt"
    cache = args.data_dir / "outputs" / f"{model.replace(' ', '_')}_{domain}_{len(items)}.pkl"
    outs, _, _ = _outputs(ckpt, items, cache)
    fuse = get_fusion(VALIDATED_FUSION[0], **VALIDATED_FUSION[1])
    return [_pred(fuse(o.per_scale, o.image_size_hw)) for o in outs]


def _paired(
    hits: dict[str, np.ndarray], a: str, b: str, image_of_lesion: np.ndarray, n_images: int, n_boot: int
) -> dict:
    only_a, only_b = int((hits[a] & ~hits[b]).sum()), int((hits[b] & ~hits[a]).sum())
    return {
        "a": a,
        "b": b,
        "only_a": only_a,
        "only_b": only_b,
        "mcnemar_p": float(f"{mcnemar_p(only_a, only_b):.3g}"),  # significant digits: p can be 1e-11
        "difference": round(float(hits[a].mean() - hits[b].mean()), 4),
        "difference_ci95": _bootstrap_difference([hits[a]], [hits[b]], image_of_lesion, n_images, n_boot),
    }


def evaluate_domain(args: argparse.Namespace, domain: str) -> dict[str, Any]:
    items = _domain_data(args.data_dir, domain, "test", args.n)
    image_of_lesion = np.concatenate([np.full(len(it["box"]), i) for i, it in enumerate(items)])
    models = ["shipped", "mix"] if domain == "A" else ["shipped", f"without {domain}", "mix"]
    hits, cpm = {}, {}
    for model in models:
        hits[model], cpm[model] = _hits(_model_preds(args, model, domain, items), items)
    pairs = (
        [("mix", "shipped")]
        if domain == "A"
        else [("mix", f"without {domain}"), (f"without {domain}", "shipped")]
    )
    return {
        "images": len(items),
        "lesions": int(image_of_lesion.size),
        "rows": {
            m: {
                "sensitivity@0.3": round(float(hits[m].mean()), 4),
                "cpm": round(cpm[m], 4),
                "found": int(hits[m].sum()),
            }
            for m in models
        },
        "paired": [_paired(hits, a, b, image_of_lesion, len(items), args.bootstrap) for a, b in pairs],
    }


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "benchmark": "training on a domain mix, leave-one-domain-out (synthetic data)",
        "note": "Synthetic mammograms only: nothing here is a clinical result. fp32 on CPU.",
        "command": "python -m benchmarks.domains evaluate " + " ".join(sys.argv[2:]),
        "machine": describe_machine(),
        "domains": {
            d: {"config": DOMAINS[d], "train_seed": TRAIN_SEED[d], "test_seed": TEST_SEED[d]} for d in DOMAINS
        },
        "fusion": {"name": VALIDATED_FUSION[0], "kwargs": VALIDATED_FUSION[1]},
        "runs": [
            json.loads((args.root / arm.replace(" ", "_") / "ablation_run.json").read_text())
            for arm in arms()
        ],
        "test": {},
    }
    for domain in DOMAINS:
        report["test"][domain] = evaluate_domain(args, domain)
        print(json.dumps({domain: report["test"][domain]["rows"]}), flush=True)
    return report


def _markdown(report: dict) -> str:
    run = report["runs"][0]
    md = [
        "# Training on a domain mix, leave-one-domain-out (synthetic data)",
        "",
        report["note"],
        "",
        f"Command: `{report['command']}`; training: `python -m benchmarks.domains train`, every arm fine-tuned "
        f"from the shipped model for {run['iterations']} steps x {run['tiles_per_step']} tiles on {TRAIN_IMAGES} "
        "images. Each model read at its own 0.3-FPI point on each test split; WBF max, IoU 0.3.",
        "",
        "| test domain | images | lesions | model | sensitivity at 0.3 FPI | CPM |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for domain, t in report["test"].items():
        for model, r in t["rows"].items():
            md.append(
                f"| {domain} | {t['images']} | {t['lesions']} | {model} | {r['sensitivity@0.3']:.3f} "
                f"({r['found']}/{t['lesions']}) | {r['cpm']:.3f} |"
            )
    md += ["", "| test domain | comparison | only first / only second | McNemar p | difference [95% CI] |"]
    md.append("|---|---|---|---|---|")
    for domain, t in report["test"].items():
        for p in t["paired"]:
            lo, hi = p["difference_ci95"]
            md.append(
                f"| {domain} | {p['a']} vs {p['b']} | {p['only_a']} / {p['only_b']} | {p['mcnemar_p']:.3g} | "
                f"{p['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] |"
            )
    machine = report["machine"]
    md += [
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, flags {', '.join(machine['cpu_flags'])}.",
    ]
    return "\n".join(md) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("train", "evaluate"))
    parser.add_argument("--steps", type=int, default=900, help="optimiser steps per arm")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--root", type=Path, default=Path(".cache/domains"))
    parser.add_argument("--data-dir", type=Path, default=Path(".cache/domain_data"))
    parser.add_argument("--n", type=int, default=200, help="test images per domain")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    os.makedirs(args.root, exist_ok=True)
    if args.stage == "train":
        train(args)
        return
    report = evaluate(args)
    write_json_atomic(args.out / "domains.json", report)
    text = _markdown(report)
    atomic_write(args.out / "domains.md", lambda tmp: tmp.write_text(text))


if __name__ == "__main__":
    main()
