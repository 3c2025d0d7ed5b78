"""The ``monai-smalldet`` command.

Sub-commands:

* ``synth``: write a synthetic FFDM dataset (DICOM MG + datalist JSON);
* ``preview``: a PNG contact sheet of a datalist split with its lesion boxes;
* ``detect``: multi-scale detection on DICOM/PNG/TIFF/NIfTI files, one JSON per image;
* ``froc``: FROC of a folder of ``detect`` JSONs against a datalist split (table + plot);
* ``datalist``: a datalist (and its report of rejected rows) from a public dataset's annotation
  files as published, or from the documented generic CSV;
* ``demo``: the project's main job end to end (what ``make demo`` runs).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .files import write_json_atomic

__all__ = ["main"]

log = logging.getLogger("monai_smalldet")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
    return value


def _cmd_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import generate_dataset

    path = generate_dataset(
        args.out,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        seed=args.seed,
        scale=args.scale,
        small_only=args.small_only,
        write_png=args.png,
        workers=args.workers,
        progress=not args.quiet,
    )
    print(f"datalist written: {path}")
    return 0


def _cmd_preview(args: argparse.Namespace) -> int:
    from .data.synthetic import load_datalist
    from .visualize import preview_sheet

    items = load_datalist(args.datalist, args.split)[: args.n]
    out = preview_sheet(items, args.out, columns=args.columns)
    print(f"preview written: {out}")
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    from .batch import detect_files, expand_inputs
    from .inference import MultiScaleDetector

    overrides = {
        "mode": args.mode,
        "overlap": args.overlap,
        "tile_edge": args.tile_edge,
        "batch_size": args.batch_size,
        "backend": args.backend,
        "precision": args.precision,
    }
    if args.fusion:
        overrides["fusion"] = args.fusion
    if args.scales:
        overrides["scales"] = tuple(args.scales)
    if args.tile_size:
        overrides["tile_size"] = args.tile_size
    if not expand_inputs(args.inputs):
        print("no input images found", file=sys.stderr)
        return 2
    from .runtime import limit_threads_to_available_cpus

    limit_threads_to_available_cpus()  # a container's CPU quota, not the host's CPU count
    detector = MultiScaleDetector.from_checkpoint(args.checkpoint, device=args.device, **overrides)
    result = detect_files(
        detector,
        args.inputs,
        args.out,
        checkpoint=args.checkpoint,
        report_threshold=args.report_threshold,
        overlay=args.overlay,
        overlay_threshold=args.overlay_threshold,
        resume=args.resume,
        keep_phi=args.keep_phi,
        time_limit_s=args.time_limit_s,
        assume_spacing_mm=args.assume_spacing_mm,
        progress=not args.quiet,
    )
    print(
        f"{len(result.written)} image(s) written to {args.out}, {len(result.failed)} failed (see failed.json)"
    )
    return 0 if result.written else 1


def _cmd_calibrate(args: argparse.Namespace) -> int:
    import json

    from .data.synthetic import load_datalist
    from .engines.calibrate import calibrate_checkpoint

    items = load_datalist(args.datalist, args.split)
    result = calibrate_checkpoint(
        args.checkpoint,
        items,
        target_fpi=args.target_fpi,
        split=args.split,
        write=not args.dry_run,
        device=args.device,
    )
    text = json.dumps(result.to_dict(), indent=1)
    if args.out:
        write_json_atomic(args.out, result.to_dict())
    print(text)
    return 0


def _cmd_froc(args: argparse.Namespace) -> int:
    import json

    from .data.synthetic import load_datalist
    from .metrics import froc, froc_table, plot_froc

    items = load_datalist(args.datalist, args.split)
    by_image = {}
    for pred_file in sorted(args.predictions.glob("*.json")):
        if pred_file.name == "failed.json":
            continue
        payload = json.loads(pred_file.read_text())
        by_image[str(Path(payload["image"]).resolve())] = payload
    preds, truth, missing = [], [], 0
    for item in items:
        payload = by_image.get(str(Path(item["image"]).resolve()))
        if payload is None:
            missing += 1
            preds.append(None)
        else:
            preds.append(
                {
                    "box": [f["box"] for f in payload["findings"]],
                    "label_scores": [f["score"] for f in payload["findings"]],
                }
            )
        truth.append(item)
    if missing:
        log.warning("%d of %d images of split %r have no prediction file", missing, len(items), args.split)
    result = froc(preds, truth, n_bootstrap=args.bootstrap, seed=args.seed)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    name = f"{args.split} ({len(items)} images)"
    write_json_atomic(
        out / "froc.json", {"split": args.split, "missing_predictions": missing, **result.to_dict()}
    )
    table = froc_table({name: result})
    (out / "froc.md").write_text(table + "\n")
    plot_froc({name: result}, out / "froc.png", title=f"FROC, {args.split} split")
    print(table)
    return 0


def _cmd_datalist(args: argparse.Namespace) -> int:
    from .data import datalists

    convert = {
        "csv": datalists.convert_csv,
        "vindr-mammo": datalists.convert_vindr_mammo,
        "inbreast": datalists.convert_inbreast,
        "cbis-ddsm": datalists.convert_cbis_ddsm,
    }[args.format]
    kwargs: dict[str, Any] = {"out_dir": args.out.resolve().parent, "val_fraction": args.val_fraction}
    kwargs.update(seed=args.seed, spacing_mm=args.spacing)
    if args.malignant_birads and args.format in ("vindr-mammo", "inbreast"):
        kwargs["malignant_birads"] = tuple(args.malignant_birads)
    if args.format == "inbreast":
        kwargs["test_fraction"] = args.test_fraction
    try:
        datalist, report = convert(args.source, **kwargs)
    except datalists.ConversionError as err:
        print(f"monai-smalldet datalist: error: {err}", file=sys.stderr)
        return 2
    out, report_path = datalists.write_datalist(datalist, report, args.out)
    counts = ", ".join(f"{k} {v}" for k, v in report.images.items())
    print(f"{out}: {counts} images; {len(report.rejected)} row(s) rejected (see {report_path})")
    spacing = ", ".join(f"{k} {v}" for k, v in report.spacing_sources.items())
    print(f"pixel spacing from: {spacing}")
    if report.spacing_sources.get("missing"):
        print(
            f"monai-smalldet datalist: warning: {report.spacing_sources['missing']} image(s) record no pixel "
            "spacing (spacing_source 'missing'); give --spacing MM if it is known",
            file=sys.stderr,
        )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .data.synthetic import generate_dataset, load_datalist
    from .visualize import preview_sheet

    out = Path(args.out)
    datalist = out / "data" / "datalist.json"
    if not datalist.is_file():
        generate_dataset(
            out / "data",
            n_train=8,
            n_val=0,
            n_test=args.n_test,
            seed=args.seed,
            scale=args.scale,
            workers=args.workers,
        )
    items = load_datalist(datalist, "training")[:8] + load_datalist(datalist, "test")[:4]
    sheet = preview_sheet(items, out / "preview.png")
    print(f"dataset: {datalist}\npreview: {sheet}")
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        print(f"no model at {checkpoint}: train one with the bundle (bundle/docs/README.md)", file=sys.stderr)
        return 2
    predictions = out / "predictions"
    detect = [
        "detect",
        str(out / "data" / "test"),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(predictions),
    ]
    code = main([*detect, "--overlay", "--resume", "--quiet"])
    if code != 0:
        return code
    code = main(
        ["froc", "--predictions", str(predictions), "--datalist", str(datalist), "--split", "test"]
        + ["--out", str(out / "froc")]
    )
    print(f"predictions and overlays: {predictions}\nFROC: {out / 'froc'} (synthetic data)")
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monai-smalldet", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_synth(sub)
    _add_preview(sub)
    _add_detect(sub)
    _add_calibrate(sub)
    _add_froc(sub)
    _add_datalist(sub)
    _add_demo(sub)
    return parser


def _add_synth(sub: Any) -> None:
    """The ``synth`` subcommand."""
    p = sub.add_parser("synth", help="write a synthetic FFDM dataset (DICOM MG + datalist.json)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--n-train", type=_positive_int, default=0, help="training images")
    p.add_argument("--n-val", type=_positive_int, default=0, help="validation images")
    p.add_argument("--n-test", type=_positive_int, default=0, help="test images")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (same seed, same pixels)")
    p.add_argument(
        "--scale", type=float, default=1.0, help="1.0 = 3328x4096 at 70 um; 0.25 = 832x1024 at 280 um"
    )
    p.add_argument("--small-only", action="store_true", help="all malignant findings < 10 mm")
    p.add_argument("--png", action="store_true", help="also write 16-bit PNGs")
    p.add_argument("--workers", type=int, default=1, help="processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_synth)


def _add_preview(sub: Any) -> None:
    """The ``preview`` subcommand."""
    p = sub.add_parser("preview", help="PNG contact sheet of a datalist split with its boxes")
    p.add_argument("--datalist", required=True, type=Path)
    p.add_argument("--split", default="training", choices=("training", "validation", "test"))
    p.add_argument("--out", required=True, type=Path, help="PNG to write")
    p.add_argument("--n", type=int, default=12, help="images on the sheet")
    p.add_argument("--columns", type=int, default=4)
    p.set_defaults(func=_cmd_preview)


def _add_detect(sub: Any) -> None:
    """The ``detect`` subcommand."""
    p = sub.add_parser("detect", help="multi-scale detection; one JSON (and overlay) per image")
    p.add_argument("inputs", nargs="+", type=Path, help="image files or folders (searched recursively)")
    p.add_argument("--checkpoint", required=True, type=Path, help="model .pt (with its .json spec beside it)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--mode", choices=("tiled", "whole"), default="tiled")
    p.add_argument("--scales", type=float, nargs="+", help="pyramid factors (default: the checkpoint's)")
    p.add_argument("--tile-size", type=int, help="tile side in pixels (default: the checkpoint's)")
    p.add_argument("--overlap", type=float, default=0.1, help="tile overlap, a fraction of the tile")
    p.add_argument(
        "--tile-edge",
        choices=("trim", "shift"),
        default="trim",
        help="last row/column of tiles: trimmed at the border (fewer pixels) or shifted back inside",
    )
    p.add_argument(
        "--fusion",
        default=None,
        help="wbf, nms, soft_nms or concat (default: the checkpoint's calibrated fusion, else wbf)",
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="tiles per network call (default: 1 on CPU, 16 on CUDA)"
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="auto: fp16 on CUDA, fp32 on CPU; bf16 on CPU only when asked (see the README)",
    )
    p.add_argument(
        "--report-threshold",
        type=float,
        default=None,
        help="score at which a finding is reported (default: the checkpoint's calibrated operating point)",
    )
    p.add_argument(
        "--assume-spacing-mm",
        type=float,
        default=None,
        help="pixel spacing (mm) for images that record none (default: such an image fails, named in failed.json)",
    )
    p.add_argument("--overlay", action="store_true", help="also write an overlay PNG per image")
    p.add_argument(
        "--overlay-threshold",
        type=float,
        default=None,
        help="lowest score drawn (default: the reporting threshold)",
    )
    p.add_argument("--resume", action="store_true", help="skip images whose JSON already exists")
    p.add_argument(
        "--time-limit-s", type=float, default=None, help="fail an image that takes longer than this"
    )
    p.add_argument(
        "--keep-phi", action="store_true", help="also write patient ID, name and birth date (off by default)"
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_detect)


def _add_calibrate(sub: Any) -> None:
    """The ``calibrate`` subcommand."""
    p = sub.add_parser(
        "calibrate", help="choose a checkpoint's fusion and reporting threshold on a validation split"
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="model .pt; its .json spec is updated")
    p.add_argument("--datalist", required=True, type=Path)
    p.add_argument("--split", default="validation", choices=("training", "validation", "test"))
    p.add_argument(
        "--target-fpi", type=float, default=0.3, help="false positives per image of the operating point"
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--out", type=Path, help="also write the comparison of the candidates as JSON here")
    p.add_argument("--dry-run", action="store_true", help="report only; leave the spec as it is")
    p.set_defaults(func=_cmd_calibrate)


def _add_froc(sub: Any) -> None:
    """The ``froc`` subcommand."""
    p = sub.add_parser("froc", help="FROC of detect outputs against a datalist split")
    p.add_argument("--predictions", required=True, type=Path, help="folder of detect JSONs")
    p.add_argument("--datalist", required=True, type=Path)
    p.add_argument("--split", default="test", choices=("training", "validation", "test"))
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_froc)


def _add_datalist(sub: Any) -> None:
    """The ``datalist`` subcommand."""
    p = sub.add_parser(
        "datalist", help="datalist.json (+ report of rejected rows) from a dataset's annotations"
    )
    p.add_argument("source", type=Path, help="csv: the CSV file; otherwise the dataset's folder")
    p.add_argument("--format", required=True, choices=("csv", "vindr-mammo", "inbreast", "cbis-ddsm"))
    p.add_argument("--out", required=True, type=Path, help="datalist JSON to write (report beside it)")
    p.add_argument(
        "--val-fraction", type=float, default=0.1, help="patients moved from training to validation"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    p.add_argument(
        "--malignant-birads", nargs="+", help="vindr-mammo / inbreast: BI-RADS values counted as malignant"
    )
    p.add_argument(
        "--test-fraction", type=float, default=0.2, help="inbreast (no official split): test patients"
    )
    p.add_argument(
        "--spacing", type=float, default=None, help="pixel spacing (mm) of images whose files record none"
    )
    p.set_defaults(func=_cmd_datalist)


def _add_demo(sub: Any) -> None:
    """The ``demo`` subcommand."""
    p = sub.add_parser(
        "demo", help="the main job: synthetic data -> preview -> detection with a model -> FROC and overlays"
    )
    p.add_argument("--out", type=Path, default=Path("demo_output"))
    p.add_argument(
        "--checkpoint", type=Path, default=Path("bundle/models/model.pt"), help="model to detect with"
    )
    p.add_argument("--seed", type=int, default=7, help="dataset seed (0 is the bundle's training data)")
    p.add_argument(
        "--scale", type=float, default=0.25, help="image scale (the shipped model's profile: 0.25)"
    )
    p.add_argument("--n-test", type=_positive_int, default=20, help="test images detected and scored")
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=_cmd_demo)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monai-smalldet`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
