"""Overhead of the MONAI Deploy application over the detector alone (goal: under 10%).

Run: ``.venv/bin/python -m benchmarks.app [--scale 0.25] [--repeats 3]``. One synthetic
four-view study (DICOM MG), tiles of 1024 px at full size (``--scale 1.0``) and the same share
of the image at smaller scales, and one randomly initialised yolov5n checkpoint (the network's
speed does not depend on the weights; random weights do leave about a thousand low-scored
boxes per image to merge, fuse and list in the JSON, more than a trained model). Timed, in
one process (imports and one-time set-up such as highdicom's tables of the standard are
paid once, as in a server; a fresh process per study pays them again):

* ``detector``: ``LoadMammogram`` + ``MultiScaleDetector.predict`` on the four files;
* ``app``: ``python -m apps.mammo_detect`` in-process, from the DICOM folder to the SRs, JSON
  and overlays on disk (holoscan start-up, DICOM loading and series selection included), with
  the default report policy (findings scored >= 0.25 in the SR: none, for random weights);
* ``app_report10``: the same with 10 findings per image in each SR and overlay (operating
  point 0), what a trained model's report of a busy image costs (the SR is built per finding).

The overhead is the median over repeats of ``app / detector - 1`` (each repeat runs the two
back to back). Writes ``benchmarks/results/app.json`` with the machine. Data are synthetic.

``--concurrent``: two app processes side by side (``python -m apps.mammo_detect``, the
whole process timed) against one alone, as two MAP containers on one host run: without any
limit (each sizes torch's threads by the host's CPUs), each in a cgroup with a quota of
``CPUs / 2`` (``docker run --cpus``; cgroup v1 ``cpu.cfs_quota_us``, created when this
process may), and each pinned to half the CPUs (``--cpuset-cpus``). The app sizes torch's
threads by :func:`monai_smalldet.runtime.available_cpus`. Goal: each of two runs side by side
within 2.2x of one alone. Writes ``benchmarks/results/app_concurrent.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from apps.mammo_detect.app import main as app_main
from apps.mammo_detect.operators import ReportPolicy
from benchmarks.machine import describe_machine
from monai_smalldet.data.synthetic import generate_dataset
from monai_smalldet.files import write_json_atomic
from monai_smalldet.inference import MultiScaleDetector
from monai_smalldet.networks import NetworkSpec, build_network, save_checkpoint
from monai_smalldet.transforms import LoadMammogram


def _paired(app_s: list[float], det_s: list[float]) -> float:
    """Median over repeats of ``app / detector - 1``, each repeat's two runs back to back."""
    return round(statistics.median(a / d - 1.0 for a, d in zip(app_s, det_s, strict=True)), 3)


CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")


def _quota_cgroups(names: list[str], cpus: float) -> list[Path] | None:
    """cgroup v1 folders with a CPU quota of ``cpus`` each (``None``: cannot be created here)."""
    made = []
    try:
        for name in names:
            folder = CGROUP_V1_CPU / name
            folder.mkdir(exist_ok=True)
            period = int((folder / "cpu.cfs_period_us").read_text())
            (folder / "cpu.cfs_quota_us").write_text(str(int(cpus * period)))
            made.append(folder)
    except OSError:
        for folder in made:
            folder.rmdir()
        return None
    return made


def _run_side_by_side(commands: list[list[str]], setups: list) -> list[float]:
    """Start the commands at once (each with its ``preexec_fn``); their wall times in seconds."""
    repo = Path(__file__).resolve().parents[1]
    # random weights: report at 0.25 (the model has no calibrated operating point)
    env = {**os.environ, "MAMMO_DETECT_REPORT_MIN_SCORE": "0.25", "PYTHONPATH": str(repo)}
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=f, env=env, cwd=repo
        )
        for c, f in zip(commands, setups, strict=True)
    ]
    times = []
    for proc in procs:
        _, err = proc.communicate(timeout=1800)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"the app failed ({proc.returncode}): {err.decode()[-2000:]}")
    return times


def concurrent(root: Path, repeats: int, out_path: Path) -> None:
    """Two app processes side by side vs one alone (see the module docstring)."""
    from monai_smalldet.runtime import available_cpus

    def command(tag: str) -> list[str]:
        data, model = root / "data" / "test", root / "model"
        return [
            sys.executable,
            "-m",
            "apps.mammo_detect",
            "-i",
            str(data),
            "-o",
            str(root / tag),
            "-m",
            str(model),
        ]

    cpus = sorted(os.sched_getaffinity(0))
    halves = [set(cpus[: max(1, len(cpus) // 2)]), set(cpus[len(cpus) // 2 :]) or set(cpus)]

    def pin(cores):
        return lambda: os.sched_setaffinity(0, cores)

    def join(folder):
        return lambda: (folder / "cgroup.procs").write_text(str(os.getpid()))

    groups = _quota_cgroups(["monai_smalldet_bench_a", "monai_smalldet_bench_b"], len(cpus) / 2)
    configs: dict[str, list] = {
        "alone": [None],
        "two_unlimited": [None, None],
        "two_pinned_half_the_cpus_each": [pin(h) for h in halves],
    }
    if groups is not None:
        configs["two_quota_half_the_cpus_each"] = [join(g) for g in groups]
    times: dict[str, list[list[float]]] = {name: [] for name in configs}
    try:
        _run_side_by_side([command("warm")], [None])  # page cache and compiled kernels, once
        for r in range(repeats):
            for name, setups in configs.items():
                times[name].append(
                    _run_side_by_side([command(f"{name}_{r}_{i}") for i in range(len(setups))], setups)
                )
    finally:
        for folder in groups or []:
            folder.rmdir()
    alone = statistics.median(t[0] for t in times["alone"])
    result = {
        "benchmark": "two deploy-app processes side by side vs one alone, one 4-image study each",
        "data": "synthetic, 4 views",
        "cpus_available": len(cpus),
        "machine": describe_machine(),
        "cgroup_quota": "cgroup v1 cpu.cfs_quota_us" if groups is not None else "not available here",
        "seconds": times,
        "alone_s_median": round(alone, 3),
        "slowest_of_two_over_alone": {
            name: round(statistics.median(max(t) for t in runs) / alone, 3) for name, runs in times.items()
        },
        # what each app process reported (run_summary.json: model.torch_threads)
        "torch_threads_per_process": {
            name: sorted(
                {
                    json.loads((root / f"{name}_{r}_{i}" / "run_summary.json").read_text())["model"][
                        "torch_threads"
                    ]
                    for r in range(repeats)
                    for i in range(len(setups))
                }
            )
            for name, setups in configs.items()
        },
        "available_cpus_here": available_cpus(),
        "goal_ratio": 2.2,
    }
    print(json.dumps(result["slowest_of_two_over_alone"]), f"alone {alone:.2f} s")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_path, result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.25, help="synthetic image scale (0.25: 1024 x 832)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrent", action="store_true", help="two app processes side by side")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    default_name = "app_concurrent.json" if args.concurrent else "app.json"
    args.out = args.out or Path(__file__).parent / "results" / default_name
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_dataset(
            root / "data", n_train=0, n_val=0, n_test=4, seed=1, scale=args.scale, progress=False
        )
        spacing = 0.07 / args.scale
        # the app refuses spacings outside 0.02-0.5 mm by default: these images are scaled down
        os.environ.setdefault("MAMMO_DETECT_SPACING_RANGE_MM", f"0.02-{max(0.5, 1.01 * spacing):.3f}")
        # the paper's 1024 px tiles at full size, the same share of the image at smaller scales
        tile = max(64, round(1024 * args.scale / 32) * 32)
        spec = NetworkSpec(tile_size_px=tile, pixel_spacing_mm=spacing, scales=(1.0, 0.5, 0.25))
        save_checkpoint(root / "model" / "model.pt", build_network("n"), spec)
        if args.concurrent:
            concurrent(root, args.repeats, args.out)
        else:
            overhead(root, args, tile)


def overhead(root: Path, args: argparse.Namespace, tile: int) -> None:
    """The app in-process vs the detector alone (see the module docstring)."""
    files = sorted((root / "data" / "test").rglob("*.dcm"))
    detector = MultiScaleDetector.from_checkpoint(root / "model" / "model.pt", device="cpu")
    loader = LoadMammogram()
    detector.predict(loader(str(files[0])))  # warm-up
    det_s: list[float] = []
    app_s: dict[str, list[float]] = {"app": [], "app_report10": []}
    policies = {"app": ReportPolicy(), "app_report10": ReportPolicy(min_score=0.0, max_findings=10)}
    reported: dict[str, int] = {}
    for r in range(args.repeats):
        t0 = time.perf_counter()
        for f in files:
            detector.predict(loader(str(f)))
        det_s.append(time.perf_counter() - t0)
        for name, policy in policies.items():
            out = root / f"{name}{r}"
            t0 = time.perf_counter()
            code = app_main(
                [
                    "mammo_detect",
                    "-i",
                    str(root / "data" / "test"),
                    "-o",
                    str(out),
                    "-m",
                    str(root / "model"),
                ],
                report_policy=policy,
            )
            app_s[name].append(time.perf_counter() - t0)
            if code != 0:
                raise SystemExit(f"the app failed with exit code {code}")
            summary = json.loads(next(out.rglob("summary.json")).read_text())
            reported[name] = sum(i["num_reported"] for i in summary["images"])
    det = statistics.median(det_s)
    app, app10 = statistics.median(app_s["app"]), statistics.median(app_s["app_report10"])
    result = {
        "benchmark": "deploy app vs detector alone, one 4-image study",
        "data": f"synthetic, scale {args.scale}, 4 views",
        "tile_size_px": tile,
        "torch_threads": torch.get_num_threads(),
        "machine": describe_machine(),
        "detector_s": det_s,
        "app_s": app_s["app"],
        "app_report10_s": app_s["app_report10"],
        "findings_reported_per_study": reported,
        "detector_s_median": round(det, 3),
        "app_s_median": round(app, 3),
        "app_report10_s_median": round(app10, 3),
        # each repeat times the detector and the app back to back: the median of those paired
        # ratios cancels the drift of a shared machine between repeats
        "app_overhead_ratio": _paired(app_s["app"], det_s),
        "app_report10_overhead_ratio": _paired(app_s["app_report10"], det_s),
        "ratio_of_medians": {"app": round(app / det - 1.0, 3), "app_report10": round(app10 / det - 1.0, 3)},
        "goal_overhead_ratio": 0.10,
    }
    print(
        f"detector {det:.2f} s, app {app:.2f} s per study (medians): overhead "
        f"{100 * result['app_overhead_ratio']:.1f}% (median of paired repeats; goal < 10%); with 10 "
        f"reported findings per image {app10:.2f} s: {100 * result['app_report10_overhead_ratio']:.1f}%"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()
