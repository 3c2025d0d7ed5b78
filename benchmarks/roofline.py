"""What fraction of the machine's peak the detector's network reaches, measured so that it
cannot come out above 1.

Run: ``.venv/bin/python -m benchmarks.roofline [--variant n] [--tile-size 256] [--tiles 32]``.

- **Peak**: the best rate of the kernels the network itself runs, not of one matmul size: dense
  fp32 matmuls (1024, 2048, 3072) and oneDNN 3 x 3 convolutions shaped like YOLOv5's stages
  (channels 64-512 at 1024 / 256 px tiles' feature-map sizes), each kept at its best of about a
  second, the best over all of them kept. The earlier matmul-only peak (one 2048 matmul) came
  out below the network's own rate on one machine (a "fraction" of 1.18).
- **Network FLOPs**: :class:`torch.utils.flop_counter.FlopCounterMode` on the network's graph
  (multiply and add counted apart), for the exact input shape timed.
- **Achieved**: the Conv+BN-folded fp32 network (as the detector runs it), eval mode, batches of
  tiles of random pixels (the rate does not depend on the weights or pixels), best of repeats.

The fraction must be <= 1: above that the measurement is wrong, and the benchmark exits with an
error instead of writing it. Writes ``benchmarks/results/roofline.json`` with the machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.machine import describe_machine
from monai_smalldet.files import write_json_atomic

#: (channels, spatial size) of the 3 x 3 convolutions measured: YOLOv5 stages at 256 and 1024 px
CONV_SHAPES = ((64, 128), (128, 64), (256, 32), (512, 16), (128, 256), (256, 128))


def _best_seconds(run: Callable[[], object], seconds: float) -> float:
    run()  # warm-up: oneDNN picks and caches its kernel
    best = float("inf")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def peak_gflops(seconds: float = 1.0) -> dict[str, object]:
    """The best fp32 rate (GFLOP/s) over matmuls and network-shaped convolutions, with each
    kernel's own rate."""
    rates: dict[str, float] = {}
    with torch.inference_mode():
        for n in (1024, 2048, 3072):
            a, b = torch.randn(n, n), torch.randn(n, n)
            rates[f"matmul {n}"] = 2 * n**3 / _best_seconds(lambda a=a, b=b: torch.mm(a, b), seconds) / 1e9
        for channels, size in CONV_SHAPES:
            conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).eval()
            x = torch.randn(1, channels, size, size).to(memory_format=torch.channels_last)
            conv = conv.to(memory_format=torch.channels_last)
            flops = 2 * channels * channels * 9 * size * size
            rates[f"conv3x3 {channels}ch {size}px"] = (
                flops / _best_seconds(lambda c=conv, x=x: c(x), seconds) / 1e9
            )
    best = max(rates, key=rates.get)
    return {
        "gflops": round(rates[best], 1),
        "kernel": best,
        "rates": {k: round(v, 1) for k, v in rates.items()},
    }


def network_gflop(network: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """FLOPs (multiply and add counted apart) of one forward of ``shape``, in GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        network(torch.zeros(shape))
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="n")
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "roofline.json")
    args = parser.parse_args()

    from monai_smalldet.networks import NetworkRunner, build_network

    torch.manual_seed(0)
    network = NetworkRunner(build_network(args.variant), "cpu", precision="fp32").network.eval()
    shape = (args.batch, 1, args.tile_size, args.tile_size)
    gflop = network_gflop(network, shape)
    x = torch.rand(shape).to(memory_format=torch.channels_last)
    peak_before = peak_gflops()
    with torch.inference_mode():
        seconds = _best_seconds(lambda: network(x), args.seconds)
    peak_after = peak_gflops()
    peak = max(peak_before, peak_after, key=lambda p: p["gflops"])
    achieved = gflop / seconds
    fraction = achieved / float(peak["gflops"])
    result = {
        "benchmark": "network rate vs the machine's measured fp32 peak (CPU)",
        "network": f"yolov5{args.variant}, Conv+BN folded, fp32, channels_last, eval",
        "input_shape": list(shape),
        "torch_threads": torch.get_num_threads(),
        "machine": describe_machine(),
        "network_gflop_per_batch": round(gflop, 3),
        "network_gflop_per_tile": round(gflop / args.batch, 3),
        "best_batch_s": round(seconds, 4),
        "achieved_gflops": round(achieved, 1),
        "peak": peak,
        "peak_before_after_gflops": [peak_before["gflops"], peak_after["gflops"]],
        "network_fraction_of_peak": round(fraction, 3),
    }
    print(
        f"network {achieved:.1f} GFLOP/s, peak {peak['gflops']} ({peak['kernel']}): fraction {fraction:.3f}"
    )
    if fraction > 1.0:
        raise SystemExit(
            f"the network ran at {fraction:.2f}x the measured peak: the FLOP count or the peak is wrong; not written"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()
