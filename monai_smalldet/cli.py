"""The ``monai-smalldet`` command.

Sub-commands:

* ``synth``: write a synthetic FFDM dataset (DICOM MG + datalist JSON);
* ``preview``: a PNG contact sheet of a datalist split with its lesion boxes;
* ``demo``: the project's main job end to end (what ``make demo`` runs).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

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


def _cmd_demo(args: argparse.Namespace) -> int:
    from .data.synthetic import generate_dataset, load_datalist
    from .visualize import preview_sheet

    out = Path(args.out)
    datalist = out / "data" / "datalist.json"
    if not datalist.is_file():
        generate_dataset(
            out / "data",
            n_train=16,
            n_val=4,
            n_test=8,
            seed=args.seed,
            scale=args.scale,
            workers=args.workers,
        )
    items = load_datalist(datalist, "training")[:8] + load_datalist(datalist, "test")[:4]
    sheet = preview_sheet(items, out / "preview.png")
    print(f"dataset: {datalist}\npreview: {sheet}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monai-smalldet", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

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

    p = sub.add_parser("preview", help="PNG contact sheet of a datalist split with its boxes")
    p.add_argument("--datalist", required=True, type=Path)
    p.add_argument("--split", default="training", choices=("training", "validation", "test"))
    p.add_argument("--out", required=True, type=Path, help="PNG to write")
    p.add_argument("--n", type=int, default=12, help="images on the sheet")
    p.add_argument("--columns", type=int, default=4)
    p.set_defaults(func=_cmd_preview)

    p = sub.add_parser("demo", help="the main job: synthetic data -> preview (grows with the project)")
    p.add_argument("--out", type=Path, default=Path("demo_output"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=0.25)
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monai-smalldet`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
