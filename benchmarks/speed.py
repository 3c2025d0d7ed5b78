"""Speed and memory of full-mammogram inference: ours vs SAHI vs single-scale whole-image.

Run: ``.venv/bin/python -m benchmarks.speed [--images 5] [--variant n] [--device cpu]``
(SAHI comes with the ``benchmark`` extra: ``pip install -e '.[benchmark]'``).

Every contender gets the same full-size synthetic mammograms (3328 x 4096 or 4096 x 3328 at
0.07 mm; synthetic data, seeds 100, 101, ...) and the same randomly initialised network
weights (speed does not depend on the weights; every contender decodes with the same score
threshold). Each contender runs in its own process, so its peak RSS is its own:

* ``ours_tiled``: :class:`MultiScaleDetector`, 3 scales, 1024 tiles, overlap 0.1, the last
  row/column of each level trimmed at its border (and a level smaller than a tile run at its
  own size), air tiles skipped, tiles across the skin line run on their breast part, fused
  ``channels_last`` network, batch size per device, WBF;
* ``ours_tiled_uncropped``: ``ours_tiled`` with every tile run whole, air along the skin line
  included: what cropping tiles to the breast gives;
* ``ours_tiled_shift``: ``ours_tiled_uncropped`` with every input a whole tile, the last
  row/column shifted back inside the level (SAHI's layout): against ``ours_tiled_uncropped``,
  what trimming gives;
* ``ours_tiled_overlap0``: ``ours_tiled`` with tiles that do not overlap (fewer tiles; its
  sensitivity against overlap 0.1 is the "tiles without overlap" row of ``benchmarks.quality``);
* ``ours_tiled_unoptimized``: the same pipeline without the fast-inference levers (no air-tile
  skipping, whole shifted tiles, the network as trained, batch 4): what the levers give;
* ``ours_whole``: each pyramid level as one image (no tiles, no overlap);
* ``ours_onnxruntime``: ``ours_tiled`` with the ONNX Runtime backend (``speedup_vs_sahi_onnxruntime``;
  its boxes are the torch backend's within the tolerance its test states);
* ``ours_bf16``: ``ours_tiled`` under bf16 autocast (only on CPUs with native bf16; fp16 on CUDA);
* ``bare_network``: the fused network alone on exactly the tiles ``ours_tiled`` ran (the floor);
  its FLOP rate counts the pixels those tiles really hold (trimmed tiles are smaller).
* ``sahi``: SAHI ``get_sliced_prediction`` at each of the same three scales, 1024 slices,
  overlap 0.1, its GREEDYNMM merge, the same network (Conv+BN fused, as ultralytics'
  predictor runs it) wrapped as a SAHI model at its native 1024 tile resolution;
* ``whole_1024`` / ``whole_4096``: single-scale whole-image prediction as ultralytics' predictor
  does it (``LetterBox`` to ``imgsz``, network, NMS, ``scale_boxes``).

The run also measures the machine's fp32 peak on CPU as :func:`benchmarks.roofline.peak_gflops`
does (the best of matmuls and network-shaped 3 x 3 convolutions, at its start and end, the
higher kept; a matmul on GPU) and its bf16 matmul rate where native and the network's FLOPs per tile, records the torch
threads of every worker, and writes ``benchmarks/results/speed.json`` with the machine and
the goal ratios: ``speedup_vs_sahi``, ``ratio_to_bare_network`` (median over images of the
pipeline's time over the bare network's on the same tiles),
``network_fraction_of_peak`` (above 1 is an error: nothing is written), ``peak_rss_gib``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.machine import describe_machine
from monai_smalldet.files import write_json_atomic

CONTENDERS = (
    "ours_tiled",
    "ours_tiled_uncropped",
    "ours_tiled_shift",
    "ours_tiled_overlap0",
    "ours_tiled_unoptimized",
    "ours_whole",
    "ours_onnxruntime",
    "ours_bf16",
    "sahi",
    "whole_1024",
    "whole_4096",
)
SCALES = (1.0, 0.5, 0.25)
CONF = 0.001  # the score threshold every contender decodes with (FROC sweeps all scores)


# -- machine rates ------------------------------------------------------------------------------
def matmul_gflops(dtype: torch.dtype, device: str, n: int = 2048, seconds: float = 3.0) -> float:
    """Best dense ``n x n`` matmul rate in GFLOP/s over about ``seconds``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    end = time.perf_counter() + seconds
    torch.mm(a, b)
    while time.perf_counter() < end:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def network_gflops(network: torch.nn.Module, tile: int) -> float:
    """FLOPs (multiply and add counted apart) of one ``tile x tile`` forward, in GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        network(torch.zeros(1, 1, tile, tile))
    return counter.get_total_flops() / 1e9


# -- the contenders (each in its own process) ---------------------------------------------------
def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class _RecordingRunner:
    """Wraps a :class:`NetworkRunner`; keeps the batches it was given (for the floor)."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.batches: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        self.batches.append(x.clone())
        return self.runner(x, **kwargs)


def _sahi_model(network: torch.nn.Module, device: str) -> Any:
    from sahi.models.base import DetectionModel
    from sahi.prediction import ObjectPrediction

    from monai_smalldet.networks import NetworkRunner, decode

    class SmallDetSahiModel(DetectionModel):
        """Our network as a SAHI model: slices in (RGB uint8), boxes out, at slice resolution."""

        def load_model(self) -> None:  # pragma: no cover - the model is given
            raise NotImplementedError

        def set_model(self, model: Any, **kwargs: Any) -> None:
            self.model = model
            self.category_mapping = {"0": "lesion"}

        def perform_inference(self, image: np.ndarray) -> None:
            x = torch.from_numpy(np.ascontiguousarray(image[..., 0], dtype=np.float32) / 255.0)
            h, w = x.shape
            ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
            x = torch.nn.functional.pad(x, (0, pw - w, 0, ph - h))[None, None]
            self._original_predictions = decode(self.model(x), conf_thres=self.confidence_threshold)
            self._original_shapes = [image.shape]

        def _create_object_prediction_list_from_original_predictions(
            self, shift_amount_list: Any = None, full_shape_list: Any = None
        ) -> None:
            shift_amount_list = shift_amount_list if shift_amount_list is not None else [[0, 0]]
            shift = shift_amount_list[0] if isinstance(shift_amount_list[0], list) else shift_amount_list
            full = None
            if full_shape_list is not None:
                full = full_shape_list[0] if isinstance(full_shape_list[0], list) else full_shape_list
            h, w = self._original_shapes[0][:2]
            found = []
            pred = self._original_predictions[0]
            for box, score in zip(pred["box"].tolist(), pred["label_scores"].tolist(), strict=True):
                x1, y1, x2, y2 = max(0.0, box[0]), max(0.0, box[1]), min(w, box[2]), min(h, box[3])
                if x2 <= x1 or y2 <= y1:
                    continue
                found.append(
                    ObjectPrediction(
                        bbox=[x1, y1, x2, y2],
                        category_id=0,
                        category_name="lesion",
                        score=float(score),
                        shift_amount=[int(shift[0]), int(shift[1])],
                        full_shape=list(full) if full is not None else [h, w],
                    )
                )
            self._object_prediction_list_per_image = [found]

    # ultralytics' predictor (SAHI's usual model) fuses Conv+BN; NCHW fp32, no other change
    runner = NetworkRunner(network, device, precision="fp32")
    runner.channels_last = False
    runner.network = runner.network.to(memory_format=torch.contiguous_format)
    return SmallDetSahiModel(model=runner, device=device, confidence_threshold=CONF, image_size=None)


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    if scale == 1.0:
        return image
    h, w = image.shape
    return cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def _sahi_predict(model: Any, image: np.ndarray, tile_size: int) -> int:
    """SAHI on the three scales; boxes back in original pixels, concatenated; returns their count."""
    from sahi.predict import get_sliced_prediction

    total = 0
    for scale in SCALES:
        level = _resize(image, scale)
        rgb = np.repeat(np.clip(level * 255.0 + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        result = get_sliced_prediction(
            rgb,
            model,
            slice_height=tile_size,
            slice_width=tile_size,
            overlap_height_ratio=0.1,
            overlap_width_ratio=0.1,
            perform_standard_pred=False,
            postprocess_type="GREEDYNMM",
            postprocess_match_metric="IOS",
            postprocess_match_threshold=0.5,
            verbose=0,
        )
        boxes = np.array([p.bbox.to_xyxy() for p in result.object_prediction_list], np.float32)
        total += len(boxes.reshape(-1, 4) / scale)  # back to original pixels, as a user would
    return total


def _whole_predict(runner: Any, image: np.ndarray, imgsz: int) -> int:
    """ultralytics' single-image prediction: LetterBox to imgsz, network, NMS, scale_boxes."""
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils.ops import scale_boxes

    from monai_smalldet.networks import decode

    boxed = LetterBox(new_shape=(imgsz, imgsz), auto=False, stride=32)(image=image[..., None])
    boxed = boxed if boxed.ndim == 3 else boxed[..., None]
    x = torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1)))[None]
    pred = decode(runner(x), conf_thres=CONF)[0]
    boxes = scale_boxes(x.shape[2:], pred["box"].clone(), image.shape)
    return len(boxes)


def worker(name: str, workdir: Path, device: str, tile_size: int) -> dict[str, Any]:
    """Time one contender on every image of ``workdir``; returns its record."""
    from monai_smalldet.inference import MultiScaleDetector
    from monai_smalldet.networks import NetworkRunner, load_checkpoint

    network, _ = load_checkpoint(workdir / "model.pt", map_location=device)
    images = [np.load(p) for p in sorted(workdir.glob("image_*.npy"))]
    common = {"scales": SCALES, "tile_size": tile_size, "overlap": 0.1, "device": device, "conf_thres": CONF}
    record: dict[str, Any] = {"name": name}
    extra: dict[str, Any] = {}

    if name.startswith("ours"):
        kwargs = dict(common)
        if name == "ours_tiled_unoptimized":
            kwargs.update(
                optimize=False, skip_air_tiles=False, tile_edge="shift", batch_size=4, precision="fp32"
            )
        elif name == "ours_whole":
            kwargs.update(mode="whole")
        elif name == "ours_tiled_uncropped":
            kwargs.update(crop_tiles_to_breast=False, precision="fp32")
        elif name == "ours_tiled_shift":
            kwargs.update(tile_edge="shift", crop_tiles_to_breast=False, precision="fp32")
        elif name == "ours_tiled_overlap0":
            kwargs.update(overlap=0.0, precision="fp32")
        elif name == "ours_onnxruntime":
            kwargs.update(backend="onnxruntime")
        elif name == "ours_bf16":
            kwargs.update(precision="fp16" if device.startswith("cuda") else "bf16")
        else:
            kwargs.update(precision="fp32")
        detector = MultiScaleDetector(network, **kwargs)
        recorder = _RecordingRunner(detector.runner)
        detector.runner = recorder

        def run(image: np.ndarray) -> dict[str, Any]:
            out = detector.predict(image, laterality="L")
            return {
                "tiles": sum(out.tiles_per_scale),
                # pixels the network computed (1-channel inputs), in whole tiles' worth
                "tile_equivalents": round(sum(x.numel() for x in recorder.batches) / tile_size**2, 3),
                "air_tiles_skipped": sum(out.air_tiles_skipped),
                "boxes": len(out.fused.boxes),
                "stages_s": out.timings_s,
            }

        record["runner"] = repr(recorder.runner)
    elif name == "sahi":
        model = _sahi_model(network, device)

        def run(image: np.ndarray) -> dict[str, Any]:
            return {"boxes": _sahi_predict(model, image, tile_size), "tiles": None}

    elif name.startswith("whole_"):
        imgsz = int(name.split("_")[1])
        runner = NetworkRunner(network, device, precision="fp32")

        def run(image: np.ndarray) -> dict[str, Any]:
            return {"boxes": _whole_predict(runner, image, imgsz), "tiles": 1}

    else:
        raise SystemExit(f"unknown contender {name!r}")

    run(images[0])  # warm-up (oneDNN primitive creation, ONNX export already done)
    seconds, details = [], []
    for image in images:
        if name.startswith("ours"):
            recorder.batches.clear()
        t0 = time.perf_counter()
        info = run(image)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
        details.append(info)
        if name == "ours_tiled":
            # the floor: the same runner on exactly these tiles, nothing else
            batches = list(recorder.batches)
            t0 = time.perf_counter()
            for x in batches:
                recorder.runner(x, min_score=CONF)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            extra.setdefault("bare_network_s", []).append(time.perf_counter() - t0)
    record.update(
        seconds=seconds,
        per_image=details,
        peak_rss_gib=_peak_rss_gib(),
        torch_threads=torch.get_num_threads(),
        **extra,
    )
    return record


# -- the driver ---------------------------------------------------------------------------------
def _summary(seconds: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(seconds), 3),
        "min_s": round(min(seconds), 3),
        "max_s": round(max(seconds), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5, help="full-size synthetic mammograms (>= 5)")
    parser.add_argument("--variant", default="n", help="YOLOv5 variant of the network (n, s, m, l, x)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile-size", type=int, default=1024)
    parser.add_argument("--image-scale", type=float, default=1.0, help="synthetic image scale (smoke runs)")
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "speed.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        record = worker(args.worker, args.workdir, args.device, args.tile_size)
        print("RESULT " + json.dumps(record), flush=True)
        return

    from monai_smalldet.data.synthetic import generate_mammogram
    from monai_smalldet.networks import (
        NetworkRunner,
        NetworkSpec,
        build_network,
        cpu_supports_bf16,
        save_checkpoint,
    )

    torch.manual_seed(0)
    results: dict[str, Any] = {
        "benchmark": "full-mammogram inference, 3 scales (1, 0.5, 0.25)",
        "data": f"synthetic mammograms at scale {args.image_scale} ({0.07 / args.image_scale:.2f} mm), "
        f"seeds 100..{99 + args.images}",
        "machine": describe_machine(),
        "device": args.device,
        "network": f"yolov5{args.variant}, 1 channel, random initialisation (seed 0)",
        "tile_size": args.tile_size,
        "overlap": 0.1,
        "score_threshold": CONF,
    }
    bf16_native = args.device.startswith("cuda") or cpu_supports_bf16()
    contenders = [c for c in args.contenders if c != "ours_bf16" or bf16_native]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sizes = []
        for i in range(args.images):
            image = generate_mammogram(
                seed=100 + i, scale=args.image_scale, view="CC" if i % 2 == 0 else "MLO"
            ).to_float()
            np.save(workdir / f"image_{i:02d}.npy", np.ascontiguousarray(image, np.float32))
            sizes.append(list(image.shape))
        results["image_sizes_hw"] = sizes
        network = build_network(args.variant)
        spec = NetworkSpec(
            variant=args.variant, tile_size_px=args.tile_size, pixel_spacing_mm=0.07, scales=SCALES
        )
        save_checkpoint(workdir / "model.pt", network, spec)
        fused = NetworkRunner(network, "cpu", precision="fp32").network
        gflop_tile = network_gflops(fused, args.tile_size)
        from benchmarks.roofline import peak_gflops

        # fp32 peak: the best of matmuls and network-shaped convolutions (benchmarks.roofline)
        peak_start = peak_gflops() if args.device == "cpu" else None
        rates = {"fp32": peak_start["gflops"] if peak_start else matmul_gflops(torch.float32, args.device)}
        if bf16_native:
            low = torch.float16 if args.device.startswith("cuda") else torch.bfloat16
            rates["bf16" if low == torch.bfloat16 else "fp16"] = matmul_gflops(low, args.device)
        results["matmul_gflops"] = {k: round(v, 1) for k, v in rates.items()}
        results["network_gflop_per_tile"] = round(gflop_tile, 2)
        print(
            f"matmul peak {rates} GFLOP/s; network {gflop_tile:.1f} GFLOP per {args.tile_size} tile",
            flush=True,
        )

        records = {}
        for name in contenders:
            cmd = [sys.executable, "-m", "benchmarks.speed", "--worker", name, "--workdir", str(workdir)]
            cmd += ["--device", args.device, "--tile-size", str(args.tile_size)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                print(f"{name}: failed\n{proc.stderr[-3000:]}", flush=True)
                records[name] = {"name": name, "error": proc.stderr[-2000:]}
                continue
            records[name] = json.loads(line[-1][len("RESULT ") :])
            print(f"{name}: {_summary(records[name]['seconds'])}", flush=True)
        # the shared CPU's rate drifts over a run: measure again at the end, keep the higher
        # (the network's fraction of it is then the lower, conservative one)
        peak_end = peak_gflops() if args.device == "cpu" else None
        after = peak_end["gflops"] if peak_end else matmul_gflops(torch.float32, args.device)
        results["peak_gflops_fp32_start_end"] = [round(rates["fp32"], 1), round(after, 1)]
        rates["fp32"] = max(rates["fp32"], after)
        results["matmul_gflops"]["fp32"] = round(rates["fp32"], 1)
        if peak_start:
            results["peak_fp32"] = max(peak_start, peak_end, key=lambda p: p["gflops"])

    table = {}
    for name, rec in records.items():
        if "seconds" not in rec:
            continue
        row = {**_summary(rec["seconds"]), "peak_rss_gib": round(rec["peak_rss_gib"], 2)}
        tiles = [d.get("tiles") for d in rec["per_image"]]
        row["torch_threads"] = rec.get("torch_threads")
        if all(t is not None for t in tiles):
            row["tiles_per_image"] = statistics.mean(tiles)
        if all("tile_equivalents" in d for d in rec["per_image"]):
            row["tile_equivalents_per_image"] = round(
                statistics.mean(d["tile_equivalents"] for d in rec["per_image"]), 2
            )
            row["tiles_per_s"] = round(sum(tiles) / sum(rec["seconds"]), 2)
        if name.startswith("ours_tiled") or name == "ours_onnxruntime" or name == "ours_bf16":
            row["air_tiles_skipped_per_image"] = statistics.mean(
                d["air_tiles_skipped"] for d in rec["per_image"]
            )
        if name == "sahi":
            # SAHI runs every slice of every level; count them as the tiler does (same grid)
            row["tiles_per_image"] = None
        table[name] = row
        if "bare_network_s" in rec:
            bare = rec["bare_network_s"]
            tiles = [d["tiles"] for d in rec["per_image"]]
            pixels = [d["tile_equivalents"] for d in rec["per_image"]]  # FLOPs grow with pixels
            table["bare_network"] = {
                **_summary(bare),
                "tiles_per_image": statistics.mean(tiles),
                "tile_equivalents_per_image": round(statistics.mean(pixels), 2),
                "tiles_per_s": round(sum(tiles) / sum(bare), 2),
                "achieved_gflops": round(gflop_tile * sum(pixels) / sum(bare), 1),
            }
    results["contenders"] = table
    results["raw"] = records
    ours = table.get("ours_tiled")
    if ours:
        if "sahi" in table:
            results["speedup_vs_sahi"] = round(table["sahi"]["median_s"] / ours["median_s"], 2)
            if "ours_onnxruntime" in table:
                results["speedup_vs_sahi_onnxruntime"] = round(
                    table["sahi"]["median_s"] / table["ours_onnxruntime"]["median_s"], 2
                )
            if "ours_tiled_overlap0" in table:
                results["speedup_vs_sahi_overlap0"] = round(
                    table["sahi"]["median_s"] / table["ours_tiled_overlap0"]["median_s"], 2
                )
        if "bare_network" in table:
            # per image: the pipeline and the bare network ran the same tiles of the same image
            # (a ratio of the two medians compares different images)
            rec = records["ours_tiled"]
            results["ratio_to_bare_network"] = round(
                statistics.median(s / b for s, b in zip(rec["seconds"], rec["bare_network_s"], strict=True)),
                3,
            )
            results["ratio_to_bare_network_of_medians"] = round(
                ours["median_s"] / table["bare_network"]["median_s"], 3
            )
            fraction = table["bare_network"]["achieved_gflops"] / rates["fp32"]
            if fraction > 1.0:
                raise SystemExit(
                    f"the bare network ran at {fraction:.2f}x the measured peak: the FLOP count or the "
                    "peak is wrong; speed.json not written"
                )
            results["network_fraction_of_peak"] = round(fraction, 3)
        results["peak_rss_gib"] = ours["peak_rss_gib"]
    results["goals"] = {
        "speedup_vs_sahi": ">= 3",
        "speedup_vs_sahi_onnxruntime": ">= 3 (the optional CPU backend)",
        "speedup_vs_sahi_overlap0": ">= 3 (fewer tiles: needs equal or better sensitivity)",
        "ratio_to_bare_network": "<= 1.3",
        "network_fraction_of_peak": ">= 0.7 (above 1 the run fails: a measurement error)",
        "peak_rss_gib": "<= 3",
    }
    print(markdown_table(results))
    write_json_atomic(args.out, results)


def markdown_table(results: dict[str, Any]) -> str:
    """The README table of a ``speed.json``."""
    lines = [
        "| contender | s / mammogram (median, min-max) | tiles / image | whole tiles' pixels / image "
        "| tiles / s | peak RSS GiB |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results["contenders"].items():
        tiles = row.get("tiles_per_image")
        lines.append(
            f"| {name} | {row['median_s']:.2f} ({row['min_s']:.2f}-{row['max_s']:.2f}) | "
            f"{'' if tiles is None else f'{tiles:.1f}'} | {row.get('tile_equivalents_per_image', '')} | "
            f"{row.get('tiles_per_s', '')} | "
            f"{row.get('peak_rss_gib', '')} |"
        )
    keys = (
        "speedup_vs_sahi",
        "speedup_vs_sahi_onnxruntime",
        "speedup_vs_sahi_overlap0",
        "ratio_to_bare_network",
        "network_fraction_of_peak",
        "peak_rss_gib",
    )
    lines.append("")
    lines.append(", ".join(f"{k} = {results.get(k)} (goal {results['goals'].get(k)})" for k in keys))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
